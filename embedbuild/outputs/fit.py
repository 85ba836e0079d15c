"""The FIT image a board that boots from flash writes to its firmware partition: what
TFTP boot sends as separate files (kernel, initramfs), in one hashed image, made from
a description (embedbuild/fit.py) and checked against it after mkimage."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Fact, Pick, PlanContext, Published, output


class FitInfo(BaseModel):
    """What was read back from the FIT image: each image node's type, load address,
    size and hash algorithm, and the configurations with what they name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    images: dict[str, dict[str, str | int | None]]
    configurations: dict[str, dict[str, str | list[str] | None]]


@output("fit", applies=lambda board: board.kernel.fit is not None,
        sections={"flash_image": str, "fit": FitInfo})
def plan(p: PlanContext) -> Published:
    """BOARD.itb: the kernel and the initramfs with their hashes (mkimage -f), checked."""
    step = p.add("fit", lambda: _fit(p))
    pub = Published(files=[Pick("flash", step, "image"), Pick("its", step, "its")],
                    manifest={"flash_image": Path(step.output_path("image")).name},
                    facts={"fit": Fact(step, "header")})
    if p.board.firmware_partition() is not None:
        pub.checks.append(p.add("fit-fits", lambda: _fits(p, step)))
    return pub


def _fit(p: PlanContext):
    from embedbuild.steps.fit import fit_step

    return fit_step(p.board, p.get("kernel"), p.get("initramfs"))


def _fits(p: PlanContext, step):
    from embedbuild.steps.partition_fit import partition_fit_step

    return partition_fit_step(p.board, step, "image")
