"""The image a board flashes must fit the partition it is written to: a check of its
own, beside the image, so the result holds only images that can be flashed."""

from __future__ import annotations

from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.step import Context, Step


def partition_fit_step(board: Board, image: Step, output: str) -> Step:
    """Refuses ``image``'s ``output`` when it is larger than the firmware partition.
    Output ``report``: its size and the partition's."""
    part = board.firmware_partition()
    assert part is not None

    def build(ctx: Context) -> None:
        path = ctx.input("image", output)
        size = path.stat().st_size
        if size > part.size:
            raise StepError(
                f"{path.name} is {size:,} bytes, more than the {part.name} partition "
                f"({part.size:,} bytes) it is flashed to",
                hint="shrink the kernel config, busybox or the system; `embedbuild size` "
                "shows where the bytes go")
        ctx.output("report").write_text(f"{path.name}: {size} of {part.size} bytes\n")

    return Step(kind="partition-fit", name=f"{board.name}-{part.name}-fit", version=1,
                inputs={"partition": part.model_dump(mode="json"), "output": output},
                deps={"image": image}, build=build, outputs={"report": "fit.txt"})
