"""The result step: the files every output published, in one folder, with the
manifest.json that describes them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from embedbuild.errors import StepError
from embedbuild.manifest import ComponentSize, FileInfo, KernelInfo, Manifest, UBootInfo
from embedbuild.model.board import Board
from embedbuild.outputs import Published
from embedbuild.step import Context, Step


def result_step(board: Board, outputs: list[str], published: list[Published],
                sizes: Step | None) -> Step:
    """Collect the published files (hard links: store items are immutable) and write
    manifest.json; ``sizes`` is the initramfs step, for its per-component sizes."""
    picks = [f for p in published for f in p.files]
    deps: dict[str, Step] = {}
    roles: dict[int, str] = {}
    for s in [*(f.step for f in picks), *(c for p in published for c in p.checks)]:
        roles.setdefault(id(s), f"dep{len(roles)}")
        deps[roles[id(s)]] = s
    header = next((p.header for p in published if p.header), None)
    if header:
        deps["header"] = header[0]
    if sizes is not None:
        deps["sizes"] = sizes
    facts = {}
    for p in published:
        for fld, (step, out) in p.facts.items():
            deps[f"facts-{fld}"] = step
            facts[fld] = out
    extra: dict = {}
    for p in published:
        extra |= p.manifest
    files = [(f.role, roles[id(f.step)], f.output, Path(f.step.output_path(f.output)).name)
             for f in picks]
    kernel_file = next(name for role, _, _, name in files if role == "kernel")

    def build(ctx: Context) -> None:
        infos = {}
        for role, dep, out, name in files:
            src = ctx.input(dep, out)
            dest = ctx.out / name
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            data = dest.read_bytes()
            infos[name] = FileInfo(role=role, size=len(data),
                                   sha256=hashlib.sha256(data).hexdigest())
        flash_image = extra.get("flash_image")
        if flash_image:
            check_fits(board, flash_image, infos[flash_image].size)
        h = json.loads(ctx.input("header", header[1]).read_text()) if header else {}
        components = (json.loads(ctx.input("sizes", "sizes").read_text())
                      if sizes is not None else [])
        read = {fld: json.loads(ctx.input(f"facts-{fld}", out).read_text())
                for fld, out in facts.items()}
        manifest(board, outputs, infos, kernel_file, h, components, extra["tftpboot"],
                 flash_image, read).write(ctx.out)

    return Step(
        kind="result",
        name=f"{board.name}-result",
        version=7,
        # Exactly what the manifest is written from; file contents are covered by the deps.
        inputs={
            "board": board.name,
            "arch": board.arch.value,
            "description": board.description,
            "outputs": outputs,
            "files": files,
            "kernel": board.kernel.model_dump(mode="json", include={"cmdline"}),
            "uboot": board.uboot.model_dump(mode="json"),
            "flash": board.flash.model_dump(mode="json") if board.flash else None,
            "manifest": extra,
            "facts": facts,
        },
        deps=deps,
        build=build,
        outputs={"manifest": "manifest.json"},
    )


def check_fits(board: Board, name: str, size: int) -> None:
    """The bootable image must fit the flash partition it is written to."""
    part = board.firmware_partition()
    if part is not None and size > part.size:
        raise StepError(
            f"{name} is {size:,} bytes, more than the {part.name} partition ({part.size:,} "
            "bytes) it is flashed to",
            hint="shrink the kernel config, busybox or the system; `embedbuild size` "
            "shows where the bytes go",
        )


def manifest(board: Board, outputs: list[str], files: dict[str, FileInfo], kernel_file: str,
             header: dict, components: list[dict], tftpboot: list[str],
             flash_image: str | None = None, facts: dict | None = None) -> Manifest:
    """The manifest of a result."""
    u = board.uboot

    def addr(a: int | None) -> str | None:
        return f"0x{a:08x}" if a is not None else None

    return Manifest(
        board=board.name,
        arch=board.arch.value,
        description=board.description,
        outputs=outputs,
        files=files,
        kernel=KernelInfo(file=kernel_file, cmdline=board.kernel.cmdline,
                          load=header.get("load"), entry=header.get("entry"),
                          compression=header.get("compression")),
        uboot=UBootInfo(prompt=u.prompt, kernel_addr=addr(u.kernel_addr) or "",
                        ramdisk_addr=addr(u.ramdisk_addr), fdt_addr=addr(u.fdt_addr),
                        tftpboot=tftpboot),
        initramfs=[ComponentSize(**c) for c in components],
        flash_image=flash_image,
        **(facts or {}),
    )
