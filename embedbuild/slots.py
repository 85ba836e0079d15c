"""The A/B state in U-Boot's environment, as the boot script (bootcmd.ab_script) reads
it: which slot boots next, which one an update writes, and what it leaves in the
environment. One reading for `embedbuild slots`, `update` through U-Boot and over SSH.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from embedbuild import bootcmd
from embedbuild.model.board import SLOTS, Board, FlashAb

_LEFT = re.compile(r"^0*([0-9a-fA-F]{1,8})$")


def counter(value: str | None) -> int:
    """A BOOT_x_LEFT value as the script reads it (``test 0x${VAR} -gt 0``: hexadecimal,
    setexpr's way of writing; missing or unreadable counts as 0 tries)."""
    if value is None:
        return 0
    m = _LEFT.match(value.strip())
    return int(m.group(1), 16) if m else 0


@dataclass(frozen=True)
class AbState:
    """The slots' order and tries left, read from an environment.

    Args:
        order: BOOT_ORDER as stored (None: not set).
        left: each slot's BOOT_x_LEFT as stored (None: not set).
        pending: BOOT_PENDING: the slot an update wrote that has not marked itself good.
    """

    order: str | None
    left: dict[str, str | None]
    pending: str | None = None

    @classmethod
    def of(cls, variables: dict[str, str]) -> AbState:
        """The state in an environment's variables."""
        return cls(variables.get(bootcmd.BOOT_ORDER),
                   {s: variables.get(bootcmd.left_var(s)) for s in SLOTS},
                   variables.get(bootcmd.BOOT_PENDING))

    @property
    def configured(self) -> bool:
        """Whether the environment holds A/B state at all (an update stored it)."""
        return self.order is not None

    def effective_order(self) -> list[str]:
        """The order the script tries slots in: BOOT_ORDER's slots, each once, then every
        slot it does not name."""
        out: list[str] = []
        for word in [*(self.order or "").split(), *SLOTS]:
            if word in SLOTS and word not in out:
                out.append(word)
        return out

    def tries(self, slot: str) -> int:
        """A slot's tries left, as the script counts them."""
        return counter(self.left[slot])

    def next_slot(self) -> str | None:
        """The slot U-Boot boots next (None: no slot has tries left; the script gives
        each its tries again and resets)."""
        return next((s for s in self.effective_order() if self.tries(s) > 0), None)

    def booting(self) -> str | None:
        """The slot the next boot takes: the next with tries left, or when none has any,
        the first of the order (the script gives each its tries again); None before any
        update stored A/B state."""
        if not self.configured:
            return None
        return self.next_slot() or self.effective_order()[0]

    def in_use(self) -> str | None:
        """The slot an update must keep, read from the environment alone: the one that
        boots next, unless that one holds an update not yet proven (BOOT_PENDING): then
        the other, the last proven good. None before any update."""
        nxt = self.booting()
        if nxt is not None and self.pending == nxt:
            return next(s for s in SLOTS if s != nxt)
        return nxt

    def target(self, asked: str) -> str:
        """The slot an update writes: ``asked`` ("A" or "B"), or for "auto" the one not
        in use; A on a first install."""
        if asked != "auto":
            return asked
        keep = self.in_use()
        return SLOTS[0] if keep is None else next(s for s in SLOTS if s != keep)

    def after_update(self, slot: str, ab: FlashAb) -> dict[str, str]:
        """The variables an update to ``slot`` stores: that slot first with all its tries,
        pending until its system marks it good; the other keeps what it had (a first
        install gives it none: nothing is in it)."""
        other = [s for s in SLOTS if s != slot]
        out = {bootcmd.BOOT_ORDER: " ".join([slot, *other]), bootcmd.left_var(slot): str(ab.tries),
               bootcmd.BOOT_PENDING: slot}
        for s in other:
            out[bootcmd.left_var(s)] = self.left[s] if self.left[s] is not None else "0"
        return out


# The first bytes of what a slot can hold: a FIT (a device tree: magic, total size) or a
# legacy uImage (magic, ..., data size after a 64-byte header); all 0xff is erased flash.
FDT_MAGIC, UIMAGE_MAGIC, UIMAGE_HEADER = 0xD00DFEED, 0x27051956, 64
HEAD = 64  # bytes read from a slot to say what it holds


def image_size(head: bytes) -> tuple[str, int]:
    """(kind, size) of the image a slot starts with, from its first HEAD bytes: ("FIT",
    bytes), ("uImage", bytes), ("erased", 0) or ("no image", 0)."""
    if len(head) >= 8:
        magic, size = struct.unpack(">II", head[:8])
        if magic == FDT_MAGIC:
            return "FIT", size
        if magic == UIMAGE_MAGIC and len(head) >= 16:
            return "uImage", UIMAGE_HEADER + struct.unpack(">I", head[12:16])[0]
    if head and head == b"\xff" * len(head):
        return "erased", 0
    return "no image", 0


def describe(board: Board, variables: dict[str, str], images: dict[str, str]) -> list[str]:
    """`embedbuild slots`: one line per slot (partition, what it holds as ``images``
    says, tries left, the next to boot) and the order."""
    flash = board.flash
    assert flash is not None and flash.ab is not None
    state = AbState.of(variables)
    nxt = state.next_slot() if state.configured else None
    lines = []
    for s in SLOTS:
        part = flash.partition(flash.ab.partition_of(s))
        stored = state.left[s]
        shown = f"{state.tries(s)} of {flash.ab.tries}" if stored is not None else "unset"
        mark = "  <- boots next" if s == nxt else ""
        lines.append(f"slot {s}  {part.name:12} {images.get(s, '?')}; "
                     f"tries left {shown}{mark}")
    if not state.configured:
        return [*lines, "no A/B state in the environment: no update has run (U-Boot boots by "
                f"its bootcmd: {variables.get('bootcmd', '(none)')!r})"]
    order = " ".join(state.effective_order())
    note = "" if (state.order or "").split() == order.split() else f" (tried as {order!r})"
    lines.append(f"BOOT_ORDER {state.order!r}{note}")
    if state.pending in SLOTS:
        lines.append(f"slot {state.pending} holds an update that has not yet marked itself "
                     "good")
    if nxt is None:
        lines.append(f"no slot has tries left: the next boot gives each {flash.ab.tries} "
                     "again")
    return lines
