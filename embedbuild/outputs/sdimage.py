"""The SD-card image: partition table, FAT boot partition with the kernel, the DTB, the
initramfs and extlinux/extlinux.conf (what U-Boot's distro boot reads), and the board's
raw bootloader blobs; for boards with an [sdcard] table."""

from __future__ import annotations

from embedbuild.outputs import Pick, Published, output


@output("sdimage", applies=lambda board: board.sdcard is not None)
def plan(p) -> Published:
    """BOARD-sd.img: an image to write to an SD card (embedbuild write-sd), read back."""
    step = p.get("sdimage")
    pub = Published(files=[Pick("sdcard", step, "image"), Pick("extlinux", step, "extlinux")])
    pub.facts["sdcard"] = (step, "layout")
    if p.board.system is not None and p.board.system.initramfs == "separate":
        pub.checks.append(p.get("initramfs-check"))
    return pub
