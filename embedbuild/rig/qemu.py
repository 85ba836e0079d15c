"""QEMU as a board: a pty serial port (opened like /dev/ttyUSB0, or through a serial
server that opens it at a fixed link), power through QMP, and a NIC on the tap of a
bench network.

The pty is made here and its master end handed to QEMU as a plain serial line
(``-add-fd`` and ``-chardev serial`` on ``/dev/fdset``), not made by QEMU (``-serial
pty``): QEMU's own pty reads nothing the console sends until its once-a-second poll
has seen the other end open, so a key pressed at U-Boot's autoboot prompt in the
first second after QEMU started waited for that poll. Measured: U-Boot's prompt came
about 1.0 s after QEMU started instead of 0.07-0.2 s in about one boot of three
(qemu-arm-virt, qemu-malta-be), and in every boot of a board without a flash drive;
and what the board printed before the console opened was dropped. Our end stays
open while QEMU runs, so nothing is lost whenever the console opens.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import BenchNetwork, uninterrupted
from embedbuild.rig.resource import QemuMachine

_serial = itertools.count()
# The longest path an AF_UNIX address holds (108 bytes with its NUL).
SUN_PATH_MAX = 107
_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_thp_lock = threading.Lock()  # QEMUs started from several threads: one setting at a time


@contextlib.contextmanager
def _without_huge_pages() -> Iterator[None]:
    """Processes started inside get no transparent huge pages (QEMU, below).

    QEMU asks for huge pages (MADV_HUGEPAGE) for the guest's RAM and for its buffer of
    translated code, and both are touched for the first time all through a boot: with
    the host's THP on ("always" or "madvise"), each first touch of 2 MiB zeroes all of
    it, after compacting the host's memory when no huge page is free. Measured on
    qemu-arm-virt (power on to ready, median of 12 interleaved boots, 2 cores): 1.33 s
    with huge pages, 0.93 s without while the host's memory was fragmented; no
    difference beyond noise while it was not.

    The flag is set on this process and put back after: a child inherits it, through
    exec too. Not in a preexec_fn: that forks with Python code to run in the child,
    which runs the at-fork handlers of libraries loaded here (gRPC's, for a labgrid
    place, aborted QEMU's child that way). A process another thread starts meanwhile
    gets no huge pages either, which costs it nothing. Results are not checked: where
    the call fails, QEMU runs as it did before."""
    with _thp_lock:
        was = _prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0)
        _prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)
        try:
            yield
        finally:
            if was == 0:
                _prctl(_PR_SET_THP_DISABLE, 0, 0, 0, 0)


def flash_file(path: Path, size: int) -> Path:
    """The file backing an emulated flash: kept as it is when it exists (it persists across
    power cycles like a chip), else created erased (every byte 0xff) at exactly ``size``
    bytes, the size QEMU requires of a pflash bank."""
    if path.exists():
        if path.stat().st_size != size:
            raise EmbedbuildError(f"flash file is {path.stat().st_size:,} bytes, the board's "
                                  f"flash is {size:,}", where=str(path),
                                  hint="remove it: a new, erased one is made")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    block = b"\xff" * (1 << 20)
    with open(tmp, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    tmp.rename(path)
    return path


class QemuBoard:
    """One QEMU process emulating a board, started with its CPU stopped: the console
    opens first (on the pty, or through a serial server that opens it late), then
    release() is the power coming on, so nothing the board prints is missed.

    Args:
        machine: the board's QEMU model and what is attached (firmware, flash, disk,
            console link for a serial server).
        network: the bench network whose tap the NIC uses.
        workdir: where the QMP socket and QEMU's own output go.
    """

    def __init__(self, machine: QemuMachine, network: BenchNetwork, workdir: Path) -> None:
        self.machine = machine
        self.spec = machine.spec
        self.firmware = machine.firmware or machine.spec.firmware
        self.console_link = machine.console_link
        self.halted = True  # the CPU waits for release(), the power coming on
        self.network = network
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        # The pty: the master end QEMU gets (its number while QEMU starts), and our own
        # descriptor of the console end, held while QEMU runs so the line never hangs up.
        self._master: int | None = None
        self._line: int | None = None
        # Unique per QEMU: boots sharing a folder must never quit each other's QEMU.
        self._qmp_in_workdir = workdir / f"qmp-{os.getpid()}-{next(_serial)}.sock"
        self.qmp_path = self._qmp_in_workdir
        self._qmp_dir: Path | None = None  # a short folder of its own, see start()

    def argv(self) -> list[str]:
        """QEMU's command line: serial on a pty, QMP on a socket, the NIC on the tap."""
        s = self.spec
        argv = [
            s.system,
            "-M",
            s.machine,
            "-m",
            s.memory,
            "-display",
            "none",
            "-monitor",
            "none",
            *self._serial_args(),
            "-nodefaults" if s.nodefaults else "",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-netdev",
            f"tap,id=net0,ifname={self.network.tap},script=no,downscript=no",
            "-device",
            f"{s.nic},netdev=net0" + (f",mac={self.machine.mac}" if self.machine.mac else ""),
        ]
        if self.halted:
            argv.append("-S")
        if s.cpu:
            argv += ["-cpu", s.cpu]
        if self.firmware:
            argv += ["-bios", str(self.firmware)]
        m = self.machine
        if m.flash is not None and s.pflash_unit is not None:
            argv += ["-drive", f"if=pflash,format=raw,unit={s.pflash_unit},file={m.flash}"]
        if m.disk is not None:
            argv += ["-drive", f"if=none,format=raw,id=sd0,file={m.disk}",
                     "-device", f"{s.sd_device},drive=sd0"]
        argv += s.extra
        return [a for a in argv if a]

    def _serial_args(self) -> list[str]:
        # The pty's master end, passed as an open file (its number is the same in QEMU).
        return ["-add-fd", f"fd={self._master},set=1",
                "-chardev", "serial,id=console,path=/dev/fdset/1", "-serial", "chardev:console"]

    def start(self, timeout: float = 10) -> str:
        """Start QEMU (its CPU stopped while ``halted``); returns the pty path of its
        serial console, once QEMU has set up (its QMP socket is there). The flash file
        is made first if missing.

        If starting fails or is interrupted (Ctrl-C, SIGTERM) before this returns,
        QEMU is stopped here: the caller has nothing to stop yet.
        """
        out_path = self.workdir / "qemu.out"
        self.workdir.mkdir(parents=True, exist_ok=True)
        m = self.machine
        if m.flash is not None and self.spec.pflash_unit is not None:
            flash_file(m.flash, m.flash_size)
        self.qmp_path = self._qmp_in_workdir
        if len(os.fsencode(self.qmp_path)) > SUN_PATH_MAX:
            # A bench folder too deep for a socket's address (a long TMPDIR or home):
            # QMP's socket goes into a private folder in /tmp, removed with QEMU.
            self._qmp_dir = Path(tempfile.mkdtemp(prefix="embedbuild-qmp-", dir="/tmp"))
            self.qmp_path = self._qmp_dir / "qmp.sock"
        self.qmp_path.unlink(missing_ok=True)  # its appearing says QEMU has set up
        self._master, self._line = os.openpty()
        try:
            tty.setraw(self._line)
            path = os.ttyname(self._line)
            if self.console_link is not None:
                # A link a killed QEMU's run left behind is replaced.
                self.console_link.parent.mkdir(parents=True, exist_ok=True)
                self.console_link.unlink(missing_ok=True)
                self.console_link.symlink_to(path)
            with out_path.open("w") as out, _without_huge_pages():  # QEMU keeps its own copy
                # QEMU dies with us, even if we are killed with SIGKILL.
                self.proc = subprocess.Popen(
                    ["setpriv", "--pdeathsig", "KILL", "--",
                     *self.network.exec_argv(self.argv())],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    pass_fds=(self._master,),
                )
        except BaseException:
            self._close_line()
            raise
        finally:
            os.close(self._master)
            self._master = None
        try:
            self._wait_started(out_path, timeout)
            return path
        except BaseException:
            with uninterrupted():
                self._kill()
            raise

    def _wait_started(self, out_path: Path, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.qmp_path.exists():
                return
            if self.proc.poll() is not None:
                text = out_path.read_text(errors="replace")
                raise EmbedbuildError(
                    f"QEMU exited at start: {text.strip()[-800:]}",
                    hint="check the board's [qemu] section",
                )
            time.sleep(0.005)
        raise EmbedbuildError("QEMU did not set up in time (no QMP socket)",
                              where=str(out_path))

    def _close_line(self) -> None:
        """Let go of the console line and of QMP's own socket folder (if it has one)."""
        if self._line is not None:
            os.close(self._line)
            self._line = None
        if self._qmp_dir is not None:
            shutil.rmtree(self._qmp_dir, ignore_errors=True)
            self._qmp_dir = None

    def qmp(self, command: str) -> None:
        """Run one QMP command without arguments (cont, stop, system_reset, quit)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.qmp_path))
            f = s.makefile("rw")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                f.readline()

    def release(self, timeout: float = 5) -> float:
        """Start the CPU of a QEMU started ``halted``; returns when (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.qmp("cont")
                return time.monotonic()
            except OSError as e:  # QMP may not answer at once
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise EmbedbuildError(f"QEMU did not start its CPU: {e}",
                                          where=str(self.workdir / "qemu.out")) from None
                time.sleep(0.05)

    def _kill(self) -> None:
        """SIGKILL QEMU's process group and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_line()

    def stop(self) -> None:
        """Stop QEMU (QMP quit, then kill) and wait for it; a signal meanwhile waits
        until QEMU is gone."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_line()
            return
        with uninterrupted():
            try:
                self.qmp("quit")
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                pass  # no QMP answer: the kill below does it
            self._kill()
