"""The compressors embedbuild runs, in one table: initramfs segments and uImage payloads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Compressor:
    """How to compress to stdout, and what a kernel needs to unpack it.

    Args:
        argv: the command, given the input file as its last argument.
        initrd_symbol: the Kconfig symbol that lets the kernel unpack an initramfs of it.
        suffix: the file name suffix.
    """

    argv: tuple[str, ...] | None
    initrd_symbol: str | None
    suffix: str


COMPRESSORS = {
    "none": Compressor(None, None, ""),
    "gzip": Compressor(("gzip", "-9", "-n", "-c"), "RD_GZIP", ".gz"),
    # crc32 and a 1 MiB dictionary: what the kernel's own xz unpacker handles.
    "xz": Compressor(("xz", "--check=crc32", "--lzma2=dict=1MiB", "-9", "-c"), "RD_XZ", ".xz"),
    "lzma": Compressor(("xz", "--format=lzma", "-9", "-c"), "RD_LZMA", ".lzma"),
    "lzo": Compressor(("lzop", "-9", "-c"), "RD_LZO", ".lzo"),
    "lz4": Compressor(("lz4", "-l", "-9", "-q", "-c"), "RD_LZ4", ".lz4"),
    "zstd": Compressor(("zstd", "-19", "-q", "-c"), "RD_ZSTD", ".zst"),
}
