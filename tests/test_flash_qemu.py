"""Flashing qemu-arm-virt's CFI flash through its real U-Boot over the serial console:
the whole path (flash, power-cycle, boot from flash, rig tests, every byte outside the
partition unchanged), and the checks that stop a bad flash: bytes served that differ
from the image, a short load, a write that U-Boot reports done but did not land."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, qemu_target

from embedbuild import cli as eb_cli
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.rig import flash as rig_flash
from embedbuild.rig import target as rig_target
from embedbuild.rig.bootsource import AutoBoot
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import Result, UBootDriver

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

FLASH_SIZE = 64 * 2**20


def _image(result: Path) -> Path:
    return result / Manifest.read(result).flash_image


@contextlib.contextmanager
def _prompt(result: Path, workdir: Path, flash: Path, served: dict[str, bytes]
            ) -> Iterator[Target]:
    """qemu-arm-virt at its U-Boot prompt with this flash file, serving these files."""
    board = load_board("qemu-arm-virt")
    files = workdir / "files"
    files.mkdir(parents=True, exist_ok=True)
    for name, data in served.items():
        (files / name).write_bytes(data)
    with qemu_target(board, workdir, result, flash) as target:
        target.prompt(sorted(files.iterdir()))
        yield target


def _random_flash(path: Path) -> bytes:
    """A flash file whose every byte is known and none is erased: an over-erase shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(FLASH_SIZE)
    path.write_bytes(data)
    return data


def _flash_served(target: Target, image: Path, served_name: str):
    board = target.board
    job = rig_flash.FlashJob(board, board.flash.partition("firmware-a"), image,
                             image.read_bytes(), served_name)
    rig_flash.flash(target.uboot, job, target.link, rig_flash.FlashReport("firmware-a"))


def test_flash_boot_from_flash_and_nothing_else_changed(arm_result: Path, session_store: Path,
                                                        tmp_path: Path):
    board = load_board("qemu-arm-virt")
    part = board.flash.partition("firmware-a")
    env = {"EMBEDBUILD_BENCH": str(tmp_path / "bench")}
    flash = tmp_path / "bench" / "qemu-arm-virt" / "flash.img"
    _random_flash(flash)
    # A real saved U-Boot environment at the start of the bank, to be kept.
    with _prompt(arm_result, tmp_path / "w", flash, {}) as target:
        target.uboot.check("setenv embedbuild_kept yes; saveenv")
    before = flash.read_bytes()
    assert b"embedbuild_kept=yes" in before[: part.offset]

    r = cli("flash", "qemu-arm-virt", "--partition", "firmware-a", "--qemu",
            store=session_store, env=env, timeout=600)
    assert r.code == 0, r.err + r.out
    image = _image(arm_result).read_bytes()
    print(r.out)  # the step times and the write rate, for the record
    assert re.search(rf"wrote {len(image):,} bytes to firmware-a \(\d+\.\d+ MiB/s\)", r.out)
    for step in ("load", "check RAM copy", "erase", "write", "read back", "check erased rest"):
        assert re.search(rf"^{step} +\d+\.\d+ s$", r.out, re.M), step

    # Power-cycled: boot what is in flash (no TFTP boot), then the rig tests.
    r = cli("boot", "qemu-arm-virt", "--qemu", "--from-flash", "--no-console",
            store=session_store, env=env, timeout=300)
    assert r.code == 0, r.err
    log = (tmp_path / "bench" / "qemu-arm-virt" / "run" / "console.log").read_text()
    assert "Loading kernel from FIT Image at 04040000" in log
    assert re.search(r"Verifying Hash Integrity \.\.\. sha256\+ OK", log)
    assert "tftpboot" not in log
    # Options before BOARD: everything after it goes to pytest.
    r = cli("test", "--from-flash", "qemu-arm-virt", "--", "-q", "-p", "no:cacheprovider",
            store=session_store, env=env, timeout=900)
    assert r.code == 0, r.out[-3000:]

    after = flash.read_bytes()
    assert len(after) == FLASH_SIZE
    assert after[: part.offset] == before[: part.offset]  # the U-Boot environment
    assert after[part.end :] == before[part.end :]
    assert after[part.offset : part.offset + len(image)] == image
    assert after[part.offset + len(image) : part.end] == b"\xff" * (part.size - len(image))


def test_served_bytes_that_differ_abort_before_the_erase(arm_result: Path, tmp_path: Path):
    image = _image(arm_result)
    bad = bytearray(image.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    flash = tmp_path / "flash.img"
    before = _random_flash(flash)
    with _prompt(arm_result, tmp_path, flash, {"bad.itb": bytes(bad)}) as target, \
            pytest.raises(rig_flash.FlashError) as e:
        _flash_served(target, image, "bad.itb")
    assert "the copy U-Boot loaded has crc32" in str(e.value)
    assert "aborted before erasing 'firmware-a', nothing was erased" in str(e.value)
    log = (tmp_path / "console.log").read_text()
    assert "Un-Protected" not in log and "Erased " not in log
    assert flash.read_bytes() == before


def test_short_load_aborts_before_the_erase(arm_result: Path, tmp_path: Path):
    image = _image(arm_result)
    short = image.read_bytes()[: image.stat().st_size - 1000]
    flash = tmp_path / "flash.img"
    before = _random_flash(flash)
    with _prompt(arm_result, tmp_path, flash, {"short.itb": short}) as target, \
            pytest.raises(rig_flash.FlashError) as e:
        _flash_served(target, image, "short.itb")
    assert f"U-Boot loaded {len(short):,} bytes of short.itb" in str(e.value)
    assert "nothing was erased" in str(e.value)
    assert flash.read_bytes() == before


class LossyUBoot(UBootDriver):
    """A board whose flash keeps only the first 4 KiB of a write while U-Boot reports it
    done (what QEMU 7.2's flawed CFI buffered write did): the write sent to the real
    U-Boot is cut to 4 KiB."""

    def run(self, command: str, timeout: float = 30) -> Result:
        if command.startswith("cp.b "):
            command = " ".join([*command.split()[:3], "0x1000"])
        return super().run(command, timeout)


def test_write_that_did_not_land_fails_at_read_back(arm_result: Path, session_store: Path,
                                                    tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDBUILD_BENCH", str(tmp_path / "bench"))
    monkeypatch.setattr(rig_target, "UBootDriver", LossyUBoot)
    code = eb_cli.main(["--store", str(session_store), "flash", "qemu-arm-virt",
                        "--partition", "firmware-a", "--qemu"])
    err = capsys.readouterr().err
    assert code == 1
    image = _image(arm_result).read_bytes()
    first = next(i for i in range(0x1000, len(image)) if image[i] != 0xFF)
    assert (f"partition 'firmware-a': read-back differs from the image first at offset "
            f"0x{first:x} (address 0x{0x4040000 + first:08x})") in err
    assert "the write did not land" in err and "Traceback" not in err


def test_set_bootcmd_boots_from_flash_unattended(arm_result: Path, session_store: Path,
                                                 tmp_path: Path):
    env = {"EMBEDBUILD_BENCH": str(tmp_path / "bench")}
    r = cli("flash", "qemu-arm-virt", "--partition", "firmware-a", "--qemu", "--set-bootcmd",
            store=session_store, env=env, timeout=600)
    assert r.code == 0, r.err + r.out
    assert re.search(r"^set bootcmd +\d+\.\d+ s$", r.out, re.M)
    board = load_board("qemu-arm-virt")
    flash = tmp_path / "bench" / "qemu-arm-virt" / "flash.img"
    # Powered on and left alone: the saved bootcmd boots the flashed image.
    with qemu_target(board, tmp_path, arm_result, flash) as target:
        target.boot(AutoBoot(), timeout=120)
    log = (tmp_path / "console.log").read_text()
    assert "Loading kernel from FIT Image at 04040000" in log
