"""The kernel: its image (unless a packaged image boots instead), vmlinux, the final
config and the board's DTB, checked against the drivers the kernel has."""

from __future__ import annotations

from embedbuild.outputs import Pick, Published, output


@output("kernel", applies=lambda board: True)
def plan(p) -> Published:
    """The kernel image, vmlinux, kernel.config and the DTB."""
    kernel = p.get("kernel")
    pub = Published()
    if not p.board.kernel.uimage:
        pub.files.append(Pick("kernel", kernel, "image"))
    if p.board.kernel.image != "vmlinux":
        pub.files.append(Pick("vmlinux", kernel, "vmlinux"))
    pub.files.append(Pick("config", kernel, "config"))
    if p.has_dtb:
        pub.files.append(Pick("dtb", p.get("dtb"), "dtb"))
        pub.checks.append(p.get("dtb-check"))
    return pub
