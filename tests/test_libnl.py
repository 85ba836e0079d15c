"""The libnl recipe, the first package of the access point: cross-built for the arm
and big-endian MIPS boards into static libraries of the board's ELF identity, the
same bytes in any store, and linked by a program through the staging sysroot (a
test-only recipe standing in for hostapd)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from embedbuild.buildsys.make import MakeRecipe
from embedbuild.elf import TOOLCHAIN_ELF, ar_members, read_elf
from embedbuild.load import load_board
from embedbuild.model.source import Source
from embedbuild.packages import registry
from embedbuild.plan import Planner
from embedbuild.recipe import REGISTRY, recipe
from embedbuild.scheduler import realise
from embedbuild.store import Store

pytestmark = pytest.mark.slow
LIBS = ("libnl-3", "libnl-genl-3")


def _built(board: str, store: Path, role: str = "libnl", extra_sources: dict | None = None):
    b = load_board(board)
    if extra_sources:
        b = b.model_copy(update={"sources": {**b.sources, **extra_sources}})
    planner = Planner(b)
    step = planner.package(role)
    return b, step, realise(Store(store), step)[step.key]


@pytest.mark.parametrize("board", ["qemu-arm-virt", "qemu-malta-be"])
def test_libnl_stages_static_libraries_of_the_boards_identity(board: str, session_store: Path):
    b, _, item = _built(board, session_store)
    want = TOOLCHAIN_ELF[b.cross_compile]
    stage = item / "stage"
    for lib in LIBS:
        members = ar_members((stage / "lib" / f"{lib}.a").read_bytes(), lib)
        assert len(members) >= 4, [n for n, _ in members]
        for name, blob in members:
            info = read_elf(blob, name)
            assert info is not None and info.identity == want, (name, info)
        assert (stage / "lib" / "pkgconfig" / f"{lib}.0.pc").is_file()
    assert (stage / "include" / "libnl3" / "netlink" / "genl" / "genl.h").is_file()
    # Static libraries only: nothing of libnl goes into the image by itself, and libtool's
    # archives (.la, with their install paths) are not staged.
    assert not any((item / "root").iterdir())
    assert not list(stage.rglob("*.la"))


def test_libnl_is_the_same_in_another_store(session_store: Path, tmp_path: Path):
    _, step, item = _built("qemu-malta-be", session_store)
    _, again, other = _built("qemu-malta-be", tmp_path / "store")
    assert again.key == step.key and other != item
    for lib in LIBS:
        a = (item / "stage" / "lib" / f"{lib}.a").read_bytes()
        assert a == (other / "stage" / "lib" / f"{lib}.a").read_bytes()


@pytest.fixture
def nlprobe(tmp_path: Path) -> Iterator[Source]:
    """A test-only program recipe that depends on libnl (what hostapd's will do), and
    its source as a pinned local archive; unregistered afterwards."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:  # no dates: the same archive each run
        for f in sorted((ROOT / "tests" / "data" / "nlprobe").iterdir()):
            info = tarfile.TarInfo(f"nlprobe/{f.name}")
            info.size, info.mode = f.stat().st_size, 0o644
            tf.addfile(info, io.BytesIO(f.read_bytes()))
    archive = tmp_path / "nlprobe.tar"
    archive.write_bytes(buf.getvalue())
    registry()

    @recipe("nlprobe")
    class NlProbe(MakeRecipe):
        """Resolves nl80211 over generic netlink."""

        source = "nlprobe"
        depends = ("libnl",)
        make_args = ("PKG_CONFIG=pkg-config",)
        installs = ("usr/bin/nlprobe",)

        def install(self, ctx, build, root, target, env):
            (root / "usr" / "bin").mkdir(parents=True)
            (root / "usr" / "bin" / "nlprobe").write_bytes((build / "nlprobe").read_bytes())

    try:
        yield Source(file=archive, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    finally:
        del REGISTRY["nlprobe"]


@pytest.mark.parametrize("board", ["qemu-arm-virt", "qemu-malta-be"])
def test_a_program_links_libnl_statically_through_the_staging_sysroot(
        board: str, nlprobe: Source, tmp_path: Path, session_store: Path):
    b, lib_step, _ = _built(board, session_store)
    b, step, item = _built(board, session_store, "nlprobe", {"nlprobe": nlprobe})
    assert step.deps["lib-libnl"].key == lib_step.key
    exe = (item / "root" / "usr" / "bin" / "nlprobe").read_bytes()
    info = read_elf(exe, "nlprobe")
    assert info is not None and info.identity == TOOLCHAIN_ELF[b.cross_compile]
    assert info.interpreter is None and info.needed == ()  # static
    # libnl's code is in it (genl_connect's error strings come from libnl-3).
    assert b"nlprobe: nl80211 family" in exe
