"""U-Boot command lists: what embedbuild types at a board's U-Boot prompt.

The one place U-Boot command text is written. The build puts the TFTP boot
commands into manifest.json; the bench (rig/) only sends what it gets from here.
"""

from __future__ import annotations

from embedbuild.model.board import Board, UBoot

# The boot command for each raw kernel image (a uImage is booted with bootm).
BOOT_COMMAND = {"zImage": "bootz", "Image": "booti", "Image.gz": "booti"}


def network(uboot: UBoot, server_ip: str, device_ip: str, netmask: str) -> list[str]:
    """Commands that put U-Boot on the bench's network with the board's TFTP settings."""
    return [
        f"setenv ipaddr {device_ip}",
        f"setenv serverip {server_ip}",
        f"setenv netmask {netmask}",
        f"setenv tftpblocksize {uboot.tftp_blocksize}",
        f"setenv tftpwindowsize {uboot.tftp_windowsize}",
    ]


def tftp_load(address: int, filename: str) -> str:
    """Load a file from the TFTP server into RAM (U-Boot sets ${filesize})."""
    return f"tftpboot 0x{address:x} {filename}"


def tftp_boot(board: Board, kernel_file: str, initrd_file: str | None) -> list[str]:
    """Commands that TFTP-load and boot a result, once the network is set up; the last
    one boots."""
    u = board.uboot
    cmds = []
    if board.kernel.cmdline:
        cmds.append(f"setenv bootargs '{board.kernel.cmdline}'")
    cmds.append(tftp_load(u.kernel_addr, kernel_file))
    rd = "-"
    if initrd_file and u.ramdisk_addr is not None:
        cmds.append(tftp_load(u.ramdisk_addr, initrd_file))
        rd = f"0x{u.ramdisk_addr:x}:${{filesize}}"
    args = [f"0x{u.kernel_addr:x}", rd] + ([f"0x{u.fdt_addr:x}"] if u.fdt_addr is not None else [])
    if args[-1] == "-":  # nothing after the kernel: U-Boot wants no placeholder
        args.pop()
    boot = "bootm" if board.kernel.uimage else BOOT_COMMAND[board.kernel.image]
    cmds.append(" ".join([boot, *args]))
    return cmds
