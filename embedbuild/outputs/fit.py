"""The FIT image a board that boots from flash writes to its firmware partition: what
TFTP boot sends as separate files (kernel, initramfs), in one hashed image, made from
a description (embedbuild/fit.py) and checked against it after mkimage. For a board
with [signing] it is the signed FIT, which it also boots over TFTP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Fact, Pick, PlanContext, Published, output
from embedbuild.step import Step

if TYPE_CHECKING:
    from embedbuild.model.board import Board
    from embedbuild.vboot.uboot_key import PublicKey


class FitInfo(BaseModel):
    """What was read back from the FIT image: each image node's type, load address,
    size and hash algorithm, and the configurations with what they name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    images: dict[str, dict[str, str | int | None]]
    configurations: dict[str, dict[str, str | int | list[str] | None]]


@output("fit", applies=lambda board: board.kernel.fit is not None,
        sections={"flash_image": str, "fit": FitInfo})
def plan(p: PlanContext) -> Published:
    """BOARD.itb: the kernel and the initramfs with their hashes (mkimage -f), checked."""
    step = fit_image(p)
    its = p.get("fit-unsigned") if p.board.signing else step
    pub = Published(files=[Pick("flash", step, "image"), Pick("its", its, "its")],
                    manifest={"flash_image": Path(step.output_path("image")).name},
                    facts={"fit": Fact(step, "header")})
    if p.board.firmware_partition() is not None:
        pub.checks.append(p.add("fit-fits", lambda: _fits(p, step)))
    return pub


def fit_image(p: PlanContext) -> Step:
    """The step of the board's FIT (output ``image``): signed when it has [signing]."""
    return p.add("fit", lambda: _fit(p))


def signers(board: Board) -> list[PublicKey]:
    """The public keys of the board's [signing] signers (their NAME.crt, read now)."""
    from embedbuild.vboot.keys import signing_keys

    assert board.signing is not None
    key = "sign_with" if board.signing.sign_with is not None else "keys"
    return signing_keys(board.signing.signers, board.signing.algo,
                        where=f"{board.dir / 'board.toml'}: signing.{key}")


def _fit(p: PlanContext) -> Step:
    from embedbuild.steps.fit import fit_step, signed_fit_step

    board, kernel, initramfs = p.board, p.get("kernel"), p.get("initramfs")
    if board.signing is None:
        return fit_step(board, kernel, initramfs)
    keys = signers(board)
    unsigned = p.add("fit-unsigned", lambda: fit_step(board, kernel, initramfs, keys))
    return signed_fit_step(board, unsigned, kernel, initramfs, keys)


def _fits(p: PlanContext, step):
    from embedbuild.steps.partition_fit import partition_fit_step

    return partition_fit_step(p.board, step, "image")
