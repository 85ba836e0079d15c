"""Verified boot without QEMU: what [signing] asks of a board, the signed FIT in the plan,
the boot commands that name the configuration and check the anti-rollback version, and
the host's gate: the signed-FIT boot source and the flash path refuse, before anything is
powered, served or erased, every image that is not a FIT signed by the board's keys
(real FITs made and signed by mkimage here, checked by our verifier). The same refusals
through QEMU and our U-Boot are in test_vboot_boot.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import VBOOT_KEY, cli, run_main
from vboot_fits import flip, make_fit, prop_offset

from embedbuild import bootcmd
from embedbuild.errors import EmbedbuildError
from embedbuild.fit import FitConfig, FitDescription, FitImage
from embedbuild.load import load_board
from embedbuild.manifest import FileInfo, Manifest
from embedbuild.outputs.signing import SigningInfo
from embedbuild.plan import plan_board
from embedbuild.rig.bench import BenchOptions
from embedbuild.rig.bootsource import TftpBoot
from embedbuild.rig.flash import FlashError, FlashJob
from embedbuild.rig.signedfit import SignedFitBoot, result_keyring
from embedbuild.rig.sources import BOOT_SOURCES, default_source
from embedbuild.rig.target import Target
from embedbuild.steps.uboot_control import signature_dts
from embedbuild.vboot import keys
from embedbuild.vboot.verify import FitSignatureError

ALGO = "sha256,rsa2048"
BOARD = "qemu-arm-vboot"
needs_tools = pytest.mark.skipif(not shutil.which("mkimage") or not shutil.which("dtc"),
                                 reason="needs mkimage (u-boot-tools) and dtc")


# -- what [signing] asks of a board ----------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("[kernel.fit]\n", "", "signing: [signing] signs the FIT image: add [kernel.fit]"),
    ("[kernel.fit]\n", "[kernel.fit]\n[kernel.uimage]\nload = 0x40008000\n",
     "kernel.uimage: a legacy uImage carries no signature"),
    ("fit_addr = 0x48000000\n", "", "give uboot.fit_addr"),
    ("fit_addr = 0x48000000\n", "fit_addr = 0x44000000\n",
     "fit_addr and ramdisk_addr are both 0x44000000"),
    ("version = 1\n", "version = 65536\n", "signing.version"),
])
def test_a_signed_board_boots_signed_fits_only(boards, tmp_path, old, new, needle):
    toml = boards / BOARD / "board.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    r = run_main("show", str(boards / BOARD), store=tmp_path / "store")
    assert r.code == 1 and needle in r.err, r.err
    assert str(toml) in r.err


def test_a_refused_signing_table_is_one_line_from_the_command(boards, tmp_path):
    toml = boards / BOARD / "board.toml"
    toml.write_text(toml.read_text().replace("[kernel.fit]\n", ""))
    r = cli("show", str(boards / BOARD), store=tmp_path / "store")
    assert r.code == 1 and "add [kernel.fit]" in r.err and "Traceback" not in r.err


def test_the_plan_signs_the_fit_and_publishes_the_keyring(session_keys):
    plan = plan_board(load_board(BOARD))
    unsigned, signed = plan.steps["fit-unsigned"], plan.steps["fit"]
    assert (unsigned.kind, signed.kind) == ("fit", "fit-sign")
    assert signed.deps == {"unsigned": unsigned}
    assert signed.outputs == {"image": f"{BOARD}.itb", "header": "fit.json"}
    assert unsigned.outputs["image"] == f"{BOARD}-unsigned.itb"
    conf = unsigned.inputs["description"]["configurations"][0]
    assert conf["version"] == 1
    assert conf["signatures"] == ({"algo": ALGO, "key_name_hint": VBOOT_KEY,
                                   "sign_images": ("kernel", "ramdisk")},)
    # The signing step's key covers the public key, never the key folder or private key.
    public = keys.load_public(session_keys, VBOOT_KEY)
    assert signed.inputs["keys"] == [{"name": VBOOT_KEY, "n": f"{public.n:x}",
                                      "e": public.e, "algo": ALGO}]
    assert str(session_keys) not in repr(signed.inputs)
    # The keyring is the control DTB of the U-Boot built for the board.
    assert plan.steps["keyring"] is plan.steps["uboot"]
    assert plan.steps["uboot"].kind == "uboot-control"
    assert "signing" in plan.outputs and "fit" in plan.outputs
    # A board without [signing] keeps its one unsigned FIT step.
    plain = plan_board(load_board("qemu-arm-virt"))
    assert plain.steps["fit"].kind == "fit" and "fit-unsigned" not in plain.steps
    assert "keyring" not in plain.steps and "signing" not in plain.outputs


def test_boot_commands_name_the_configuration_and_check_the_version():
    board = load_board(BOARD)
    cmds = bootcmd.signed_fit_boot(board, "x.itb")
    assert cmds[0] == "setenv bootargs 'console=ttyAMA0,115200'"
    assert cmds[1] == "tftpboot 0x48000000 x.itb"
    assert cmds[2].startswith("setenv check_version 'if fdt addr 0x48000000 && fdt get "
                              "value fitver /configurations/conf-1 embedbuild,version; ")
    assert cmds[3] == "run check_version"
    assert cmds[4] == "bootm 0x48000000#conf-1 0x48000000#conf-1 0x40000000"
    # Within U-Boot's 512-byte command line, with the driver's status suffix.
    assert all(len(c) < 480 for c in cmds)
    # From flash: the same check and bootm; saved, the check must pass before bootm runs.
    part = board.firmware_partition()
    flash = bootcmd.flash_boot(board, part, 1000)
    assert flash[-2:] == ["run check_version",
                          "bootm 0x4040000#conf-1 0x4040000#conf-1 0x40000000"]
    saved = bootcmd.set_bootcmd(board, part, 1000)
    assert saved[-2:] == ["setenv bootcmd 'run check_version && bootm 0x4040000#conf-1 "
                          "0x4040000#conf-1 0x40000000'", "saveenv"]
    assert saved[1].startswith("setenv check_version '")
    # Without a version, no check; never an image by name, never bootz.
    unversioned = board.model_copy(update={"signing": board.signing.model_copy(
        update={"version": None})})
    assert bootcmd.signed_fit_boot(unversioned, "x.itb")[1:] == [
        "tftpboot 0x48000000 x.itb", "bootm 0x48000000#conf-1 0x48000000#conf-1 0x40000000"]
    assert not any(":kernel" in c or "bootz" in c for c in cmds + flash)


@needs_tools
def test_the_version_is_part_of_the_description(tmp_path):
    (tmp_path / "k.bin").write_bytes(b"k" * 100)
    desc = FitDescription("d", 1, (FitImage("kernel-1", "k", "k.bin", "kernel", "arm",
                                            load=0x40400000, entry=0x40400000),),
                          (FitConfig("conf-1", "c", "kernel-1", version=3),), "conf-1")
    assert "embedbuild,version = <3>;" in desc.its()
    (tmp_path / "x.its").write_text(desc.its())
    subprocess.run(["mkimage", "-f", tmp_path / "x.its", tmp_path / "x.itb"], check=True,
                   capture_output=True)
    blob, data = (tmp_path / "x.itb").read_bytes(), {"kernel-1": b"k" * 100}
    assert desc.check(blob, data) == []
    assert desc.facts(blob)["configurations"]["conf-1"]["version"] == 3
    other = FitDescription(desc.description, 1, desc.images,
                           (FitConfig("conf-1", "c", "kernel-1", version=4),), "conf-1")
    assert other.check(blob, data) == ["/configurations/conf-1 embedbuild,version is not 4"]


# -- the gate: images checked against the result's keyring --------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory, session_keys) -> dict[str, Path]:
    """FITs and non-FITs to offer a signed board, and the keyring its U-Boot holds."""
    work = tmp_path_factory.mktemp("gate")
    other = work / "other-keys"
    keys.new_key(other, VBOOT_KEY)  # another key of the very same name
    out = {}

    def fit(name: str, keydir: Path | None, signers=(VBOOT_KEY,), **kw) -> Path:
        made = make_fit(work / name, keydir, [(s, ALGO) for s in signers], version=1, **kw)
        out[name] = made
        return made

    good = fit("good", session_keys)
    blob = good.read_bytes()
    out["kernel"] = flip(good, prop_offset(blob, "/images/kernel-1", "data") + 10,
                         work / "kernel.itb")
    out["signature"] = flip(good, prop_offset(
        blob, "/configurations/conf-1/signature-1", "value") + 5, work / "signature.itb")
    fit("other", other)
    fit("unsigned", None, signers=())
    fit("blank", None)  # a signature node mkimage never signed
    fit("narrow", session_keys, images=("kernel",))  # the ramdisk left out of the signature
    (work / "zImage").write_bytes(b"\0" * 36 + b"\x18\x28\x6f\x01" + b"\0" * 100)
    out["raw"] = work / "zImage"
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x40400000", "-e", "0x40400000", "-n", "legacy", "-d",
                    work / "zImage", work / "legacy.uImage"], check=True, capture_output=True)
    out["legacy"] = work / "legacy.uImage"
    src = work / "keyring.dts"
    src.write_text("/dts-v1/;\n/ {\n};\n" + signature_dts(
        keys.signing_keys([VBOOT_KEY], keydir=session_keys), "all"))
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", work / "keyring.dtb", src],
                   check=True)
    out["keyring"] = work / "keyring.dtb"
    return out


def _signed_result(tmp_path: Path, images: dict[str, Path], fit: str = "good") -> Path:
    """A signed board's result as the build writes it: the FIT, the keyring, the manifest."""
    board = load_board(BOARD)
    result = tmp_path / "result"
    result.mkdir(parents=True)
    files = {}
    for name, role, src in ((f"{BOARD}.itb", "flash", images[fit]),
                            ("u-boot-control.dtb", "keyring", images["keyring"])):
        shutil.copyfile(src, result / name)
        files[name] = FileInfo(role=role, size=src.stat().st_size, sha256="0" * 64)
    Manifest(board=board.name, arch="arm", description="", outputs=["fit", "signing"],
             files=files, flash_image=f"{BOARD}.itb",
             signing=SigningInfo(keyring="u-boot-control.dtb", required_mode="all",
                                 keys=[VBOOT_KEY], signers=[VBOOT_KEY], config="conf-1",
                                 version=1)).write(result)
    return result


def _target(tmp_path: Path, result: Path | None, board: str = BOARD) -> Target:
    b = load_board(board)
    return Target(b, BenchOptions().bench(b), tmp_path / "w", result)


REFUSALS = {
    "kernel": "kernel kernel-1: hash-1: the sha256 of the data does not match (Bad Data Hash)",
    "signature": f"required key {VBOOT_KEY}: signature-1: does not verify",
    "other": f"required key {VBOOT_KEY}: signature-1: does not verify",
    "unsigned": f"required key {VBOOT_KEY}: the configuration is not signed",
    "blank": f"required key {VBOOT_KEY}: signature-1",
    "narrow": "its ramdisk ramdisk-1 is not covered by the signature",
    "legacy": "a legacy uImage carries no signature",
    "raw": "not a FIT image (a raw kernel?)",
}


@needs_tools
def test_the_signed_fit_source_serves_only_what_the_keyring_verifies(tmp_path, images):
    result = _signed_result(tmp_path, images)
    target = _target(tmp_path, result)
    SignedFitBoot().check(target)  # the result's own FIT: signed by the key
    assert result_keyring(result).required_mode == "all"
    for name, needle in REFUSALS.items():
        with pytest.raises(FitSignatureError) as e:
            SignedFitBoot(images[name]).check(target)
        assert needle in e.value.message, (name, e.value.message)
        assert f"refused for {BOARD}" in e.value.message and e.value.where == str(images[name])
    # What is served is the checked file, and U-Boot is told to boot it by its configuration.
    source = SignedFitBoot()
    source.stage(target, tmp_path / "tftp")
    assert (tmp_path / "tftp" / f"{BOARD}.itb").read_bytes() == images["good"].read_bytes()
    assert source.commands(target)[-1] == \
        "bootm 0x48000000#conf-1 0x48000000#conf-1 0x40000000"
    # A result whose own FIT fails (a store item changed, a result from elsewhere).
    bad = _signed_result(tmp_path / "bad", images, "other")
    with pytest.raises(FitSignatureError, match="does not verify"):
        SignedFitBoot().check(_target(tmp_path, bad))


def test_a_signed_board_is_never_served_raw_images_and_others_need_signing(tmp_path):
    signed, plain = _target(tmp_path, None), _target(tmp_path, None, "qemu-arm-virt")
    assert default_source(signed.board) == "signed-fit" == SignedFitBoot.name
    assert default_source(plain.board) == "tftp" and "signed-fit" in BOOT_SOURCES
    with pytest.raises(EmbedbuildError, match="requires signed images"):
        TftpBoot().check(signed)
    with pytest.raises(EmbedbuildError, match="has no \\[signing\\]"):
        SignedFitBoot().check(plain)
    with pytest.raises(EmbedbuildError, match="file to serve not found"):
        SignedFitBoot(tmp_path / "missing.itb").check(signed)


def test_a_device_or_fifo_is_never_read(tmp_path, images):
    result = _signed_result(tmp_path, images)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FitSignatureError, match="not a regular file"):
        SignedFitBoot(fifo).check(_target(tmp_path, result))


@needs_tools
def test_the_flash_path_refuses_what_the_keyring_does_not_verify(tmp_path, images):
    board = load_board(BOARD)
    result = _signed_result(tmp_path, images)
    ring = result_keyring(result)
    job = FlashJob.prepare(board, "firmware", images["good"], ring)
    assert job.data == images["good"].read_bytes()
    with pytest.raises(FlashError, match="no keyring was given"):
        FlashJob.prepare(board, "firmware", images["good"])
    for name in ("unsigned", "other", "legacy", "raw"):
        with pytest.raises(FitSignatureError, match=REFUSALS[name].split("(")[0]):
            FlashJob.prepare(board, "firmware", images[name], ring)
    # A board without [signing] flashes what it is given, as before.
    plain = load_board("qemu-arm-virt")
    assert FlashJob.prepare(plain, "firmware", images["unsigned"]).data


def test_image_and_boot_options_go_together(tmp_path, images):
    store = tmp_path / "store"
    r = run_main("boot", BOARD, "--qemu", "--boot", "tftp", "--image", str(images["good"]),
                 store=store)
    assert r.code == 1 and "--image goes with --boot signed-fit" in r.err
    r = run_main("boot", BOARD, "--qemu", "--initrd", str(images["good"]), store=store)
    assert r.code == 1 and "--initrd goes with a TFTP boot, not --boot signed-fit" in r.err


def test_doctor_says_which_keys_a_signed_board_lacks(tmp_path, session_keys, monkeypatch):
    from embedbuild.doctor import findings
    from embedbuild.store import Store

    board = load_board(BOARD)
    monkeypatch.setenv("EMBEDBUILD_KEYS", str(tmp_path / "none"))
    got = {f.what: f for f in findings(Store(tmp_path / "store"), board)}
    assert not got["signing keys"].ok and "embedbuild keys new embedbuild-dev" in \
        got["signing keys"].fix
    assert "source linux-6.1" not in got  # the sources come from the plan, which needs keys
    public = tmp_path / "public"
    public.mkdir()
    shutil.copy(session_keys / f"{VBOOT_KEY}.crt", public)
    monkeypatch.setenv("EMBEDBUILD_KEYS", str(public))
    got = {f.what: f for f in findings(Store(tmp_path / "store"), board)}
    assert got["signing keys"].ok and got["private keys"].note
    assert "can verify, not sign" in got["private keys"].detail
    assert "source linux-6.1" in got
