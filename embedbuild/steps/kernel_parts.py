"""Where the boot image's bytes went: the kernel split by source folder (its linker map,
embedbuild/linkmap.py), a built-in initramfs by component, the appended DTB and the
uImage header, each with its raw bytes and its share of the compressed image.

The share is an estimate: each part is compressed alone with the image's compressor
and the compressed image's real size is divided in those proportions, so the parts
add up to the file exactly (compressed together they share a dictionary, so no part
has a size of its own there)."""

from __future__ import annotations

import json
from typing import Literal

from embedbuild.compress import COMPRESSORS
from embedbuild.linkmap import OTHER, input_sections, loaded_image, split_image
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.steps.uimage import compress
from embedbuild.uimage import HEADER

Group = Literal["kernel", "initramfs", "image"]
# What linkmap calls the built-in initramfs's object folder (usr/initramfs_data.o).
INITRAMFS_PART = "usr"


def kernel_parts_step(board: Board, kernel: Step, image: Step | None, dtb: Step | None,
                      initramfs: Step | None) -> Step:
    """Outputs ``parts``: a JSON list of {group, part, raw, image} ("image": estimated
    bytes in the boot file; None where the kernel file is not one embedbuild
    compresses), empty when the kernel has no linker map. ``image`` is the uImage step
    (None: the kernel's own image boots), ``dtb`` the DTB it appends, ``initramfs``
    the one built into the kernel."""
    u = board.kernel.uimage

    def build(ctx: Context) -> None:
        text = ctx.input("kernel", "map").read_text(errors="replace")
        if not text:
            ctx.output("parts").write_text("[]\n")
            return
        start, raw_image, bits = loaded_image(ctx.input("kernel", "vmlinux"))
        by_folder = split_image(raw_image, start, input_sections(text.splitlines(), bits))
        pieces: list[tuple[Group, str, bytes]] = []
        builtin = by_folder.pop(INITRAMFS_PART, b"") if initramfs else b""
        other = by_folder.pop(OTHER, b"")
        comps: list[tuple[Group, str, bytes]] = []
        if builtin:
            sizes = json.loads(ctx.input("initramfs", "sizes").read_text())
            pos = 0
            for c in sizes:  # the segments, uncompressed, one after the other
                comps.append(("initramfs", c["component"], builtin[pos:pos + c["compressed"]]))
                pos += c["compressed"]
            other += builtin[pos:]  # the section's alignment
        pieces += [("kernel", p, b) for p, b in sorted(by_folder.items(),
                                                        key=lambda kv: (-len(kv[1]), kv[0]))]
        pieces.append(("kernel", OTHER, other))
        pieces += comps
        if u is not None and u.append_dtb and dtb is not None:
            pieces.append(("image", "device tree (appended)", ctx.input("dtb", "dtb").read_bytes()))
        shares: list[int | None] = [None] * len(pieces)
        if u is not None and image is not None:
            payload = ctx.input("image", "image").stat().st_size - HEADER.size
            alone = [_compressed_size(ctx, i, data, u.compression)
                     for i, (_, _, data) in enumerate(pieces)]
            shares = list(_divide(payload, alone))
        rows = [{"group": g, "part": p, "raw": len(d), "image": s}
                for (g, p, d), s in zip(pieces, shares, strict=True)]
        if u is not None and image is not None:
            rows.append({"group": "image", "part": "uImage header", "raw": HEADER.size,
                         "image": HEADER.size})
        ctx.output("parts").write_text(json.dumps(rows, indent=1))

    deps = {"kernel": kernel}
    for role, step in (("image", image), ("dtb", dtb), ("initramfs", initramfs)):
        if step is not None:
            deps[role] = step
    return Step(
        kind="kernel-parts",
        name=f"{board.name}-kernel-parts",
        version=1,
        inputs={"compression": u.compression if u else None,
                "append_dtb": bool(u and u.append_dtb)},
        deps=deps,
        build=build,
        outputs={"parts": "parts.json"},
    )


def _compressed_size(ctx: Context, i: int, data: bytes, how: str) -> int:
    if COMPRESSORS[how].argv is None or not data:
        return len(data)
    raw = ctx.scratch / f"part{i}"
    raw.write_bytes(data)
    return compress(ctx, raw, how).stat().st_size


def _divide(total: int, weights: list[int]) -> list[int]:
    """``total`` divided in proportion to ``weights``, in whole bytes adding up to it
    (largest remainders round up)."""
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[:total - sum(out)]:
        out[i] += 1
    return out
