"""Verified boot in QEMU: qemu-arm-vboot built for real (its signed FIT, and the U-Boot
embedbuild builds with the session's throwaway key in its own control DTB), booted
through the target object with the signed-FIT boot source, our TFTP server and our
console. Every bad image is refused twice: by the host before it is served (the boot
source's check, the same verifier the flash path uses) and, served anyway at the
prompt, by our U-Boot, whose console lines are asserted. The host's verdict equals
U-Boot's on every image. QEMU hands U-Boot a DTB without keys (-dtb, its own dump) in
the boots at the prompt: U-Boot ignores it, so the keyless-control-DTB bypass is shown
closed each time.

CI cost, on top of qemu-arm-virt's kernel (the board boots it through kernel.from, so
no second kernel is compiled): the U-Boot compile (25 s on 2 idle cores with an empty
ccache; 69 s measured on the loaded shared machine), the board's two initramfs segments
and its FIT signed (seconds), two more control DTBs for key rotation (no compile), one
U-Boot configuration for the locked fragment (10 s); eight QEMU power-ons of a few
seconds each (two boots to the ready line, six stays at the prompt, one of them
flashing); the CLI refusals (11 s); the cache push of the result's closure and the key
scan (25-40 s: the push packs the kernel source tree). The module ran in 104 s with the
builds in the store, on the shared machine at load 8-13.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, VBOOT_KEY, cli
from vboot_fits import flip, make_fit, prop_offset, swap_data

from embedbuild import fdt
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.rig import flash as rig_flash
from embedbuild.rig.bench import BenchOptions
from embedbuild.rig.bootsource import AutoBoot
from embedbuild.rig.signedfit import SignedFitBoot, result_keyring
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import UBootDriver
from embedbuild.vboot import keys
from embedbuild.vboot.verify import FitSignatureError, keyring_from_dtb, verify

pytestmark = pytest.mark.slow

BOARD = "qemu-arm-vboot"
ALGO = "sha256,rsa2048"
ADDR = 0x48000000
BOOTM = f"bootm 0x{ADDR:x}#conf-1 0x{ADDR:x}#conf-1 0x40000000"
GOOD_LINE = f"   Verifying Hash Integrity ... {ALGO}:{VBOOT_KEY}+ OK"
# What U-Boot prints between the lines asserted: image details.
DETAIL = re.compile(r"^\s+(Description|Created|Type|Compression|Data Start|Data Size|"
                    r"Architecture|OS|Load Address|Entry Point|Hash algo|Hash value|"
                    r"Sign algo|Sign value|Timestamp):")


@dataclasses.dataclass
class Built:
    result: Path
    unsigned: Path  # the FIT before the signing step: its signature node has no value
    work: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory, session_store) -> Built:
    work = tmp_path_factory.mktemp("vboot")
    r = cli("build", BOARD, "--out-link", str(work / "result"), store=session_store)
    assert r.code == 0, r.err
    r = cli("build", BOARD, "--step", "fit-unsigned", "--out-link", str(work / "unsigned"),
            store=session_store)
    assert r.code == 0, r.err
    return Built((work / "result").resolve(), (work / "unsigned").resolve()
                 / f"{BOARD}-unsigned.itb", work)


@pytest.fixture(scope="module")
def keyless(built) -> Path:
    """QEMU's own DTB for the board (same machine, CPU, memory, -bios): no /signature, as
    the stage before U-Boot hands it over."""
    b = load_board(BOARD)
    out = built.work / "keyless.dtb"
    subprocess.run([b.qemu.system, "-M", f"{b.qemu.machine},dumpdtb={out}", "-m",
                    b.qemu.memory, "-cpu", b.qemu.cpu, "-bios", built.result / "u-boot.bin",
                    "-display", "none"], check=True, capture_output=True, timeout=30)
    assert "/signature" not in fdt.tree(out.read_bytes())
    return out


@pytest.fixture(scope="module")
def bad(built, session_keys) -> dict[str, Path]:
    """Images to offer the board, from its own signed FIT and its own kernel and
    initramfs, each wrong in one way (and three that U-Boot rightly accepts)."""
    folder = built.work / "images"
    folder.mkdir()
    fit = built.result / f"{BOARD}.itb"
    blob = fit.read_bytes()
    kernel, ramdisk = (built.result / "zImage").read_bytes(), \
        (built.result / "initramfs.cpio.gz").read_bytes()
    other = built.work / "other-keys"
    keys.new_key(other, VBOOT_KEY)  # another key of the very same name
    out = {
        "kernel.itb": flip(fit, prop_offset(blob, "/images/kernel-1", "data") + 100000,
                           folder / "kernel.itb"),
        "signature.itb": flip(fit, prop_offset(
            blob, "/configurations/conf-1/signature-1", "value") + 17, folder / "signature.itb"),
        "uncovered.itb": flip(fit, prop_offset(
            blob, "/configurations/conf-1/signature-1", "signer-version"),
            folder / "uncovered.itb"),
        "version9.itb": flip(fit, prop_offset(blob, "/configurations/conf-1",
                                              "embedbuild,version") + 3,
                             folder / "version9.itb"),
        "blank.itb": shutil.copy(built.unsigned, folder / "blank.itb"),
    }
    # Our very image signed with the other key: what someone on the LAN could make.
    shutil.copy(built.unsigned, folder / "other.itb")
    (folder / "other.itb").chmod(0o644)
    subprocess.run(["mkimage", "-F", "-k", other, folder / "other.itb"], check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "0"})
    out["other.itb"] = folder / "other.itb"

    def made(name: str, keydir: Path | None, signers=(VBOOT_KEY,), **kw) -> Path:
        path = make_fit(folder / name, keydir, [(s, ALGO) for s in signers], kernel=kernel,
                        ramdisk=ramdisk, name=name, **kw)
        out[name] = path
        return path

    made("unsigned.itb", None, signers=(), version=1)
    made("old.itb", session_keys, version=0)
    made("noversion.itb", session_keys)
    # The ramdisk left out of sign-images, then swapped with its hash recomputed.
    narrow = made("narrow-signed.itb", session_keys, images=("kernel",), version=1)
    out["narrow.itb"] = swap_data(narrow, "ramdisk-1", folder / "narrow.itb")
    # An image node no configuration names: not covered, and never loaded.
    spare = made("spare-signed.itb", session_keys, version=1)
    out["spare.itb"] = swap_data(spare, "spare-1", folder / "spare.itb")
    shutil.copy(built.result / "zImage", folder / "zImage")
    out["zImage"] = folder / "zImage"
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x40400000", "-e", "0x40400000", "-n", "legacy", "-d",
                    folder / "zImage", folder / "legacy.uImage"], check=True,
                   capture_output=True)
    out["legacy.uImage"] = folder / "legacy.uImage"
    return out


def with_keyless_dtb(board, keyless: Path, firmware: Path | None = None):
    """The board's QEMU bench, QEMU handing U-Boot ``keyless`` (-dtb); ``firmware``:
    the U-Boot to run when no result names one."""
    bench = BenchOptions().bench(board)
    machine = bench.qemu
    spec = machine.spec.model_copy(update={"extra": [*machine.spec.extra, "-dtb",
                                                     str(keyless)]})
    update = {"spec": spec} | ({"firmware": firmware} if firmware else {})
    return dataclasses.replace(bench, qemu=machine.model_copy(update=update))


@contextlib.contextmanager
def at_prompt(board, keyless: Path, workdir: Path, result: Path | None,
              extra: list[Path], firmware: Path | None = None) -> Iterator[
                  tuple[Target, UBootDriver]]:
    with Target(board, with_keyless_dtb(board, keyless, firmware), workdir, result) as t:
        yield t, t.prompt(extra)


def attempt(ub: UBootDriver, image: str, command: str = BOOTM) -> tuple[int, list[str]]:
    """Load ``image`` and run ``command``: its exit status and the lines it printed
    (image details left out)."""
    ub.check(f"tftpboot 0x{ADDR:x} {image}", timeout=60)
    r = ub.run(command, timeout=60)
    return r.status, [line.rstrip() for line in r.output.splitlines()
                      if line.strip() and not DETAIL.match(line)]


def test_the_signed_image_boots_through_our_tftp_server_and_console(built, keyless, tmp_path):
    board = load_board(BOARD)
    with Target(board, with_keyless_dtb(board, keyless), tmp_path, built.result) as target:
        report = target.boot(SignedFitBoot())
        log = target.console_log.read_text()
        # Kernel and initramfs each loaded through the signed configuration.
        assert log.count(GOOD_LINE) == 2, log
        assert "bootm 0x48000000#conf-1 0x48000000#conf-1 0x40000000" in log
        assert target.shell().run("uname -m") == (0, "armv7l\n")
    print("\n".join(report.lines()))


LOADING = ["## Loading kernel from FIT Image at 48000000 ...",
           "   Using 'conf-1' configuration"]
NO_KERNEL = ["Bad Data Hash", "ERROR: can't get kernel image!"]


def _signature_refused(verifying: str, why: str) -> list[str]:
    return [*LOADING, f"   Verifying Hash Integrity ... {verifying} error!",
            f"{why} for '<NULL>' hash node in 'conf-1' config node",
            f"Failed to verify required signature 'key-{VBOOT_KEY}'", *NO_KERNEL]


TRIED = f"{ALGO}:{VBOOT_KEY}- "  # U-Boot's "algo:key-" of the signature node it tried
# image: the lines U-Boot prints when its bootm refuses it
CASES = {
    "kernel.itb": [*LOADING, GOOD_LINE, "   Trying 'kernel-1' kernel subimage",
                   "   Verifying Hash Integrity ... sha256 error!",
                   "Bad hash value for 'hash-1' hash node in 'kernel-1' image node", *NO_KERNEL],
    "signature.itb": _signature_refused(TRIED, "Verification failed"),
    "other.itb": _signature_refused(TRIED, "Verification failed"),
    "unsigned.itb": _signature_refused("", "No 'signature' subnode found"),
    "blank.itb": _signature_refused(TRIED, "Can't get hash value property"),
    "version9.itb": _signature_refused(TRIED, "Verification failed"),
    "legacy.uImage": ["Wrong Image Format for bootm command", NO_KERNEL[1]],
    "zImage": ["Wrong Image Format for bootm command", NO_KERNEL[1]],
}


def test_every_bad_image_is_refused_by_the_host_and_by_our_u_boot(built, keyless, bad,
                                                                   tmp_path):
    board = load_board(BOARD)
    ring = result_keyring(built.result)
    with at_prompt(board, keyless, tmp_path, built.result, list(bad.values())) as (target, ub):
        # U-Boot's control DTB is its own, holding the key; QEMU's at 0x40000000 has none.
        r = ub.run(f"fdt addr ${{fdtcontroladdr}}; fdt list /signature/key-{VBOOT_KEY} "
                   "required")
        assert r.status == 0 and r.output.endswith('required = "conf"'), r.output
        r = ub.run("fdt addr 0x40000000; fdt list /signature")
        assert r.status == 1 and "FDT_ERR_NOTFOUND" in r.output
        for image, lines in CASES.items():
            # The host refuses to serve it...
            with pytest.raises(FitSignatureError, match=f"refused for {BOARD}"):
                SignedFitBoot(bad[image]).check(target)
            # ... and served anyway, U-Boot refuses it, by the configuration's signature.
            status, seen = attempt(ub, image)
            assert (status, seen) == (1, lines), f"{image}: {seen}"
        # What U-Boot accepts, the host decides alike: a byte the signature does not cover
        # (the signature node's signer-version), and an image node no configuration names.
        for image in ("uncovered.itb", "spare.itb"):
            SignedFitBoot(bad[image]).check(target)
            status, seen = attempt(ub, image, f"bootm start 0x{ADDR:x}#conf-1")
            assert status == 0 and GOOD_LINE in seen, (image, seen)
        # An initramfs left out of the signature and swapped (its hash recomputed): U-Boot
        # boots it; the host refuses it, and our FITs sign every image they load.
        status, seen = attempt(ub, "narrow.itb", f"bootm start 0x{ADDR:x}#conf-1 "
                               f"0x{ADDR:x}#conf-1")
        assert status == 0 and seen.count(GOOD_LINE) == 2, seen
        assert not verify(bad["narrow.itb"].read_bytes(), ring, "conf-1", strict=False).reason
        with pytest.raises(FitSignatureError, match="ramdisk ramdisk-1 is not covered"):
            SignedFitBoot(bad["narrow.itb"]).check(target)
        # The unchecked ways to start a kernel, and those that take its command line from
        # the network or a disk, are not in this U-Boot at all.
        for command in ("bootz 0x48000000 - 0x40000000", "bootefi 0x48000000",
                        "source 0x48000000", "bootelf 0x48000000", "go 0x48000000",
                        "pxe get", "sysboot virtio 0:1 any 0x48000000 extlinux.conf"):
            r = ub.run(command)
            name = command.split()[0]
            assert r.status == 1 and f"Unknown command '{name}' - try 'help'" in r.output
        # Nor does the unattended boot try disks and the network (distro boot).
        r = ub.run("boot")
        assert "embedbuild: no boot command saved" in r.output, r.output
        status, seen = attempt(ub, f"{BOARD}.itb",
                               f"bootm 0x{ADDR:x}#conf-1 0x44000000:0x1000 0x40000000")
        assert status == 1 and seen[-2:] == ["Wrong Ramdisk Image Format",
                                             "Ramdisk image is corrupt or invalid"]


def _source_commands(ub: UBootDriver, target: Target, image: Path) -> list[tuple[int, str]]:
    """The signed-FIT source's own commands for ``image``, run at the prompt up to the
    boot command (replaced by ``bootm start``, which checks without booting)."""
    cmds = SignedFitBoot(image).commands(target)
    assert cmds[-1] == BOOTM
    out = []
    for cmd in [*cmds[:-1], BOOTM.replace("bootm ", "bootm start ", 1)]:
        r = ub.run(cmd, timeout=60)
        out.append((r.status, r.output))
        if r.status:
            break
    return out


def test_anti_rollback_refuses_versions_below_the_minimum(built, keyless, bad, tmp_path):
    """The version signed into the configuration against min_version in the environment,
    by the boot source's own commands (the check script kept in the environment)."""
    board = load_board(BOARD)
    good = built.result / f"{BOARD}.itb"  # version 1
    with at_prompt(board, keyless, tmp_path, built.result, list(bad.values())) as (target, ub):
        # No minimum kept yet: any version boots.
        assert [s for s, _ in _source_commands(ub, target, bad["old.itb"])] == [0] * 5
        ub.check("setenv min_version 1")
        ran = _source_commands(ub, target, bad["old.itb"])
        assert ran[-1][0] == 1 and len(ran) == 4 and "embedbuild: refused: version " \
            "0x00000000 is below min_version 1" in ran[-1][1], ran
        ran = _source_commands(ub, target, bad["noversion.itb"])
        assert ran[-1][0] == 1 and "embedbuild: refused: the image holds no " \
            "embedbuild,version" in ran[-1][1], ran
        ran = _source_commands(ub, target, good)
        assert [s for s, _ in ran] == [0] * 5 and GOOD_LINE in ran[-1][1]
        # A version raised by hand passes the script, and fails the signature.
        ran = _source_commands(ub, target, bad["version9.itb"])
        assert [s for s, _ in ran] == [0, 0, 0, 0, 1], ran
        assert f"Failed to verify required signature 'key-{VBOOT_KEY}'" in ran[-1][1]
        ub.check("setenv min_version 2")
        ran = _source_commands(ub, target, good)
        assert ran[-1][0] == 1 and "version 0x00000001 is below min_version 2" in ran[-1][1]


def test_the_bypasses_left_need_the_console(built, keyless, bad, tmp_path):
    """What stays open by design on this (bench) build, whose console is open: each way
    needs someone typing at U-Boot's prompt. A locked board turns the console off (see
    the README); these lines say what that protects against."""
    board = load_board(BOARD)
    start = f"bootm start 0x{ADDR:x}#conf-1"
    with at_prompt(board, keyless, tmp_path, built.result, list(bad.values())) as (_t, ub):
        assert attempt(ub, "unsigned.itb", start)[0] == 1
        # An image by its unit name: no configuration, so no configuration signature.
        status, seen = attempt(ub, "unsigned.itb", f"bootm start 0x{ADDR:x}:kernel-1")
        assert status == 0 and "   Verifying Hash Integrity ... sha256+ OK" in seen, seen
        # verify=n turns every check off.
        ub.check("setenv verify n")
        assert attempt(ub, "unsigned.itb", start)[0] == 0
        ub.check("setenv verify")
        assert attempt(ub, "unsigned.itb", start)[0] == 1
        # Another control DTB (QEMU's, keyless) chosen at the prompt.
        ub.check("fdt addr -c 0x40000000")
        status, seen = attempt(ub, "unsigned.itb", start)
        assert status == 0 and "   Verifying Hash Integrity ... OK" in seen, seen


@pytest.mark.parametrize("mode", ["any", "all"])
def test_key_rotation(built, keyless, bad, session_keys, session_store, tmp_path, mode):
    """The key and its rotation both in U-Boot's control DTB: "any" takes an image signed
    by either, "all" only one signed by both; the host agrees on each. The variant board
    has the very name of the board, so its U-Boot compile is the board's (one store item):
    only the control DTB differs."""
    folder = tmp_path / "keys"
    shutil.copytree(session_keys, folder)
    keys.rotate(folder, VBOOT_KEY)
    new = f"{VBOOT_KEY}-2"
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "common").symlink_to(ROOT / "boards" / "common")
    shutil.copytree(ROOT / "boards" / BOARD, boards / BOARD)
    toml = boards / BOARD / "board.toml"
    toml.write_text(toml.read_text().replace(
        f'keys = ["{VBOOT_KEY}"]', f'keys = ["{VBOOT_KEY}", "{new}"]\nrequired_mode = "{mode}"'))
    r = cli("build", str(boards / BOARD), "--step", "uboot", "--out-link",
            str(tmp_path / "uboot"), store=session_store, env={"EMBEDBUILD_KEYS": str(folder)})
    assert r.code == 0, r.err
    uboot = (tmp_path / "uboot").resolve()
    ring = keyring_from_dtb((uboot / "u-boot-control.dtb").read_bytes())
    assert ring.required_mode == mode and [k.name for k in ring.keys] == [VBOOT_KEY, new]
    fits = {"old.itb": built.result / f"{BOARD}.itb", "other.itb": bad["other.itb"]}
    for name, signers in (("new.itb", [new]), ("both.itb", [VBOOT_KEY, new])):
        fits[name] = make_fit(tmp_path / name, folder, [(s, ALGO) for s in signers],
                              kernel=b"k" * 4096, ramdisk=b"r" * 4096, name=name, version=1)
    fits["old.itb"] = shutil.copy(fits["old.itb"], tmp_path / "old.itb")
    want = {"old.itb": mode == "any", "new.itb": mode == "any", "both.itb": True,
            "other.itb": False}
    board = load_board(str(boards / BOARD))
    with at_prompt(board, keyless, tmp_path / "w", None, list(fits.values()),
                   firmware=uboot / "u-boot.bin") as (_t, ub):
        for image, accepted in want.items():
            status, seen = attempt(ub, image, f"bootm start 0x{ADDR:x}#conf-1")
            assert (status == 0) == accepted, f"{mode} {image}: {seen}"
            assert verify(fits[image].read_bytes(), ring, "conf-1").ok == accepted
            if not accepted:
                assert seen[-3:-1] == [
                    "Failed to verify 'any' of the required signature(s)" if mode == "any"
                    else f"Failed to verify required signature 'key-{VBOOT_KEY}"
                    + ("-2'" if image == "old.itb" else "'"), "Bad Data Hash"], seen


def test_boot_and_flash_refuse_a_bad_image_before_anything_is_powered(built, bad,
                                                                      session_store,
                                                                      tmp_path):
    """From the command line: one line, exit status 1, no QEMU started, nothing flashed."""
    bench = tmp_path / "bench"
    env = {"EMBEDBUILD_BENCH": str(bench)}
    for image, needle in (("other.itb", "does not verify"),
                          ("legacy.uImage", "a legacy uImage carries no signature")):
        r = cli("boot", BOARD, "--qemu", "--no-console", "--image", str(bad[image]),
                store=session_store, env=env)
        assert r.code == 1 and needle in r.err and f"refused for {BOARD}" in r.err, r.err
        assert "Traceback" not in r.err and len(r.own_err.splitlines()) <= 3, r.err
        run = bench / BOARD / "run"
        assert not (run / "console.log").exists() and not (run / "qemu.out").exists()
        r = cli("flash", BOARD, "--partition", "firmware", "--dry-run", "--image",
                str(bad[image]), store=session_store, env=env)
        assert r.code == 1 and needle in r.err and "Traceback" not in r.err, r.err
        assert not r.out
    r = cli("boot", BOARD, "--qemu", "--no-console", "--boot", "tftp", store=session_store,
            env=env)
    assert r.code == 1 and "requires signed images" in r.err, r.err
    # The built image passes, and the dry run shows the checked write.
    r = cli("flash", BOARD, "--partition", "firmware", "--dry-run", store=session_store,
            env=env)
    assert r.code == 0 and f"tftpboot 0x40400000 {BOARD}.itb" in r.out, r.err


def _secrets(keydir: Path) -> dict[str, bytes]:
    """The private key's bytes in every form a leak could take."""
    from cryptography.hazmat.primitives import serialization

    pem = (keydir / f"{VBOOT_KEY}.key").read_bytes()
    private = serialization.load_pem_private_key(pem, None)
    numbers = private.private_numbers()
    der = private.private_bytes(serialization.Encoding.DER,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    body = [line for line in pem.splitlines() if not line.startswith(b"-----")]
    return {"PEM line": body[len(body) // 2], "DER": der,
            "d": numbers.d.to_bytes(256, "big"), "p": numbers.p.to_bytes(128, "big"),
            "q": numbers.q.to_bytes(128, "big")}


def _find(stream, secrets: dict[str, bytes]) -> list[str]:
    """Which secrets occur in a byte stream (read in chunks that overlap)."""
    keep = max(len(s) for s in secrets.values())
    found, tail = set(), b""
    while chunk := stream.read(1 << 22):
        data = tail + chunk
        found |= {name for name, s in secrets.items() if s in data}
        tail = data[-keep:]
    return sorted(found)


def test_the_private_key_is_in_no_store_item_and_no_pushed_cache_item(built, session_keys,
                                                                      session_store,
                                                                      tmp_path):
    """The result's whole closure pushed to a folder cache: no description, no archive
    and no store item holds the private key in any form. Unpacked sources are skipped
    (their bytes are the lock's, checked by sha256); all else is read."""
    secrets = _secrets(session_keys)
    r = cli("cache", "keygen", "ci", store=session_store, cwd=tmp_path)
    assert r.code == 0, r.err
    cache = tmp_path / "cache"
    r = cli("cache", "push", str(cache), str(built.result), "--key", str(tmp_path / "ci.secret"),
            store=session_store)
    assert r.code == 0, r.err
    signed = [line for line in r.out.splitlines() if f"{BOARD}-fit " in line]
    assert signed or "already" in r.out, r.out
    scanned = 0
    for desc in sorted((cache / "items").glob("*.json")):
        with open(desc, "rb") as f:
            assert _find(f, secrets) == [], desc
        d = json.loads(desc.read_text())
        if d["info"]["kind"] == "source":
            continue
        archive = cache / d["archive"]["path"]
        z = subprocess.Popen(["zstd", "-dc", archive], stdout=subprocess.PIPE)
        assert _find(z.stdout, secrets) == [], d["item"]
        assert z.wait() == 0
        scanned += 1
        item = session_store / d["item"]
        for f in sorted(p for p in item.rglob("*") if p.is_file() and not p.is_symlink()):
            with open(f, "rb") as fh:
                assert _find(fh, secrets) == [], f
    names = {json.loads(p.read_text())["name"] for p in (cache / "items").glob("*.json")}
    assert {f"{BOARD}-fit", f"{BOARD}-uboot-control", f"{BOARD}-result"} <= names
    assert scanned >= 10
    # The signing step's record names the public key only.
    meta = Manifest.read(built.result).signing
    assert meta is not None and meta.signers == [VBOOT_KEY]


def test_the_control_dts_is_what_qemu_describes(built, keyless, tmp_path):
    """The committed control .dts is QEMU's own description of the machine (the random
    seeds aside): if QEMU changes the virt machine, this says so before U-Boot does."""
    dumped = fdt.tree(keyless.read_bytes())
    ours = tmp_path / "ours.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", ours,
                    ROOT / "boards" / BOARD / "qemu-virt-control.dts"], check=True)
    committed = fdt.tree(ours.read_bytes())
    for seed in ("rng-seed", "kaslr-seed"):
        dumped["/chosen"].pop(seed, None)
    assert committed == dumped
    # What U-Boot holds is that description plus the board's key, required.
    control = fdt.tree((built.result / "u-boot-control.dtb").read_bytes())
    assert {p: v for p, v in control.items() if not p.startswith("/signature")} == committed
    assert fdt.string(control[f"/signature/key-{VBOOT_KEY}"]["required"]) == "conf"


def test_the_locked_fragment_is_a_u_boot_configuration(session_store, tmp_path):
    """boards/qemu-arm-vboot/u-boot-locked.config (what a production board adds) over the
    twin's fragment: U-Boot's checked config merge keeps every value it asks for (the
    configuration only, seconds: the compile is the production board's)."""
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "common").symlink_to(ROOT / "boards" / "common")
    shutil.copytree(ROOT / "boards" / BOARD, boards / BOARD)
    toml = boards / BOARD / "board.toml"
    toml.write_text(toml.read_text().replace(
        'fragments = ["u-boot-vboot.config"]',
        'fragments = ["u-boot-vboot.config", "u-boot-locked.config"]'))
    r = cli("build", str(boards / BOARD), "--step", "uboot-config", "--out-link",
            str(tmp_path / "config"), store=session_store)
    assert r.code == 0, r.err
    config = (tmp_path / "config").resolve() / "u-boot.config"
    assert "CONFIG_BOOTDELAY=-2\n" in config.read_text()


def test_flashed_it_boots_unattended_and_the_saved_boot_checks_the_version(built, tmp_path):
    """The signed FIT flashed (checked against the keyring first) with the saved bootcmd
    (`run check_version && bootm ADDR#conf-1 ...`): with no key pressed it boots; once
    min_version in the saved environment is above the image's version, the same unattended
    boot refuses it. Three power-ons on one flash file."""
    board = load_board(BOARD)
    flash = tmp_path / "flash.img"
    image = built.result / f"{BOARD}.itb"
    job = rig_flash.FlashJob.prepare(board, "firmware", image, result_keyring(built.result))

    def target(name: str) -> Target:
        return Target(board, BenchOptions().bench(board, flash), tmp_path / name, built.result)

    with target("flash") as t:
        ub = t.prompt([image])
        report = rig_flash.flash(ub, job, t.link, rig_flash.FlashReport("firmware"))
        rig_flash.set_bootcmd(ub, job, report)
        assert report.written == image.stat().st_size
    with target("autoboot") as t:
        t.boot(AutoBoot())
        assert t.console_log.read_text().count(GOOD_LINE) == 2
    with target("raised") as t:
        ub = t.prompt()
        ub.check("setenv min_version 2")
        ub.check("saveenv", 60)
        r = ub.run("boot", 60)
        assert r.status != 0 and "embedbuild: refused: version 0x00000001 is below " \
            "min_version 2" in r.output, r.output
        assert "Starting kernel" not in r.output
