"""pytest plugin: a booted target for tests, on QEMU or on a real board.

Options: --eb-board NAME (QEMU unless --eb-serial is given), --eb-serial DEV (a device
path or a serial server's URL), --eb-qemu (the QEMU model, its console through the
--eb-serial URL), --eb-baud, --eb-server-ip, --eb-device-ip, --eb-netmask,
--eb-power-timeout, --eb-power-on/--eb-power-off (commands that switch a real board),
--eb-store, --eb-place NAME with --eb-coordinator (a labgrid place's serial port as the
console, held for the session), --eb-boot NAME (a boot source: tftp, flash, sd, pxe, ...;
flash boots the image in the firmware partition, for a QEMU board the flash in its bench
folder where `embedbuild flash` wrote it; sd boots the SD-card image with no key pressed), with
--eb-from-flash and --eb-from-sd as short forms. The ``target`` fixture boots the
board once per session through the one target object (embedbuild.rig.target, as the
command line does) and gives ``run(cmd) -> (status, output)``, ``succeed(cmd)`` and
``wait_for(regex)``; a failing test gets the console log.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from embedbuild.rig.target import Target


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("embedbuild", "booted embedbuild boards")
    g.addoption("--eb-board", default="qemu-arm-virt", help="board to boot for `target` tests")
    g.addoption("--eb-serial", help="a real board's console (else the board's QEMU model)")
    g.addoption("--eb-qemu", action="store_true",
                help="the board's QEMU model, its console reached through the --eb-serial URL")
    g.addoption("--eb-baud", type=int, help="console speed (default: the board's)")
    g.addoption("--eb-server-ip", help="this machine's address on the board's network")
    g.addoption("--eb-device-ip", help="address to give the board")
    g.addoption("--eb-netmask", default="255.255.255.0", help="the board network's netmask")
    g.addoption("--eb-power-timeout", type=float, default=300.0,
                help="seconds a person has to power a real board on")
    g.addoption("--eb-power-on", help="a command that powers the real board on")
    g.addoption("--eb-power-off", help="a command that powers the real board off")
    g.addoption("--eb-store", help="store to build in (default: embedbuild's)")
    g.addoption("--eb-boot", help="how U-Boot boots it: a boot source's name (default tftp, "
                "signed-fit for a board with [signing])")
    g.addoption("--eb-from-flash", action="store_true",
                help="boot from the firmware partition (--eb-boot flash)")
    g.addoption("--eb-from-sd", action="store_true",
                help="QEMU: boot the SD-card image with no key pressed (--eb-boot sd)")
    g.addoption("--eb-place", help="a labgrid place whose serial port is the console, held "
                "for the session (needs embedbuild[labgrid])")
    g.addoption("--eb-coordinator", default="127.0.0.1:20408",
                help="the labgrid coordinator, HOST[:PORT]")
    g.addoption("--eb-place-timeout", type=float, default=600.0,
                help="seconds to wait for the place while someone else holds it")


@dataclass
class BootedTarget:
    """What tests use: the booted target and a shell on its console."""

    target: Target
    result: Path
    workdir: Path

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """(exit status, output) of a shell command on the board."""
        return self.target.shell().run(command, timeout)

    def succeed(self, command: str, timeout: float = 60) -> str:
        """Output of a command that must exit 0."""
        return self.target.shell().succeed(command, timeout)

    def mark(self) -> int:
        """A point on the console: ``wait_for(..., since=mark)`` also sees what came after
        it while other commands ran."""
        return self.target.open_console().mark()

    def wait_for(self, regex: str, timeout: float = 60, since: int | None = None) -> re.Match:
        """Wait for a line on the console."""
        return self.target.open_console().expect(regex, timeout, since).match


def _boot_name(opt) -> str | None:
    if opt("--eb-from-flash"):
        return "flash"
    return "sd" if opt("--eb-from-sd") else opt("--eb-boot")


@contextlib.contextmanager
def boot_target(config: pytest.Config, store_root: Path | None = None) -> Iterator[BootedTarget]:
    """Build the chosen board and boot it (QEMU or serial) until its system is ready."""
    from pydantic import ValidationError

    from embedbuild import session
    from embedbuild.errors import EmbedbuildError
    from embedbuild.load import load_board
    from embedbuild.rig.bench import BenchOptions, flash_file
    from embedbuild.rig.sources import BOOT_SOURCES, default_source
    from embedbuild.store import Store, default_root

    opt = config.getoption
    name = _boot_name(opt)
    try:
        if name is not None and name not in BOOT_SOURCES:
            raise EmbedbuildError(f"--eb-boot {name}: no such boot source",
                                  hint=f"one of {', '.join(sorted(BOOT_SOURCES))}")
        options = BenchOptions(serial=opt("--eb-serial"), qemu=opt("--eb-qemu"),
                               baud=opt("--eb-baud"), server_ip=opt("--eb-server-ip"),
                               device_ip=opt("--eb-device-ip"), netmask=opt("--eb-netmask"),
                               power_timeout=opt("--eb-power-timeout"),
                               power_on=opt("--eb-power-on"), power_off=opt("--eb-power-off"),
                               place=opt("--eb-place"), coordinator=opt("--eb-coordinator"),
                               place_timeout=opt("--eb-place-timeout"))
        options.check()
    except EmbedbuildError as e:
        raise pytest.UsageError(f"{e} ({e.hint})") from None
    except ValidationError as e:
        raise pytest.UsageError(str(e)) from None
    board = load_board(opt("--eb-board"))
    name = name or default_source(board)
    built = session.build(board, Store(store_root or default_root()))
    # The bench folder's flash, where `embedbuild flash` wrote, only when booting from it:
    # otherwise a new erased one, so that test sessions never share a flash file.
    flash = flash_file(board) if name == "flash" else None
    with tempfile.TemporaryDirectory(prefix=f"embedbuild-test-{board.name}-") as d:
        workdir = Path(d)
        with Target(board, options.bench(board, flash), workdir, built.result) as target:
            target.boot(BOOT_SOURCES[name]())
            booted = BootedTarget(target, built.result, workdir)
            config.stash[_LAST] = booted
            yield booted


_LAST = pytest.StashKey[BootedTarget]()


@pytest.fixture(scope="session")
def eb_store(pytestconfig: pytest.Config) -> Path | None:
    """The store `target` builds in (--eb-store; None: embedbuild's default).
    A test suite can override this fixture to share its own store."""
    opt = pytestconfig.getoption("--eb-store")
    return Path(opt) if opt else None


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config, eb_store: Path | None) -> Iterator[BootedTarget]:
    """The board booted to `embedbuild: system ready`, once per session."""
    with boot_target(pytestconfig, eb_store) as t:
        yield t


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    booted = item.config.stash.get(_LAST, None)
    console = booted.target.console if booted is not None else None
    if report.failed and console is not None and "target" in getattr(item, "fixturenames", ()):
        report.sections.append(("console (last 60 lines)",
                                "\n".join(console.text.splitlines()[-60:])))
