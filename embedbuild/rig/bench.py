"""A bench: the resources one board is reached through, made from what the command line
or the pytest plugin says (BenchOptions), checked before anything is built or powered;
and the board's bench folder on this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Board
from embedbuild.rig.resource import (
    DEFAULT_LINK,
    CommandPower,
    LabgridPlace,
    LanLink,
    ManualPower,
    PowerSwitch,
    QemuMachine,
    QemuPower,
    SerialLine,
)
from embedbuild.store import cache_dir

# The file backing a QEMU board's flash, in its bench folder: it persists like the chip.
FLASH_FILE = "flash.img"


class BenchOptions(BaseModel):
    """How the board is reached, as a person said it: its QEMU model (``serial`` None, or
    ``qemu`` with a serial server's URL in front of QEMU's console), or a real board's
    serial console (a device path or a pyserial URL) with this machine's and the board's
    addresses on their network, and how its power is switched (a person, or commands).

    Args:
        serial: --serial: a device path or URL.
        qemu: --qemu: the board's QEMU model.
        baud: --baud (default: the board's).
        server_ip, device_ip, netmask: this machine's and the board's addresses.
        power_timeout: seconds a person has to power a real board on.
        power_on, power_off: commands that switch a real board (a relay) instead of a person.
        place: --place: a labgrid place whose serial port is the console (instead of
            --serial), held while the command runs.
        coordinator: the labgrid coordinator, HOST[:PORT].
        place_timeout: seconds to wait for the place while another holds it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    serial: str | None = None
    qemu: bool = False
    baud: int | None = Field(default=None, gt=0)
    server_ip: str | None = None
    device_ip: str | None = None
    netmask: str = "255.255.255.0"
    power_timeout: float = Field(default=300.0, gt=0)
    power_on: str | None = None
    power_off: str | None = None
    place: str | None = None
    coordinator: str = "127.0.0.1:20408"
    place_timeout: float = Field(default=600.0, gt=0)

    @property
    def real(self) -> bool:
        """A real board (not a QEMU model)."""
        return (self.serial is not None or self.place is not None) and not self.qemu

    def lab_place(self) -> LabgridPlace | None:
        """The labgrid place asked for (None: none)."""
        if self.place is None:
            return None
        if self.serial is not None:
            raise EmbedbuildError("one console at a time: --serial or --place",
                                  hint="drop --serial: the place's serial port is the console")
        from embedbuild.rig.lab import require_labgrid

        require_labgrid()  # one line saying how to get it, before anything is built
        return LabgridPlace(name=self.place, coordinator=self.coordinator,
                            timeout=self.place_timeout)

    def check(self, board: Board | None = None, files: Sequence[Path] = ()) -> None:
        """Refuse what cannot work, before anything is built or anyone is asked to power a
        board on: for a real board, the serial device, the addresses, the TFTP port and
        ``files`` (rig/preflight.py)."""
        from embedbuild.rig.netns import require_root
        from embedbuild.rig.preflight import (
            check_addresses,
            check_files,
            check_port,
            check_serial,
            is_url,
            preflight,
        )

        self.lab_place()
        if not self.real:
            require_root(f"booting {board.name if board else 'a board'} in QEMU")
            if board is not None and board.qemu is None:
                raise EmbedbuildError(f"board {board.name} has no [qemu] section",
                                      hint="boot it on real hardware with --serial")
            if self.power_on or self.power_off:
                raise EmbedbuildError("--power-on/--power-off switch a real board; QEMU's "
                                      "power is its own", hint="drop them, or drop --qemu")
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
        if self.serial is None:  # a lab's place: its serial port is known once acquired
            check_addresses(self.server_ip, self.device_ip)
            check_port(self.server_ip)
            check_files(list(files))
        else:
            preflight(self.serial, self.server_ip, self.device_ip, list(files))
        self.link()

    def link(self) -> LanLink | None:
        """The real board's network link (None when no addresses were given)."""
        if not (self.server_ip and self.device_ip):
            return None
        return LanLink.parse(self.server_ip, self.device_ip, self.netmask)

    def power(self) -> PowerSwitch:
        """The real board's power switch: commands if given, else a person."""
        if self.power_on:
            return CommandPower(on=self.power_on, off=self.power_off)
        if self.power_off:
            raise EmbedbuildError("--power-off needs --power-on",
                                  hint="give the command that switches the board on too")
        return ManualPower(timeout=self.power_timeout)

    def bench(self, board: Board, flash: Path | None = None) -> Bench:
        """The board's resources on this bench. A QEMU board's flash is backed by
        ``flash`` (None: a new erased file in the target's folder)."""
        pacing = dict(chunk=board.serial.write_chunk, delay=board.serial.write_delay)
        place = self.lab_place()
        if self.real:
            return Bench(SerialLine(port=self.serial, baud=self.baud or board.serial.baud,
                                    **pacing), self.link(), self.power(), place=place)
        if board.qemu is None:
            raise EmbedbuildError(f"board {board.name} has no [qemu] section",
                                  hint="boot it on real hardware with --serial")
        # The console through a serial server (a remote rig's way) reads the pty that
        # QEMU links at a fixed path in the bench folder.
        machine = QemuMachine(spec=board.qemu, flash=flash,
                              flash_size=board.flash.size if board.flash else 0,
                              console_link=console_link(board)
                              if self.serial or place else None)
        return Bench(SerialLine(port=self.serial, baud=board.serial.baud, **pacing),
                     qemu_link(board), QemuPower(), machine, place=place)


def qemu_link(board: Board) -> LanLink:
    """The QEMU bench LAN: on the system's own subnet when it has a static address, so
    U-Boot and Linux use the address the system declares."""
    net = board.system.network if board.system else None
    if net is None or net.address is None:
        return DEFAULT_LINK
    return LanLink.around(ipaddress.IPv4Interface(net.address))


@dataclass(frozen=True)
class Bench:
    """The resources a board is reached through.

    Args:
        serial: its console line.
        link: this machine and the board on their network (None: not given, e.g. for a
            console alone).
        power: its power switch.
        qemu: its QEMU model (None: a real board).
        tftp_port: where the TFTP server listens on the link's server address (69, the
            port U-Boot asks; 0 takes any free one, for a board that fetches nothing).
        place: a labgrid place whose serial port is the console (serial.port is then
            its URL, known once the place is acquired).
    """

    serial: SerialLine
    link: LanLink | None
    power: PowerSwitch
    qemu: QemuMachine | None = None
    tftp_port: int = 69
    place: LabgridPlace | None = None

    @property
    def real(self) -> bool:
        """A real board (not a QEMU model)."""
        return self.qemu is None


def bench_folder(board: Board) -> Path:
    """A board's bench folder: $EMBEDBUILD_BENCH/BOARD, else ~/.cache/embedbuild/bench/BOARD."""
    return cache_dir("EMBEDBUILD_BENCH", "bench") / board.name


def flash_file(board: Board) -> Path:
    """The file backing a QEMU board's flash, in its bench folder beside run/."""
    return bench_folder(board) / FLASH_FILE


def console_link(board: Board) -> Path:
    """Where a QEMU board with a remote console links its serial pty, for the serial
    server's configuration: in its bench folder beside run/."""
    return bench_folder(board) / "console"


@contextlib.contextmanager
def bench_dir(board: Board) -> Iterator[Path]:
    """The folder of one boot (console.log, QEMU's output, the files served, the boot
    report): run/ in the board's bench folder, emptied for each boot and kept after it.
    One boot of a board at a time: the bench folder is locked while it runs (what
    persists, e.g. the flash file, sits beside run/)."""
    folder = bench_folder(board)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbedbuildError(f"{board.name} is being booted by another embedbuild",
                                  where=str(folder),
                                  hint="wait for it to end, or stop it") from None
        run = folder / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        yield run
    finally:
        os.close(fd)
