"""Board -> the graph of steps that builds it (planning only: nothing runs here)."""

from __future__ import annotations

from dataclasses import dataclass

from embedbuild.errors import BoardError
from embedbuild.model.board import Board
from embedbuild.model.system import System
from embedbuild.plan import Step, cores
from embedbuild.rootfs import elf_identity, generated_entries, overlay_entries, sysroot_dirs
from embedbuild.steps import initramfs as ir
from embedbuild.steps import kernel as k
from embedbuild.steps.busybox import busybox_step
from embedbuild.steps.dropbear import dropbear_step
from embedbuild.steps.dtbcheck import driver_index_step, dtb_check_step
from embedbuild.steps.patch import patched_step
from embedbuild.steps.result import result_step
from embedbuild.steps.source import unpack_step
from embedbuild.steps.uboot import uboot_steps
from embedbuild.toolchain import Toolchain


@dataclass
class Plan:
    """The steps of one board's build, by role."""

    board: Board
    steps: dict[str, Step]

    @property
    def result(self) -> Step:
        return self.steps["result"]


def plan_board(board: Board) -> Plan:
    """Make the step graph of a board (and its system, when it has one).

    Reads the board's small files (fragments, patches, dts, overlays) to key
    the steps; fails early on conflicting fragments and colliding overlays."""
    tc = Toolchain(board.cross_compile, board.arch)
    src = board.kernel_source
    steps: dict[str, Step] = {}
    steps["source"] = unpack_step(f"{board.kernel.source}-src", src)
    steps["tree"] = patched_step(
        f"{board.kernel.source}-patched", steps["source"], board.kernel.patches
    )
    steps["kconfig"] = k.config_step(board, steps["tree"], tc, k.fragments_of(board))
    system = board.system
    if system is not None:
        steps |= plan_userland(board, system, tc, steps["kconfig"])
    builtin = system is not None and system.initramfs == "builtin"
    steps["kernel"] = k.kernel_step(board, steps["tree"], steps["kconfig"], tc, cores(),
                                    steps["initramfs"] if builtin else None)
    parts = {"kernel": steps["kernel"]}
    if system is not None:
        parts["sizes"] = steps["initramfs"]
    if system is not None and not builtin:
        parts["initramfs"] = steps["initramfs"]
        parts["initramfs-check"] = steps["initramfs-check"]
    if board.kernel.dts:
        steps["dtb"] = k.dtb_step(board, steps["tree"], steps["kconfig"], tc)
        parts["dtb"] = steps["dtb"]
        steps["driver-index"] = driver_index_step(steps["tree"], board.arch.value)
        steps["dtb-check"] = dtb_check_step(f"{board.name}-dtb-check", steps["tree"],
                                            steps["driver-index"], steps["kconfig"],
                                            steps["dtb"])
        parts["dtb-check"] = steps["dtb-check"]
    if board.kernel.uimage:
        steps["image"] = k.uimage_step(board, steps["kernel"], steps.get("dtb"))
        parts["image"] = steps["image"]
    if board.uboot.build:
        spec = board.uboot.build
        if spec.source not in board.sources:
            raise BoardError(f"uboot.build.source {spec.source!r} is not a known source",
                             where=str(board.dir / "board.toml"),
                             hint="define it in boards/common/sources.toml or [sources]")
        steps["uboot-src"] = unpack_step(f"{spec.source}-src", board.sources[spec.source])
        steps["uboot-config"], steps["uboot"] = uboot_steps(board, steps["uboot-src"], tc,
                                                            cores())
        parts["uboot"] = steps["uboot"]
    steps["result"] = result_step(board, parts)
    return Plan(board, steps)


def plan_userland(board: Board, system: System, tc: Toolchain, kconfig: Step) -> dict[str, Step]:
    """busybox, packages, the generated files and overlays as segments, and their
    concatenation into the initramfs."""
    from embedbuild.load import find_overlay

    if board.userland is None:
        raise BoardError(f"board {board.name} has a system but no [userland] section",
                         where=str(board.dir / "board.toml"),
                         hint="add [userland] busybox = [fragments]")
    steps: dict[str, Step] = {}
    elf = {"identity": elf_identity(board.cross_compile), "libdirs": sysroot_dirs(tc.prefix),
           "board": board.name}
    comp = system.compression
    arch = tc.prefix.rstrip("-")
    for pkg in ("busybox", *system.packages):
        if pkg not in board.sources:
            raise BoardError(f"no source named {pkg!r} for package {pkg}",
                             hint="define it in boards/common/sources.toml")
        steps[f"{pkg}-src"] = unpack_step(f"{pkg}-src", board.sources[pkg])
    frags = {p: p.read_text() for p in board.userland.busybox}
    steps["busybox"] = busybox_step(steps["busybox-src"], tc, frags, f"busybox-{arch}", cores())
    generated = generated_entries(system, board.name)
    owners = {e.path: ("the generated files (init and config)", e.kind) for e in generated}
    # First: it makes the folders the other segments fill.
    segments = [ir.segment_step(
        f"{board.name}-seg-base", "the generated files (init and config)",
        lambda _ctx, g=generated: g, inputs={"entries": ir.digest_entries(generated)},
        deps={}, compression=comp, elf=elf)]
    segments.append(ir.segment_step(f"{board.name}-seg-busybox", "busybox", ir.tree_of("pkg"),
                                inputs={}, deps={"pkg": steps["busybox"]}, compression=comp,
                                elf=elf))
    if "dropbear" in system.packages:
        steps["dropbear"] = dropbear_step(steps["dropbear-src"], tc, f"dropbear-{arch}",
                                          cores())
        segments.append(ir.segment_step(f"{board.name}-seg-dropbear", "package dropbear",
                                        ir.tree_of("pkg"), inputs={},
                                        deps={"pkg": steps["dropbear"]}, compression=comp,
                                        elf=elf))
    where = str(board.dir / "board.toml")
    for name in system.overlays:
        folder, attrs = find_overlay(name, where)
        entries = overlay_entries(folder, attrs)
        origin = f"overlay {name!r}"
        for e in entries:
            other = owners.get(e.path)
            if other and not (e.kind == "dir" and other[1] == "dir"):
                raise BoardError(f"{origin} file /{e.path} collides with /{e.path} of {other[0]}",
                                 where=str(folder / e.path),
                                 hint="remove it from the overlay, or change the system instead")
            owners[e.path] = (origin, e.kind)
        segments.append(ir.segment_step(
            f"{board.name}-seg-overlay-{name}", origin, lambda _ctx, es=entries: es,
            inputs={"entries": ir.digest_entries(entries)}, deps={}, compression=comp, elf=elf))
    for i, seg in enumerate(segments):
        steps[f"segment{i}"] = seg
    steps["initramfs"] = ir.concat_step(f"{board.name}-initramfs", segments, comp)
    if system.initramfs == "separate":
        steps["initramfs-check"] = ir.unpack_check_step(f"{board.name}-initramfs-check",
                                                        kconfig, comp)
    return steps
