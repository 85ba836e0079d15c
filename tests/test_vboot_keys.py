"""`embedbuild keys`, signing a FIT without the private key entering the store, the
control DTB with the keys, and the U-Boot options verified boot cannot live with."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import cli, run_main
from vboot_fits import make_fit

from embedbuild import fdt
from embedbuild.command import Runner
from embedbuild.errors import StepError
from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.steps.fit_sign import sign
from embedbuild.steps.uboot_control import check_keys, signature_dts
from embedbuild.vboot import keys, uboot_config
from embedbuild.vboot.verify import keyring_from_dtb, keyring_from_keys, verify

ROOT = Path(__file__).resolve().parent.parent
SIGNING = '[signing]\nkeys = ["embedbuild-dev"]\nversion = 1'
RSA2048 = "sha256,rsa2048"
needs_tools = pytest.mark.skipif(not shutil.which("mkimage") or not shutil.which("dtc"),
                                 reason="needs mkimage (u-boot-tools) and dtc")


def run_keys(tmp_path: Path, *args: str, keydir: Path | None = None):
    return run_main("keys", "--keydir", str(keydir or tmp_path / "keys"), *args,
                    store=tmp_path / "store")


# -- the key folder ------------------------------------------------------------------


def test_new_makes_a_private_key_only_its_owner_reads(tmp_path):
    r = run_keys(tmp_path, "new", "dev")
    assert r.code == 0, r.err
    folder = tmp_path / "keys"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "dev.key").stat().st_mode) == 0o600
    assert (folder / "dev.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    info = keys.key_info(folder, "dev")
    assert info.public.algo == RSA2048 and not info.problems
    assert info.fingerprint in r.out
    # Never overwritten: the old key stays the one that signed what devices trust.
    before = (folder / "dev.key").read_bytes()
    again = run_keys(tmp_path, "new", "dev")
    assert again.code == 1 and "exists already" in again.err
    assert (folder / "dev.key").read_bytes() == before


@pytest.mark.parametrize("name", ["key@1", "a/b", "x" * 64, "dé", ".hidden"])
def test_names_u_boot_cannot_take_are_refused(tmp_path, name):
    r = run_keys(tmp_path, "new", name)
    assert r.code == 1 and "is not a usable key name" in r.err
    assert "Traceback" not in r.err and not (tmp_path / "keys").exists()
    with pytest.raises(keys.SigningKeyError):
        keys.check_name("-" + name)


def test_keys_never_go_into_a_repository_or_the_store(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    r = run_keys(tmp_path, "new", "dev", keydir=repo / "keys")
    assert r.code == 1 and "inside the git work tree" in r.err
    r = cli("keys", "--keydir", str(tmp_path / "store" / "keys"), "new", "dev",
            store=tmp_path / "store")
    assert r.code == 1 and "whose contents are shared" in r.err
    assert not (repo / "keys").exists() and not (tmp_path / "store" / "keys").exists()


def test_show_lists_keys_and_flags_a_readable_private_key(tmp_path):
    run_keys(tmp_path, "new", "dev")
    (tmp_path / "keys" / "other.crt").write_bytes((tmp_path / "keys" / "dev.crt").read_bytes())
    r = run_keys(tmp_path, "show")
    assert r.code == 0, r.err
    assert "dev " in r.out and "private key ok" in r.out
    assert "other" in r.out and "no private key (verify only)" in r.out
    (tmp_path / "keys" / "dev.key").chmod(0o644)
    r = run_keys(tmp_path, "show")
    assert r.code == 1
    assert "dev: dev.key is mode 0644: others can read it (chmod 600)" in r.err
    r = run_keys(tmp_path, "show", "nope")
    assert r.code == 1 and "no key 'nope'" in r.err and "keys new nope" in r.err


def test_rotate_makes_the_next_generation_beside_the_old(tmp_path):
    run_keys(tmp_path, "new", "dev", "--bits", "3072")
    r = run_keys(tmp_path, "rotate", "dev")
    assert r.code == 0, r.err
    assert "made dev-2 beside dev" in r.out and 'required_mode = "any"' in r.out
    r = run_keys(tmp_path, "rotate", "dev-2")
    assert "made dev-3 beside dev-2" in r.out
    folder = tmp_path / "keys"
    assert keys.names(folder) == ["dev", "dev-2", "dev-3"]
    assert {keys.load_public(folder, n).bits for n in keys.names(folder)} == {3072}
    assert len({keys.load_public(folder, n).n for n in keys.names(folder)}) == 3
    r = run_keys(tmp_path, "show", "dev-3")
    assert "generations:  dev, dev-2, dev-3" in r.out


# -- signing as a step: the private key read at build time, the output checked --------


def _runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "sign.log", __import__("threading").Event())


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keys.new_key(d, "dev")
    keys.new_key(d, "other")
    return d


@needs_tools
def test_signing_is_reproducible_and_checked(keydir, tmp_path):
    """The unsigned FIT (signature nodes, no values) signed twice, from two key folders,
    gives the same bytes: the output is a function of the unsigned FIT and the public
    key (mkimage -F grows the tree otherwise than -f -k in one go: same signature,
    other padding)."""
    unsigned = make_fit(tmp_path / "u", None, [("dev", RSA2048)], name="unsigned.itb")
    pub = [keys.load_public(keydir, "dev")]
    assert not verify(unsigned.read_bytes(), keyring_from_keys(pub), "conf-1").ok
    run = _runner(tmp_path).run
    sign(unsigned, tmp_path / "a.itb", keydir, pub, run)
    moved = tmp_path / "elsewhere" / "keys"
    shutil.copytree(keydir, moved)
    sign(unsigned, tmp_path / "b.itb", moved, pub, run)
    direct = make_fit(tmp_path / "d", keydir, [("dev", RSA2048)])
    assert (tmp_path / "a.itb").read_bytes() == (tmp_path / "b.itb").read_bytes()
    sig = "/configurations/conf-1/signature-1"
    assert fdt.tree((tmp_path / "a.itb").read_bytes())[sig]["value"] == \
        fdt.tree(direct.read_bytes())[sig]["value"]
    assert verify((tmp_path / "a.itb").read_bytes(), keyring_from_keys(pub), "conf-1").ok
    # Nothing of the key folder is in the image.
    secret = (keydir / "dev.key").read_bytes()
    assert secret not in (tmp_path / "a.itb").read_bytes()


@needs_tools
def test_signing_refuses_what_would_not_verify(keydir, tmp_path):
    unsigned = make_fit(tmp_path / "u", None, [("dev", RSA2048)], name="unsigned.itb")
    pub = [keys.load_public(keydir, "dev")]
    run = _runner(tmp_path).run
    # The private key is missing: mkimage alone would leave the node unsigned, exit 0.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(keydir / "dev.crt", bare)
    with pytest.raises(StepError, match=r"cannot sign with dev: no dev\.key in"):
        sign(unsigned, tmp_path / "x.itb", bare, pub, run)
    # A private key others can read.
    loose = tmp_path / "loose"
    shutil.copytree(keydir, loose)
    (loose / "dev.key").chmod(0o640)
    with pytest.raises(StepError, match="can be read by others"):
        sign(unsigned, tmp_path / "x.itb", loose, pub, run)
    # dev.key is not the private half of dev.crt: signed, but by the wrong key.
    swapped = tmp_path / "swapped"
    shutil.copytree(keydir, swapped)
    shutil.copy(keydir / "other.key", swapped / "dev.key")
    with pytest.raises(StepError, match=r"signing did not produce a valid image: x\.itb: "
                       r"configuration conf-1: required key dev: signature-1: does not verify"):
        sign(unsigned, tmp_path / "x.itb", swapped, pub, run)
    # A planned key that is not the one in the folder any more.
    with pytest.raises(StepError, match="is not the key dev this build was planned with"):
        sign(unsigned, tmp_path / "x.itb", keydir, [keys.load_public(keydir, "other")
                                                    .__class__("dev", keys.load_public(
                                                        keydir, "other").n)], run)


# -- the control DTB ---------------------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("mode", ["all", "any"])
def test_control_dtb_holds_the_keys_u_boot_checks(keydir, tmp_path, mode):
    """The /signature node we write into a control .dts reads back as the keyring, and
    a FIT mkimage signed verifies against it."""
    pub = [keys.load_public(keydir, n) for n in ("dev", "other")]
    dts = tmp_path / "control.dts"
    dts.write_text("/dts-v1/;\n/ { model = \"test\"; };\n" + signature_dts(pub, mode))
    dtb = tmp_path / "control.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", dtb, dts], check=True)
    check_keys(dtb, pub, mode)
    ring = keyring_from_dtb(dtb.read_bytes())
    assert ring.required_mode == mode and [k.name for k in ring.keys] == ["dev", "other"]
    fit = make_fit(tmp_path / "f", keydir, [("other", RSA2048)])
    assert verify(fit.read_bytes(), ring, "conf-1").ok == (mode == "any")
    with pytest.raises(StepError, match=r"unexpected other, missing none"):
        check_keys(dtb, pub[:1], mode)


def test_u_boot_options_that_defeat_verified_boot():
    good = {"FIT_SIGNATURE": "y", "RSA": "y", "OF_SEPARATE": "y", "LEGACY_IMAGE_FORMAT": "n"}
    assert uboot_config.problems(good) == []
    debian = {**good, "LEGACY_IMAGE_FORMAT": "y", "OF_BOARD": "y", "CMD_BOOTZ": "y",
              "SUPPORT_RAW_INITRD": "y", "EFI_LOADER": "y", "CMD_SOURCE": "y", "CMD_PXE": "y",
              "CMD_SYSBOOT": "y", "CMD_ELF": "y", "CMD_GO": "y",
              "BOOTCOMMAND": '"run distro_bootcmd"'}
    found = uboot_config.problems(debian)
    assert [p.split(":")[0] for p in found] == [
        "CONFIG_LEGACY_IMAGE_FORMAT=y", "CONFIG_OF_BOARD=y", "CONFIG_SUPPORT_RAW_INITRD=y",
        "CONFIG_CMD_BOOTZ=y", "CONFIG_EFI_LOADER=y", "CONFIG_CMD_SOURCE=y", "CONFIG_CMD_PXE=y",
        "CONFIG_CMD_SYSBOOT=y", "CONFIG_CMD_ELF=y", "CONFIG_CMD_GO=y",
        'CONFIG_BOOTCOMMAND="run distro_bootcmd"']
    assert uboot_config.problems({**good, "BOOTCOMMAND": '"bootflow scan -lb"'}) == [
        'CONFIG_BOOTCOMMAND="bootflow scan -lb": the unattended boot runs bootflow, which '
        "boots from every disk and the network with unsigned command lines"]
    assert uboot_config.problems({}) == [
        f"CONFIG_{s} is off: {why}" for s, why in uboot_config.NEEDED.items()]


# -- the board's [signing] -----------------------------------------------------------------


def _vboot_board(tmp_path: Path, signing: str) -> Path:
    """A copy of the project's boards with qemu-arm-vboot's [signing] replaced."""
    boards = tmp_path / "boards"
    shutil.copytree(ROOT / "boards", boards)
    toml = boards / "qemu-arm-vboot" / "board.toml"
    text = toml.read_text()
    assert SIGNING in text
    toml.write_text(text.replace(SIGNING, signing))
    return boards / "qemu-arm-vboot"


@pytest.mark.parametrize(("signing", "message"), [
    ('[signing]\nkeys = []', "signing.keys"),
    ('[signing]\nkeys = ["a", "a"]', "a key is listed twice"),
    ('[signing]\nkeys = ["a", "b"]\nsign_with = ["a"]',
     'with required_mode = "all" every key must sign (sign_with leaves out b)'),
    ('[signing]\nkeys = ["a"]\nsign_with = ["c"]', "sign_with names c, which keys does not"),
    ('[signing]\nkeys = ["a@1"]', "signing.keys"),
    ('[signing]\nkeys = ["a"]\nrequired_mode = "some"', "signing.required_mode"),
])
def test_signing_table_refusals(tmp_path, signing, message):
    r = run_main("show", str(_vboot_board(tmp_path, signing)), store=tmp_path / "store")
    assert r.code == 1 and message in r.err, r.err
    assert "Traceback" not in r.err


def test_planning_needs_the_public_key_not_the_private_one(tmp_path, monkeypatch):
    board = _vboot_board(tmp_path, '[signing]\nkeys = ["dev", "dev-2"]\n'
                         'required_mode = "any"\nsign_with = ["dev-2"]')
    folder = tmp_path / "keys"
    monkeypatch.setenv("EMBEDBUILD_KEYS", str(folder))
    r = run_main("build", str(board), "--step", "uboot", "--offline",
                 store=tmp_path / "store", env={"EMBEDBUILD_KEYS": str(folder)})
    # The FIT's signer is asked for first.
    assert r.code == 1 and "no key 'dev-2'" in r.err and "signing.sign_with" in r.err
    keys.new_key(folder, "dev")
    keys.rotate(folder, "dev")
    for name in ("dev", "dev-2"):
        (folder / f"{name}.key").unlink()  # a machine that verifies only
    plan = plan_board(load_board(str(board)))
    control = plan.steps["uboot"]
    assert control.kind == "uboot-control" and plan.steps["uboot-build"].kind == "uboot"
    assert [k["name"] for k in control.inputs["keys"]] == ["dev", "dev-2"]
    assert control.inputs["required_mode"] == "any"
    # Another key of the same name is another U-Boot; the compile is the same one.
    (folder / "dev-2.crt").unlink()
    keys.new_key(folder, "dev-2")
    again = plan_board(load_board(str(board)))
    assert again.steps["uboot"].key != control.key
    assert again.steps["uboot-build"].key == plan.steps["uboot-build"].key


@needs_tools
def test_check_command(keydir, tmp_path):
    """`keys check`: U-Boot's verdict on the host, one line either way."""
    good = make_fit(tmp_path / "g", keydir, [("dev", RSA2048)])
    r = run_main("keys", "--keydir", str(keydir), "check", str(good), "--key", "dev",
                 store=tmp_path / "store")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == f"{good}: configuration conf-1: signed by dev"
    r = run_main("keys", "--keydir", str(keydir), "check", str(good), "--key", "other",
                 store=tmp_path / "store")
    assert r.code == 1 and r.own_err.startswith(f"error: {good}: configuration conf-1: "
                                            "required key other: signature-1: ")
    unsigned = make_fit(tmp_path / "u", None, [])
    keyless = tmp_path / "keyless.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", keyless, "-"],
                   input=b"/dts-v1/; / { };", check=True)
    r = run_main("keys", "check", str(unsigned), "--dtb", str(keyless), store=tmp_path / "s")
    assert r.code == 1 and "requires no configuration signature" in r.err
    r = run_main("keys", "check", str(unsigned), "--dtb", str(keyless), "--as-uboot",
                 store=tmp_path / "s")
    assert r.code == 0 and "signed by no key (none required)" in r.out
