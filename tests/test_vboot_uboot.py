"""Verified boot through the U-Boot embedbuild builds for the QEMU twin
(tests/data/boards/qemu-arm-vboot): real FITs mkimage signs here, served by our TFTP
server, checked by U-Boot on the console. Each case's console lines are asserted, and
our host-side check must reach the same verdict as U-Boot on every image.

QEMU hands U-Boot a control DTB without keys (-dtb, its own dump): U-Boot ignores it and
uses the one appended to it, so the keyless-DTB bypass is shown closed in every case.
Costs on top of the session's qemu-arm-virt build: one U-Boot compile (shared by three
key setups) and three power-ons that stay in U-Boot but for one boot to the ready line.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, cli
from embedbuild.rig.boot import uboot_prompt
from vboot_fits import flip, make_fit, prop_offset

from embedbuild import fdt
from embedbuild.load import load_board
from embedbuild.model.system import READY_LINE
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.qemu import QemuBoard, flash_file
from embedbuild.rig.uboot import UBootDriver
from embedbuild.vboot import keys
from embedbuild.vboot.verify import keyring_from_dtb, verify

pytestmark = pytest.mark.slow

SOURCE = ROOT / "tests" / "data" / "boards" / "qemu-arm-vboot"
ALGO = "sha256,rsa2048"
FIT_ADDR = 0x48000000
BOOTM = f"bootm 0x{FIT_ADDR:x}#conf-1 0x{FIT_ADDR:x}#conf-1 0x40000000"
# What U-Boot prints between the lines asserted: image details.
DETAIL = re.compile(r"^\s+(Description|Created|Type|Compression|Data Start|Data Size|"
                    r"Architecture|OS|Load Address|Entry Point|Hash algo|Hash value):")


@dataclass
class Setup:
    keydir: Path
    boards: Path
    served: Path
    firmware: dict[str, Path]  # variant -> u-boot.bin
    control: dict[str, Path]   # variant -> the control DTB appended to it
    work: Path


def _variant(boards: Path, name: str, signing: str) -> Path:
    board = boards / name
    shutil.copytree(SOURCE, board)
    toml = board / "board.toml"
    toml.write_text(toml.read_text().replace('[signing]\nkeys = ["embedbuild-test"]', signing))
    return board


@pytest.fixture(scope="module")
def setup(tmp_path_factory, session_store, arm_result) -> Setup:
    work = tmp_path_factory.mktemp("vboot")
    keydir = work / "keys"
    keys.new_key(keydir, "embedbuild-test")
    keys.rotate(keydir, "embedbuild-test")
    keys.new_key(keydir, "other")
    boards = work / "boards"
    boards.mkdir()
    (boards / "common").symlink_to(ROOT / "boards" / "common")
    variants = {
        "one": _variant(boards, "qemu-arm-vboot", '[signing]\nkeys = ["embedbuild-test"]'),
        "any": _variant(boards, "vboot-any", '[signing]\nkeys = ["embedbuild-test", '
                        '"embedbuild-test-2"]\nrequired_mode = "any"'),
        "all": _variant(boards, "vboot-all", '[signing]\nkeys = ["embedbuild-test", '
                        '"embedbuild-test-2"]\nrequired_mode = "all"'),
    }
    firmware, control = {}, {}
    for v, board in variants.items():
        link = work / f"uboot-{v}"
        r = cli("build", str(board), "--step", "uboot", "--out-link", str(link),
                store=session_store, env={"EMBEDBUILD_KEYS": str(keydir)})
        assert r.code == 0, r.err
        firmware[v], control[v] = link / "u-boot.bin", link / "u-boot-control.dtb"

    served = work / "tftp"
    kernel, ramdisk = (arm_result / "zImage").read_bytes(), \
        (arm_result / "initramfs.cpio.gz").read_bytes()

    def fit(name: str, signers: list[str], keydir_: Path | None = keydir) -> Path:
        made = make_fit(work / "fits" / name, keydir_, [(s, ALGO) for s in signers],
                        kernel=kernel, ramdisk=ramdisk)
        served.mkdir(exist_ok=True)
        return shutil.copy(made, served / f"{name}.itb")

    good = fit("good", ["embedbuild-test"])
    blob = good.read_bytes()
    flip(good, prop_offset(blob, "/images/kernel-1", "data") + 100000, served / "kernel.itb")
    flip(good, prop_offset(blob, "/configurations/conf-1/signature-1", "value") + 17,
         served / "signature.itb")
    flip(good, prop_offset(blob, "/configurations/conf-1/signature-1", "signer-version"),
         served / "uncovered.itb")
    fit("other", ["other"])
    fit("unsigned", [], keydir_=None)
    fit("blank", ["embedbuild-test"], keydir_=None)  # a signature node never signed
    fit("new", ["embedbuild-test-2"])
    fit("both", ["embedbuild-test", "embedbuild-test-2"])
    shutil.copy(arm_result / "zImage", served / "zImage")
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x40400000", "-e", "0x40400000", "-n", "legacy", "-d",
                    served / "zImage", served / "legacy.uImage"], check=True,
                   capture_output=True)
    return Setup(keydir, boards, served, firmware, control, work)


def qemu_dtb(firmware: Path, out: Path) -> Path:
    """The DTB QEMU makes for the board (with the same machine, CPU, memory, -bios)."""
    b = load_board(str(SOURCE))
    assert b.qemu is not None
    subprocess.run([b.qemu.system, "-M", f"{b.qemu.machine},dumpdtb={out}", "-m",
                    b.qemu.memory, "-cpu", b.qemu.cpu, "-bios", firmware, "-display", "none"],
                   check=True, capture_output=True, timeout=30)
    return out


@contextlib.contextmanager
def at_prompt(setup: Setup, variant: str, dtb: Path) -> Iterator[UBootDriver]:
    """QEMU -M virt running the variant's U-Boot, handed ``dtb`` by QEMU (-dtb), at
    the U-Boot prompt with the network set and setup.served on TFTP."""
    board = load_board(str(SOURCE))
    assert board.qemu is not None and board.flash is not None
    spec = board.qemu.model_copy(update={"extra": ["-dtb", str(dtb)]})
    work = setup.work / f"bench-{variant}"
    work.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(BenchNetwork())
        qemu = QemuBoard(spec, net, work, firmware=setup.firmware[variant],
                         flash=flash_file(work / "flash.img", board.flash.size))
        stack.callback(qemu.power_off)
        powered_on = time.monotonic()
        pty = qemu.power_on()
        target = stack.enter_context(uboot_prompt(
            board, setup.served, work, port=pty, baud=115200, server_ip=net.server_ip,
            device_ip=net.device_ip, netmask=net.netmask, netns=net.path,
            powered_on=powered_on))
        ub = target.uboot
        ub.check(f"setenv ipaddr {net.device_ip}; setenv serverip {net.server_ip}; "
                 f"setenv netmask {net.netmask}; setenv tftpblocksize 1468; "
                 "setenv tftpwindowsize 16; setenv bootargs console=ttyAMA0,115200")
        yield ub


def attempt(ub: UBootDriver, image: str, command: str) -> tuple[int, list[str]]:
    """Load ``image`` and run ``command``: its exit status and the lines it printed
    (image details left out)."""
    ub.check(f"tftpboot 0x{FIT_ADDR:x} {image}", timeout=60)
    r = ub.run(command, timeout=60)
    return r.status, [line.rstrip() for line in r.output.splitlines()
                      if line.strip() and not DETAIL.match(line)]


@pytest.fixture(scope="module")
def keyless(setup) -> Path:
    """QEMU's own DTB for the board: no /signature, as a prior stage would hand it over."""
    dtb = qemu_dtb(setup.firmware["one"], setup.work / "keyless.dtb")
    assert "/signature" not in fdt.tree(dtb.read_bytes())
    return dtb


REFUSED_SIGNATURE = [
    "## Loading kernel from FIT Image at 48000000 ...",
    "   Using 'conf-1' configuration",
]
CASES = {
    # image: (command, expected console lines, U-Boot accepts)
    "kernel.itb": (BOOTM, [
        *REFUSED_SIGNATURE,
        "   Verifying Hash Integrity ... sha256,rsa2048:embedbuild-test+ OK",
        "   Trying 'kernel-1' kernel subimage",
        "   Verifying Hash Integrity ... sha256 error!",
        "Bad hash value for 'hash-1' hash node in 'kernel-1' image node",
        "Bad Data Hash",
        "ERROR: can't get kernel image!"], False),
    "signature.itb": (BOOTM, [
        *REFUSED_SIGNATURE,
        "   Verifying Hash Integrity ... sha256,rsa2048:embedbuild-test-  error!",
        "Verification failed for '<NULL>' hash node in 'conf-1' config node",
        "Failed to verify required signature 'key-embedbuild-test'",
        "Bad Data Hash",
        "ERROR: can't get kernel image!"], False),
    "other.itb": (BOOTM, [
        *REFUSED_SIGNATURE,
        "   Verifying Hash Integrity ... sha256,rsa2048:other-  error!",
        "Verification failed for '<NULL>' hash node in 'conf-1' config node",
        "Failed to verify required signature 'key-embedbuild-test'",
        "Bad Data Hash",
        "ERROR: can't get kernel image!"], False),
    "unsigned.itb": (BOOTM, [
        *REFUSED_SIGNATURE,
        "   Verifying Hash Integrity ...  error!",
        "No 'signature' subnode found for '<NULL>' hash node in 'conf-1' config node",
        "Failed to verify required signature 'key-embedbuild-test'",
        "Bad Data Hash",
        "ERROR: can't get kernel image!"], False),
    "blank.itb": (BOOTM, [
        *REFUSED_SIGNATURE,
        "   Verifying Hash Integrity ... sha256,rsa2048:embedbuild-test-  error!",
        "Can't get hash value property for '<NULL>' hash node in 'conf-1' config node",
        "Failed to verify required signature 'key-embedbuild-test'",
        "Bad Data Hash",
        "ERROR: can't get kernel image!"], False),
    "legacy.uImage": (f"bootm 0x{FIT_ADDR:x} - 0x40000000", [
        "Wrong Image Format for bootm command",
        "ERROR: can't get kernel image!"], False),
    "zImage": (f"bootm 0x{FIT_ADDR:x} - 0x40000000", [
        "Wrong Image Format for bootm command",
        "ERROR: can't get kernel image!"], False),
}


def test_refusals_with_a_keyless_dtb_from_qemu_then_the_good_image_boots(setup, keyless):
    ring = keyring_from_dtb(setup.control["one"].read_bytes(), "u-boot-control.dtb")
    with at_prompt(setup, "one", keyless) as ub:
        # U-Boot's control DTB is its own, holding the key; QEMU's at 0x40000000 has none.
        r = ub.run("fdt addr ${fdtcontroladdr}; fdt list /signature/key-embedbuild-test "
                   "required")
        assert r.status == 0 and r.output.endswith('required = "conf"')
        r = ub.run("fdt addr 0x40000000; fdt list /signature")
        assert r.status == 1 and "FDT_ERR_NOTFOUND" in r.output
        for image, (command, lines, accepted) in CASES.items():
            status, seen = attempt(ub, image, command)
            assert (status, seen) == (1, lines), f"{image}: {seen}"
            if image.endswith(".itb"):
                v = verify((setup.served / image).read_bytes(), ring, "conf-1", name=image)
                assert v.ok == accepted, v.line()
        # The unchecked ways to start a kernel are not in this U-Boot at all.
        for command in ("bootz 0x48000000 - 0x40000000", "bootefi 0x48000000",
                        "source 0x48000000"):
            r = ub.run(command)
            name = command.split()[0]
            assert r.status == 1 and f"Unknown command '{name}' - try 'help'" in r.output
        # An initramfs given as ADDR:SIZE beside a signed kernel: no raw initrd support.
        status, seen = attempt(ub, "good.itb",
                               f"bootm 0x{FIT_ADDR:x}#conf-1 0x44000000:0x1000 0x40000000")
        assert status == 1 and seen[-2:] == ["Wrong Ramdisk Image Format",
                                             "Ramdisk image is corrupt or invalid"]
        # A byte U-Boot's signature does not cover (signature-1's signer-version).
        status, seen = attempt(ub, "uncovered.itb", f"bootm start 0x{FIT_ADDR:x}#conf-1")
        assert status == 0 and \
            "   Verifying Hash Integrity ... sha256,rsa2048:embedbuild-test+ OK" in seen
        assert verify((setup.served / "uncovered.itb").read_bytes(), ring, "conf-1").ok
        # Last: the good image, all the way to the system's ready line.
        ub.check(f"tftpboot 0x{FIT_ADDR:x} good.itb", timeout=60)
        mark = ub.console.mark()
        ub.console.sendline(BOOTM)
        ub.console.expect(READY_LINE, 60)
        text = ub.console.since(mark)
        assert "   Verifying Hash Integrity ... sha256,rsa2048:embedbuild-test+ OK" in text
        assert verify((setup.served / "good.itb").read_bytes(), ring, "conf-1").ok


@pytest.mark.parametrize("mode", ["any", "all"])
def test_key_rotation(setup, keyless, mode):
    """Two required keys, embedbuild-test and its rotation: "any" takes an image signed by
    either, "all" only one signed by both; the host check agrees on each."""
    ring = keyring_from_dtb(setup.control[mode].read_bytes(), "u-boot-control.dtb")
    assert ring.required_mode == mode and len(ring.keys) == 2
    want = {"good.itb": mode == "any", "new.itb": mode == "any", "both.itb": True,
            "other.itb": False}
    with at_prompt(setup, mode, keyless) as ub:
        for image, accepted in want.items():
            status, seen = attempt(ub, image, f"bootm start 0x{FIT_ADDR:x}#conf-1")
            assert (status == 0) == accepted, f"{mode} {image}: {seen}"
            assert verify((setup.served / image).read_bytes(), ring, "conf-1").ok == accepted
            if not accepted:
                assert seen[-3:-1] == [
                    "Failed to verify 'any' of the required signature(s)" if mode == "any"
                    else "Failed to verify required signature 'key-embedbuild-test"
                    + ("-2'" if image == "good.itb" else "'"), "Bad Data Hash"], seen


def test_control_dts_is_what_qemu_describes(setup, tmp_path):
    """The committed control .dts is QEMU's own description of the machine (the random
    seeds aside): if QEMU changes the virt machine, this says so before U-Boot does."""
    dumped = fdt.tree(qemu_dtb(setup.firmware["one"], tmp_path / "now.dtb").read_bytes())
    ours = tmp_path / "ours.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", ours,
                    SOURCE / "qemu-virt-control.dts"], check=True)
    committed = fdt.tree(ours.read_bytes())
    for seed in ("rng-seed", "kaslr-seed"):
        dumped["/chosen"].pop(seed, None)
    assert committed == dumped
