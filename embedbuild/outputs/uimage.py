"""The legacy uImage U-Boot boots with bootm (and a board flashes as its firmware)."""

from __future__ import annotations

from embedbuild.outputs import Pick, Published, output


@output("uimage", applies=lambda board: board.kernel.uimage is not None)
def plan(p) -> Published:
    """uImage: the kernel (DTB appended if asked), compressed and wrapped by mkimage."""
    image = p.get("image")
    return Published(files=[Pick("kernel", image, "image")], header=(image, "header"))
