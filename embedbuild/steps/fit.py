"""The FIT image of a board: the kernel and the separate initramfs in one file, each
with a hash, described as data (embedbuild/fit.py), made by mkimage -f from the
rendered .its and checked against the description after mkimage.

For a board with [signing] the configuration carries a signature node per signing key
(and the anti-rollback version): this step makes it unsigned, steps/fit_sign.py signs
it with the private keys read at build time."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from embedbuild.bootcmd import FIT_CONFIG
from embedbuild.errors import StepError
from embedbuild.fit import FIT_ARCH, FitConfig, FitDescription, FitImage, FitSignature
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.vboot.uboot_key import PublicKey

# What every signature signs: each image the configuration loads (mkimage's default is
# kernel and fdt: an initramfs left out could be swapped, its hash recomputed).
SIGNED_IMAGES = ("kernel", "ramdisk")


def fit_addresses(board: Board) -> dict[str, int]:
    """Kernel load and entry, ramdisk load: the board's [kernel.fit], else its [uboot]."""
    fit = board.kernel.fit
    assert fit is not None
    load = fit.load if fit.load is not None else board.uboot.kernel_addr
    ramdisk = fit.ramdisk_load if fit.ramdisk_load is not None else board.uboot.ramdisk_addr
    assert ramdisk is not None  # the model refuses a FIT without one
    return {"load": load, "entry": fit.entry if fit.entry is not None else load,
            "ramdisk": ramdisk}


def describe(board: Board, kernel: str, ramdisk: str,
             signers: Sequence[PublicKey] = ()) -> FitDescription:
    """The board's FIT: its kernel and initramfs (the files ``kernel`` and ``ramdisk``
    beside the .its), each hashed, in one configuration; with ``signers`` (a board with
    [signing]) the configuration has a signature node for each key, signing both images,
    and the board's anti-rollback version."""
    fit = board.kernel.fit
    assert fit is not None
    a = fit_addresses(board)
    arch = FIT_ARCH[board.arch.value]
    signatures = tuple(FitSignature(k.algo, k.name, SIGNED_IMAGES) for k in signers)
    version = board.signing.version if board.signing and signers else None
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
                                  ramdisk="ramdisk-1", signatures=signatures,
                                  version=version),),
        default=FIT_CONFIG,
    )


def verify(path: Path, desc: FitDescription, data: dict[str, bytes],
           signed: bool = True) -> dict:
    """The FIT at ``path`` checked against its description (``data``: each image's
    file by node; ``signed`` False: before signing); what it holds, as read back."""
    blob = path.read_bytes()
    if problems := desc.check(blob, data, signed):
        raise StepError(f"{path.name} failed verification: " + "; ".join(problems))
    return desc.facts(blob)


def fit_step(board: Board, kernel: Step, initramfs: Step,
             signers: Sequence[PublicKey] = ()) -> Step:
    """Outputs ``image`` (the FIT, BOARD.itb; with ``signers`` BOARD-unsigned.itb, to be
    signed by them), ``its`` (its source) and ``header`` (what was read back, for the
    manifest)."""
    k_name = Path(kernel.output_path("image")).name
    rd_name = Path(initramfs.output_path("image")).name
    desc = describe(board, k_name, rd_name, signers)
    final = not signers  # else signed after this step, by steps/fit_sign.py
    suffix = "" if final else "-unsigned"

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
                       {"kernel-1": k.read_bytes(), "ramdisk-1": rd.read_bytes()}, final)
        shutil.copyfile(source, ctx.output("its"))
        ctx.output("header").write_text(json.dumps(facts, indent=1))

    return Step(
        kind="fit",
        name=f"{board.name}-fit{suffix}",
        version=2,
        inputs={"description": dataclasses.asdict(desc)},
        deps={"kernel": kernel, "initramfs": initramfs},
        build=build,
        outputs={"image": f"{board.name}{suffix}.itb",
                 "its": f"{board.name}.its", "header": "fit.json"},
    )


def signed_fit_step(board: Board, unsigned: Step, kernel: Step, initramfs: Step,
                    signers: Sequence[PublicKey]) -> Step:
    """The board's FIT (BOARD.itb) signed by ``signers``: ``unsigned`` (fit_step with the
    same signers) signed with their private keys at build time (steps/fit_sign.py) and
    checked against the description; outputs ``image`` and ``header``."""
    from embedbuild.steps.fit_sign import fit_sign_step

    desc = describe(board, Path(kernel.output_path("image")).name,
                    Path(initramfs.output_path("image")).name, signers)
    return fit_sign_step(f"{board.name}-fit", unsigned, f"{board.name}.itb", list(signers),
                         desc)
