"""The FIT image of a board: the kernel and the separate initramfs in one file, each
with a hash, described as data (embedbuild/fit.py), made by mkimage -f from the
rendered .its and checked against the description after mkimage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from embedbuild.bootcmd import FIT_CONFIG
from embedbuild.errors import StepError
from embedbuild.fit import FIT_ARCH, FitConfig, FitDescription, FitImage
from embedbuild.model.board import Board
from embedbuild.step import Context, Step


def fit_addresses(board: Board) -> dict[str, int]:
    """Kernel load and entry, ramdisk load: the board's [kernel.fit], else its [uboot]."""
    fit = board.kernel.fit
    assert fit is not None
    load = fit.load if fit.load is not None else board.uboot.kernel_addr
    ramdisk = fit.ramdisk_load if fit.ramdisk_load is not None else board.uboot.ramdisk_addr
    assert ramdisk is not None  # the model refuses a FIT without one
    return {"load": load, "entry": fit.entry if fit.entry is not None else load,
            "ramdisk": ramdisk}


def describe(board: Board, kernel: str, ramdisk: str) -> FitDescription:
    """The board's FIT: its kernel and initramfs (the files ``kernel`` and ``ramdisk``
    beside the .its), each hashed, in one configuration."""
    fit = board.kernel.fit
    assert fit is not None
    a = fit_addresses(board)
    arch = FIT_ARCH[board.arch.value]
    return FitDescription(
        description=f"embedbuild {board.name}",
        address_cells=2 if board.arch.value == "arm64" else 1,
        images=(
            FitImage("kernel-1", f"Linux {board.kernel.image}", kernel, "kernel", arch,
                     load=a["load"], entry=a["entry"], hashes=(fit.hash,)),
            FitImage("ramdisk-1", "initramfs", ramdisk, "ramdisk", arch, load=a["ramdisk"],
                     hashes=(fit.hash,)),
        ),
        configurations=(FitConfig(FIT_CONFIG, board.name, kernel="kernel-1",
                                  ramdisk="ramdisk-1"),),
        default=FIT_CONFIG,
    )


def verify(path: Path, desc: FitDescription, data: dict[str, bytes]) -> dict:
    """The FIT at ``path`` checked against its description (``data``: each image's
    file by node); what it holds, as read back."""
    blob = path.read_bytes()
    if problems := desc.check(blob, data):
        raise StepError(f"{path.name} failed verification: " + "; ".join(problems))
    return desc.facts(blob)


def fit_step(board: Board, kernel: Step, initramfs: Step) -> Step:
    """Outputs ``image`` (the FIT, BOARD.itb), ``its`` (its source) and ``header``
    (what was read back, for the manifest)."""
    k_name = Path(kernel.output_path("image")).name
    rd_name = Path(initramfs.output_path("image")).name
    desc = describe(board, k_name, rd_name)

    def build(ctx: Context) -> None:
        k, rd = ctx.input("kernel", "image"), ctx.input("initramfs", "image")
        # mkimage resolves /incbin/ against the .its folder: copy the inputs beside it.
        for src in (k, rd):
            shutil.copyfile(src, ctx.scratch / src.name)
        source = ctx.scratch / "image.its"
        source.write_text(desc.its())
        ctx.run.run(["mkimage", "-f", source, ctx.output("image")],
                    env={"SOURCE_DATE_EPOCH": "0"}, what="mkimage -f")
        facts = verify(ctx.output("image"), desc,
                       {"kernel-1": k.read_bytes(), "ramdisk-1": rd.read_bytes()})
        shutil.copyfile(source, ctx.output("its"))
        ctx.output("header").write_text(json.dumps(facts, indent=1))

    return Step(
        kind="fit",
        name=f"{board.name}-fit",
        version=2,
        inputs={"description": dataclasses.asdict(desc)},
        deps={"kernel": kernel, "initramfs": initramfs},
        build=build,
        outputs={"image": f"{board.name}.itb", "its": f"{board.name}.its",
                 "header": "fit.json"},
    )
