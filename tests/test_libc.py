"""The userland's C library: musl as a recipe every compiling package builds against
(without naming any package), the path-free specs that make the cross gcc use it, the
toolchain's glibc as the other choice, and dropbear's password logins only where a
system gives root a password and the libc has crypt().

The slow tests at the end use what the MIPS and arm builds already made (CI cost: a
few seconds), and one dropbear build with password logins for big-endian MIPS (about
a minute, on top of musl and dropbear's source that the MIPS boards built).
Measured under a load of about 15 (nice 15): the two userland checks 11 s and 7 s, the
dropbear build with password logins 167 s.
musl itself is built once per toolchain by the boards' builds (about 100 CPU-seconds
each, see README "The C library")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import cli

from embedbuild.buildsys.common import cross_env, library_deps
from embedbuild.buildsys.libc import SPECS, libc_cc, specs
from embedbuild.buildsys.make import MakeRecipe
from embedbuild.elf import TOOLCHAIN_ELF, read_elf
from embedbuild.load import load_board
from embedbuild.packages import registry
from embedbuild.packages.dropbear import local_options
from embedbuild.plan import Planner
from embedbuild.recipe import REGISTRY, recipe
from embedbuild.rootfs.generated import generated_entries
from embedbuild.scheduler import realise
from embedbuild.store import Store

HASH = ("$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ./0123456789abcdefghijklmno"
        "pqrstuvwxyzABCDEF")


def _board(name: str = "qemu-malta-be", **system):
    b = load_board(name)
    if system:
        b = b.model_copy(update={"system": b.system.model_copy(update=system)})
    return b


def test_every_compiling_recipe_builds_against_the_boards_libc():
    planner = Planner(_board())
    assert planner.target.libc == "musl"
    for name in ("busybox", "dropbear", "libnl"):
        step = planner.package(name)
        assert step.deps["lib-musl"] is planner.package("musl"), name
    # libnl's users get musl once, before libnl.
    assert list(library_deps(registry()["libnl"], planner.target)) == ["lib-musl"]
    musl = planner.package("musl")
    assert not [r for r in musl.deps if r.startswith("lib-")]  # the bare cross compiler


def test_a_new_program_gets_the_libc_without_naming_it_and_a_data_package_does_not():
    registry()

    @recipe("tool")
    class Tool(MakeRecipe):
        source = "dropbear"
        make_args = ("tool",)

    @recipe("data")
    class Data(MakeRecipe):
        source = "dropbear"
        make_args = None

    try:
        planner = Planner(_board())
        assert "lib-musl" in planner.package("tool").deps
        assert "lib-musl" not in planner.package("data").deps
    finally:
        del REGISTRY["tool"], REGISTRY["data"]


def test_glibc_is_the_toolchains_own(tmp_path: Path):
    b = load_board("qemu-malta-be")
    b = b.model_copy(update={"userland": b.userland.model_copy(update={"libc": "glibc"})})
    planner = Planner(b)
    assert planner.target.libc is None
    assert not [r for r in planner.package("dropbear").deps if r.startswith("lib-")]
    tc = planner.tc
    assert cross_env(tc, None)["CC"] == "mips-linux-gnu-gcc"
    assert cross_env(tc, tmp_path, libc=True)["CC"] == libc_cc(tc, tmp_path) == (
        f"mips-linux-gnu-gcc --sysroot={tmp_path} -specs={tmp_path}/{SPECS}")


def test_the_specs_name_no_folder():
    text = specs()
    # Every path is the sysroot's (%R) or gcc's own (%s): the same bytes in every store.
    assert "/" not in re.sub(r"%R(/[\w.-]+)+", "", text)
    assert "-nostdlib" in text and "%{!static:-static}" in text and "-nostdinc" in text


def test_password_logins_only_when_the_system_gives_root_a_password():
    default = Planner(_board())
    step = default.package("dropbear")
    assert "#define DROPBEAR_SVR_PASSWORD_AUTH 0" in step.inputs["options"]
    shadow = next(e for e in generated_entries(default.board.system, "b")
                  if e.path == "etc/shadow")
    assert shadow.data == b"root:*:0:0:99999:7:::\n" and shadow.mode == 0o600
    with_pw = Planner(_board(root_password_hash=HASH))
    assert "#define DROPBEAR_SVR_PASSWORD_AUTH 1" in \
        with_pw.package("dropbear").inputs["options"]
    assert with_pw.package("dropbear").key != step.key
    shadow = next(e for e in generated_entries(with_pw.board.system, "b")
                  if e.path == "etc/shadow")
    assert shadow.data == f"root:{HASH}:0:0:99999:7:::\n".encode()
    assert local_options(False).count(b"PASSWORD_AUTH 0") == 1


# -- built ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-malta-be", "qemu-arm-virt"])
def test_the_userland_is_static_musl_of_the_boards_identity(board: str, session_store: Path,
                                                            tmp_path: Path):
    r = cli("build", board, "--step", "busybox", "--out-link", str(tmp_path / "bb"),
            store=session_store)
    assert r.code == 0, r.err
    exe = (tmp_path / "bb" / "root" / "bin" / "busybox").read_bytes()
    info = read_elf(exe, "busybox")
    b = load_board(board)
    assert info is not None and info.identity == TOOLCHAIN_ELF[b.cross_compile]
    assert info.interpreter is None and info.needed == ()
    assert b"GLIBC" not in exe and b"glibc" not in exe.lower()
    # The specs left the toolchain's glibc out of the link: musl's own strings are there.
    assert b"/etc/passwd" in exe and len(exe) < 1_800_000
    step = Planner(b).package("musl")
    stage = Store(session_store).item_path(step.key, step.name) / "stage"
    assert (stage / "include" / "linux" / "if.h").is_file()
    assert b"musl" not in (stage / SPECS).read_bytes()


@pytest.mark.slow
def test_dropbear_with_password_logins_builds_against_musls_crypt(session_store: Path):
    planner = Planner(_board(root_password_hash=HASH))
    step = planner.package("dropbear")
    item = realise(Store(session_store), step)[step.key]
    exe = item / "root" / "usr" / "sbin" / "dropbear"
    strings = subprocess.run(["strings", exe], capture_output=True, text=True,
                             check=True).stdout
    assert "Bad password attempt" in strings
    default = Planner(_board()).package("dropbear")
    plain = Store(session_store).item_path(default.key, default.name) / "root" / "usr" / \
        "sbin" / "dropbear"
    if plain.exists():
        assert b"Bad password attempt" not in plain.read_bytes()
