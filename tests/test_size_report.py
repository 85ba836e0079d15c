"""Where the bytes went, without a kernel build: a real GNU ld map (two objects in two
folders, linked by the MIPS cross linker as kbuild links vmlinux) read back and the
image split by folder; shares of a compressed image that add up to it; the budget
line and the build error when a result loads more than board.toml allows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import cli, run_main

from embedbuild.linkmap import OTHER, input_sections, loaded_image, part_of, split_image
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.sizereport import BudgetError, check_budget, size_report
from embedbuild.steps.kernel_parts import _divide

MAP = """\
Archive member included to satisfy reference by file (symbol)

lib/lib.a(lib/string.o)       vmlinux.a(init/main.o) (strlen)

Discarded input sections

 .text          0x0000000000000000       0x40 vmlinux.a(drivers/base/core.o)

Memory Configuration

Linker script and memory map

LOAD vmlinux.a
                0xffffffff80060000                . = 0xffffffff80060000
.text           0xffffffff80060000      0x100
 .text          0xffffffff80060000       0x40 vmlinux.a(init/main.o)
                0xffffffff80060000                start_kernel
 .text.a_name_too_long_for_its_column
                0xffffffff80060040       0x30 drivers/tty/serial/8250/8250_core.o
 *fill*         0xffffffff80060070       0x10
 .text          0xffffffff80060080       0x20 lib/lib.a(lib/string.o)
                                         0x24 (size before relaxing)
 .text          0xffffffff800600a0       0x60 .tmp_vmlinux.kallsyms2.o
.bss            0xffffffff80060100      0x100
 .bss           0xffffffff80060100      0x100 vmlinux.a(mm/slub.o)
"""


def test_input_sections_of_a_map():
    secs = list(input_sections(MAP.splitlines()))
    assert [(s.name, s.addr, s.size, s.obj) for s in secs] == [
        (".text", 0x80060000, 0x40, "vmlinux.a(init/main.o)"),
        (".text.a_name_too_long_for_its_column", 0x80060040, 0x30,
         "drivers/tty/serial/8250/8250_core.o"),
        (".text", 0x80060080, 0x20, "lib/lib.a(lib/string.o)"),
        (".text", 0x800600A0, 0x60, ".tmp_vmlinux.kallsyms2.o"),
        (".bss", 0x80060100, 0x100, "vmlinux.a(mm/slub.o)"),
    ]  # the discarded section above the memory map is not among them


@pytest.mark.parametrize(("obj", "part"), [
    ("vmlinux.a(drivers/net/ethernet/atheros/ag71xx.o)", "drivers/net"),
    ("vmlinux.a(arch/mips/kernel/traps.o)", "arch/mips/kernel"),
    ("arch/mips/kernel/head.o", "arch/mips/kernel"),
    ("vmlinux.a(kernel/sched/core.o)", "kernel"),
    ("lib/lib.a(lib/string.o)", "lib"),
    ("usr/initramfs_data.o", "usr"),
    ("vmlinux.a(init/version-timestamp.o)", "init"),
    ("drivers/of/base.o", "drivers/of"),
    ("fs/exec.o", "fs"),
    (".tmp_vmlinux.kallsyms2.o", "kallsyms tables"),
])
def test_part_of_an_object(obj: str, part: str):
    assert part_of(obj) == part


def test_an_image_split_by_folder_adds_up():
    image = bytes(range(256))  # 0x100 bytes from 0x80060000; .bss lies past its end
    parts = split_image(image, 0x80060000, input_sections(MAP.splitlines()))
    assert sum(len(b) for b in parts.values()) == len(image)
    assert parts["init"] == image[:0x40]
    assert parts["drivers/tty"] == image[0x40:0x70]
    assert parts["lib"] == image[0x80:0xA0]
    assert parts["kallsyms tables"] == image[0xA0:0x100]
    assert parts[OTHER] == image[0x70:0x80]  # the fill
    assert "mm" not in parts


def test_a_real_link_map_splits_the_loaded_image(tmp_path: Path):
    """Two objects in two folders, a thin archive and --whole-archive as kbuild links
    vmlinux, the map from the MIPS cross linker; the loaded image is objcopy's."""
    for folder, code in (("drivers/net", "int a[64] = {1}; int f(void){return a[3];}\n"),
                         ("kernel", "const char s[300] = \"x\"; int g(void){return s[5];}\n")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.c").write_text(code)
        subprocess.run(["mips-linux-gnu-gcc", "-Os", "-fno-pic", "-mno-abicalls", "-c",
                        f"{folder}/x.c", "-o", f"{folder}/x.o"], cwd=tmp_path, check=True)
    subprocess.run(["mips-linux-gnu-ar", "rcST", "vmlinux.a", "drivers/net/x.o", "kernel/x.o"],
                   cwd=tmp_path, check=True)
    # Laid out as the kernel's linker script does: from the load address, text, read-only
    # data, data, and the MIPS ABI sections discarded.
    (tmp_path / "vmlinux.lds").write_text(
        "SECTIONS { . = 0x80060000; .text : { *(.text*) } .rodata : { *(.rodata*) }\n"
        ".data : { *(.data*) } /DISCARD/ : { *(.MIPS.abiflags) *(.gnu.attributes) } }\n")
    subprocess.run(["mips-linux-gnu-ld", "-Map=vmlinux.map", "-T", "vmlinux.lds", "-o",
                    "vmlinux", "--whole-archive", "vmlinux.a"], cwd=tmp_path, check=True)
    subprocess.run(["mips-linux-gnu-objcopy", "-O", "binary", "-R", ".reginfo", "vmlinux",
                    "vmlinux.bin"], cwd=tmp_path, check=True)
    start, image, bits = loaded_image(tmp_path / "vmlinux")
    assert bits == 32 and start == 0x80060000
    assert image == (tmp_path / "vmlinux.bin").read_bytes()
    text = (tmp_path / "vmlinux.map").read_text()
    parts = split_image(image, start, input_sections(text.splitlines()))
    assert sum(map(len, parts.values())) == len(image)
    assert len(parts["drivers/net"]) >= 256 and len(parts["kernel"]) >= 300


@pytest.mark.parametrize(("total", "weights"), [(1000, [3, 3, 3]), (7, [1, 0, 5, 9]),
                                                 (2_080_288, [901, 17, 400_000, 1])])
def test_shares_of_a_compressed_image_add_up(total: int, weights: list[int]):
    shares = _divide(total, weights)
    assert sum(shares) == total
    assert all(abs(s - total * w / sum(weights)) < 1 for s, w in zip(shares, weights,
                                                                      strict=True))


def _manifest(kernel_bytes: int, budget: int | None) -> Manifest:
    return Manifest(
        board="ap-ac-lite", arch="mips", description="d", outputs=["budget", "kernel"],
        files={"uImage": {"role": "kernel", "size": kernel_bytes, "sha256": "0" * 64}},
        kernel={"file": "uImage", "cmdline": "console=ttyS0"},
        kernel_parts=[{"group": "kernel", "part": "drivers/net", "raw": 900,
                       "image": kernel_bytes - 64},
                      {"group": "image", "part": "uImage header", "raw": 64, "image": 64}],
        **({"budget": {"limit": budget}} if budget else {}))


def test_the_budget_line_says_used_budget_and_left():
    r = size_report(_manifest(2_080_352, 2_621_440))
    assert (r.loaded, r.left) == (2_080_352, 541_088)
    assert r.budget_line() == "budget: 2,080,352 of 2,621,440 bytes (79.4%), 541,088 left"
    over = size_report(_manifest(2_779_725, 2_621_440))
    assert over.budget_line() == "budget: 2,779,725 of 2,621,440 bytes (106.0%), 158,285 over"
    assert size_report(_manifest(1000, None)).budget_line() is None
    assert [line.what for line in r.lines] == [
        "kernel (uImage)", "  code and data by source folder", "    drivers/net",
        "  uImage header"]


def test_a_result_over_budget_is_an_error_naming_the_budget_line():
    board = load_board("ap-ac-lite")
    assert board.size is not None and board.size.budget == 2_621_440  # "2.5 MiB"
    check_budget(board, _manifest(2_621_440, 2_621_440))  # exactly at the budget: fine
    with pytest.raises(BudgetError) as e:
        check_budget(board, _manifest(2_621_441, 2_621_440))
    toml = board.dir / "board.toml"
    line = next(i for i, text in enumerate(toml.read_text().splitlines(), 1)
                if text.startswith("budget ="))
    assert e.value.where == f"{toml}:{line}"
    assert "a boot loads 2,621,441 bytes, 1 over its budget of 2,621,440" in str(e.value)
    assert "embedbuild size ap-ac-lite" in (e.value.hint or "")


def test_a_budget_that_is_no_size_is_refused_at_its_line(boards: Path, tmp_path: Path):
    toml = boards / "ap-ac-lite" / "board.toml"
    text = toml.read_text()
    toml.write_text(text.replace('budget = "2.5 MiB"', 'budget = "2.5 parsecs"'))
    r = cli("show", str(boards / "ap-ac-lite"), store=tmp_path / "s")
    assert r.code == 1 and "Traceback" not in r.err
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("budget ="))
    assert f"board.toml:{line}" in r.err and "size.budget" in r.err, r.err
    assert json.loads(run_main("show", "ap-ac-lite", store=tmp_path / "s").out)["size"] == {
        "budget": 2_621_440}
