"""One session for the command line, the pytest plugin and the benches: load and build
a board, then open a booted target on it, in QEMU or on a real board's serial console."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild import compiler_cache
from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.model.board import Board
from embedbuild.model.system import READY_LINE
from embedbuild.plan import Plan, plan_board
from embedbuild.scheduler import Events, realise
from embedbuild.store import Store, cache_dir

if TYPE_CHECKING:
    from embedbuild.cache.substitute import Substituters


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
          role: str = "result", events: Events | None = None,
          repair: Callable[[str], None] | None = None,
          substituters: Substituters | None = None, ccache: bool = True,
          warn: Callable[[str], None] | None = None) -> Built:
    """Load (unless given a Board) and plan a board, and realise the step of ``role``.
    With ``repair``, the graph's damaged items are first removed (each problem is passed
    to it), and rebuilt wherever the target needs them. ``substituters`` are asked for
    missing items before any is built. Compiles go through the compiler cache unless
    ``ccache`` is False (or EMBEDBUILD_NO_CCACHE is set); ``warn`` gets the line saying
    that ccache is missing, and the one saying the toolchain differs from the lock."""
    if isinstance(board, str):
        board = load_board(board, system)
    if warn is not None and board.locked_toolchain:
        from embedbuild.toolchain import Toolchain

        drift = Toolchain(board.cross_compile, board.arch).drift(board.locked_toolchain)
        if drift:
            warn(f"the installed toolchain differs from the lock ({'; '.join(drift)}): store "
                 f"keys differ from machines on the lock; `embedbuild doctor {board.name}`")
    plan = plan_board(board)
    if role not in plan.steps:
        raise EmbedbuildError(f"board {board.name} has no step {role!r}",
                              hint=f"its steps: {', '.join(plan.steps)}")
    if repair is not None:
        from embedbuild.steps.source import archive_manifest

        graph = [store.item_path(s.key, s.name) for s in plan.steps[role].walk()]
        for problem in store.repair(graph, archive_manifest):
            repair(problem)
    cache = compiler_cache.configured(ccache, warn)
    return Built(plan, realise(store, plan.steps[role], events, substituters=substituters,
                               ccache=cache))


@dataclass(frozen=True)
class Bench:
    """How the board is reached: its QEMU model (``serial`` None), or a real board's
    serial console (a device path or a pyserial URL such as rfc2217://HOST:PORT) with
    this machine's and the board's addresses on their network. With ``qemu`` and a URL,
    the QEMU model's console is reached through that URL as a remote rig's is: a
    serial server serves the pty QEMU links at console_link(board)."""

    serial: str | None = None
    qemu: bool = False
    baud: int | None = None
    server_ip: str | None = None
    device_ip: str | None = None
    netmask: str = "255.255.255.0"
    power_timeout: float = 300.0

    @property
    def real(self) -> bool:
        """A real board, which a person powers on (not a QEMU model)."""
        return self.serial is not None and not self.qemu

    def check(self, board: Board | None = None, files: list[Path] = ()) -> None:
        """Refuse what cannot work, before anything is built or anyone is asked to power
        a board on: for a real board, the serial device, the addresses, the TFTP port
        and ``files`` (rig/preflight.py)."""
        from embedbuild.rig.netns import require_root
        from embedbuild.rig.preflight import check_serial, is_url, preflight

        if not self.real:
            require_root(f"booting {board.name if board else 'a board'} in QEMU")
            if board is not None and board.qemu is None:
                raise EmbedbuildError(f"board {board.name} has no [qemu] section",
                                      hint="boot it on real hardware with --serial")
            if self.serial is not None:
                if not is_url(self.serial):
                    raise EmbedbuildError(
                        f"--qemu takes --serial only as a URL, not {self.serial}",
                        hint="give the serial server in front of QEMU's console "
                        "(rfc2217://HOST:PORT), or drop --qemu for a real board")
                # QEMU's pty, which the server opens, appears only when QEMU starts.
                check_serial(self.serial, listen=0)
            return
        if not (self.server_ip and self.device_ip):
            raise EmbedbuildError(
                "a serial console needs the server and device addresses too",
                hint="give --server-ip (this machine on the board's network) and --device-ip "
                "(the address the board gets)",
            )
        preflight(self.serial, self.server_ip, self.device_ip, files)


@contextlib.contextmanager
def bench_dir(board: Board) -> Iterator[Path]:
    """A board's bench folder for one boot (console.log, QEMU's output, the files
    served): $EMBEDBUILD_BENCH/BOARD/run, else ~/.cache/embedbuild/bench/BOARD/run,
    emptied for each boot and kept after it. One boot of a board at a time: the
    board's folder is locked while it runs (what persists, e.g. a flash image, sits
    beside run/)."""
    board_dir = cache_dir("EMBEDBUILD_BENCH", "bench") / board.name
    board_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(board_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbedbuildError(f"{board.name} is being booted by another embedbuild",
                                  where=str(board_dir),
                                  hint="wait for it to end, or stop it") from None
        run = board_dir / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        yield run
    finally:
        os.close(fd)


def console_link(board: Board) -> Path:
    """Where a QEMU board booted with a remote console (Bench.qemu and a URL) links its
    serial pty, for the serial server's configuration: in its bench folder beside run/."""
    return cache_dir("EMBEDBUILD_BENCH", "bench") / board.name / "console"


def remote_console(board: Board, bench: Bench):
    """The RemoteConsole of a QEMU board on a bench that reaches it through a URL, else
    None."""
    from embedbuild.rig.boot import RemoteConsole

    if bench.qemu and bench.serial is not None:
        return RemoteConsole(bench.serial, console_link(board))
    return None


def flash_file(board: Board) -> Path:
    """The file backing a QEMU board's flash, in its bench folder beside run/: it
    persists across boots like the chip."""
    from embedbuild.rig.boot import FLASH_FILE

    return cache_dir("EMBEDBUILD_BENCH", "bench") / board.name / FLASH_FILE


@contextlib.contextmanager
def open_target(board: Board, result: Path, workdir: Path, bench: Bench, *,
                initrd: Path | None = None, ready: str = READY_LINE,
                timeout: float = 60, on_wait: Callable[[float], None] | None = None,
                from_flash: bool = False, flash: Path | None = None,
                from_sd: bool = False) -> Iterator:
    """Boot a built result on the bench until the ready line (over TFTP, from the
    image in its firmware partition, or in QEMU from its SD-card image with no key
    pressed); yields the rig's Target. A QEMU board's flash is
    backed by ``flash`` (default: a new erased file in workdir). ``on_wait(seconds)`` is
    called while a person is to power a real board on. Everything started for it is
    stopped on exit, also after an error or Ctrl-C."""
    from embedbuild.rig.boot import qemu_target, serial_target

    bench.check(board)
    if from_sd and (from_flash or initrd is not None):
        raise EmbedbuildError("booting from the SD card takes neither an extra initrd nor "
                              "--from-flash: the card holds what boots")
    if not bench.real:
        cm = qemu_target(board, result, workdir, initrd=initrd, ready=ready, timeout=timeout,
                         from_flash=from_flash, flash=flash,
                         remote=remote_console(board, bench), from_sd=from_sd)
    elif from_sd:
        raise EmbedbuildError("--from-sd boots the board's QEMU model from its SD-card image",
                              hint="on the real board: `embedbuild write-sd BOARD DEVICE`, put "
                              "the card in and power it on")
    else:
        assert bench.server_ip and bench.device_ip
        cm = serial_target(board, result, workdir, port=bench.serial,
                           baud=bench.baud or board.serial.baud, server_ip=bench.server_ip,
                           device_ip=bench.device_ip, netmask=bench.netmask, initrd=initrd,
                           ready=ready, timeout=timeout, power_timeout=bench.power_timeout,
                           on_wait=on_wait, from_flash=from_flash)
    with cm as target:
        yield target


def bench_addresses(board: Board, bench: Bench) -> tuple[str, str, str]:
    """(server, device, netmask) the board's U-Boot is given on this bench; for a real
    board without them, placeholders (what --dry-run prints)."""
    if not bench.real and board.qemu is not None:
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
          say: Callable[[str], None] = print) -> None:
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
    bench.check(board, [image])
    assert workdir is not None
    served = workdir / "tftp"
    served.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, served / image.name)
    report = rig_flash.FlashReport(part.name)
    with contextlib.ExitStack() as stack:
        if not bench.real:
            net, port, powered_on = stack.enter_context(
                qemu_powered(board, result, workdir, flash_file(board),
                             remote_console(board, bench)))
            baud, netns = board.serial.baud, net.path
        else:
            port, powered_on, netns = bench.serial, None, None
            baud = bench.baud or board.serial.baud
            say(f"power on (or reset) {board.name} now; waiting for U-Boot on {port} "
                f"({bench.power_timeout:.0f} s at most)")
        target = stack.enter_context(uboot_prompt(
            board, served, workdir, port=port, baud=baud, server_ip=server, device_ip=device,
            netmask=netmask, netns=netns, powered_on=powered_on,
            power_timeout=bench.power_timeout))
        try:
            rig_flash.flash(target.uboot, board, part, image, data, filename=image.name,
                            server_ip=server, device_ip=device, netmask=netmask,
                            report=report)
            if set_bootcmd:
                rig_flash.set_bootcmd(target.uboot, board, part, len(data), report)
        finally:
            for line in report.lines():
                say(line)
