"""Boot paths composed from the drivers: TFTP boot through U-Boot, on QEMU or a real board.

The bench sees a build only through its result folder and manifest.json; the
U-Boot commands it sends come from embedbuild.bootcmd.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild import bootcmd
from embedbuild.errors import EmbedbuildError
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board
from embedbuild.model.system import READY_LINE
from embedbuild.rig.console import Console, ConsoleError
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.preflight import check_serial_url, is_url
from embedbuild.rig.qemu import QemuBoard, flash_file
from embedbuild.rig.tftp import TftpServer, Transfer
from embedbuild.rig.uboot import KERNEL_ERRORS, BootError, UBootDriver, wait_ready

# The file backing a QEMU board's flash, in its bench folder.
FLASH_FILE = "flash.img"
# A person powers the board on: give them this long.
POWER_ON_TIMEOUT = 300.0
COMMON_BAUDS = (115200, 57600, 38400, 19200, 9600)


@dataclass
class BootReport:
    """Where the time went."""

    stages: list[tuple[str, float]] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{name:28} {secs:6.2f} s" for name, secs in self.stages]
        out += [
            f"  tftp {t.filename:21} {t.size / 2**20:6.2f} MiB in {t.seconds:.2f} s "
            f"({t.rate:.1f} MiB/s)"
            for t in self.transfers
        ]
        return out


@dataclass
class Target:
    """A booted board: its console, U-Boot driver and where it is on the network."""

    board: Board
    console: Console
    uboot: UBootDriver
    report: BootReport
    server_ip: str
    device_ip: str
    netmask: str = "255.255.255.0"
    # The QEMU bench LAN (None for a real board): tests reach the board from inside it.
    network: BenchNetwork | None = None
    # When the power came on (time.monotonic()), if embedbuild switched it.
    powered_on: float | None = None


@dataclass(frozen=True)
class RemoteConsole:
    """A QEMU board's console reached the way a remote rig's is: QEMU links its serial
    pty at ``link``, a serial server (ser2net) configured with that path serves it, and
    embedbuild opens ``url``."""

    url: str
    link: Path


def bench_network(board: Board) -> BenchNetwork:
    """The QEMU bench LAN: on the system's own subnet when it has a static address, so
    U-Boot and Linux use the address the system declares."""
    import ipaddress

    net = board.system.network if board.system else None
    if net is None or net.address is None:
        return BenchNetwork()
    iface = ipaddress.IPv4Interface(net.address)
    hosts = iface.network.hosts()
    server = next(hosts)
    if server == iface.ip:
        server = next(hosts)
    return BenchNetwork(str(server), str(iface.ip), iface.network.prefixlen)


def built_firmware(result: Path) -> Path | None:
    """The U-Boot embedbuild built for the board, if the result holds one."""
    names = Manifest.read(result).with_role("bootloader")
    return result / names[0] if names else None


def board_console(board: Board, port: str, baud: int, workdir: Path) -> Console:
    """The board's console, paced as the board needs, logged to workdir/console.log. A
    serial server is first checked to keep the connection (a wrong device in its
    configuration is then one line, not pyserial's negotiation failure)."""
    if is_url(port):
        check_serial_url(port)
    return Console(port, baud, workdir / "console.log", board.serial.write_chunk,
                   board.serial.write_delay)


def stage_files(result: Path, dest: Path, extra: list[Path]) -> Path:
    """The folder served over TFTP: the result's files plus any extra ones."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in [*sorted(result.iterdir()), *extra]:
        if p.is_file() and not p.name.startswith("."):
            shutil.copyfile(p, dest / p.name)
    return dest


def boot_commands(board: Board, result: Path, initrd: Path | None) -> list[str]:
    """The U-Boot commands that TFTP-boot a result: the manifest's, or with an extra initrd."""
    manifest = Manifest.read(result)
    if initrd is None:
        return manifest.uboot.tftpboot
    return bootcmd.tftp_boot(board, manifest.kernel.file, initrd.name)


def tftp_boot(
    board: Board,
    uboot: UBootDriver,
    server_ip: str,
    device_ip: str,
    netmask: str,
    cmds: list[str],
    ready: str,
    report: BootReport,
    timeout: float = 60,
) -> None:
    """From a U-Boot prompt: set up the network, run the boot commands (TFTP or from
    flash), wait for the ready line."""
    for cmd in bootcmd.network(board.uboot, server_ip, device_ip, netmask):
        uboot.check(cmd)
    for cmd in cmds[:-1]:
        r = uboot.check(cmd, timeout=120)
        if cmd.startswith("tftpboot"):
            report.stages.append((f"U-Boot {cmd.split()[-1]}", r.seconds))
    report.stages.append(("U-Boot boot command", uboot.boot(cmds[-1], timeout)))
    t0 = time.monotonic()
    m = uboot.console.expect([r"Run /init as init process", *KERNEL_ERRORS], timeout)
    if m.index != 0:
        raise BootError(f"kernel: {m.match.group(0).strip()}", log_tail=uboot.console.tail())
    report.stages.append(("kernel to /init", time.monotonic() - t0))
    report.stages.append(("init to ready", wait_ready(uboot.console, ready, timeout)))


def flash_boot_commands(board: Board, result: Path) -> list[str]:
    """The U-Boot commands that boot the image flashed to the firmware partition."""
    manifest = Manifest.read(result)
    part = board.firmware_partition()
    if part is None or manifest.flash_image is None:
        raise EmbedbuildError(f"board {board.name} has no flash image to boot from",
                              hint="give the board [flash] and a uImage or [kernel.fit]")
    return bootcmd.flash_boot(board, part, manifest.files[manifest.flash_image].size)


PowerOn = float | Callable[[], float]


@contextlib.contextmanager
def qemu_powered(board: Board, result: Path | None, workdir: Path, flash: Path | None = None,
                 remote: RemoteConsole | None = None
                 ) -> Iterator[tuple[BenchNetwork, str, PowerOn]]:
    """A QEMU board powered on in its bench network: yields the network, the console
    (QEMU's pty, or ``remote``'s URL) and when the power came on; with ``remote``, QEMU
    waits halted and that is instead a function that starts its CPU and returns when,
    for once the console is open (see uboot_prompt). The board's flash
    (qemu.pflash_unit) is backed by ``flash`` (default workdir/flash.img), created erased
    if missing. QEMU and the namespace are gone on exit, also after an error or Ctrl-C."""
    assert board.qemu is not None
    workdir.mkdir(parents=True, exist_ok=True)
    backing = None
    if board.qemu.pflash_unit is not None and board.flash is not None:
        backing = flash_file(flash or workdir / FLASH_FILE, board.flash.size)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(bench_network(board))
        qemu = QemuBoard(board.qemu, net, workdir,
                         firmware=built_firmware(result) if result else None, flash=backing,
                         console_link=remote.link if remote else None, halted=bool(remote))
        # Registered before the start: an error or Ctrl-C while QEMU starts must stop it too.
        stack.callback(qemu.power_off)
        powered_on = time.monotonic()
        pty = qemu.power_on()
        if remote is None:
            yield net, pty, powered_on
        else:
            yield net, remote.url, qemu.release


def wait_for_power_on(uboot: UBootDriver, port: str, baud: int, timeout: float,
                      on_wait: Callable[[float], None] | None = None) -> float:
    """Wait for a person to power the board on and catch its U-Boot; returns the seconds
    waited. Gives up after ``timeout`` saying what was seen on the line."""
    console = uboot.console
    t0 = time.monotonic()
    start = console.mark()
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= timeout:
            raise BootError(f"no U-Boot on {port} after {timeout:.0f} s: "
                            f"{describe_line(console.since(start), baud)}")
        try:
            uboot.interrupt(min(1.0, timeout - elapsed))
            return time.monotonic() - t0
        except BootError:
            raise
        except ConsoleError:
            if console.closed:
                raise
            if on_wait:
                on_wait(time.monotonic() - t0)


def describe_line(text: str, baud: int) -> str:
    """What arrived on a serial line that never showed U-Boot, and what it suggests."""
    if not text:
        return ("nothing arrived: check that the board has power, and the wiring (the "
                "adapter's RX to the board's TX, TX to RX, GND to GND)")
    noise = sum(1 for c in text if c == "\ufffd" or (ord(c) < 32 and c not in "\n\t")
                or 127 <= ord(c) < 160)
    shown = "".join(c if c.isprintable() else "." for c in text[-60:].replace("\n", " "))
    if noise > len(text) // 4:
        others = ", ".join(str(b) for b in COMMON_BAUDS if b != baud)
        return (f"{len(text)} characters arrived but no U-Boot banner, and {noise} of them are "
                f"not text: the line speed is probably wrong (the board declares {baud} baud; "
                f"try --baud with one of {others}); last seen: {shown!r}")
    return (f"{len(text)} characters arrived but no U-Boot prompt or autoboot line; last "
            f"seen: {shown!r} (if that is U-Boot, set uboot.prompt and uboot.autoboot)")


@contextlib.contextmanager
def qemu_target(
    board: Board,
    result: Path,
    workdir: Path,
    *,
    initrd: Path | None = None,
    ready: str = READY_LINE,
    timeout: float = 60,
    from_flash: bool = False,
    flash: Path | None = None,
    remote: RemoteConsole | None = None,
) -> Iterator[Target]:
    """Boot a QEMU board through its U-Boot, over TFTP or from its flash (backed by
    ``flash``), its console on its pty or ``remote`` (see qemu_powered); yields the
    booted target."""
    with contextlib.ExitStack() as stack:
        net, port, powered_on = stack.enter_context(
            qemu_powered(board, result, workdir, flash, remote))
        target = stack.enter_context(serial_target(
            board, result, workdir, port=port, baud=board.serial.baud,
            server_ip=net.server_ip, device_ip=net.device_ip, netmask=net.netmask,
            netns=net.path, initrd=initrd, ready=ready, timeout=timeout,
            powered_on=powered_on, from_flash=from_flash))
        target.network = net
        yield target


@contextlib.contextmanager
def uboot_prompt(
    board: Board,
    served: Path,
    workdir: Path,
    *,
    port: str,
    baud: int,
    server_ip: str,
    device_ip: str,
    netmask: str,
    netns: str | None = None,
    timeout: float = 60,
    powered_on: PowerOn | None = None,
    power_timeout: float = POWER_ON_TIMEOUT,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[Target]:
    """A board at its U-Boot prompt, with a TFTP server serving the folder ``served``
    (from inside ``netns`` when given). With ``powered_on`` the caller switched the power
    (QEMU) and times from then (a function: called to switch it once the console is
    open); else a person powers the board on within ``power_timeout`` seconds, and
    ``on_wait(elapsed)`` is called while we wait."""
    report = BootReport()
    with contextlib.ExitStack() as stack:
        stack.enter_context(TftpServer(served, server_ip, 69, on_transfer=report.transfers.append,
                                       netns=netns))
        console = stack.enter_context(board_console(board, port, baud, workdir))
        uboot = UBootDriver(console, board.uboot.prompt, board.uboot.autoboot)
        if powered_on is None:
            report.stages.append(("waiting for U-Boot", wait_for_power_on(
                uboot, port, baud, power_timeout, on_wait)))
        else:
            if callable(powered_on):
                powered_on = powered_on()
            uboot.interrupt(timeout)
            report.stages.append(("power on to U-Boot prompt", time.monotonic() - powered_on))
        yield Target(board, console, uboot, report, server_ip, device_ip, netmask,
                     powered_on=powered_on)


@contextlib.contextmanager
def serial_target(
    board: Board,
    result: Path,
    workdir: Path,
    *,
    port: str,
    baud: int,
    server_ip: str,
    device_ip: str,
    netmask: str,
    netns: str | None = None,
    initrd: Path | None = None,
    ready: str = READY_LINE,
    timeout: float = 60,
    powered_on: PowerOn | None = None,
    from_flash: bool = False,
    power_timeout: float = POWER_ON_TIMEOUT,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[Target]:
    """Boot a board on a serial console, over TFTP or (``from_flash``) from the image in
    its firmware partition; the result is served over TFTP either way, for the tests that
    fetch it back. ``powered_on``, ``power_timeout`` and ``on_wait`` as for uboot_prompt."""
    cmds = (flash_boot_commands(board, result) if from_flash
            else boot_commands(board, result, initrd))
    served = stage_files(result, workdir / "tftp", [initrd] if initrd else [])
    with uboot_prompt(board, served, workdir, port=port, baud=baud, server_ip=server_ip,
                      device_ip=device_ip, netmask=netmask, netns=netns, timeout=timeout,
                      powered_on=powered_on, power_timeout=power_timeout,
                      on_wait=on_wait) as target:
        tftp_boot(board, target.uboot, server_ip, device_ip, netmask, cmds, ready,
                  target.report, timeout)
        if target.powered_on is not None:
            target.report.stages.append(("power on to ready",
                                         time.monotonic() - target.powered_on))
        yield target
