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
from embedbuild.model.board import Qemu
from embedbuild.rig.netns import BenchNetwork, uninterrupted

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
    """One QEMU process emulating a board.

    Args:
        spec: the board's [qemu] section.
        network: the bench network whose tap the NIC uses.
        workdir: where the QMP socket and QEMU's own output go.
        firmware: the bootloader to start (default: the spec's), e.g. a U-Boot built
            by embedbuild.
        flash: the file backing the board's flash (spec.pflash_unit), see flash_file().
        console_link: a symlink QEMU makes to its serial pty, for a program configured
            with a fixed path (a serial server such as ser2net); replaced if left behind.
        halted: start with the CPU stopped until release(): a console that connects
            late (through a serial server) then misses nothing the board prints.
    """

    def __init__(self, spec: Qemu, network: BenchNetwork, workdir: Path,
                 firmware: Path | None = None, flash: Path | None = None,
                 console_link: Path | None = None, halted: bool = False) -> None:
        self.spec = spec
        self.firmware = firmware or spec.firmware
        self.flash = flash
        self.console_link = console_link
        self.halted = halted
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
            f"{s.nic},netdev=net0",
        ]
        if self.halted:
            argv.append("-S")
        if s.cpu:
            argv += ["-cpu", s.cpu]
        if self.firmware:
            argv += ["-bios", str(self.firmware)]
        if self.flash is not None and s.pflash_unit is not None:
            argv += ["-drive", f"if=pflash,format=raw,unit={s.pflash_unit},file={self.flash}"]
        argv += s.extra
        return [a for a in argv if a]

    def _serial_args(self) -> list[str]:
        if self.console_link is None:
            return ["-serial", "pty"]
        return ["-chardev", f"pty,id=console,path={self.console_link}",
                "-serial", "chardev:console"]

    def power_on(self, timeout: float = 10) -> str:
        """Start QEMU; returns the pty path of its serial console.

        If starting fails or is interrupted (Ctrl-C, SIGTERM) before this returns,
        QEMU is stopped here: the caller has nothing to power off yet.
        """
        out_path = self.workdir / "qemu.out"
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

    def _qmp(self, command: str) -> None:
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
                self._qmp("cont")
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

    def power_off(self) -> None:
        """Stop QEMU (QMP quit, then kill) and wait for it; a signal meanwhile waits
        until QEMU is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with uninterrupted():
            try:
                self._qmp("quit")
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                pass  # no QMP answer: the kill below does it
            self._kill()
