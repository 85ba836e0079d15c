"""Kernel steps: the checked config, the device tree, the build, and the image packaging."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from embedbuild import kconfig
from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.plan import Context, Step
from embedbuild.store import hash_file
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

BOOT_DIR = {"arm": "arch/arm/boot", "arm64": "arch/arm64/boot", "mips": "arch/mips/boot"}


def _make(tc: Toolchain, tree: Path, build: Path, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", "-C", str(tree), f"O={build}", *tc.make_vars(), f"-j{jobs}", "-s", *targets]


def fragments_of(board: Board) -> dict[Path, str]:
    """The board's fragments, read once: path -> text."""
    return {p: p.read_text() for p in board.kernel.fragments}


def config_step(board: Board, tree: Step, tc: Toolchain, fragments: dict[Path, str]) -> Step:
    """The kernel .config: base target + merged fragments, olddefconfig, then verified."""
    requests = kconfig.merge_fragments(fragments)  # conflicts are refused before any work

    def build(ctx: Context) -> None:
        src = ctx.deps["tree"]
        b = ctx.out / "build"
        env = REPRODUCIBLE_ENV
        ctx.run.run(_make(tc, src, b, board.kernel.base), env=env, what=f"make {board.kernel.base}")
        kconf = kconfig.open_kconfig(src, tc.kconfig_env(src))
        kconfig.check_known(kconf, requests)
        kconfig.apply_requests(kconf, b / ".config", requests, b / ".config")
        ctx.run.run(_make(tc, src, b, "olddefconfig"), env=env, what="make olddefconfig")
        kconfig.verify(kconf, b / ".config", requests)
        shutil.copyfile(b / ".config", ctx.out / "kernel.config")
        (ctx.out / "request.config").write_text(
            "".join(f"{r.config_line()}\n" for r in requests.values())
        )
        shutil.rmtree(b)

    return Step(
        kind="kconfig",
        name=f"{board.name}-kconfig",
        version=1,
        inputs={
            "base": board.kernel.base,
            "arch": board.arch.value,
            "fragments": [
                {"name": p.name, "sha256": hashlib.sha256(t.encode()).hexdigest()}
                for p, t in fragments.items()
            ],
            "toolchain": tc.identity(),
        },
        deps={"tree": tree},
        build=build,
    )


def dtb_step(board: Board, tree: Step, config: Step, tc: Toolchain) -> Step:
    """The board's .dts compiled with the kernel's own dtc and include paths."""
    dts = board.kernel.dts
    assert dts is not None
    local = sorted(p for p in dts.parent.iterdir() if p.suffix in (".dts", ".dtsi", ".h"))

    def build(ctx: Context) -> None:
        src = ctx.deps["tree"]
        b = ctx.out / "build"
        b.mkdir()
        shutil.copyfile(ctx.deps["config"] / "kernel.config", b / ".config")
        ctx.run.run(
            _make(tc, src, b, "scripts_dtc"), env=REPRODUCIBLE_ENV, what="building the kernel's dtc"
        )
        pre = b / f"{dts.stem}.dts.pp"
        inc = [src / "include", src / "arch" / board.arch.value / "boot" / "dts", dts.parent]
        ctx.run.run(
            [
                "gcc",
                "-E",
                "-nostdinc",
                "-undef",
                "-D__DTS__",
                "-x",
                "assembler-with-cpp",
                *[f"-I{d}" for d in inc],
                "-o",
                pre,
                dts,
            ],
            what=f"preprocessing {dts.name}",
        )
        try:
            ctx.run.run(
                [
                    b / "scripts" / "dtc" / "dtc",
                    "-q",
                    "-O",
                    "dtb",
                    "-b",
                    "0",
                    "-i",
                    dts.parent,
                    "-o",
                    ctx.out / f"{dts.stem}.dtb",
                    pre,
                ],
                what=f"dtc {dts.name}",
            )
        except StepError as e:
            m = re.search(r"Error: (\S+?):(\d+)\.\d+(?:-[\d.]+)?:? (.*)", e.log_tail or "")
            if m:
                raise StepError(
                    f"device tree error: {m.group(3)}",
                    where=f"{m.group(1)}:{m.group(2)}",
                    hint="fix the device tree source at that line",
                    log_tail=e.log_tail,
                    log_path=e.log_path,
                ) from None
            raise
        shutil.rmtree(b)

    return Step(
        kind="dtb",
        name=f"{board.name}-dtb",
        version=1,
        inputs={
            "dts": dts.name,
            "files": {p.name: hash_file(p) for p in local},
            "arch": board.arch.value,
            "hostcc": tc.identity()["hostcc"],
        },
        deps={"tree": tree, "config": config},
        build=build,
    )


def kernel_step(board: Board, tree: Step, config: Step, tc: Toolchain, jobs: int) -> Step:
    """make <image> (and an in-tree DTB) out of tree; keeps the image, vmlinux, System.map."""
    image = board.kernel.image
    targets = [image] + ([board.kernel.dtb] if board.kernel.dtb else [])

    def build(ctx: Context) -> None:
        src = ctx.deps["tree"]
        b = ctx.out / "build"
        b.mkdir()
        shutil.copyfile(ctx.deps["config"] / "kernel.config", b / ".config")
        ctx.run.run(
            _make(tc, src, b, *targets, jobs=ctx.jobs),
            env=REPRODUCIBLE_ENV,
            what=f"make {' '.join(targets)}",
        )
        built = b / image if image == "vmlinux" else b / BOOT_DIR[board.arch.value] / image
        shutil.copyfile(built, ctx.out / image)
        if image != "vmlinux":
            shutil.copyfile(b / "vmlinux", ctx.out / "vmlinux")
        shutil.copyfile(b / "System.map", ctx.out / "System.map")
        shutil.copyfile(b / ".config", ctx.out / "kernel.config")
        if board.kernel.dtb:
            dtb = b / BOOT_DIR[board.arch.value] / "dts" / board.kernel.dtb
            shutil.copyfile(dtb, ctx.out / Path(board.kernel.dtb).name)
        shutil.rmtree(b)

    return Step(
        kind="kernel",
        name=f"{board.name}-kernel",
        version=1,
        inputs={
            "image": image,
            "dtb": board.kernel.dtb,
            "arch": board.arch.value,
            "toolchain": tc.identity(),
        },
        deps={"tree": tree, "config": config},
        build=build,
        jobs=jobs,
    )


COMPRESSORS = {
    "none": None,
    "gzip": ["gzip", "-9", "-n", "-c"],
    "lzma": ["xz", "--format=lzma", "-9", "-c"],
    "xz": ["xz", "--check=crc32", "-9", "-c"],
    "lzo": ["lzop", "-9", "-c"],
    "lz4": ["lz4", "-l", "-9", "-c"],
    "zstd": ["zstd", "-19", "-c"],
}
UIMAGE_ARCH = {"arm": "arm", "arm64": "arm64", "mips": "mips"}


def uimage_step(board: Board, kernel: Step, dtb: Step | None) -> Step:
    """The kernel (with the DTB appended if asked) compressed and wrapped by mkimage."""
    from embedbuild import elf

    u = board.kernel.uimage
    assert u is not None
    image = board.kernel.image

    def build(ctx: Context) -> None:
        kdir = ctx.deps["kernel"]
        payload = (kdir / image).read_bytes()
        if u.append_dtb:
            dtbs = sorted(ctx.deps["dtb" if dtb else "kernel"].glob("*.dtb"))
            payload += dtbs[0].read_bytes()
        raw = ctx.out / "payload"
        raw.write_bytes(payload)
        entry = elf.check_entry(kdir / "vmlinux", u.load, u.entry)
        data = raw
        if COMPRESSORS[u.compression]:
            data = ctx.out / f"payload.{u.compression}"
            ctx.run.run(
                [*COMPRESSORS[u.compression], raw], stdout=data, what=f"{u.compression} compression"
            )
        ctx.run.run(
            [
                "mkimage",
                "-A",
                UIMAGE_ARCH[board.arch.value],
                "-O",
                "linux",
                "-T",
                "kernel",
                "-C",
                u.compression,
                "-a",
                f"0x{u.load:08x}",
                "-e",
                f"0x{entry:08x}",
                "-n",
                f"embedbuild {board.name}",
                "-d",
                data,
                ctx.out / "uImage",
            ],
            env={"SOURCE_DATE_EPOCH": "0"},
            what="mkimage",
        )
        raw.unlink()
        if data != raw:
            data.unlink()

    deps = {"kernel": kernel} | ({"dtb": dtb} if dtb else {})
    return Step(
        kind="uimage",
        name=f"{board.name}-uimage",
        version=1,
        inputs=u.model_dump(mode="json") | {"image": image, "arch": board.arch.value},
        deps=deps,
        build=build,
    )
