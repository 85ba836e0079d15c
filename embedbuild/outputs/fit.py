"""The FIT image a board that boots from flash writes to its firmware partition: what
TFTP boot sends as separate files (kernel, initramfs), in one hashed image."""

from __future__ import annotations

from pathlib import Path

from embedbuild.outputs import Pick, Published, output


@output("fit", applies=lambda board: board.kernel.fit is not None)
def plan(p) -> Published:
    """BOARD.itb: the kernel and the initramfs with their hashes (mkimage -f), checked."""
    step = p.get("fit")
    return Published(files=[Pick("flash", step, "image"), Pick("its", step, "its")],
                     manifest={"flash_image": Path(step.output_path("image")).name})
