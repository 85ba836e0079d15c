"""One kernel, two boards: qemu-aarch64-virt takes its kernel from odroid-go2
(kernel.from), so both plan the very same kernel steps (one store item), while each
keeps its own command line, DTB and boot commands. The broken cases (unknown board,
itself, cycles, build keys beside `from`, arch and toolchain mismatch, a built-in
initramfs) are in tests/data/broken/13x-kernel-from-*.

Also here: the DTB check's kernel.unserved list, on a tiny made-up tree and DTB."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from embedbuild import bootcmd
from embedbuild.errors import StepError
from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.rig.resource import LanLink
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.steps.dtbcheck import dtb_check_step
from embedbuild.store import Store

KERNEL_ROLES = ("source", "tree", "kconfig", "kernel")


def test_both_boards_plan_one_kernel():
    go2, virt = plan_board(load_board("odroid-go2")), plan_board(load_board("qemu-aarch64-virt"))
    for role in KERNEL_ROLES:
        assert go2.steps[role].key == virt.steps[role].key, role
    assert virt.steps["kernel"].name == "odroid-go2-kernel"
    # Each board's own parts stay its own.
    assert go2.steps["initramfs"].key != virt.steps["initramfs"].key
    assert go2.result.key != virt.result.key
    assert load_board("qemu-aarch64-virt").kernel_from == "odroid-go2"
    assert load_board("odroid-go2").kernel_from is None


def test_the_dtb_and_its_check_are_per_board():
    go2, virt = plan_board(load_board("odroid-go2")), plan_board(load_board("qemu-aarch64-virt"))
    assert go2.steps["dtb"].outputs == {"dtb": "rk3326-odroid-go2.dtb"}
    assert go2.steps["dtb-check"].inputs["unserved"]["/gpu@ff400000"]
    # The kernel item holds no DTB: QEMU gives qemu-aarch64-virt its own.
    assert "dtb" not in go2.steps["kernel"].outputs
    assert "dtb" not in virt.steps and "dtb-check" not in virt.steps


def test_boot_commands_per_board():
    virt = plan_board(load_board("qemu-aarch64-virt")).result.inputs["manifest"]["uboot"][
        "tftpboot"]
    assert virt == ["setenv bootargs 'console=ttyAMA0,115200'",
                    "tftpboot 0x40400000 Image", "tftpboot 0x44000000 initramfs.cpio.gz",
                    "booti 0x40400000 0x44000000:${filesize} 0x40000000"]
    go2 = load_board("odroid-go2")
    # The handheld's U-Boot gets the board's DTB over TFTP too, before the initramfs
    # whose ${filesize} booti reads.
    assert plan_board(go2).result.inputs["manifest"]["uboot"]["tftpboot"][1:] == [
        "tftpboot 0x280000 Image", "tftpboot 0x8300000 rk3326-odroid-go2.dtb",
        "tftpboot 0xa200000 initramfs.cpio.gz", "booti 0x280000 0xa200000:${filesize} 0x8300000"]
    # A USB Ethernet adapter exists for U-Boot only after `usb start`.
    link = LanLink.parse("192.168.1.254", "192.168.1.20")
    assert bootcmd.network(go2.uboot, link)[0] == "usb start"


def test_the_kernel_key_ignores_what_the_sharing_board_sets(boards: Path, monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_BOARDS", str(boards))
    before = plan_board(load_board(str(boards / "qemu-aarch64-virt")))
    toml = boards / "qemu-aarch64-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('cmdline = "console=ttyAMA0,115200"',
                                             'cmdline = "console=ttyAMA0,115200 quiet"'))
    after = plan_board(load_board(str(boards / "qemu-aarch64-virt")))
    assert after.steps["kernel"].key == before.steps["kernel"].key
    assert after.result.key != before.result.key
    # ... and follows what the owner sets, for both boards.
    frag = boards / "odroid-go2" / "kernel.config"
    frag.write_text(frag.read_text() + "CONFIG_PRINTK_TIME=y\n")
    changed = plan_board(load_board(str(boards / "qemu-aarch64-virt")))
    assert changed.steps["kernel"].key != before.steps["kernel"].key
    assert changed.steps["kernel"].key == \
        plan_board(load_board(str(boards / "odroid-go2"))).steps["kernel"].key


def test_a_chain_ends_at_the_board_that_builds_the_kernel(boards: Path, monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_BOARDS", str(boards))
    third = boards / "third"
    shutil.copytree(boards / "qemu-aarch64-virt", third)
    (third / "board.toml").write_text((third / "board.toml").read_text().replace(
        'from = "odroid-go2"', 'from = "qemu-aarch64-virt"'))
    board = load_board(str(third))
    assert board.kernel_from == "odroid-go2"
    assert plan_board(board).steps["kernel"].key == \
        plan_board(load_board("odroid-go2")).steps["kernel"].key


# -- the DTB check's unserved list ------------------------------------------------------

DTS = """/dts-v1/;
/ {
    compatible = "acme,board";
    #address-cells = <1>;
    #size-cells = <0>;
    uart@1 { compatible = "acme,uart"; reg = <1>; };
    gpu@2 { compatible = "acme,gpu"; reg = <2>; };
    dsp@3 { compatible = "acme,dsp"; reg = <3>; status = "disabled"; };
};
"""


def _files(files: dict[str, str], outputs: dict[str, str]) -> Step:
    """A step that writes these files and declares ``outputs`` (name -> path)."""
    def build(ctx: Context) -> None:
        for name, text in files.items():
            (ctx.out / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx.out / name).write_text(text)
    return Step("files", "files", 1, {"files": files}, build, outputs=outputs)


@pytest.fixture
def check_parts(tmp_path: Path) -> dict[str, Step]:
    """A two-driver kernel tree (uart built, gpu not), its index, a config and a DTB."""
    tree = _files({
        "drivers/Makefile": "obj-y += acme/\n",
        "drivers/acme/Makefile": "obj-$(CONFIG_ACME_UART) += uart.o\n"
                                 "obj-$(CONFIG_ACME_GPU) += gpu.o\n",
        "drivers/acme/uart.c": 'static const struct of_device_id m[] = '
                               '{{ .compatible = "acme,uart" }};\n',
        "drivers/acme/gpu.c": 'static const struct of_device_id m[] = '
                              '{{ .compatible = "acme,gpu" }};\n',
        "drivers/acme/dsp.c": 'static const struct of_device_id m[] = '
                              '{{ .compatible = "acme,dsp" }};\n'}, {"tree": "."})
    index = {"acme,uart": ["drivers/acme/uart.c"], "acme,gpu": ["drivers/acme/gpu.c"],
             "acme,dsp": ["drivers/acme/dsp.c"]}
    dtb = tmp_path / "board.dtb"
    subprocess.run(["dtc", "-q", "-O", "dtb", "-o", dtb, "-"], input=DTS.encode(), check=True)
    dtb_step = Step("dtb", "dtb", 1, {"dtb": dtb.read_bytes().hex()},
                    lambda ctx: shutil.copyfile(dtb, ctx.out / "board.dtb"),
                    outputs={"dtb": "board.dtb"})
    return {"tree": tree,
            "index": _files({"compatibles.json": json.dumps(index)},
                            {"index": "compatibles.json"}),
            "kconfig": _files({"kernel.config": "CONFIG_ACME_UART=y\n"},
                              {"config": "kernel.config"}),
            "dtb": dtb_step}


def _check(parts: dict[str, Step], unserved: dict[str, str], store: Path) -> list[dict]:
    step = dtb_check_step("check", parts["tree"], parts["index"], parts["kconfig"],
                          parts["dtb"], unserved)
    paths = realise(Store(store), step)
    return json.loads((paths[step.key] / "drivers.json").read_text())


def test_unserved_nodes_pass_with_their_reason(check_parts, tmp_path: Path):
    with pytest.raises(StepError, match=r"node /gpu@2 \(compatible \"acme,gpu\"\) has no "
                                        r"driver in this kernel: enable CONFIG_ACME_GPU"):
        _check(check_parts, {}, tmp_path / "s1")
    report = _check(check_parts, {"/gpu@2": "no GPU on the bench"}, tmp_path / "s2")
    assert {"node": "/gpu@2", "compatible": ["acme,gpu"], "driver": None,
            "unserved": "no GPU on the bench"} in report
    assert {"node": "/uart@1", "compatible": ["acme,uart"],
            "driver": "drivers/acme/uart.c"} in report


@pytest.mark.parametrize("node, why", [
    ("/uart@1", "but drivers/acme/uart.c serves it in this kernel"),
    ("/dsp@3", "which is not an enabled node with a driver in the kernel tree"),
    ("/nowhere", "which is not an enabled node with a driver in the kernel tree"),
])
def test_a_stale_unserved_entry_fails(check_parts, tmp_path: Path, node: str, why: str):
    with pytest.raises(StepError, match="kernel.unserved lists " + node) as e:
        _check(check_parts, {"/gpu@2": "no GPU", node: "stale"}, tmp_path / "s")
    assert why in str(e.value)
