"""The system's initramfs (for boards with a system): what each of its components
costs, raw and compressed (the manifest's ``initramfs`` section, the lines of
`embedbuild size`), and the kernel symbols its packages need, checked in the final
kernel config. The file itself goes out with the TFTP bundle, or inside the kernel."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Fact, PlanContext, Published, SizeLine, output


class ComponentSize(BaseModel):
    """Bytes of one initramfs component, before and after compression."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    component: str
    raw: int
    compressed: int


def size(m) -> list[SizeLine]:
    rows = m.initramfs or []
    # A separate initramfs is loaded beside the kernel; a built-in one is in its bytes,
    # and the kernel's lines show its components with their share of the image.
    separate = bool(m.with_role("initramfs"))
    if not separate and any(p.group == "initramfs" for p in m.kernel_parts or []):
        return []
    lines = [SizeLine(c.component, c.raw, c.compressed) for c in rows]
    where = "initramfs" if separate else "initramfs (built into the kernel)"
    raw, comp = sum(c.raw for c in rows), sum(c.compressed for c in rows)
    return [*lines, SizeLine(where, raw, comp, loaded=comp if separate else 0)]


@output("initramfs", applies=lambda board: board.system is not None,
        sections={"initramfs": list[ComponentSize]}, size=size)
def plan(p: PlanContext) -> Published:
    """The initramfs's components and their sizes; its packages' kernel symbols checked."""
    return Published(checks=[p.get("kernel-needs")],
                     facts={"initramfs": Fact(p.get("initramfs"), "sizes")})
