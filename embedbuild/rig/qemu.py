"""QEMU as a board: a pty serial port (opened like /dev/ttyUSB0, or through a serial
server that opens it at a fixed link), power through QMP, and a NIC on the tap of a
bench network."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import BenchNetwork, uninterrupted
from embedbuild.rig.resource import QemuMachine

_serial = itertools.count()


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
        # Unique per QEMU: boots sharing a folder must never quit each other's QEMU.
        self.qmp_path = workdir / f"qmp-{os.getpid()}-{next(_serial)}.sock"

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
        if self.console_link is None:
            return ["-serial", "pty"]
        return ["-chardev", f"pty,id=console,path={self.console_link}",
                "-serial", "chardev:console"]

    def start(self, timeout: float = 10) -> str:
        """Start QEMU (its CPU stopped while ``halted``); returns the pty path of its
        serial console. The flash file is made first if missing.

        If starting fails or is interrupted (Ctrl-C, SIGTERM) before this returns,
        QEMU is stopped here: the caller has nothing to stop yet.
        """
        out_path = self.workdir / "qemu.out"
        self.workdir.mkdir(parents=True, exist_ok=True)
        m = self.machine
        if m.flash is not None and self.spec.pflash_unit is not None:
            flash_file(m.flash, m.flash_size)
        if self.console_link is not None:
            # QEMU refuses to replace a link a killed QEMU left behind.
            if self.console_link.is_symlink():
                self.console_link.unlink()
            self.console_link.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("w") as out:  # QEMU keeps its own copy
            # QEMU dies with us, even if we are killed with SIGKILL.
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--",
                 *self.network.exec_argv(self.argv())],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            return self._wait_for_pty(out_path, timeout)
        except BaseException:
            with uninterrupted():
                self._kill()
            raise

    def _wait_for_pty(self, out_path: Path, timeout: float) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = out_path.read_text(errors="replace")
            if m := re.search(r"char device redirected to (/dev/pts/\d+)", text):
                return m.group(1)
            if self.proc.poll() is not None:
                raise EmbedbuildError(
                    f"QEMU exited at start: {text.strip()[-800:]}",
                    hint="check the board's [qemu] section",
                )
            time.sleep(0.02)
        raise EmbedbuildError("QEMU did not open its serial pty in time")

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
            except OSError as e:  # QMP's socket comes up after the serial pty
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise EmbedbuildError(f"QEMU did not start its CPU: {e}",
                                          where=str(self.workdir / "qemu.out")) from None
                time.sleep(0.05)

    def _kill(self) -> None:
        """SIGKILL QEMU's process group and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """Stop QEMU (QMP quit, then kill) and wait for it; a signal meanwhile waits
        until QEMU is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with uninterrupted():
            try:
                self.qmp("quit")
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                pass  # no QMP answer: the kill below does it
            self._kill()
