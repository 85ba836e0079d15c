"""One session for the command line, the pytest plugin and the benches: load and build
a board, then open a booted target on it, in QEMU or on a real board's serial console."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.model.board import Board
from embedbuild.model.system import READY_LINE
from embedbuild.plan import Plan, plan_board
from embedbuild.scheduler import Events, realise
from embedbuild.store import Store, cache_dir


@dataclass
class Built:
    """A realised plan: every step's store path by key."""

    plan: Plan
    paths: dict[str, Path]

    @property
    def board(self) -> Board:
        return self.plan.board

    @property
    def result(self) -> Path:
        """The result folder (outputs and manifest.json)."""
        return self.paths[self.plan.result.key]

    def path(self, role: str) -> Path:
        """The store item of the step of this role."""
        return self.paths[self.plan.steps[role].key]


def build(board: str | Board, store: Store, *, system: Path | None = None,
          role: str = "result", events: Events | None = None) -> Built:
    """Load (unless given a Board) and plan a board, and realise the step of ``role``."""
    if isinstance(board, str):
        board = load_board(board, system)
    plan = plan_board(board)
    if role not in plan.steps:
        raise EmbedbuildError(f"board {board.name} has no step {role!r}",
                              hint=f"its steps: {', '.join(plan.steps)}")
    return Built(plan, realise(store, plan.steps[role], events))


@dataclass(frozen=True)
class Bench:
    """How the board is reached: its QEMU model (``serial`` None), or a real board's
    serial console with this machine's and the board's addresses on their network."""

    serial: str | None = None
    baud: int | None = None
    server_ip: str | None = None
    device_ip: str | None = None
    netmask: str = "255.255.255.0"

    def check(self, board: Board | None = None) -> None:
        """Refuse what cannot work, before anything is built or powered."""
        from embedbuild.rig.netns import require_root

        if self.serial is None:
            require_root(f"booting {board.name if board else 'a board'} in QEMU")
            if board is not None and board.qemu is None:
                raise EmbedbuildError(f"board {board.name} has no [qemu] section",
                                      hint="boot it on real hardware with --serial")
        elif not (self.server_ip and self.device_ip):
            raise EmbedbuildError(
                "a serial console needs the server and device addresses too",
                hint="give --server-ip (this machine on the board's network) and --device-ip "
                "(the address the board gets)",
            )


def bench_dir(board: Board) -> Path:
    """A board's bench folder (console.log, QEMU's output, the files served), emptied for
    each boot but for the file backing a QEMU board's flash, which persists like the chip:
    $EMBEDBUILD_BENCH/BOARD, else ~/.cache/embedbuild/bench/BOARD."""
    from embedbuild.rig.boot import FLASH_FILE

    d = cache_dir("EMBEDBUILD_BENCH", "bench") / board.name
    d.mkdir(parents=True, exist_ok=True)
    for p in d.iterdir():
        if p.name == FLASH_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()
    return d


def flash_file(board: Board) -> Path:
    """The file backing a QEMU board's flash, in its bench folder."""
    from embedbuild.rig.boot import FLASH_FILE

    return cache_dir("EMBEDBUILD_BENCH", "bench") / board.name / FLASH_FILE


@contextlib.contextmanager
def open_target(board: Board, result: Path, workdir: Path, bench: Bench, *,
                initrd: Path | None = None, ready: str = READY_LINE,
                timeout: float = 60, from_flash: bool = False,
                flash: Path | None = None) -> Iterator:
    """Boot a built result on the bench until the ready line (over TFTP, or from the
    image in its firmware partition); yields the rig's Target. A QEMU board's flash is
    backed by ``flash`` (default: a new erased file in workdir). Everything started for
    it is stopped on exit, also after an error or Ctrl-C."""
    from embedbuild.rig.boot import qemu_target, serial_target

    bench.check(board)
    if bench.serial is None:
        cm = qemu_target(board, result, workdir, initrd=initrd, ready=ready, timeout=timeout,
                         from_flash=from_flash, flash=flash)
    else:
        assert bench.server_ip and bench.device_ip
        cm = serial_target(board, result, workdir, port=bench.serial,
                           baud=bench.baud or board.serial.baud, server_ip=bench.server_ip,
                           device_ip=bench.device_ip, netmask=bench.netmask, initrd=initrd,
                           ready=ready, timeout=timeout, from_flash=from_flash)
    with cm as target:
        yield target


def bench_addresses(board: Board, bench: Bench) -> tuple[str, str, str]:
    """(server, device, netmask) the board's U-Boot is given on this bench; for a real
    board without them, placeholders (what --dry-run prints)."""
    if bench.serial is None and board.qemu is not None:
        from embedbuild.rig.boot import bench_network

        net = bench_network(board)
        return net.server_ip, net.device_ip, net.netmask
    return bench.server_ip or "<server-ip>", bench.device_ip or "<device-ip>", bench.netmask


def flash_image(board: Board, result: Path) -> Path:
    """The file of a build result that goes to the firmware partition."""
    from embedbuild.manifest import Manifest

    name = Manifest.read(result).flash_image
    if name is None:
        raise EmbedbuildError(f"board {board.name} builds no single-file flash image",
                              hint="package it as a uImage or a FIT ([kernel.fit]), or give "
                              "--image FILE")
    return result / name


def flash(board: Board, partition: str, image: Path, bench: Bench, workdir: Path | None, *,
          result: Path | None, set_bootcmd: bool = False, dry_run: bool = False,
          say=print) -> None:
    """Write ``image`` to a partition through the board's U-Boot (checked at every step,
    see rig/flash.py), or with ``dry_run`` only print the command sequence. Refusals
    come before anything is powered or sent."""
    from embedbuild import bootcmd
    from embedbuild.rig import flash as rig_flash
    from embedbuild.rig.boot import qemu_powered, uboot_prompt

    part = rig_flash.writable_partition(board, partition)
    if set_bootcmd:
        rig_flash.check_set_bootcmd(board)
    data = rig_flash.check_image(part, image)
    server, device, netmask = bench_addresses(board, bench)
    if dry_run:
        for cmd in rig_flash.sequence(board, part, image.name, data, server, device, netmask):
            say(cmd.describe())
        if set_bootcmd:
            for text in bootcmd.set_bootcmd(board, part, len(data)):
                say(text)
        return
    bench.check(board)
    assert workdir is not None
    served = workdir / "tftp"
    served.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, served / image.name)
    report = rig_flash.FlashReport(part.name)
    with contextlib.ExitStack() as stack:
        if bench.serial is None:
            net, port, powered_on = stack.enter_context(
                qemu_powered(board, result, workdir, flash_file(board)))
            baud, netns = board.serial.baud, net.path
        else:
            port, powered_on, netns = bench.serial, None, None
            baud = bench.baud or board.serial.baud
        target = stack.enter_context(uboot_prompt(
            board, served, workdir, port=port, baud=baud, server_ip=server, device_ip=device,
            netmask=netmask, netns=netns, powered_on=powered_on))
        try:
            rig_flash.flash(target.uboot, board, part, image, data, filename=image.name,
                            server_ip=server, device_ip=device, netmask=netmask,
                            report=report)
            if set_bootcmd:
                rig_flash.set_bootcmd(target.uboot, board, part, len(data), report)
        finally:
            for line in report.lines():
                say(line)
