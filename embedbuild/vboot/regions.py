"""The bytes a FIT configuration signature covers, computed as U-Boot does.

Facts from U-Boot 2023.01 (boot/fdt_region.c, boot/image-fit-sig.c, tools/image-host.c);
the code is ours. A signature node lists ``hashed-nodes`` (full paths). Walking the
structure block, each node gets a level: 2 when its path is listed, else one less than
its parent's, never below 0. A token is hashed when:

- BEGIN_NODE / END_NODE: the node's level is at least 1 (so a listed node's direct
  subnodes, e.g. its signature-1, are hashed by name only: adding or renaming one breaks
  the signature, their properties do not);
- PROP / NOP: the node's level is 2, except properties named ``data``, ``data-size``,
  ``data-position`` and ``data-offset`` (image data is covered through the image's
  hash-N nodes instead);
- END: always.

An END_NODE of a level-0 node that closes a hashed run is kept in that run (U-Boot ends a
region after such a token, before any other). Then ``hashed-strings = <0 SIZE>`` adds the
first SIZE bytes of the strings block. mkimage lists "/", the configuration, and each
signed image with its hash-N (and cipher) nodes; so the root's own properties are signed,
while ``/images`` and ``/configurations`` (their ``default`` included) are signed only as
names, and other images and configurations not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedbuild import fdt

# Properties never hashed (U-Boot's exc_prop in fit_config_check_sig).
DATA_PROPS = frozenset({"data", "data-size", "data-position", "data-offset"})
MAX_DEPTH = 32


class RegionError(ValueError):
    """The tree cannot be hashed the way U-Boot hashes it (U-Boot refuses it too)."""


def hashed_regions(dtb: bytes, include: Sequence[str]) -> list[tuple[int, int]]:
    """(offset, size) of each byte run of the structure block that the nodes
    ``include`` cover, merged where runs touch, as offsets into ``dtb``.

    Raises RegionError where U-Boot's fdt_find_regions fails (a second root, a tree
    deeper than 32, a structure block whose END is not its last token).
    """
    try:
        h = fdt.header(dtb)
        toks = fdt.tags(dtb)
    except ValueError as e:
        raise RegionError(str(e)) from None
    wanted = set(include)
    runs: list[list[int]] = []
    start = -1
    stack: list[int] = []  # the parent's level for each open node
    path: list[str] = []
    want = 0
    ended = False
    for t in toks:
        stop_at = t.end
        if ended and t.kind != fdt.END:
            raise RegionError("two root nodes")
        if t.kind in (fdt.PROP, fdt.NOP):
            hashed = want >= 2 and not (t.kind == fdt.PROP and t.name in DATA_PROPS)
            stop_at = t.offset
        elif t.kind == fdt.BEGIN_NODE:
            if len(stack) == MAX_DEPTH:
                raise RegionError(f"nodes nested deeper than {MAX_DEPTH}")
            if not stack and t.name:
                raise RegionError("the root node has a name")
            stack.append(want)
            path.append(t.name)
            here = "/" + "/".join(path[1:])
            stop_at = t.offset  # a node not hashed ends the run before its own tag
            want = 2 if here in wanted else max(want - 1, 0)
            hashed = want > 0
        elif t.kind == fdt.END_NODE:
            if not stack:
                raise RegionError("END_NODE without a node")
            hashed = want > 0
            want = stack.pop()
            path.pop()
            ended = not stack
        else:  # END
            hashed = True
        if hashed and start < 0:
            # A run touching the previous one continues it.
            start = runs.pop()[0] if runs and runs[-1][1] == t.offset else t.offset
        elif not hashed and start >= 0:
            runs.append([start, stop_at])
            start = -1
    if toks[-1].end != h.size_struct:
        raise RegionError("the structure block does not end at its END token")
    runs.append([start, toks[-1].end])
    return [(h.off_struct + a, b - a) for a, b in runs]
