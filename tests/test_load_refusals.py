"""Loading is finished at load time: every reference a board makes is resolved by the
loader, so `show` refuses what `build` would, with the same one-line message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Run, cli, run_main, snapshot

from embedbuild.cli import main


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _uboot_source(boards: Path, _ov: Path) -> Path:
    _replace(boards / "qemu-malta-be" / "board.toml", 'source = "u-boot-2023.01"',
             'source = "u-boot-9"')
    return boards / "qemu-malta-be"


def _package_source(boards: Path, _ov: Path) -> Path:
    _replace(boards / "common" / "lock.toml", "[sources.dropbear]", "[sources.dropbear-old]")
    return boards / "qemu-arm-virt"


def _busybox_source(boards: Path, _ov: Path) -> Path:
    _replace(boards / "common" / "lock.toml", "[sources.busybox]", "[sources.busybox-old]")
    return boards / "qemu-arm-virt"


def _unknown_package(boards: Path, _ov: Path) -> Path:
    _replace(boards / "qemu-arm-virt" / "board.toml", 'packages = ["dropbear", "libubootenv"]',
             'packages = ["dropbear", "libubootenv", "openssh"]')
    return boards / "qemu-arm-virt"


def _missing_overlay(boards: Path, _ov: Path) -> Path:
    _replace(boards / "qemu-arm-virt" / "board.toml", 'overlays = ["bench"]',
             'overlays = ["bench", "nonexistent"]')
    return boards / "qemu-arm-virt"


def _attrs_entry_missing(boards: Path, ov: Path) -> Path:
    (ov / "extra" / "etc").mkdir(parents=True)
    (ov / "extra" / "etc" / "banner").write_text("hi\n")
    (ov / "extra.toml").write_text('[[entry]]\npath = "etc/no-such-file"\nmode = 0o600\n')
    _replace(boards / "qemu-arm-virt" / "board.toml", 'overlays = ["bench"]',
             'overlays = ["bench", "extra"]')
    return boards / "qemu-arm-virt"


def _attrs_malformed(boards: Path, ov: Path) -> Path:
    (ov / "extra").mkdir()
    (ov / "extra.toml").write_text("[[entry]\npath = 3\n")
    _replace(boards / "qemu-arm-virt" / "board.toml", 'overlays = ["bench"]',
             'overlays = ["bench", "extra"]')
    return boards / "qemu-arm-virt"


def _collision(boards: Path, ov: Path) -> Path:
    (ov / "clash" / "etc").mkdir(parents=True)
    (ov / "clash" / "etc" / "hostname").write_text("other\n")
    _replace(boards / "qemu-arm-virt" / "board.toml", 'overlays = ["bench"]',
             'overlays = ["bench", "clash"]')
    return boards / "qemu-arm-virt"


def _overlay_vs_overlay(boards: Path, ov: Path) -> Path:
    for name in ("one", "two"):
        (ov / name / "etc").mkdir(parents=True)
        (ov / name / "etc" / "motd.d").write_text(name)
    _replace(boards / "qemu-arm-virt" / "board.toml", 'overlays = ["bench"]',
             'overlays = ["bench", "one", "two"]')
    return boards / "qemu-arm-virt"


def _no_userland(boards: Path, _ov: Path) -> Path:
    _replace(boards / "qemu-arm-virt" / "board.toml",
             '[userland]\nbusybox = ["../common/busybox.config", "busybox.config"]\n', "")
    return boards / "qemu-arm-virt"


CASES: dict[str, tuple[Callable[[Path, Path], Path], list[str]]] = {
    "unknown U-Boot source": (_uboot_source, ["uboot.build.source 'u-boot-9'",
                                              "board.toml:"]),
    "package without a source": (_package_source, ["no source named 'dropbear'"]),
    "busybox without a source": (_busybox_source, ["no source named 'busybox'"]),
    "unknown package": (_unknown_package, ["system.packages[2]", "openssh"]),
    "missing overlay": (_missing_overlay, ["overlay 'nonexistent' not found",
                                           "system.overlays[1]"]),
    "attribute for a missing file": (_attrs_entry_missing, ["'etc/no-such-file'",
                                                            "extra.toml"]),
    "malformed attribute file": (_attrs_malformed, ["extra.toml:1", "malformed TOML"]),
    "overlay collides with a generated file": (_collision, [
        "/etc/hostname comes from both the generated files", "overlay 'clash'"]),
    "two overlays, one file": (_overlay_vs_overlay, [
        "/etc/motd.d comes from both overlay 'one' and overlay 'two'"]),
    "system without userland": (_no_userland, ["has a system but no [userland]"]),
}


def _not_refused(*args, **kwargs):
    raise AssertionError("the build was not refused at load: it started realising steps")


@pytest.mark.parametrize("case", list(CASES))
def test_show_refuses_what_build_refuses(case: str, boards: Path, tmp_path: Path,
                                         monkeypatch, capsys):
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    env = {"EMBEDBUILD_OVERLAYS": str(overlays)}
    make, needles = CASES[case]
    board = make(boards, overlays)
    store = tmp_path / "store"
    # The real command (exit status, no traceback) for the first case; the rest in this
    # process: the same code without another interpreter's start-up.
    run = cli if case == next(iter(CASES)) else run_main
    shown = run("show", str(board), store=store, env=env)
    # build in this process: the same code without another interpreter's start-up.
    monkeypatch.setenv("EMBEDBUILD_OVERLAYS", str(overlays))
    monkeypatch.setattr("embedbuild.session.realise", _not_refused)
    code = main(["--store", str(store), "build", str(board), "--out-link",
                 str(tmp_path / "result")])
    out = capsys.readouterr()
    built = Run(code, out.out, out.err)
    for r in (shown, built):
        assert r.code == 1 and "Traceback" not in r.err, r.err
        for n in needles:
            assert n in r.err, f"{n!r} not in:\n{r.err}"
    first = [line for line in shown.err.splitlines() if line.startswith("error:")]
    assert first and first == [line for line in built.err.splitlines()
                               if line.startswith("error:")]
    assert snapshot(store) == {}
