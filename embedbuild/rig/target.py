"""The target: one board on one bench, made once (from the board and the command line,
or the pytest plugin) and handed to every boot, flash, console and test path.

It holds the board, its bench's resources (rig/bench.py), the folder of this session
and the build result it boots; the drivers it starts on them (bench network, TFTP
server, QEMU, power, console, U-Boot, shell); and the steps they report, from which
the boot report is read. Used as a context manager: everything started is stopped on
exit, also after an error, Ctrl-C or SIGTERM.

    with Target(board, options.bench(board), workdir, result) as target:
        target.boot(TftpBoot())             # to the ready line
        target.shell().run("uname -m")
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board
from embedbuild.model.system import READY_LINE
from embedbuild.rig.bench import FLASH_FILE, Bench
from embedbuild.rig.bootsource import BootSource, stage_files
from embedbuild.rig.console import Console
from embedbuild.rig.lab import PlaceDriver
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.power import power_driver
from embedbuild.rig.protocol import PowerProtocol
from embedbuild.rig.qemu import QemuBoard
from embedbuild.rig.report import BootReport
from embedbuild.rig.resource import LanLink, QemuMachine
from embedbuild.rig.shell import ShellDriver
from embedbuild.rig.step import Steps
from embedbuild.rig.strategy import UBootStrategy
from embedbuild.rig.tftp import TftpServer
from embedbuild.rig.uboot import UBootDriver


class Target:
    """One board on one bench.

    Args:
        board: the board (None: a bare serial line, `embedbuild console`: only the
            console opens).
        bench: the resources it is reached through.
        workdir: this session's folder: console.log, QEMU's output, the files served
            (tftp/), the boot report (boot.json).
        result: the build result it boots and serves (None: nothing built).
        network: a bench LAN someone else made and serves (a fleet's, with its own
            TFTP server): the QEMU model joins it at ``network.tap`` and the target
            starts no network and no TFTP server of its own (None: it makes both).
    """

    def __init__(self, board: Board | None, bench: Bench, workdir: Path,
                 result: Path | None = None, network: BenchNetwork | None = None) -> None:
        self.board = board
        self.bench = bench
        self.workdir = workdir
        self.result = result
        self.console_log: Path | None = workdir / "console.log"
        self.steps = Steps()
        self.report = BootReport(self.steps)
        self.network = network
        self.joined = network is not None
        self.tftp: TftpServer | None = None
        self.qemu: QemuBoard | None = None
        self.power: PowerProtocol | None = None
        self.console: Console | None = None
        self.uboot: UBootDriver | None = None
        self._shell: ShellDriver | None = None
        self.lab: PlaceDriver | None = None
        self._stack = contextlib.ExitStack()

    # -- what callers use --------------------------------------------------------------

    def boot(self, source: BootSource, ready: str = READY_LINE,
             timeout: float = 60) -> BootReport:
        """Boot through ``source`` to the ready line (a regex), each stage at most
        ``timeout`` seconds; returns the report (also kept as ``report``)."""
        return UBootStrategy(self).boot(source, ready, timeout)

    def prompt(self, extra: Sequence[Path] = (), timeout: float = 60) -> UBootDriver:
        """Power on and stop at U-Boot's prompt, its network set up, the TFTP server
        serving the result's files and ``extra``."""
        return UBootStrategy(self).prompt(extra, timeout)

    def shell(self) -> ShellDriver:
        """The shell driver on the booted system's console."""
        if self._shell is None:
            self._shell = ShellDriver(self.open_console())
        return self._shell

    def open_console(self) -> Console:
        """The console, opened on first use (a real board's line; a QEMU model's once
        started)."""
        if self.console is None:
            port = self.serial_port()
            if port is None:
                raise EmbedbuildError("the QEMU model's console exists once it is started",
                                      hint="boot the target first")
            self.console = self._open(port)
        return self.console

    def serial_port(self) -> str | None:
        """Where the console is: the bench's line, or the serial port of the lab's place,
        which is acquired here (once) and held until the target is left; None: the QEMU
        model's pty, known once it runs."""
        if self.bench.place is None:
            return self.bench.serial.port
        return self.hold_place(self._stack).url

    def hold_place(self, stack: contextlib.ExitStack) -> PlaceDriver:
        """Acquire the lab's place (waiting while another holds it) unless held already,
        released when ``stack`` closes: the target's own, or a caller's that must hold
        the place around more than the target (the command's bench folder lock)."""
        place = self.bench.place
        if place is None:
            raise EmbedbuildError("this bench has no labgrid place")
        if self.lab is None:
            with self.steps("acquire place", place=place.name,
                            coordinator=place.coordinator):
                self.lab = stack.enter_context(PlaceDriver(
                    place, lambda text: self.steps.mark("waiting for place", message=text)))
        return self.lab

    @property
    def link(self) -> LanLink:
        """This machine and the board on their network."""
        if self.bench.link is None:
            raise EmbedbuildError("this machine's and the board's addresses are not known",
                                  hint="give --server-ip and --device-ip")
        return self.bench.link

    def require_board(self) -> Board:
        """The board; a bare serial line has none."""
        if self.board is None:
            raise EmbedbuildError("no board: a bare serial line only has a console",
                                  hint="name the board")
        return self.board

    # -- bringing the bench up (the strategy's part) -------------------------------------

    def start(self, source: BootSource | None, extra: Sequence[Path] = ()) -> None:
        """Everything up to the power switch: the files served (the source's, else the
        result's and ``extra``), the bench network and TFTP server, the QEMU model (its
        CPU stopped), the power driver, the console and the U-Boot driver on it."""
        board = self.require_board()
        if self.uboot is not None:
            raise EmbedbuildError("the target was started already", hint="make a new one")
        with self.steps("start the bench"):
            folder = self.workdir / "tftp"
            if source is not None:
                source.stage(self, folder)
            else:
                stage_files(self.result, folder, extra)
            port = self.serial_port()
            if self.bench.qemu is not None and not self.joined:
                self.network = self._stack.enter_context(BenchNetwork(self.link))
            if not self.joined:
                self.tftp = self._stack.enter_context(TftpServer(
                    folder, self.link.server_ip, self.bench.tftp_port,
                    on_transfer=self.report.transfers.append,
                    netns=self.network.path if self.network else None))
            if self.bench.qemu is not None:
                assert self.network is not None
                self.qemu = QemuBoard(self._machine(source), self.network, self.workdir)
                # Registered before the start: an error or Ctrl-C while QEMU starts stops it too.
                self._stack.callback(self.qemu.stop)
                with self.steps("QEMU start", machine=self.qemu.spec.machine):
                    pty = self.qemu.start()
                port = port or pty
            if self.power is None:  # else bound by the caller (a fake, in tests)
                self.power = power_driver(self.bench.power, self.qemu, self.steps)
            assert port is not None
            self.console = self._open(port)
            self.uboot = UBootDriver(self.console, board.uboot.prompt, board.uboot.autoboot,
                                     self.steps)

    def _machine(self, source: BootSource | None) -> QemuMachine:
        """The QEMU model as this boot needs it: the U-Boot embedbuild built (if the
        result holds one), the source's attachments, a new erased flash unless the bench
        backs it with a file."""
        machine = self.bench.qemu
        assert machine is not None
        if self.result is not None:
            names = Manifest.read(self.result).with_role("bootloader")
            if names:
                machine = machine.model_copy(update={"firmware": self.result / names[0]})
        if machine.firmware is None and machine.spec.firmware is None:
            # Else QEMU would start with no firmware at all and print nothing.
            name = self.board.name if self.board else "the board"
            raise EmbedbuildError(f"the QEMU model of {name} runs the U-Boot its build makes "
                                  "([uboot.build]), and this target has no build result",
                                  hint="build the board and give the target its result")
        if source is not None:
            machine = source.machine(self, machine)
        if machine.flash is None:
            machine = machine.model_copy(update={"flash": self.workdir / FLASH_FILE})
        return machine

    def _open(self, port: str) -> Console:
        from embedbuild.rig.preflight import check_serial_url, is_url

        # A serial server is first checked to keep the connection: a wrong device in
        # its configuration is then one line, not pyserial's negotiation failure.
        if is_url(port):
            check_serial_url(port)
        line = self.bench.serial
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.steps("open console", port=port):
            return self._stack.enter_context(
                Console(port, line.baud, self.console_log, line.chunk, line.delay))

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
