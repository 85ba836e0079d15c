"""The initramfs: one reproducible cpio segment per component, each compressed alone
and cached, concatenated into the image the kernel unpacks.

Changing the init, a service or an overlay rebuilds only its segment and the
concatenation; busybox and packages stay cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from embedbuild.cpio import Entry, write_newc
from embedbuild.errors import StepError
from embedbuild.kconfig import read_config
from embedbuild.plan import Context, Step
from embedbuild.rootfs import check_and_close

# How each segment is compressed; each must match what the kernel can unpack.
COMPRESS = {
    "gzip": (["gzip", "-9", "-n", "-c"], "RD_GZIP", ".gz"),
    "xz": (["xz", "--check=crc32", "--lzma2=dict=1MiB", "-9", "-c"], "RD_XZ", ".xz"),
    "lzma": (["xz", "--format=lzma", "-9", "-c"], "RD_LZMA", ".lzma"),
    "zstd": (["zstd", "-19", "-q", "-c"], "RD_ZSTD", ".zst"),
    "lz4": (["lz4", "-l", "-9", "-q", "-c"], "RD_LZ4", ".lz4"),
    "none": (None, None, ""),
}


def digest_entries(entries: list[Entry]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(repr((e.path, e.kind, e.mode, e.target, e.major, e.minor, e.uid,
                       e.gid)).encode())
        h.update(hashlib.sha256(e.data).digest())
    return h.hexdigest()


def segment_step(
    name: str,
    origin: str,
    entries: Callable[[Context], list[Entry]],
    *,
    inputs: dict,
    deps: dict[str, Step],
    compression: str,
    elf: dict,
) -> Step:
    """A compressed cpio segment of the entries ``entries(ctx)`` returns.

    ``elf`` holds the board's ELF identity and sysroot: every ELF file is
    checked and dynamic ones get their libraries.
    """

    def build(ctx: Context) -> None:
        found = with_parents(check_and_close(entries(ctx), elf["identity"], origin,
                                             elf["libdirs"], elf["board"]))
        raw = ctx.out / "segment.cpio"
        with open(raw, "wb") as f:
            write_newc(found, f)
        cmd, _, _ = COMPRESS[compression]
        out = ctx.out / "segment.cpio.z"
        if cmd:
            ctx.run.run([*cmd, raw], stdout=out, what=f"{compression} compression")
            raw.unlink()
        else:
            raw.rename(out)
        listing = {e.path: [e.kind, e.mode] for e in found}
        (ctx.out / "paths.json").write_text(json.dumps(
            {"origin": origin, "paths": listing,
             "raw_size": sum(len(e.data) for e in found)}, indent=0, sort_keys=True))

    return Step(
        kind="segment",
        name=name,
        version=2,
        inputs={**inputs, "compression": compression, "origin": origin,
                "elf": str(elf["identity"]), "libdirs": [str(d) for d in elf["libdirs"]]},
        deps=deps,
        build=build,
    )


def with_parents(entries: list[Entry]) -> list[Entry]:
    """Entries plus the folders they sit in (0755) that the list lacks: the kernel's
    unpacker does not create missing parents."""
    have = {e.path for e in entries}
    extra = []
    for e in entries:
        parent = Path(e.path).parent
        while str(parent) != "." and str(parent) not in have:
            have.add(str(parent))
            extra.append(Entry(str(parent), "dir", 0o755))
            parent = parent.parent
    return entries + extra


def concat_step(name: str, segments: list[Step], compression: str) -> Step:
    """The initramfs: segments in order, after checking that they do not collide."""
    _, _, suffix = COMPRESS[compression]
    filename = f"initramfs.cpio{suffix}"

    def build(ctx: Context) -> None:
        owners: dict[str, tuple[str, str, int]] = {}
        sizes = []
        with open(ctx.out / filename, "wb") as out:
            for i in range(len(segments)):
                seg = ctx.deps[f"segment{i}"]
                meta = json.loads((seg / "paths.json").read_text())
                for path, (kind, mode) in meta["paths"].items():
                    other = owners.get(path)
                    if other and not (kind == "dir" and other[1] == "dir"):
                        raise StepError(
                            f"/{path} comes from both {other[0]} and {meta['origin']}",
                            hint="remove or rename one of them; the image would be ambiguous",
                        )
                    if other and other[2] != mode:
                        # The kernel applies the mode of the last segment: say so instead.
                        raise StepError(
                            f"folder /{path} is mode {other[2]:o} in {other[0]} but "
                            f"{mode:o} in {meta['origin']}",
                            hint="give it the same mode (an overlay's NAME.toml can set it)",
                        )
                    owners[path] = (meta["origin"], kind, mode)
                data = (seg / "segment.cpio.z").read_bytes()
                out.write(data)
                sizes.append({"component": meta["origin"], "raw": meta["raw_size"],
                              "compressed": len(data)})
        (ctx.out / "sizes.json").write_text(json.dumps(sizes, indent=1))

    return Step(
        kind="initramfs",
        name=name,
        version=3,
        inputs={"compression": compression, "file": filename},
        deps={f"segment{i}": s for i, s in enumerate(segments)},
        build=build,
    )


def unpack_check_step(name: str, kconfig: Step, compression: str) -> Step:
    """The kernel must be able to unpack a separate initramfs: CONFIG_RD_<compression>=y.
    A step of its own, so a kernel config change does not touch the initramfs."""
    _, symbol, _ = COMPRESS[compression]

    def build(ctx: Context) -> None:
        final = read_config(ctx.deps["kconfig"] / "kernel.config")
        if symbol and final.get(symbol, "n") != "y":
            raise StepError(
                f"the initramfs is {compression}-compressed but the kernel cannot unpack "
                f"it: CONFIG_{symbol} is {final.get(symbol, 'n')}",
                hint=f"add CONFIG_{symbol}=y to a kernel fragment, or choose another "
                "system.compression",
            )
        (ctx.out / "ok").write_text(f"{compression}: CONFIG_{symbol}=y\n" if symbol else "none\n")

    return Step(kind="initramfs-check", name=name, version=1,
                inputs={"compression": compression}, deps={"kconfig": kconfig}, build=build)


def tree_of(role: str, sub: str = "root") -> Callable[[Context], list[Entry]]:
    """Entries of a dependency's output subfolder, modes as built: the owner's write
    bit, which the store takes from its items, is given back."""
    from dataclasses import replace

    from embedbuild.rootfs import tree_entries

    return lambda ctx: [replace(e, mode=e.mode | 0o200) if e.kind in ("file", "dir") else e
                        for e in tree_entries(Path(ctx.deps[role]) / sub)]
