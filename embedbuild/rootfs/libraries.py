"""The ELF check of what goes into the image: every ELF file must match the board's
machine, class, endianness and ABI; a dynamic one brings its interpreter and
DT_NEEDED closure from the cross toolchain's sysroot."""

from __future__ import annotations

from pathlib import Path

from embedbuild.cpio import Entry
from embedbuild.elf import TOOLCHAIN_ELF, ElfIdentity, read_elf
from embedbuild.errors import BoardError, StepError


def elf_identity(cross_compile: str) -> ElfIdentity:
    """The ELF identity a board's userland must have."""
    try:
        return TOOLCHAIN_ELF[cross_compile]
    except KeyError:
        raise BoardError(f"no ELF identity known for toolchain {cross_compile}",
                         hint=f"known: {', '.join(TOOLCHAIN_ELF)}") from None


def check_and_close(entries: list[Entry], want: ElfIdentity, origin: str,
                    libdirs: list[Path], board: str) -> list[Entry]:
    """Refuse ELF files of the wrong identity; add the libraries dynamic ones need."""
    present = {e.path for e in entries}
    extra: list[Entry] = []
    queue = [(e.path, e.data) for e in entries if e.kind == "file"]
    while queue:
        path, data = queue.pop()
        info = read_elf(data, path)
        if info is None:
            continue
        if info.identity != want:
            raise StepError(f"{origin}: /{path} is {info.identity}, but board {board} "
                            f"runs {want}",
                            hint="build it with the board's toolchain, or remove it")
        wanted = list(info.needed)
        if info.interpreter:
            wanted.append(info.interpreter)
        for lib in wanted:
            dest = lib.lstrip("/") if lib.startswith("/") else f"lib/{lib}"
            if dest in present:
                continue
            found = next((d / Path(lib).name for d in libdirs if (d / Path(lib).name).exists()),
                         None)
            if found is None:
                raise StepError(f"{origin}: /{path} needs {lib}, which the toolchain's sysroot "
                                f"({', '.join(map(str, libdirs))}) does not have",
                                hint="link it statically, or install the library's -cross package")
            blob = found.resolve().read_bytes()
            present.add(dest)
            extra.append(Entry(dest, "file", 0o755, data=blob))
            queue.append((dest, blob))
    return entries + extra
