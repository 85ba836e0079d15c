"""What a U-Boot configuration must (not) have for its signature check to hold.

Measured with U-Boot 2023.01 qemu_arm in QEMU (see /work/coord/25-notes.md): with the
options below on, an image reaches the CPU without its configuration signature being
checked, however well the FIT is signed. The check runs on the final .config, so a
defconfig or fragment that brings one back fails the build, not a device in the field.
"""

from __future__ import annotations

# Symbol -> how it lets an unchecked image boot.
BYPASSES = {
    "LEGACY_IMAGE_FORMAT": "bootm boots legacy uImages, which carry no signature",
    "OF_BOARD": "U-Boot takes its control DTB, hence its keys, from the stage before it: "
                "a DTB without /signature makes it accept any image",
    "SUPPORT_RAW_INITRD": "bootm takes an initramfs given as ADDR:SIZE with no check",
    "ANDROID_BOOT_IMAGE": "bootm boots Android boot images with no signature",
    "CMD_BOOTZ": "bootz (and PXE through it) boots a raw zImage with no check",
    "CMD_BOOTI": "booti (and PXE through it) boots a raw Image with no check",
    "EFI_LOADER": "bootefi and distro boot's EFI method run any EFI binary, Linux included",
    "CMD_SOURCE": "source runs scripts, which distro boot fetches over DHCP/TFTP; a script "
                  "can `setenv verify n` or `bootm ADDR:kernel-1` past the signature",
    "CMD_PXE": "pxe boot takes the kernel command line (append) from a file whichever DHCP "
               "server answers names: a signed kernel then runs init=/bin/sh, and an old "
               "signed image boots past the anti-rollback check",
    "CMD_SYSBOOT": "sysboot takes the kernel command line from an unsigned extlinux.conf",
    "BOOTMETH_DISTRO_PXE": "bootflow's PXE method, as pxe boot",
    "CMD_ELF": "bootelf starts an ELF image (a vmlinux) with no check",
    "CMD_GO": "go jumps to whatever code was loaded",
}
# What the unattended boot (CONFIG_BOOTCOMMAND) must not run: distro boot tries every
# disk and the network (PXE), whose command lines and images are nobody's to sign.
UNATTENDED = ("distro_bootcmd", "bootflow")
# Symbol -> why it must be on.
NEEDED = {
    "FIT_SIGNATURE": "U-Boot checks FIT signatures only with it",
    "RSA": "the signatures are RSA",
    "OF_SEPARATE": "the keys travel in the control DTB appended to u-boot-nodtb.bin",
}


def problems(config: dict[str, str]) -> list[str]:
    """What in a final U-Boot .config (symbol -> value, without CONFIG_) defeats
    verified boot, one line each; empty when nothing does."""
    out = [f"CONFIG_{s}=y: {why}" for s, why in BYPASSES.items() if config.get(s) == "y"]
    command = config.get("BOOTCOMMAND", "")
    out += [f"CONFIG_BOOTCOMMAND={command}: the unattended boot runs {w}, which boots "
            "from every disk and the network with unsigned command lines"
            for w in UNATTENDED if w in command]
    out += [f"CONFIG_{s} is off: {why}" for s, why in NEEDED.items() if config.get(s) != "y"]
    return out
