"""A/B updates on the QEMU twin (qemu-arm-virt), through our U-Boot driver, TFTP server and
console code, on QEMU's CFI flash: a good update to B (through U-Boot, and over SSH from
the running system) is booted and marked good while A is untouched; a slot whose kernel
panics is tried its three times, then A boots, and the host reads the counters from the
flash file; a slot that hangs is reset by the watchdog and rolled back; QEMU killed while
an update writes leaves the old slot booting; a damaged environment still boots a slot
(U-Boot's default environment carries the A/B boot).

CI cost: no build of its own beyond what CI makes anyway (qemu-arm-virt's result: its
kernel, U-Boot and libubootenv), except two small images from that build's zImage (a FIT
with a broken initramfs, made by mkimage in under a second; the board's system with a
hanging health check: its generated segment, the initramfs, the FIT, seconds). Measured
on the shared 2-core machine (load average 6-9), 137 s for the module: slot A installed
through U-Boot once (12 s), the good update through SSH (23 s), the panicking slot's
three tries and `slots` through U-Boot (30 s), the watchdog's 20 s once (27 s), the power
cut (7 s), the damaged environment and a BOOT_ORDER naming no slot (16 s). After the
merge of main (signed FIT, PXE, boot time), beside a CI measurement and other builds at
load average 14-17: 394 s (setup with the install 51 s, good update 73 s, panics 91 s,
watchdog 65 s, power cut 38 s, damaged environment 65 s): the boots wait on the CPU, not
on fixed sleeps. Again with the final code as the load fell to about 1-6: 96 s (install
12 s, good update 21 s, panics 22 s, watchdog 23 s, power cut 5 s, damaged environment
11 s). What qemu-arm-virt's build adds for A/B is in README.md (A/B updates)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, build_hello_initramfs, cli, qemu_target

from embedbuild import session, ubootenv
from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.model.system import Health
from embedbuild.rig import update as rig_update
from embedbuild.rig.bootsource import AbBoot
from embedbuild.rig.console import ConsoleError
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import Result, UBootDriver
from embedbuild.store import Store

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

BOARD = "qemu-arm-virt"
GOOD = r"embedbuild: slot ([AB]): marked good"
BOOTING = r"embedbuild A/B: booting slot ([AB]), (\d+) tries left"


def _image(result: Path) -> Path:
    return result / Manifest.read(result).flash_image


def _fit(result: Path, initramfs: Path, dest: Path) -> Path:
    """The result's FIT made again with another initramfs (same kernel, same .its)."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.read(result)
    for name in ("zImage", f"{BOARD}.its"):
        shutil.copyfile(result / name, dest / name)
    ramdisk = next(iter(manifest.with_role("initramfs")))
    shutil.copyfile(initramfs, dest / ramdisk)
    out = dest / "slot.itb"
    subprocess.run(["mkimage", "-f", f"{BOARD}.its", out.name], cwd=dest, check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="module")
def panic_fit(arm_result: Path, tmp_path_factory) -> Path:
    """The board's kernel with an initramfs that has no /init: the kernel panics."""
    d = tmp_path_factory.mktemp("panic")
    return _fit(arm_result, build_hello_initramfs(d, with_init=False), d / "fit")


@pytest.fixture(scope="module")
def hang_fit(arm_result: Path, session_store: Path, tmp_path_factory) -> Path:
    """The board's own system whose health check never returns: it comes up, arms the
    watchdog and never marks its slot good (a new release whose service hangs)."""
    board = load_board(BOARD)
    system = board.system.model_copy(update={"health": Health(check="sleep 100000")})
    built = session.build(board.model_copy(update={"system": system}), Store(session_store))
    return _image(built.result)


@pytest.fixture(scope="module")
def installed(arm_result: Path, tmp_path_factory) -> Path:
    """A flash file as a board leaves the factory bench: slot A written through U-Boot
    (`update`, first install: the environment U-Boot runs plus the A/B variables), booted
    once and marked good; slot B empty. Each test works on a copy."""
    work = tmp_path_factory.mktemp("installed")
    flash = work / "flash.img"
    board = load_board(BOARD)
    image = _image(arm_result)
    with qemu_target(board, work, arm_result, flash) as target:
        uboot = target.prompt([image])
        report = rig_update.update_uboot(uboot, rig_update.Update(board, image), target.link,
                                         rig_update.UpdateReport())
        print("\n".join(report.lines()))  # the step times, for the record
        assert report.slot == "A" and report.stored["BOOT_B_LEFT"] == "0"
        uboot.console.sendline("reset")
        assert _follow(target, GOOD) == "A"
    return flash


def _copy(flash: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "flash.img"
    shutil.copyfile(flash, dest)
    return dest


def _follow(target: Target, want: str, timeout: float = 60) -> str:
    """Wait for ``want`` (a regex with the slot as its group) on the console; a kernel
    panic or the ready line of another slot does not end the wait."""
    assert target.console is not None
    return target.console.expect(want, timeout).match.group(1)


@contextlib.contextmanager
def _powered(result: Path, flash: Path, workdir: Path) -> Iterator[Target]:
    """The twin powered on with this flash, no key pressed: U-Boot's boot command (the
    A/B script) runs."""
    board = load_board(BOARD)
    with qemu_target(board, workdir, result, flash) as target:
        target.start(AbBoot())
        target.power.cycle()
        yield target


def _env(flash: Path) -> dict[str, str]:
    env = ubootenv.read_flash(load_board(BOARD), flash)
    assert env.valid
    return env.variables


def _slot_bytes(flash: Path, slot: str) -> bytes:
    part = rig_update.slot_partition(load_board(BOARD), slot)
    with open(flash, "rb") as f:
        f.seek(part.offset)
        return f.read(part.size)


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "bench_key"
    shutil.copyfile(ROOT / "tests" / "data" / "bench_key", key)
    key.chmod(0o600)  # ssh refuses a private key others can read
    return key


def test_a_good_update_boots_and_is_marked_good_and_a_is_untouched(
        arm_result: Path, installed: Path, tmp_path: Path):
    flash = _copy(installed, tmp_path)
    a_before = _slot_bytes(flash, "A")
    image = _image(arm_result)
    board = load_board(BOARD)
    with _powered(arm_result, flash, tmp_path / "w") as target:
        assert _follow(target, GOOD) == "A"
        # Over SSH from the running system (slot A) to the slot not running.
        ssh = rig_update.Ssh(target.link.device_ip, _key(tmp_path), target.network.exec_argv)
        report = rig_update.update_ssh(ssh, rig_update.Update(board, image),
                                       rig_update.UpdateReport())
        print("\n".join(report.lines()))
        assert report.slot == "B" and report.written == image.stat().st_size
        assert report.stored == {"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3", "BOOT_PENDING": "B",
                                 "BOOT_A_LEFT": "3"}
        mark = target.console.mark()
        target.console.sendline("reboot")
        m = target.console.expect(BOOTING, 60, since=mark).match
        assert (m.group(1), m.group(2)) == ("B", "2")
        assert _follow(target, GOOD) == "B"
        assert target.shell().succeed("fw_printenv -n BOOT_B_LEFT").strip() == "3"
    env = _env(flash)
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("B A", "3", "3")
    assert "BOOT_PENDING" not in env  # B proved itself
    # U-Boot's own variables are still there: the environment is its default plus ours.
    assert env["fdt_addr"] == "0x40000000" and "distro_bootcmd" in env
    assert _slot_bytes(flash, "A") == a_before
    assert _slot_bytes(flash, "B")[: image.stat().st_size] == image.read_bytes()


def test_a_slot_whose_kernel_panics_is_tried_then_a_boots(
        arm_result: Path, installed: Path, panic_fit: Path, session_store: Path, tmp_path: Path):
    flash = _copy(installed, tmp_path)
    board = load_board(BOARD)
    with qemu_target(board, tmp_path / "w", arm_result, flash) as target:
        uboot = target.prompt([panic_fit])
        report = rig_update.update_uboot(uboot, rig_update.Update(board, panic_fit), target.link,
                                         rig_update.UpdateReport())
        assert report.slot == "B"
        uboot.console.sendline("reset")
        for left in ("2", "1", "0"):
            m = target.console.expect(BOOTING, 60).match
            assert (m.group(1), m.group(2)) == ("B", left)
            target.console.expect(r"Kernel panic - not syncing", 60)
        m = target.console.expect(BOOTING, 60).match
        assert (m.group(1), m.group(2)) == ("A", "2")
        assert _follow(target, GOOD) == "A"
    # Read by the host from the flash file, QEMU gone: B spent, A good again.
    env = _env(flash)
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("B A", "3", "0")
    # And by `embedbuild slots` from the device, through U-Boot (its bench folder's flash).
    bench = tmp_path / "bench"
    (bench / BOARD).mkdir(parents=True)
    shutil.copyfile(flash, bench / BOARD / "flash.img")
    r = cli("slots", BOARD, "--qemu", "--from-device", "--built", str(arm_result),
            store=session_store, env={"EMBEDBUILD_BENCH": str(bench)}, timeout=120)
    assert r.code == 0, r.err
    assert re.search(r"^slot A  firmware-a +FIT, [\d,]+ bytes, crc32 [0-9a-f]{8} \(this "
                     r"build's image\); tries left 3 of 3  <- boots next$", r.out, re.M)
    panic_size = panic_fit.stat().st_size
    assert re.search(rf"^slot B  firmware-b +FIT, {panic_size:,} bytes, crc32 "
                     rf"{zlib.crc32(panic_fit.read_bytes()):08x}; tries left 0 of 3$", r.out, re.M)
    assert "BOOT_ORDER 'B A'" in r.out


def test_a_slot_that_hangs_is_reset_by_the_watchdog_and_rolled_back(
        arm_result: Path, installed: Path, hang_fit: Path, tmp_path: Path):
    flash = _copy(installed, tmp_path)
    board = load_board(BOARD)
    with qemu_target(board, tmp_path / "w", arm_result, flash) as target:
        uboot = target.prompt([hang_fit])
        rig_update.update_uboot(uboot, rig_update.Update(board, hang_fit), target.link,
                                rig_update.UpdateReport())
        # One try instead of three: the watchdog's 20 s once is enough to show it.
        uboot.check("setenv BOOT_B_LEFT 1; saveenv")
        uboot.console.sendline("reset")
        assert target.console.expect(BOOTING, 60).match.groups() == ("B", "0")
        target.console.expect(r"embedbuild: slot B: watchdog armed", 60)
        mark = target.console.mark()
        # Nothing resets the board but the watchdog: no panic, no reboot, no U-Boot reset.
        m = target.console.expect([r"U-Boot 20\d\d", r"Kernel panic", r"marked good",
                                   r"resetting \.\.\.", r"restarting"], 60, since=mark)
        assert m.index == 0, m.match.group(0)
        assert target.console.expect(BOOTING, 60).match.groups() == ("A", "2")
        assert _follow(target, GOOD) == "A"
    env = _env(flash)
    assert (env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("3", "0")


class PowerCut(UBootDriver):
    """QEMU is killed (SIGKILL) as soon as U-Boot says it copies the image into the slot:
    the erase is done, the write under way."""

    def __init__(self, uboot: UBootDriver, qemu) -> None:
        super().__init__(uboot.console, uboot.prompt, uboot.autoboot, uboot.steps)
        self.qemu = qemu

    def run(self, command: str, timeout: float = 30) -> Result:
        if command.startswith("cp.b "):
            self.console.sendline(command)
            self.console.expect(r"Copy to Flash", timeout)
            os.killpg(self.qemu.proc.pid, signal.SIGKILL)
            self.qemu.proc.wait()
            raise ConsoleError("power cut")
        return super().run(command, timeout)


def test_a_power_cut_during_an_update_leaves_the_old_slot_booting(
        arm_result: Path, installed: Path, tmp_path: Path):
    flash = _copy(installed, tmp_path)
    env_before, a_before = _env(flash), _slot_bytes(flash, "A")
    image = _image(arm_result)
    board = load_board(BOARD)
    with qemu_target(board, tmp_path / "w", arm_result, flash) as target:
        cut = PowerCut(target.prompt([image]), target.qemu)
        with pytest.raises(EmbedbuildError, match="power cut"):
            rig_update.update_uboot(cut, rig_update.Update(board, image), target.link,
                                    rig_update.UpdateReport())
    # Slot B is half written or erased, the environment and slot A as they were.
    assert _slot_bytes(flash, "B")[: image.stat().st_size] != image.read_bytes()
    assert _env(flash) == env_before and _slot_bytes(flash, "A") == a_before
    with _powered(arm_result, flash, tmp_path / "again") as target:
        assert target.console.expect(BOOTING, 60).match.groups() == ("A", "2")
        assert _follow(target, GOOD) == "A"


def test_a_damaged_environment_still_boots_a_slot(arm_result: Path, installed: Path,
                                                  session_store: Path, tmp_path: Path):
    flash = _copy(installed, tmp_path)
    board = load_board(BOARD)
    offset, env = ubootenv.location(board)
    with open(flash, "r+b") as f:  # a power cut during saveenv: the crc does not match
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not ubootenv.read_flash(board, flash).valid
    with _powered(arm_result, flash, tmp_path / "w") as target:
        target.console.expect(r"bad CRC, using default environment", 30)
        assert target.console.expect(BOOTING, 60).match.groups() == ("A", "2")
        assert _follow(target, GOOD) == "A"
        env = _env(flash)
        assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("A B", "3", "3")
        assert "distro_bootcmd" in env  # the default environment, saved again with ours
        # A BOOT_ORDER naming no slot (written from Linux): U-Boot still tries them all.
        target.shell().succeed("fw_setenv BOOT_ORDER 'C D'")
        mark = target.console.mark()
        target.console.sendline("reboot")
        m = target.console.expect(BOOTING, 60, since=mark).match
        assert m.groups() == ("A", "2")
        assert _follow(target, GOOD) == "A"
    assert _env(flash)["BOOT_ORDER"] == "C D"
    # And `embedbuild slots` reads it from the flash file.
    r = cli("slots", BOARD, "--flash-file", str(flash), "--built", str(arm_result),
            store=session_store)
    assert r.code == 0, r.err
    assert re.search(r"^slot A  firmware-a +FIT, [\d,]+ bytes, crc32 [0-9a-f]{8} \(this "
                     r"build's image\); tries left 3 of 3  <- boots next$", r.out, re.M)
    assert "slot B  firmware-b   erased; tries left 3 of 3" in r.out
