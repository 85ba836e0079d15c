"""The legacy uImage U-Boot boots with bootm (and a board flashes as its firmware)."""

from __future__ import annotations

from pathlib import Path

from embedbuild.outputs import Pick, Published, output


@output("uimage", applies=lambda board: board.kernel.uimage is not None)
def plan(p) -> Published:
    """uImage: the kernel (DTB appended if asked), compressed and wrapped by mkimage."""
    image = p.get("image")
    # The uImage is also what goes to flash, unless the board packs a FIT for that.
    flash = {} if p.board.kernel.fit else {"flash_image": Path(image.output_path("image")).name}
    return Published(files=[Pick("kernel", image, "image")], header=(image, "header"),
                     manifest=flash)
