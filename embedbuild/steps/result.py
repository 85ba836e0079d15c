"""The result: a folder with the board's outputs and manifest.json describing them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.plan import Context, Step

BOOT_COMMAND = {"zImage": "bootz", "Image": "booti", "Image.gz": "booti"}


def uboot_commands(board: Board, kernel_file: str, initrd_file: str | None) -> list[str]:
    """U-Boot command lines that TFTP-load and boot the result (serverip/ipaddr set before)."""
    u = board.uboot
    cmds = []
    if board.kernel.cmdline:
        cmds.append(f"setenv bootargs '{board.kernel.cmdline}'")
    cmds.append(f"tftpboot 0x{u.kernel_addr:x} {kernel_file}")
    rd = "-"
    if initrd_file and u.ramdisk_addr is not None:
        cmds.append(f"tftpboot 0x{u.ramdisk_addr:x} {initrd_file}")
        rd = f"0x{u.ramdisk_addr:x}:${{filesize}}"
    args = [f"0x{u.kernel_addr:x}", rd] + ([f"0x{u.fdt_addr:x}"] if u.fdt_addr is not None else [])
    if args[-1] == "-":  # nothing after the kernel: U-Boot wants no placeholder
        args.pop()
    boot = "bootm" if board.kernel.uimage else BOOT_COMMAND[board.kernel.image]
    cmds.append(" ".join([boot, *args]))
    return cmds


def result_step(board: Board, parts: dict[str, Step]) -> Step:
    """Collect the outputs named in ``parts`` (role -> step) and write manifest.json.

    Roles: kernel (the kernel build), image (the bootable image, if packaged
    separately), dtb, initramfs (loaded beside the kernel), sizes (the initramfs step,
    separate or built in, for its per-component sizes), uboot (a built bootloader).
    """
    image_name = "uImage" if board.kernel.uimage else board.kernel.image
    initrd_name = parts["initramfs"].inputs["file"] if "initramfs" in parts else None

    def build(ctx: Context) -> None:
        files = {}
        src_of = {"image": ctx.deps.get("image", ctx.deps["kernel"])}
        picks = [("kernel", image_name, src_of["image"] / image_name)]
        picks.append(("vmlinux", "vmlinux", ctx.deps["kernel"] / "vmlinux"))
        picks.append(("config", "kernel.config", ctx.deps["kernel"] / "kernel.config"))
        if "dtb" in ctx.deps:
            for d in sorted(ctx.deps["dtb"].glob("*.dtb")):
                picks.append(("dtb", d.name, d))
        if "uboot" in ctx.deps:
            spec = board.uboot.build
            picks.append(("bootloader", spec.image, ctx.deps["uboot"] / spec.image))
        if initrd_name:
            picks.append(("initramfs", initrd_name, ctx.deps["initramfs"] / initrd_name))
        if "sizes" in ctx.deps:
            shutil.copyfile(ctx.deps["sizes"] / "sizes.json", ctx.out / "sizes.json")
        part = board.firmware_partition()
        image = src_of["image"] / image_name
        if part is not None and image.stat().st_size > part.size:
            raise StepError(
                f"{image_name} is {image.stat().st_size:,} bytes, more than the "
                f"{part.name} partition ({part.size:,} bytes) it is flashed to",
                hint="shrink the kernel config, busybox or the system; `embedbuild size` "
                "shows where the bytes go",
            )
        for role, name, path in picks:
            dest = ctx.out / name
            try:
                os.link(path, dest)  # store items are immutable: share the bytes
            except OSError:
                shutil.copyfile(path, dest)
            data = dest.read_bytes()
            files[name] = {
                "role": role,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        # For a uImage, the addresses as read back from its header.
        header = (json.loads((ctx.deps["image"] / "uimage.json").read_text())
                  if "image" in ctx.deps else None)
        manifest = {
            "board": board.name,
            "arch": board.arch.value,
            "description": board.description,
            "files": files,
            "kernel": {
                "file": image_name,
                "cmdline": board.kernel.cmdline,
                "load": header["load"] if header else None,
                "entry": header["entry"] if header else None,
                "compression": header["compression"] if header else None,
            },
            "uboot": {
                "prompt": board.uboot.prompt,
                "kernel_addr": f"0x{board.uboot.kernel_addr:08x}",
                "ramdisk_addr": (
                    f"0x{board.uboot.ramdisk_addr:08x}"
                    if board.uboot.ramdisk_addr is not None
                    else None
                ),
                "fdt_addr": (
                    f"0x{board.uboot.fdt_addr:08x}" if board.uboot.fdt_addr is not None else None
                ),
                "tftpboot": uboot_commands(board, image_name, initrd_name),
            },
        }
        (ctx.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    return Step(
        kind="result",
        name=f"{board.name}-result",
        version=4,
        # Exactly what the manifest is written from; file contents are covered by the parts.
        inputs={
            "board": board.name,
            "arch": board.arch.value,
            "description": board.description,
            "kernel": board.kernel.model_dump(mode="json", include={"image", "uimage", "cmdline"}),
            "uboot": board.uboot.model_dump(mode="json"),
            "flash": board.flash.model_dump(mode="json") if board.flash else None,
        },
        deps=parts,
        build=build,
    )
