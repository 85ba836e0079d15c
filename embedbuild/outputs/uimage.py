"""The legacy uImage U-Boot boots with bootm (and a board flashes as its firmware,
unless it packs a FIT for that): its header, read back, goes into the kernel's
manifest section."""

from __future__ import annotations

from pathlib import Path

from embedbuild.output import Fact, Pick, PlanContext, Published, output


@output("uimage", applies=lambda board: board.kernel.uimage is not None,
        sections={"flash_image": str})
def plan(p: PlanContext) -> Published:
    """uImage: the kernel (DTB appended if asked), compressed and wrapped by mkimage."""
    image = p.get("image")
    pub = Published(files=[Pick("kernel", image, "image")],
                    facts={"kernel": Fact(image, "header", ("load", "entry", "compression"))})
    if not p.board.kernel.fit:
        pub.manifest["flash_image"] = Path(image.output_path("image")).name
        if p.board.firmware_partition() is not None:
            pub.checks.append(p.add("image-fits", lambda: _fits(p, image)))
    return pub


def _fits(p: PlanContext, image):
    from embedbuild.steps.partition_fit import partition_fit_step

    return partition_fit_step(p.board, image, "image")
