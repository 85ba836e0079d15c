"""ELF facts read with pyelftools: entry points (and later, arch identity of binaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from embedbuild.errors import StepError


def entry_and_text(vmlinux: Path) -> tuple[int, int]:
    """(e_entry, start of the first PT_LOAD segment) of an ELF file."""
    from elftools.elf.elffile import ELFFile

    with open(vmlinux, "rb") as f:
        e = ELFFile(f)
        loads = [s for s in e.iter_segments() if s["p_type"] == "PT_LOAD"]
        start = min(s["p_vaddr"] for s in loads) if loads else e["e_entry"]
        return e["e_entry"], start


def _sign32(addr: int) -> int:
    # 32-bit MIPS kernels' 64-bit-clean tools may print 0xffffffff80060000.
    return addr & 0xFFFFFFFF if addr >> 32 in (0, 0xFFFFFFFF) else addr


def check_entry(vmlinux: Path, load: int, entry: int | Literal["elf"]) -> int:
    """The entry address for a uImage, checked against vmlinux.

    "elf" takes e_entry. A number must be e_entry or the start of the loaded
    image when that is where the kernel begins executing (e.g. MIPS BOOT_RAW).
    """
    e_entry, start = (_sign32(a) for a in entry_and_text(vmlinux))
    if entry == "elf":
        return e_entry
    if entry not in (e_entry, start):
        raise StepError(
            f"uimage.entry 0x{entry:08x} is neither vmlinux's entry point 0x{e_entry:08x} "
            f"nor its load start 0x{start:08x}",
            hint='set uimage.entry = "elf" or one of those addresses',
        )
    if load != start:
        raise StepError(
            f"uimage.load 0x{load:08x} differs from vmlinux's link address 0x{start:08x}",
            hint="a raw kernel image runs only at the address it was linked for",
        )
    return entry
