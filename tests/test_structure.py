"""The build's structure, without building: U-Boot commands from one module, outputs
from a registry, steps that declare what they write and get checked for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedbuild import bootcmd
from embedbuild.errors import StepError
from embedbuild.load import load_board
from embedbuild.output import REGISTRY, output
from embedbuild.outputs import applicable
from embedbuild.plan import plan_board
from embedbuild.rig.resource import LanLink
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.steps.uboot import tftp_fragment
from embedbuild.store import Store


@pytest.mark.parametrize("board, last", [
    ("qemu-arm-virt", "bootz 0x40400000 0x44000000:${filesize} 0x40000000"),
    ("qemu-malta-be", "bootm 0x81000000 0x84000000:${filesize}"),
    ("ap-ac-lite", "bootm 0x81000000"),
])
def test_tftp_boot_commands_come_from_the_plan(board: str, last: str):
    plan = plan_board(load_board(board))
    cmds = plan.result.inputs["manifest"]["uboot"]["tftpboot"]
    assert cmds[-1] == last
    assert cmds[0].startswith("setenv bootargs 'console=")


def test_network_commands_carry_the_boards_tftp_settings():
    b = load_board("qemu-arm-virt")
    cmds = bootcmd.network(b.uboot, LanLink.parse("10.77.0.1", "10.77.0.2"))
    assert "setenv tftpwindowsize 2" in cmds and "setenv tftpblocksize 16268" in cmds
    assert "setenv ipaddr 10.77.0.2" in cmds


def test_a_tftp_block_larger_than_a_frame_gets_u_boot_reassembly():
    assert tftp_fragment(1468) == ""  # fits one frame: U-Boot as configured
    frag = tftp_fragment(16268)
    assert "CONFIG_IP_DEFRAG=y\n" in frag and "CONFIG_NET_MAXDEFRAG=16384\n" in frag
    assert "CONFIG_NET_MAXDEFRAG=65496\n" in tftp_fragment(65464)  # + IP, UDP, TFTP headers
    # The board's U-Boot is configured from it (with the A/B boot script beside it).
    plan = plan_board(load_board("qemu-arm-virt"))
    names = [f["name"] for f in plan.steps["uboot-config"].inputs["fragments"]]
    assert names == ["u-boot.config", "board.toml"]


def test_network_setenvs_go_as_one_line():
    b = load_board("odroid-go2")  # brings its USB network up first
    cmds = bootcmd.network(b.uboot, LanLink.parse("10.77.0.1", "10.77.0.2"))
    lines = bootcmd.batched(cmds)
    assert lines[0] == "usb start"  # alone: its own exit status
    assert lines[1:] == ["; ".join(c for c in cmds if c.startswith("setenv "))]
    # Never longer than the shortest command line U-Boot takes: a new line then.
    long = [f"setenv v{i} {'x' * 90}" for i in range(5)]
    assert [len(x) for x in bootcmd.batched(long)] == [202, 202, 100]
    assert bootcmd.batched(["setenv a 1", "tftpboot 0x0 f", "setenv b 2"]) == \
        ["setenv a 1", "tftpboot 0x0 f", "setenv b 2"]


def test_outputs_per_board():
    assert [o.name for o in applicable(load_board("qemu-arm-virt"))] == [
        "fit", "initramfs", "kernel", "sdimage", "tftpboot"]
    assert {o.name for o in applicable(load_board("ap-ac-lite"))} == {
        "budget", "initramfs", "kernel", "tftpboot", "uimage"}


def test_an_output_name_is_registered_once():
    applicable(load_board("qemu-arm-virt"))
    with pytest.raises(RuntimeError, match="registered twice"):
        output("kernel", applies=lambda b: True)(lambda p: None)
    assert REGISTRY["kernel"].doc


def test_asking_for_an_undeclared_output_is_a_bug():
    s = Step("t", "a", 1, {}, lambda ctx: None, outputs={"x": "x.txt"})
    assert s.output_path("x") == "x.txt"
    with pytest.raises(KeyError, match="declares no output 'y'"):
        s.output_path("y")


def test_a_step_that_skips_a_declared_output_fails(tmp_path: Path):
    def build(ctx: Context) -> None:
        ctx.output("made").write_text("here")

    s = Step("t", "a", 1, {}, build, outputs={"made": "made.txt", "forgotten": "f.txt"})
    store = Store(tmp_path / "s")
    with pytest.raises(StepError, match=r"did not write its declared output.*forgotten"):
        realise(store, s)
    assert store.items() == []


def test_consumers_read_what_a_dependency_declared(tmp_path: Path):
    a = Step("t", "a", 1, {}, lambda ctx: ctx.output("data").write_text("42"),
             outputs={"data": "data.txt"})

    def build(ctx: Context) -> None:
        ctx.output("copy").write_text(ctx.input("a", "data").read_text())

    b = Step("t", "b", 1, {}, build, deps={"a": a}, outputs={"copy": "copy.txt"})
    paths = realise(Store(tmp_path / "s"), b)
    assert (paths[b.key] / "copy.txt").read_text() == "42"
    # The store's own record is beside the item, never inside what a step reads.
    assert sorted(p.name for p in paths[a.key].iterdir()) == ["data.txt"]
