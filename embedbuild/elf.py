"""ELF facts read with pyelftools: entry points, the identity of binaries, their libraries."""

from __future__ import annotations

from dataclasses import dataclass
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


def memory_end(vmlinux: Path) -> int:
    """The highest address the kernel occupies once running (end of bss)."""
    from elftools.elf.elffile import ELFFile

    with open(vmlinux, "rb") as f:
        e = ELFFile(f)
        return _sign32(max(s["p_vaddr"] + s["p_memsz"] for s in e.iter_segments()
                           if s["p_type"] == "PT_LOAD"))


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


# -- identity of binaries going into an image ---------------------------------

EF_ARM_ABI_FLOAT_HARD = 0x400
EF_ARM_ABI_FLOAT_SOFT = 0x200
# ARM build attributes (.ARM.attributes): how floats are passed, 1 = VFP registers.
TAG_ABI_VFP_ARGS_VFP = 1
EF_MIPS_ABI2 = 0x20
EF_MIPS_ABI = 0x0000F000
EF_MIPS_ABI_O32 = 0x00001000


@dataclass(frozen=True)
class ElfIdentity:
    """What must match between a binary and a board."""

    machine: str  # EM_ARM, EM_AARCH64, EM_MIPS
    bits: int
    endian: str  # little / big
    abi: str  # hard-float, soft-float, lp64, o32, n32, ...

    def __str__(self) -> str:
        return f"{self.machine.removeprefix('EM_')} {self.bits}-bit {self.endian}-endian {self.abi}"

    def fits(self, want: ElfIdentity) -> bool:
        """Whether this file can be part of a userland of identity ``want``: the same, or
        an object that uses no floating point, which links into either float ABI."""
        return self == want or (self.abi == FLOAT_FREE and
                                ElfIdentity(self.machine, self.bits, self.endian,
                                            want.abi) == want)


# An ARM object (assembly, such as a libc's crti.o) that states no floating-point use:
# the linker lets it into programs of either float ABI.
FLOAT_FREE = "float-free"


# The board's userland identity, from its Debian cross toolchain prefix.
TOOLCHAIN_ELF = {
    "arm-linux-gnueabihf-": ElfIdentity("EM_ARM", 32, "little", "hard-float"),
    "arm-linux-gnueabi-": ElfIdentity("EM_ARM", 32, "little", "soft-float"),
    "aarch64-linux-gnu-": ElfIdentity("EM_AARCH64", 64, "little", "lp64"),
    "mips-linux-gnu-": ElfIdentity("EM_MIPS", 32, "big", "o32"),
    "mipsel-linux-gnu-": ElfIdentity("EM_MIPS", 32, "little", "o32"),
}


def _arm_attributes(e) -> dict[str, int]:
    """The integer build attributes of an ARM file (.ARM.attributes) by tag name; an
    absent tag means 0 (Tag_ABI_VFP_args 0: soft-float; Tag_ABI_FP_number_model 0: no
    floating point used)."""
    sec = e.get_section_by_name(".ARM.attributes")
    out: dict[str, int] = {}
    if sec is None:
        return out
    for sub in sec.iter_subsections():
        for subsub in sub.iter_subsubsections():
            for attr in subsub.iter_attributes():
                if isinstance(attr.value, int):
                    out.setdefault(attr.tag, attr.value)
    return out


def _abi(machine: str, bits: int, flags: int, e) -> str:
    if machine == "EM_ARM":
        if flags & EF_ARM_ABI_FLOAT_HARD:
            return "hard-float"
        if flags & EF_ARM_ABI_FLOAT_SOFT:
            return "soft-float"
        # Objects (of a static library) carry the float ABI only as build attributes;
        # the linker sets the e_flags bits in what it links.
        attrs = _arm_attributes(e)
        if attrs.get("TAG_ABI_VFP_ARGS", 0) == TAG_ABI_VFP_ARGS_VFP:
            return "hard-float"
        if e["e_type"] == "ET_REL" and attrs.get("TAG_ABI_FP_NUMBER_MODEL", 0) == 0:
            return FLOAT_FREE
        return "soft-float"
    if machine == "EM_MIPS":
        if bits == 64:
            return "n64"
        if flags & EF_MIPS_ABI2:
            return "n32"
        if flags & EF_MIPS_ABI in (0, EF_MIPS_ABI_O32):
            return "o32"
        return f"mips-abi-0x{flags & EF_MIPS_ABI:x}"
    if machine == "EM_AARCH64":
        return "lp64" if bits == 64 else "ilp32"
    return "unknown"


@dataclass(frozen=True)
class ElfInfo:
    """An ELF file's identity, its dynamic linking needs and whether it carries glibc's
    start files (their ``.note.ABI-tag``: "for GNU/Linux 3.2.0"; musl's have none)."""

    identity: ElfIdentity
    interpreter: str | None
    needed: tuple[str, ...]
    glibc_start: bool = False


def read_elf(data: bytes, name: str) -> ElfInfo | None:
    """Identity, PT_INTERP, DT_NEEDED and glibc's ABI note of an ELF image; None if it is
    not ELF."""
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    if not data.startswith(b"\x7fELF"):
        return None
    with io.BytesIO(data) as f:
        try:
            e = ELFFile(f)
            machine = e["e_machine"]
            ident = ElfIdentity(machine, e.elfclass,
                                "little" if e.little_endian else "big",
                                _abi(machine, e.elfclass, e["e_flags"], e))
            interp = None
            for seg in e.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = seg.get_interp_name()
            needed = []
            for sec in e.iter_sections():
                if isinstance(sec, DynamicSection):
                    needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
            glibc = e["e_type"] == "ET_EXEC" and e.get_section_by_name(".note.ABI-tag") is not None
            return ElfInfo(ident, interp, tuple(needed), glibc)
        except ELFError as err:
            raise StepError(f"{name}: broken ELF file: {err}") from None


# -- static libraries ------------------------------------------------------------

AR_MAGIC = b"!<arch>\n"


def ar_members(data: bytes, name: str) -> list[tuple[str, bytes]]:
    """The members of a (GNU or BSD-free System V) ``ar`` archive: (name, bytes), the
    symbol and long-name tables left out."""
    if not data.startswith(AR_MAGIC):
        raise StepError(f"{name}: not an ar archive (a thin archive holds no objects)")
    pos, longnames, out = len(AR_MAGIC), b"", []
    while pos < len(data):
        head = data[pos:pos + 60]
        if len(head) < 60 or head[58:60] != b"`\n":
            raise StepError(f"{name}: broken ar member header at byte {pos}")
        ident = head[:16].decode(errors="replace").rstrip()
        size = int(head[48:58].decode().strip() or 0)
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if ident == "//":
            longnames = body
        elif ident in ("/", "/SYM64/"):
            continue
        elif ident.startswith("/") and ident[1:].isdigit():
            start = int(ident[1:])
            out.append((longnames[start:longnames.index(b"/\n", start)].decode(), body))
        else:
            out.append((ident.removesuffix("/"), body))
    return out
