"""Where the bytes of a kernel image come from: the linker's map of vmlinux
(CONFIG_VMLINUX_MAP) read back, every input section attributed to the source folder
of its object, and the image's bytes split by those folders.

A GNU ld map lists, below "Linker script and memory map", each input section with its
address, size and object (``vmlinux.a(drivers/tty/serial/8250/8250_core.o)`` for a
member of an archive, the bare path for one of a thin archive); a long section name
sits on a line of its own, its numbers on the next. Padding (``*fill*``) and what
the linker script itself writes belong to no object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import StepError

_START = "Linker script and memory map"
# " .text   0x80060400   0x5e4 vmlinux.a(init/main.o)", or the numbers alone after a
# line holding a long section name.
_SECTION = re.compile(r"^ (?P<name>[^\s*]\S*)?\s+0x(?P<addr>[0-9a-fA-F]+)\s+"
                      r"0x(?P<size>[0-9a-fA-F]+)\s+(?P<obj>\S.*?)\s*$")
_NAME_ONLY = re.compile(r"^ (?P<name>[^\s*]\S*)\s*$")
_MEMBER = re.compile(r"^.*?\.a\((?P<member>.+)\)$")
# Folders reported one or two levels deeper than the top: where a kernel's bytes
# spread over many drivers, file systems, protocols or architecture parts.
_DEEPER = {"arch": 3, "drivers": 2, "fs": 2, "net": 2, "sound": 2}
OTHER = "other (padding, linker-made data)"


@dataclass(frozen=True)
class InputSection:
    """One input section of the link: its name, where it went, its size and object."""

    name: str
    addr: int
    size: int
    obj: str


def input_sections(lines: Iterable[str], width: int = 32) -> Iterator[InputSection]:
    """The input sections of a GNU ld map, in map order; addresses cut to ``width``
    bits (a 32-bit MIPS map prints them sign-extended to 64)."""
    mask = (1 << width) - 1
    started, pending = False, None
    for line in lines:
        if not started:
            started = line.startswith(_START)
            continue
        if m := _SECTION.match(line):
            name = m.group("name") or pending
            pending = None
            obj = m.group("obj")
            if name is not None and not obj.startswith("("):  # "(size before relaxing)"
                yield InputSection(name, int(m.group("addr"), 16) & mask,
                                   int(m.group("size"), 16), obj)
        elif m := _NAME_ONLY.match(line):
            pending = m.group("name")
        else:
            pending = None


def part_of(obj: str) -> str:
    """The folder an object's bytes are reported under: ``vmlinux.a(drivers/net/
    ethernet/atheros/ag71xx.o)`` -> ``drivers/net``; the built-in initramfs's object
    -> ``usr``; objects in no folder (the kallsyms tables) under their own name."""
    path = m.group("member") if (m := _MEMBER.match(obj)) else obj
    parts = path.split("/")
    if len(parts) == 1:
        return "kallsyms tables" if path.startswith(".tmp_vmlinux") else path
    depth = min(_DEEPER.get(parts[0], 1), len(parts) - 1)
    return "/".join(parts[:depth])


def split_image(image: bytes, start: int, sections: Iterable[InputSection]
                ) -> dict[str, bytes]:
    """The image (its first byte at address ``start``) split by ``part_of`` each input
    section's object, in address order; the bytes no section covers under OTHER. The
    parts' lengths add up to the image's."""
    end = start + len(image)
    owner: list[tuple[int, int, str]] = []
    for s in sections:
        lo, hi = max(s.addr, start), min(s.addr + s.size, end)
        if lo < hi:
            owner.append((lo, hi, part_of(s.obj)))
    owner.sort()
    chunks: dict[str, list[bytes]] = {}
    pos = start
    for lo, hi, part in owner:
        if lo < pos:
            if hi <= pos:
                continue
            lo = pos  # overlapping sections (the linker never makes them): count once
        if lo > pos:
            chunks.setdefault(OTHER, []).append(image[pos - start:lo - start])
        chunks.setdefault(part, []).append(image[lo - start:hi - start])
        pos = hi
    if pos < end:
        chunks.setdefault(OTHER, []).append(image[pos - start:])
    return {part: b"".join(c) for part, c in chunks.items()}


def loaded_image(vmlinux: Path) -> tuple[int, bytes, int]:
    """(start address, bytes, address bits) of the kernel as loaded, what ``objcopy -O
    binary`` makes of vmlinux: every allocated section with contents at its address,
    gaps zero (MIPS's .reginfo left out, as the kernel's own objcopy does)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(vmlinux, "rb") as f:
        try:
            e = ELFFile(f)
            mask = (1 << e.elfclass) - 1
            secs = [(s["sh_addr"] & mask, s.data()) for s in e.iter_sections()
                    if s["sh_flags"] & 0x2 and s["sh_type"] != "SHT_NOBITS"  # SHF_ALLOC
                    and s["sh_size"] and s.name != ".reginfo"]
        except ELFError as err:
            raise StepError(f"{vmlinux}: broken ELF file: {err}") from None
    if not secs:
        raise StepError(f"{vmlinux}: no allocated section with contents")
    start = min(a for a, _ in secs)
    image = bytearray(max(a + len(d) for a, d in secs) - start)
    for a, d in secs:
        image[a - start:a - start + len(d)] = d
    return start, bytes(image), e.elfclass
