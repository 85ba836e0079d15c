"""Package recipes without building: the registry, dependencies, the shared build
infrastructures' checks, kernel symbols checked in the final config, services a
package offers, and a new package planned with no change to the planner."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from embedbuild.buildsys.common import check_binaries, check_declared
from embedbuild.buildsys.make import MakeRecipe, dotconfig
from embedbuild.elf import TOOLCHAIN_ELF, ar_members, read_elf
from embedbuild.errors import BoardError, ConfigError, EmbedbuildError, StepError
from embedbuild.load import load_board
from embedbuild.packages import registry, userland
from embedbuild.plan import Planner, plan_board
from embedbuild.recipe import REGISTRY, Recipe, closure, recipe
from embedbuild.scheduler import realise
from embedbuild.step import Step
from embedbuild.store import Store


def test_recipes_are_registered_once_by_name():
    reg = registry()
    assert {"busybox", "dropbear", "libnl"} <= set(reg)
    with pytest.raises(RuntimeError, match="package 'dropbear' is registered twice"):
        recipe("dropbear")(type("Again", (MakeRecipe,), {"source": "dropbear"}))
    with pytest.raises(RuntimeError, match="service 'syslogd' is offered by both busybox"):
        recipe("other-syslog")(type("S", (MakeRecipe,), {
            "source": "x", "services": {"syslogd": {"command": "syslogd -n"}}}))
    assert "other-syslog" not in REGISTRY


def test_dependencies_come_first_and_are_libraries():
    reg = registry()
    assert closure(reg, ["busybox", "dropbear"]) == ["busybox", "dropbear"]

    class App(Recipe):
        depends = ("libnl",)

    class NotALib(Recipe):
        depends = ("dropbear",)

    class Loop(Recipe):
        library = True
        depends = ("loop",)

    fake = {**reg, "app": App(), "bad": NotALib(), "loop": Loop()}
    assert closure(fake, ["app"]) == ["libnl", "app"]
    with pytest.raises(BoardError, match="package bad depends on dropbear, which is not a "
                       "library"):
        closure(fake, ["bad"])
    with pytest.raises(BoardError, match="cycle: loop -> loop"):
        closure(fake, ["loop"])
    with pytest.raises(BoardError, match=r"unknown package 'nope'") as e:
        closure(fake, ["nope"])
    assert "busybox, dropbear" in e.value.hint


def test_a_system_is_made_of_base_and_listed_packages():
    assert [r.name for r in userland(["dropbear"])] == ["busybox", "dropbear"]
    assert [r.name for r in userland([])] == ["busybox"]


def test_dotconfig_sets_comments_and_refuses_unknown_names():
    template = ("# hostapd-style .config\nCONFIG_DRIVER_NL80211=y\n#CONFIG_LIBNL32=y\n"
                "CONFIG_DRIVER_WIRED=y\n")
    out = dotconfig(template, {"CONFIG_LIBNL32": "y", "CONFIG_DRIVER_WIRED": None}, "hostapd",
                    new={"CONFIG_TLS": "internal"})
    assert out.splitlines() == ["# hostapd-style .config", "CONFIG_DRIVER_NL80211=y",
                                "CONFIG_LIBNL32=y", "#CONFIG_DRIVER_WIRED=y",
                                "CONFIG_TLS=internal"]
    with pytest.raises(StepError, match="the template names no CONFIG_LIBNL23"):
        dotconfig(template, {"CONFIG_LIBNL23": "y"}, "hostapd")


def test_declared_files_and_nothing_else(tmp_path: Path):
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "dropbear").write_text("x")
    check_declared(tmp_path, ("usr/sbin/*",), "dropbear")
    with pytest.raises(StepError, match="nothing installed matches usr/sbin/dropbearkey"):
        check_declared(tmp_path, ("usr/sbin/dropbear", "usr/sbin/dropbearkey"), "dropbear")
    (tmp_path / "usr" / "share").mkdir()
    (tmp_path / "usr" / "share" / "junk").write_text("x")
    with pytest.raises(StepError, match="does not declare: usr/share/junk"):
        check_declared(tmp_path, ("usr/sbin/*",), "dropbear")


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> Path:
    """Two tiny ARM objects (hard and soft float) and a static library of the first,
    with a member name longer than 15 characters (ar's long-name table)."""
    d = tmp_path_factory.mktemp("objects")
    (d / "f.c").write_text("float twice(float x) { return 2 * x; }\n")
    for prefix, name in (("arm-linux-gnueabihf-", "a-very-long-member-name.o"),
                         ("arm-linux-gnueabi-", "soft.o")):
        subprocess.run([f"{prefix}gcc", "-c", "-Os", "-o", d / name, d / "f.c"], check=True)
    subprocess.run(["ar", "rcD", d / "libhf.a", d / "a-very-long-member-name.o"], check=True)
    return d


def test_static_library_members_and_arm_objects_float_abi(objects: Path):
    [(name, blob)] = ar_members((objects / "libhf.a").read_bytes(), "libhf.a")
    assert name == "a-very-long-member-name.o"
    info = read_elf(blob, name)
    assert info is not None and info.identity == TOOLCHAIN_ELF["arm-linux-gnueabihf-"]
    soft = read_elf((objects / "soft.o").read_bytes(), "soft.o")
    assert soft is not None and soft.identity == TOOLCHAIN_ELF["arm-linux-gnueabi-"]


def test_a_library_of_another_abi_is_refused(objects: Path, tmp_path: Path):
    (tmp_path / "lib").mkdir()
    subprocess.run(["ar", "rcD", tmp_path / "lib" / "libsoft.a", objects / "soft.o"], check=True)
    with pytest.raises(StepError, match=r"libx: /lib/libsoft.a\(soft.o\) is ARM 32-bit "
                       "little-endian soft-float, but the toolchain builds ARM 32-bit "
                       "little-endian hard-float"):
        check_binaries(tmp_path, TOOLCHAIN_ELF["arm-linux-gnueabihf-"], "libx")


def test_a_program_linked_against_glibc_is_refused_in_a_build_against_the_libc_recipe(
        tmp_path: Path):
    """The class of libubootenv's CMake build that took the cross gcc as installed: its
    fw_printenv, compiled against musl's headers, linked glibc's start files and libc."""
    (tmp_path / "main.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    subprocess.run(["arm-linux-gnueabihf-gcc", "-static", "-Os", "-o",
                    tmp_path / "usr" / "bin" / "prog", tmp_path / "main.c"], check=True)
    (tmp_path / "main.c").unlink()
    info = read_elf((tmp_path / "usr" / "bin" / "prog").read_bytes(), "prog")
    assert info is not None and info.glibc_start
    want = TOOLCHAIN_ELF["arm-linux-gnueabihf-"]
    check_binaries(tmp_path, want, "libx")  # a package built against the toolchain's own
    with pytest.raises(StepError, match=r"libx: /usr/bin/prog was linked against the "
                       "toolchain's glibc, not the board's userland C library"):
        check_binaries(tmp_path, want, "libx", libc=True)


def _config_step(text: str) -> Step:
    return Step("kconfig", "test-kconfig", 1, {"text": text},
                lambda ctx: ctx.output("config").write_text(text), outputs={"config": ".config"})


def test_kernel_symbols_a_package_needs_are_checked_in_the_final_config(tmp_path: Path):
    board = load_board("qemu-arm-virt")
    planner = Planner(board)
    planner.steps["kconfig"] = _config_step("CONFIG_UNIX=y\nCONFIG_INET=y\nCONFIG_NET=y\n"
                                            "CONFIG_BINFMT_ELF=y\nCONFIG_MTD=y\n"
                                            "# CONFIG_UNIX98_PTYS is not set\n")
    with pytest.raises(ConfigError) as e:
        realise(Store(tmp_path / "s"), planner.get("kernel-needs"))
    err = e.value
    assert "package dropbear needs CONFIG_UNIX98_PTYS=y, but the kernel of qemu-arm-virt " \
        "has it not set" in err.message
    assert err.where == str(board.dir / "kernel.config")
    assert "add CONFIG_UNIX98_PTYS=y to" in err.hint
    good = Planner(board)
    good.steps["kconfig"] = _config_step("CONFIG_UNIX=y\nCONFIG_INET=y\nCONFIG_BINFMT_ELF=y\n"
                                         "CONFIG_UNIX98_PTYS=y\nCONFIG_MTD=y\n")
    step = good.get("kernel-needs")
    report = (realise(Store(tmp_path / "s"), step)[step.key] / "kernel-needs.txt").read_text()
    assert "dropbear: CONFIG_UNIX98_PTYS=y (final: y)" in report


def test_a_shared_kernel_names_the_owners_fragment():
    from embedbuild.steps.kernel_needs import fragment_to_edit

    board = load_board("qemu-aarch64-virt")
    owner = board.kernel_board
    assert owner.name == "odroid-go2"
    assert fragment_to_edit(owner) == [f for f in owner.kernel.fragments
                                       if f.parent == owner.dir][-1]


@pytest.fixture
def tool_recipe() -> Iterator[str]:
    """A program recipe added for one test: what a new module in embedbuild/packages/
    does by being imported."""
    registry()

    @recipe("tool")
    class Tool(MakeRecipe):
        """A test tool."""

        source = "dropbear"
        depends = ("libnl",)
        installs = ("usr/bin/tool",)
        kernel: ClassVar[dict] = {"PACKET": "y"}
        services: ClassVar[dict] = {"tool": {"command": "tool --serve", "output": "syslog"}}

    try:
        yield "tool"
    finally:
        del REGISTRY["tool"]


def test_a_new_package_is_planned_without_touching_the_planner(tool_recipe: str, boards: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('packages = ["dropbear", "libubootenv"]',
                                             'packages = ["dropbear", "libubootenv", "tool"]')
                    + '\n[[system.services]]\nuse = "tool"\n')
    board = load_board(str(boards / "qemu-arm-virt"))
    [svc] = [s for s in board.system.services if s.name == "tool"]
    assert (svc.command, svc.output) == ("tool --serve", "syslog")
    plan = plan_board(board)
    segments = [s.inputs["origin"] for role, s in plan.steps.items() if role.startswith("segment")]
    assert segments[:5] == ["the generated files (init and config)", "busybox",
                            "package dropbear", "package libubootenv", "package tool"]
    assert plan.steps["tool"].deps["lib-libnl"] is plan.steps["libnl"]
    assert ["package tool", "PACKET", "y"] in plan.steps["kernel-needs"].inputs["needs"]


def test_a_service_of_a_package_the_system_does_not_list(tool_recipe: str, boards: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text() + '\n[[system.services]]\nuse = "tool"\n')
    with pytest.raises(EmbedbuildError, match="service 'tool' uses the default of package "
                       "tool, which packages does not list"):
        load_board(str(boards / "qemu-arm-virt"))


def test_a_data_package_compiles_nothing(tmp_path: Path):
    """A package of data files (a regulatory database): make_args None runs no make (its
    Makefile here would fail), the install hook takes the files, the declared one is
    checked."""
    import hashlib
    import io
    import tarfile

    from embedbuild.model.source import Source

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("db/Makefile", b"all:\n\tfalse\n"), ("db/x.db", b"data\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "db.tar").write_bytes(buf.getvalue())
    src = Source(file=tmp_path / "db.tar", sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    registry()

    @recipe("dataset")
    class Dataset(MakeRecipe):
        """A file for the image, nothing to compile."""

        source = "dataset"
        make_args = None
        installs = ("lib/firmware/x.db",)

        def install(self, ctx, build, root, target, env):
            (root / "lib" / "firmware").mkdir(parents=True)
            (root / "lib" / "firmware" / "x.db").write_bytes((build / "x.db").read_bytes())

    try:
        board = load_board("qemu-arm-virt")
        board = board.model_copy(update={"sources": {**board.sources, "dataset": src}})
        step = Planner(board).package("dataset")
        item = realise(Store(tmp_path / "s"), step)[step.key]
        assert (item / "root" / "lib" / "firmware" / "x.db").read_bytes() == b"data\n"
    finally:
        del REGISTRY["dataset"]
