"""The initramfs: one reproducible cpio segment per component, each compressed alone
and cached, concatenated into the image the kernel unpacks.

Changing the init, a service or an overlay rebuilds only its segment and the
concatenation; busybox and packages stay cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from embedbuild.compress import COMPRESSORS
from embedbuild.cpio import Entry, write_newc
from embedbuild.errors import StepError
from embedbuild.kconfig import read_config
from embedbuild.rootfs.libraries import check_and_close
from embedbuild.rootfs.owners import Owners
from embedbuild.rootfs.tree import tree_entries
from embedbuild.step import Context, Step


def digest_entries(entries: list[Entry]) -> str:
    """sha256 of entries (paths, kinds, modes, owners and contents): a segment's key."""
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
    secret: bool = False,
) -> Step:
    """A compressed cpio segment of the entries ``entries(ctx)`` returns; outputs
    ``segment`` and ``paths`` (what it holds, for the collision check and sizes).

    ``elf`` holds the board's ELF identity and sysroot: every ELF file is
    checked and dynamic ones get their libraries. A ``secret`` segment's item (and every
    item made from it) stays private to this machine (Step.secret).
    """

    def build(ctx: Context) -> None:
        found = with_parents(check_and_close(entries(ctx), elf["identity"], origin,
                                             elf["libdirs"], elf["board"]))
        raw = ctx.scratch / "segment.cpio"
        with open(raw, "wb") as f:
            write_newc(found, f)
        argv = COMPRESSORS[compression].argv
        if argv:
            ctx.run.run([*argv, raw], stdout=ctx.output("segment"),
                        what=f"{compression} compression")
        else:
            raw.rename(ctx.output("segment"))
        listing = {e.path: [e.kind, e.mode] for e in found}
        ctx.output("paths").write_text(json.dumps(
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
        outputs={"segment": "segment.cpio.z", "paths": "paths.json"},
        secret=secret,
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
    """The initramfs: segments in order, after checking that they do not collide.
    Outputs ``image`` and ``sizes`` (raw and compressed bytes per component)."""
    filename = f"initramfs.cpio{COMPRESSORS[compression].suffix}"
    roles = [f"segment{i}" for i in range(len(segments))]

    def build(ctx: Context) -> None:
        owners = Owners()
        sizes = []
        with open(ctx.output("image"), "wb") as out:
            for role in roles:
                meta = json.loads(ctx.input(role, "paths").read_text())
                for path, (kind, mode) in meta["paths"].items():
                    if why := owners.claim(path, kind, mode, meta["origin"]):
                        raise StepError(why, hint="remove or rename one of them; the image "
                                        "would be ambiguous")
                data = ctx.input(role, "segment").read_bytes()
                out.write(data)
                sizes.append({"component": meta["origin"], "raw": meta["raw_size"],
                              "compressed": len(data)})
        ctx.output("sizes").write_text(json.dumps(sizes, indent=1))

    return Step(
        kind="initramfs",
        name=name,
        version=4,
        inputs={"compression": compression},
        deps=dict(zip(roles, segments, strict=True)),
        build=build,
        outputs={"image": filename, "sizes": "sizes.json"},
    )


def unpack_check_step(name: str, kconfig: Step, compression: str) -> Step:
    """The kernel must be able to unpack a separate initramfs: CONFIG_RD_<compression>=y.
    A step of its own, so a kernel config change does not touch the initramfs."""
    symbol = COMPRESSORS[compression].initrd_symbol

    def build(ctx: Context) -> None:
        final = read_config(ctx.input("kconfig", "config"))
        if symbol and final.get(symbol, "n") != "y":
            raise StepError(
                f"the initramfs is {compression}-compressed but the kernel cannot unpack "
                f"it: CONFIG_{symbol} is {final.get(symbol, 'n')}",
                hint=f"add CONFIG_{symbol}=y to a kernel fragment, or choose another "
                "system.compression",
            )
        ctx.output("ok").write_text(f"{compression}: CONFIG_{symbol}=y\n" if symbol else "none\n")

    return Step(kind="initramfs-check", name=name, version=1,
                inputs={"compression": compression}, deps={"kconfig": kconfig}, build=build,
                outputs={"ok": "ok"})


def tree_of(role: str, output: str = "root") -> Callable[[Context], list[Entry]]:
    """Entries of a dependency's declared output folder, modes as built: the owner's write
    bit, which the store takes from its items, is given back."""
    return lambda ctx: [replace(e, mode=e.mode | 0o200) if e.kind in ("file", "dir") else e
                        for e in tree_entries(ctx.input(role, output))]
