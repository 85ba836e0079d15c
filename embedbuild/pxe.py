"""PXE configuration files as U-Boot's `pxe get` reads them (pxelinux's format), and the
MAC addresses that name them.

U-Boot's `pxe get` asks the TFTP server, relative to the folder of ``bootfile``, for
``pxelinux.cfg/01-<mac>`` (the MAC in lowercase hex, dashes between the bytes), then the
device's IP address in upper-case hex shortened one digit at a time, then
``default-<arch>-<soc>-<board>``, ``default-<arch>`` and ``default``. `pxe boot` then
loads the chosen label's ``kernel``, ``initrd`` and ``fdt`` (paths relative to that same
folder) and boots them with ``append`` as the kernel command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    from embedbuild.manifest import Manifest
    from embedbuild.model.board import Board

CONFIG_DIR = "pxelinux.cfg"
DEFAULT_CONFIG = "default"
# The label embedbuild writes; `pxe boot` boots the file's `default` label.
LABEL = "embedbuild"

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")


def mac_address(text: str) -> str:
    """A unicast Ethernet address, normalised to lowercase with colons
    (``52:54:00:12:34:01``); ValueError names what is wrong."""
    if not isinstance(text, str) or not _MAC.fullmatch(text):
        raise ValueError(f"{text!r} is not a MAC address: give six bytes in hex, e.g. "
                         "52:54:00:12:34:01")
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{mac} is a multicast address: a device's own address has the "
                         "lowest bit of its first byte clear")
    return mac


MacAddress = Annotated[str, AfterValidator(mac_address)]


def config_name(mac: str | None) -> str:
    """The file `pxe get` asks for first for the device with this MAC (None: the one every
    device gets last, ``default``), relative to the served root."""
    if mac is None:
        return f"{CONFIG_DIR}/{DEFAULT_CONFIG}"
    return f"{CONFIG_DIR}/01-{mac_address(mac).replace(':', '-')}"


def mac_of_config(name: str) -> str | None:
    """The MAC a requested ``pxelinux.cfg/01-...`` name is for (None: another name)."""
    prefix = f"{CONFIG_DIR}/01-"
    if not name.startswith(prefix):
        return None
    try:
        return mac_address(name[len(prefix):])
    except ValueError:
        return None


@dataclass(frozen=True)
class PxeEntry:
    """One boot entry: the files (relative to the served root) and the command line.

    Args:
        kernel: the kernel image.
        initrd: a separate initramfs (None: built into the kernel).
        fdt: a device tree to load (None: the one the firmware has).
        append: the kernel command line.
        comment: a line saying what this is (device, board, build).
    """

    kernel: str
    initrd: str | None = None
    fdt: str | None = None
    append: str = ""
    comment: str = ""

    def render(self) -> str:
        """The configuration file's text."""
        for value in (self.kernel, self.initrd or "", self.fdt or "", self.append,
                      self.comment):
            # One entry per line: a newline would start a directive of its own.
            if re.search(r"[\x00-\x1f\x7f]", value):
                raise ValueError(f"{value!r}: no control characters in a PXE entry")
        lines = [f"# {self.comment}"] if self.comment else []
        lines += [f"default {LABEL}", f"label {LABEL}", f"  kernel {self.kernel}"]
        if self.initrd:
            lines.append(f"  initrd {self.initrd}")
        if self.fdt:
            lines.append(f"  fdt {self.fdt}")
        if self.append:
            lines.append(f"  append {self.append}")
        return "\n".join(lines) + "\n"


def result_entry(board: Board, manifest: Manifest, folder: str, append: str = "",
                 comment: str = "") -> PxeEntry:
    """The entry that boots a build result whose files are served in ``folder`` (relative
    to the served root; "" for the root itself): its kernel, its separate initramfs, the
    DTB when U-Boot loads one beside the kernel (not the one a uImage carries, nor the
    firmware's), and the board's command line followed by ``append``."""
    prefix = f"{folder.rstrip('/')}/" if folder else ""
    initrd = next(iter(manifest.with_role("initramfs")), None)
    appended = board.kernel.uimage is not None and board.kernel.uimage.append_dtb
    dtb = (next(iter(manifest.with_role("dtb")), None)
           if board.uboot.fdt_addr is not None and not appended else None)
    cmdline = " ".join(part for part in (manifest.kernel.cmdline, append) if part)
    return PxeEntry(kernel=prefix + manifest.kernel.file,
                    initrd=prefix + initrd if initrd else None,
                    fdt=prefix + dtb if dtb else None, append=cmdline, comment=comment)
