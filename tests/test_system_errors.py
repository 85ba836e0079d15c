"""Bad system input: clear errors at load or plan time, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli, run_main, snapshot

from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board


def _edit(boards: Path, old: str, new: str) -> Path:
    toml = boards / "qemu-arm-virt" / "board.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new))
    return boards / "qemu-arm-virt"


def _fails(board: Path, store: Path, *needles: str, process: bool = False) -> None:
    """The build is refused (in this process; in one of its own with ``process``)."""
    before = snapshot(store)
    run = cli if process else run_main
    r = run("build", str(board), "--out-link", str(board / "result"), store=store)
    assert r.code == 1 and "Traceback" not in r.err, r.err
    for n in needles:
        assert n in r.err, f"{n!r} not in {r.err}"
    assert snapshot(store) == before


def test_unknown_dependency(boards: Path, tmp_path: Path):
    b = _edit(boards, 'depends_on = ["syslogd"]\noutput', 'depends_on = ["sysklogd"]\noutput')
    _fails(b, tmp_path / "s", "service 'dropbear' depends on unknown service 'sysklogd'",
           "board.toml:", process=True)


def test_dependency_cycle_is_named(boards: Path, tmp_path: Path):
    b = _edit(boards, 'name = "syslogd"\n', 'name = "syslogd"\ndepends_on = ["heartbeat"]\n')
    _fails(b, tmp_path / "s", "dependency cycle:", "syslogd -> heartbeat -> syslogd")


def test_missing_overlay_folder(boards: Path, tmp_path: Path):
    b = _edit(boards, 'overlays = ["bench"]', 'overlays = ["bench", "nonexistent"]')
    _fails(b, tmp_path / "s", "overlay 'nonexistent' not found", "board.toml")


def test_overlay_file_colliding_with_generated_one(boards: Path, tmp_path: Path, monkeypatch):
    overlays = tmp_path / "overlays"
    (overlays / "clash" / "etc").mkdir(parents=True)
    (overlays / "clash" / "etc" / "passwd").write_text("root::0:0::/:/bin/sh\n")
    monkeypatch.setenv("EMBEDBUILD_OVERLAYS", str(overlays))
    b = _edit(boards, 'overlays = ["bench"]', 'overlays = ["bench", "clash"]')
    with pytest.raises(EmbedbuildError) as e:
        load_board(str(b))
    assert "/etc/passwd comes from both the generated files (init and config) and " \
        "overlay 'clash'" in str(e.value)
    assert str(overlays / "clash" / "etc" / "passwd") in str(e.value)


def test_bad_service_fields(boards: Path, tmp_path: Path):
    b = _edit(boards, 'name = "heartbeat"', 'name = "Heart Beat"')
    _fails(b, tmp_path / "s", "system.services[2].name")


def test_system_file_replaces_board_system(tmp_path: Path):
    sysfile = tmp_path / "tiny.toml"
    sysfile.write_text('hostname = "tiny"\n[[services]]\nname = "a"\ncommand = "sleep 9"\n')
    board = load_board("qemu-arm-virt", sysfile)
    assert board.system.hostname == "tiny" and [s.name for s in board.system.services] == ["a"]
    sysfile.write_text('hostname = "tiny"\nservices = 3\n')
    with pytest.raises(EmbedbuildError) as e:
        load_board("qemu-arm-virt", sysfile)
    assert "tiny.toml:2" in str(e.value) and "services" in str(e.value)
