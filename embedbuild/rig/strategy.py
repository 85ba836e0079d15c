"""The U-Boot strategy: moves a target from off to U-Boot's prompt, or through a boot
source to the system's ready line, reporting each stage as a step.

off --power--> U-Boot --(interrupt, network, the source's commands)--> kernel --> /init
    --> ready; or, for a source that presses no key, U-Boot's own boot --> kernel ...
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild import bootcmd
from embedbuild.model.system import READY_LINE
from embedbuild.rig.bootsource import BootSource
from embedbuild.rig.console import ConsoleError
from embedbuild.rig.report import TOTAL, BootReport
from embedbuild.rig.resource import SerialLine
from embedbuild.rig.uboot import KERNEL_ERRORS, BootError, UBootDriver, wait_ready

if TYPE_CHECKING:
    from embedbuild.rig.target import Target

COMMON_BAUDS = (115200, 57600, 38400, 19200, 9600)
LOAD_TIMEOUT = 120.0  # seconds a command before the boot command may take (a big load)
REPORT_FILE = "boot.json"  # the boot report's timeline, in the target's folder
# The kernel's line at /init's start (an info line: not on a console with loglevel=5 or
# quiet), or /init's own first line, whichever comes first.
INIT_STARTED = r"Run /init as init process|^embedbuild: init at "


class UBootStrategy:
    """Drives one target through U-Boot.

    Args:
        target: the target, not yet started.
    """

    def __init__(self, target: Target) -> None:
        self.target = target

    def prompt(self, extra: Sequence[Path] = (), timeout: float = 60) -> UBootDriver:
        """Start the bench serving the result's files and ``extra``, power on, stop
        autoboot and set up U-Boot's network; returns the U-Boot driver at its prompt."""
        t = self.target
        t.start(None, extra)
        self._power_on()
        self._reach_prompt(timeout)
        self._network()
        assert t.uboot is not None
        return t.uboot

    def boot(self, source: BootSource, ready: str = READY_LINE,
             timeout: float = 60) -> BootReport:
        """Boot through ``source`` until the ready line (a regex); every refusal comes
        before the power is switched. U-Boot and kernel failures fail at once."""
        t = self.target
        t.require_board()
        source.check(t)
        cmds = source.commands(t)
        t.start(source)
        assert t.uboot is not None
        self._power_on()
        if cmds is None:
            with t.steps("power on to kernel (autoboot)", stage=True):
                t.uboot.wait_autoboot(timeout)
        else:
            self._reach_prompt(timeout)
            self._network()
            for cmd in cmds[:-1]:
                words = cmd.split()
                what = f"tftp {words[-1]}" if words[0] == "tftpboot" else \
                    f"U-Boot {' '.join(words[:2])}"
                with t.steps(what, stage=True, command=cmd):
                    source.run(t.uboot, cmd, LOAD_TIMEOUT)
            with t.steps("boot command", stage=True, command=cmds[-1]):
                t.uboot.boot(cmds[-1], timeout)
        self._follow_kernel(ready, timeout)
        if (on := t.report.powered_on) is not None:
            t.steps.span(TOTAL, on, time.monotonic())
        t.report.write(t.workdir / REPORT_FILE)
        return t.report

    def _power_on(self) -> None:
        t = self.target
        assert t.power is not None
        t.power.cycle()
        if t.power.patience is None:  # switched by us: now is when the board got power
            t.steps.mark("power on", stage=True)

    def _reach_prompt(self, timeout: float) -> None:
        t = self.target
        assert t.power is not None and t.uboot is not None
        timed = t.power.patience is None
        with t.steps("power on to U-Boot prompt" if timed else "waiting for U-Boot",
                     stage=True):
            wait_for_uboot(t.uboot, t.power.patience or timeout, t.bench.serial)

    def _network(self) -> None:
        t = self.target
        assert t.uboot is not None
        with t.steps("U-Boot network setup", stage=True):
            for cmd in bootcmd.batched(bootcmd.network(t.require_board().uboot, t.link)):
                t.uboot.check(cmd)

    def _follow_kernel(self, ready: str, timeout: float) -> None:
        """From the kernel's start: wait for /init (the kernel's "Run /init" line or, on a
        console that shows only warnings and worse, /init's first line), then for the
        ready line. An init of another's on such a console shows neither: its ready
        line, come first, ends both stages."""
        t = self.target
        assert t.console is not None
        with t.steps("kernel to /init", stage=True):
            m = t.console.expect([INIT_STARTED, ready, *KERNEL_ERRORS], timeout)
            if m.index > 1:
                raise BootError(f"kernel: {m.match.group(0).strip()}",
                                log_tail=t.console.tail())
        with t.steps("init to ready", stage=True):
            if m.index == 0:
                wait_ready(t.console, ready, timeout)


def wait_for_uboot(uboot: UBootDriver, timeout: float, line: SerialLine) -> float:
    """Catch U-Boot (stop its autoboot, or find its prompt) within ``timeout`` seconds of
    the power coming on, a person's minutes or QEMU's moment; returns the seconds it
    took. Gives up saying what was seen on the ``line``."""
    console = uboot.console
    t0 = time.monotonic()
    start = console.mark()
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= timeout:
            raise BootError(f"no U-Boot on {line.port or 'the console'} after "
                            f"{timeout:.0f} s: {describe_line(console.since(start), line.baud)}")
        try:
            uboot.interrupt(min(1.0, timeout - elapsed))
            return time.monotonic() - t0
        except BootError:
            raise
        except ConsoleError:
            if console.closed:
                raise


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
