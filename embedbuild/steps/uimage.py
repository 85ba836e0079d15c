"""The legacy uImage: the kernel (with the DTB appended if asked) compressed and
wrapped by mkimage, then parsed back and checked."""

from __future__ import annotations

import json
from pathlib import Path

from embedbuild import elf, uimage
from embedbuild.compress import COMPRESSORS
from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.step import Context, Step

UIMAGE_ARCH = {"arm": "arm", "arm64": "arm64", "mips": "mips"}


def uimage_step(board: Board, kernel: Step, dtb: Step | None) -> Step:
    """Outputs ``image`` (the uImage) and ``header`` (its fields as read back)."""
    u = board.kernel.uimage
    assert u is not None

    def build(ctx: Context) -> None:
        vmlinux = ctx.input("kernel", "vmlinux")
        payload = ctx.input("kernel", "image").read_bytes()
        if u.append_dtb:
            payload += ctx.input("dtb", "dtb").read_bytes()
        entry = elf.check_entry(vmlinux, u.load, u.entry)
        check_ram_layout(vmlinux, u.load, len(payload), board.uboot.kernel_addr)
        raw = ctx.scratch / "payload"
        raw.write_bytes(payload)
        data = compress(ctx, raw, u.compression)
        ctx.run.run(["mkimage", "-A", UIMAGE_ARCH[board.arch.value], "-O", "linux",
                     "-T", "kernel", "-C", u.compression, "-a", f"0x{u.load:08x}",
                     "-e", f"0x{entry:08x}", "-n", f"embedbuild {board.name}", "-d", data,
                     ctx.output("image")],
                    env={"SOURCE_DATE_EPOCH": "0"}, what="mkimage")
        h = uimage.verify(ctx.output("image"), arch=UIMAGE_ARCH[board.arch.value],
                          compression=u.compression, load=u.load, entry=entry)
        ctx.output("header").write_text(json.dumps(
            {"load": f"0x{h.load:08x}", "entry": f"0x{h.entry:08x}", "arch": h.arch,
             "compression": h.compression, "size": h.size}, indent=1))

    return Step(
        kind="uimage",
        name=f"{board.name}-uimage",
        version=3,
        inputs=u.model_dump(mode="json")
        | {"arch": board.arch.value, "kernel_addr": board.uboot.kernel_addr},
        deps={"kernel": kernel} | ({"dtb": dtb} if dtb else {}),
        build=build,
        outputs={"image": "uImage", "header": "uimage.json"},
    )


def check_ram_layout(vmlinux: Path, load: int, payload: int, kernel_addr: int) -> None:
    """The kernel decompresses to ``load`` and grows up to its bss end (or the end of the
    payload with its appended DTB): it must not reach the compressed image U-Boot loaded
    at ``kernel_addr`` above it."""
    end = max(elf.memory_end(vmlinux), load + payload)
    if load <= kernel_addr < end:
        raise StepError(
            f"RAM layout: the kernel runs from 0x{load:08x} to 0x{end:08x}, over the "
            f"uImage loaded at uboot.kernel_addr 0x{kernel_addr:08x}",
            hint=f"load the uImage above 0x{end:08x} (uboot.kernel_addr in board.toml)")


def compress(ctx: Context, raw: Path, how: str) -> Path:
    """raw compressed as ``how`` (in the step's scratch folder), or raw itself."""
    argv = COMPRESSORS[how].argv
    if argv is None:
        return raw
    out = raw.with_name(f"{raw.name}.{how}")
    ctx.run.run([*argv, raw], stdout=out, what=f"{how} compression")
    return out
