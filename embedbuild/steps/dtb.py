"""The board's device tree: its own .dts compiled with the kernel's dtc and include
paths (with the flash partitions generated from board.toml), or an in-tree DTB target
made by the kernel's own Makefile. A step of its own, apart from the kernel, so that
boards sharing one kernel each get their own DTB."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path

from embedbuild.errors import BoardError, StepError
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.steps.kernel import BOOT_DIR
from embedbuild.store import hash_file
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

FLASH_DTSI = "embedbuild-flash.dtsi"


def dtb_step(board: Board, tree: Step, config: Step, tc: Toolchain) -> Step:
    """The compiled DTB (output ``dtb``), from the board's dts or in-tree dtb."""
    if board.kernel.dtb is not None:
        return _in_tree_step(board, board.kernel.dtb, tree, config, tc)
    dts = board.kernel.dts
    assert dts is not None
    local = sorted(p for p in dts.parent.iterdir() if p.suffix in (".dts", ".dtsi", ".h"))

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        shutil.copyfile(ctx.input("config", "config"), b / ".config")
        ctx.run.run(tc.make(src, b, "scripts_dtc"), env=REPRODUCIBLE_ENV,
                    what="building the kernel's dtc")
        (b / FLASH_DTSI).write_text(flash_dtsi(board))
        pre = b / f"{dts.stem}.dts.pp"
        includes = [b, src / "include", src / "arch" / board.arch.value / "boot" / "dts",
                    dts.parent]
        with _lifted_errors(r"^(\S+?):(\d+):\d+: (?:fatal )?error: (.*)$"):
            ctx.run.run(["gcc", "-E", "-nostdinc", "-undef", "-D__DTS__", "-x",
                         "assembler-with-cpp", *[f"-I{d}" for d in includes], "-o", pre, dts],
                        what=f"preprocessing {dts.name}")
        with _lifted_errors(r"Error: (\S+?):(\d+)\.\d+(?:-[\d.]+)?:? (.*)"):
            ctx.run.run([b / "scripts" / "dtc" / "dtc", "-q", "-O", "dtb", "-b", "0",
                         "-i", dts.parent, "-o", ctx.output("dtb"), pre],
                        what=f"dtc {dts.name}")

    return Step(
        kind="dtb",
        name=f"{board.name}-dtb",
        version=1,
        inputs={
            "dts": dts.name,
            "files": {p.name: hash_file(p) for p in local},
            "arch": board.arch.value,
            "hostcc": tc.identity()["hostcc"],
        } | ({"flash": board.flash.model_dump(mode="json")} if board.flash else {}),
        deps={"tree": tree, "config": config},
        build=build,
        outputs={"dtb": f"{dts.stem}.dtb"},
    )


def _in_tree_step(board: Board, target: str, tree: Step, config: Step, tc: Toolchain) -> Step:
    """``make TARGET`` in a build folder configured like the kernel's: the kernel's
    Makefile preprocesses the .dts with the cross compiler and compiles it with its dtc."""

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        check_dtb_target(src, board, target)
        shutil.copyfile(ctx.input("config", "config"), b / ".config")
        ctx.run.run(tc.make(src, b, target, jobs=ctx.jobs), env=REPRODUCIBLE_ENV,
                    what=f"make {target}")
        shutil.copyfile(b / BOOT_DIR[board.arch.value] / "dts" / target, ctx.output("dtb"))

    return Step(
        kind="dtb-in-tree",
        name=f"{board.name}-dtb",
        version=1,
        inputs={"target": target, "arch": board.arch.value, "toolchain": tc.identity()},
        deps={"tree": tree, "config": config},
        build=build,
        outputs={"dtb": Path(target).name},
        jobs=2,
    )


def check_dtb_target(src: Path, board: Board, dtb: str) -> None:
    """An in-tree DTB target must have its .dts in the tree: say so naming board.toml's
    key, not through make's 'No rule to make target'."""
    dts_dir = src / BOOT_DIR[board.arch.value] / "dts"
    if (dts_dir / dtb).with_suffix(".dts").is_file():
        return
    known = [str(p.relative_to(dts_dir).with_suffix(".dtb")) for p in dts_dir.rglob("*.dts")]
    close = difflib.get_close_matches(dtb, known, n=3, cutoff=0.6)
    raise BoardError(
        f"kernel.dtb {dtb!r}: this kernel has no {BOOT_DIR[board.arch.value]}/dts/"
        f"{Path(dtb).with_suffix('.dts')}",
        where=str(board.dir / "board.toml"),
        hint=(f"did you mean {' or '.join(close)}? " if close else "")
        + "DTB targets are relative to the arch's dts folder (arm64 includes the vendor "
        "folder, e.g. rockchip/rk3326-odroid-go2.dtb)")


class _lifted_errors:
    """Turn a failed tool's first error line (file:line: what) into the message itself,
    so the cause is not only in the log's tail."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern, re.M)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not isinstance(exc, StepError):
            return False
        m = self.pattern.search(exc.log_tail or "")
        if m is None:
            return False
        raise StepError(f"device tree error: {m.group(3).strip()}",
                        where=f"{m.group(1)}:{m.group(2)}",
                        hint="fix the device tree source at that line",
                        log_tail=exc.log_tail, log_path=exc.log_path) from None


def flash_dtsi(board: Board) -> str:
    """The flash partitions node, generated from board.toml so the layout lives in one place.
    A board's .dts includes it (#include "embedbuild-flash.dtsi") after its flash node."""
    if board.flash is None:
        return "/* no [flash] in board.toml */\n"
    lines = ["/* Generated by embedbuild from board.toml [flash]. */",
             f"&{board.flash.dt_label} {{", "\tpartitions {",
             '\t\tcompatible = "fixed-partitions";',
             "\t\t#address-cells = <1>;", "\t\t#size-cells = <1>;"]
    for p in board.flash.partitions:
        lines += [f"\t\tpartition@{p.offset:x} {{", f'\t\t\tlabel = "{p.name}";',
                  f"\t\t\treg = <0x{p.offset:x} 0x{p.size:x}>;"]
        if p.read_only:
            lines.append("\t\t\tread-only;")
        lines.append("\t\t};")
    return "\n".join([*lines, "\t};", "};", ""])

