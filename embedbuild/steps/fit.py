"""The FIT image: the kernel and the separate initramfs in one file (mkimage -f from an
.its embedbuild writes), each with a hash, parsed back and checked after mkimage."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

from embedbuild import fdt
from embedbuild.bootcmd import FIT_CONFIG
from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.step import Context, Step

# U-Boot's names for the architectures (include/image.h, uimage_arch).
FIT_ARCH = {"arm": "arm", "arm64": "arm64", "mips": "mips"}


def fit_addresses(board: Board) -> dict[str, int]:
    """Kernel load and entry, ramdisk load: the board's [kernel.fit], else its [uboot]."""
    fit = board.kernel.fit
    assert fit is not None
    load = fit.load if fit.load is not None else board.uboot.kernel_addr
    ramdisk = fit.ramdisk_load if fit.ramdisk_load is not None else board.uboot.ramdisk_addr
    assert ramdisk is not None  # the model refuses a FIT without one
    return {"load": load, "entry": fit.entry if fit.entry is not None else load,
            "ramdisk": ramdisk}


def its(board: Board, kernel: str, ramdisk: str) -> str:
    """The image tree source mkimage builds the FIT from."""
    fit = board.kernel.fit
    assert fit is not None
    a = fit_addresses(board)
    ncells = 2 if board.arch.value == "arm64" else 1

    def addr(value: int) -> str:
        return "<" + " ".join(f"0x{(value >> (32 * i)) & 0xFFFFFFFF:08x}"
                              for i in reversed(range(ncells))) + ">"

    arch = FIT_ARCH[board.arch.value]
    return f"""/dts-v1/;

/ {{
	description = "embedbuild {board.name}";
	#address-cells = <{ncells}>;

	images {{
		kernel-1 {{
			description = "Linux {board.kernel.image}";
			data = /incbin/("{kernel}");
			type = "kernel";
			arch = "{arch}";
			os = "linux";
			compression = "none";
			load = {addr(a["load"])};
			entry = {addr(a["entry"])};
			hash-1 {{
				algo = "{fit.hash}";
			}};
		}};
		ramdisk-1 {{
			description = "initramfs";
			data = /incbin/("{ramdisk}");
			type = "ramdisk";
			arch = "{arch}";
			os = "linux";
			compression = "none";
			load = {addr(a["ramdisk"])};
			hash-1 {{
				algo = "{fit.hash}";
			}};
		}};
	}};

	configurations {{
		default = "{FIT_CONFIG}";
		{FIT_CONFIG} {{
			description = "{board.name}";
			kernel = "kernel-1";
			ramdisk = "ramdisk-1";
		}};
	}};
}};
"""


def digest(algo: str, data: bytes) -> bytes:
    """What mkimage stores in a hash node's value."""
    if algo == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    return hashlib.new(algo, data).digest()


def verify(path: Path, board: Board, kernel: bytes, ramdisk: bytes) -> dict:
    """Parse a FIT back: each image holds exactly the file it was made from, its hash
    matches its data, and type, arch and addresses are the ones asked for."""
    fit = board.kernel.fit
    assert fit is not None
    try:
        nodes = fdt.tree(path.read_bytes())
    except (ValueError, IndexError) as e:
        raise StepError(f"{path.name} is not a readable FIT image: {e}") from None
    a = fit_addresses(board)
    want = {
        "/images/kernel-1": (kernel, "kernel", {"load": a["load"], "entry": a["entry"]}),
        "/images/ramdisk-1": (ramdisk, "ramdisk", {"load": a["ramdisk"]}),
    }
    problems = []
    for node, (data, typ, addrs) in want.items():
        props = nodes.get(node)
        if props is None:
            problems.append(f"no {node}")
            continue
        if props.get("data") != data:
            problems.append(f"{node} data differs from the file it was made from")
        if fdt.string(props.get("type", b"")) != typ:
            problems.append(f"{node} type is {fdt.string(props.get('type', b''))!r}")
        if fdt.string(props.get("arch", b"")) != FIT_ARCH[board.arch.value]:
            problems.append(f"{node} arch is {fdt.string(props.get('arch', b''))!r}")
        for name, value in addrs.items():
            if fdt.cells(props.get(name, b"")) != value:
                problems.append(f"{node} {name} is not 0x{value:08x}")
        h = nodes.get(f"{node}/hash-1", {})
        if fdt.string(h.get("algo", b"")) != fit.hash or h.get("value") != digest(fit.hash, data):
            problems.append(f"{node} has no matching {fit.hash} hash")
    conf = nodes.get(f"/configurations/{FIT_CONFIG}", {})
    if fdt.string(nodes.get("/configurations", {}).get("default", b"")) != FIT_CONFIG \
            or fdt.string(conf.get("kernel", b"")) != "kernel-1" \
            or fdt.string(conf.get("ramdisk", b"")) != "ramdisk-1":
        problems.append(f"default configuration {FIT_CONFIG} does not name kernel-1 and "
                        "ramdisk-1")
    if problems:
        raise StepError(f"{path.name} failed verification: " + "; ".join(problems))
    return {"load": f"0x{a['load']:08x}", "entry": f"0x{a['entry']:08x}",
            "ramdisk_load": f"0x{a['ramdisk']:08x}", "hash": fit.hash,
            "kernel_size": len(kernel), "ramdisk_size": len(ramdisk)}


def fit_step(board: Board, kernel: Step, initramfs: Step) -> Step:
    """Outputs ``image`` (the FIT, BOARD.itb) and ``header`` (what was read back)."""
    fit = board.kernel.fit
    assert fit is not None

    def build(ctx: Context) -> None:
        k, rd = ctx.input("kernel", "image"), ctx.input("initramfs", "image")
        # mkimage resolves /incbin/ against the .its folder: copy the inputs beside it.
        for src in (k, rd):
            shutil.copyfile(src, ctx.scratch / src.name)
        source = ctx.scratch / "image.its"
        source.write_text(its(board, k.name, rd.name))
        ctx.run.run(["mkimage", "-f", source, ctx.output("image")],
                    env={"SOURCE_DATE_EPOCH": "0"}, what="mkimage -f")
        facts = verify(ctx.output("image"), board, k.read_bytes(), rd.read_bytes())
        shutil.copyfile(source, ctx.output("its"))
        ctx.output("header").write_text(json.dumps(facts, indent=1))

    return Step(
        kind="fit",
        name=f"{board.name}-fit",
        version=1,
        inputs=fit.model_dump(mode="json") | {"arch": board.arch.value, "board": board.name,
                                              "image": board.kernel.image,
                                              "addresses": fit_addresses(board)},
        deps={"kernel": kernel, "initramfs": initramfs},
        build=build,
        outputs={"image": f"{board.name}.itb", "its": f"{board.name}.its",
                 "header": "fit.json"},
    )
