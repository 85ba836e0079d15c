"""Fake devices on the far end of a pty, for fast console and driver tests.

``device.console()`` opens the device's /dev/pts/N with Console, exactly as QEMU's
pty or /dev/ttyUSB0 is opened, and only then starts the device (a thread on the
pty's master side): opening a port flushes what was waiting in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import subprocess
import threading
import time
import tty
from pathlib import Path

from embedbuild.rig.console import Console
from embedbuild.rig.protocol import PowerProtocol


class FakeDevice:
    """A pty pair and a thread playing the device; use as a context manager."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # Raw from the start: the line discipline must not echo what the device says.
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self.stopped = threading.Event()
        self.received = bytearray()  # everything the console wrote
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> FakeDevice:
        return self

    def console(self, **kwargs) -> Console:
        """Open a Console on the device, then start the device."""
        c = Console(self.port, **kwargs)
        self._thread.start()
        return c

    def power_on(self) -> None:
        """Start the device (someone else opened its console: a target)."""
        self._thread.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):  # a device may have closed its end itself
                os.close(fd)

    def _main(self) -> None:
        with contextlib.suppress(_Stopped):
            self.run()

    def run(self) -> None:
        """The device's behaviour; the default one reads and discards."""
        while True:
            self.recv(0.05)

    # -- helpers for run() -----------------------------------------------------

    def send(self, data: bytes | str) -> None:
        """Write to the console, waiting while the pty is full (until stopped)."""
        view = memoryview(data.encode() if isinstance(data, str) else data)
        while view:
            self._check()
            _, ready, _ = select.select([], [self.master], [], 0.05)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    view = view[os.write(self.master, view) :]

    def recv(self, timeout: float) -> bytes:
        """What the console wrote within timeout (b"" if nothing)."""
        self._check()
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            data = os.read(self.master, 4096)
        except OSError:  # nothing after all, or our end is gone
            return b""
        self.received += data
        return data

    def sleep(self, seconds: float) -> None:
        """Pause, but stop promptly when the test ends."""
        if self.stopped.wait(seconds):
            raise _Stopped

    def _check(self) -> None:
        if self.stopped.is_set():
            raise _Stopped


class _Stopped(Exception):
    pass


class FakePower(PowerProtocol):
    """A power switch for a fake device: on() starts it; every switch is recorded.

    Args:
        device: the device switched.
        patience: as PowerProtocol's (a number: it acts as a person would).
    """

    def __init__(self, device: FakeDevice, patience: float | None = None) -> None:
        self.device = device
        self.patience = patience
        self.switched: list[str] = []

    def on(self) -> None:
        self.switched.append("on")
        self.device.power_on()

    def off(self) -> None:
        self.switched.append("off")


class FakeNoise(FakeDevice):
    """A board talking at another line speed: bytes that are not text, forever."""

    def run(self) -> None:
        while True:
            self.send(bytes(range(128, 256)) + b"\x00\x1b\x7f")
            self.sleep(0.05)


class FakeUBoot(FakeDevice):
    """Enough of U-Boot: autoboot countdown, prompt, echo, ``;`` lists, quotes, ``$?``,
    echo/setenv/true/false/sleep/tftpboot, and boot commands.

    Args:
        prompt: the prompt string.
        autoboot: countdown seconds (0: straight to the prompt).
        tick: real seconds per countdown second (kept short for tests).
        files: TFTP files the server has, name -> size.
        boot_error: what a boot command prints instead of starting the kernel.
        kernel: (delay, text) pieces the kernel prints after "Starting kernel ...".
        executes: False makes a U-Boot that echoes but never runs anything.
    """

    def __init__(self, prompt: str = "=> ", autoboot: int = 0, tick: float = 0.2,
                 files: dict[str, int] | None = None, boot_error: str | None = None,
                 kernel: list[tuple[float, str]] | None = None, executes: bool = True) -> None:
        super().__init__()
        self.prompt = prompt
        self.autoboot = autoboot
        self.tick = tick
        self.files = files or {}
        self.boot_error = boot_error
        self.kernel = kernel or [(0, "Linux version 6.1.0 (fake)\n")]
        self.executes = executes
        self.env: dict[str, str] = {}
        self.status = 0
        self.booted = False
        self.interrupted = False

    def run(self) -> None:
        self.send("\r\n\r\nU-Boot 2023.01 (fake)\r\n\r\nDRAM:  128 MiB\r\n")
        typed = b""
        for left in range(self.autoboot, 0, -1):
            self.send(f"\x1b[2K\rHit any key to stop autoboot: {left:2d} ")
            deadline = time.monotonic() + self.tick
            while time.monotonic() < deadline and not typed:
                typed = self.recv(deadline - time.monotonic())
            if typed:
                break
        if self.autoboot and not typed:
            self.send("\r\n")
            self._boot("bootcmd")
            return
        # The key that stopped autoboot is taken; what came after it is the next input.
        self.interrupted = bool(typed)
        self.send("\x1b[2K\r\n" if self.autoboot else "\r\n")
        self.send(self.prompt)
        line = ""
        while not self.booted:
            data, typed = typed[1:] + self.recv(0.05), b""
            for ch in data.decode(errors="replace"):
                if ch in "\r\n":
                    self.send("\r\n")
                    if self.executes:
                        self._line(line)
                        if self.booted:
                            return
                        self.send(self.prompt)
                    line = ""
                elif ch == "\x03":
                    self.send("<INTERRUPT>\r\n" + self.prompt)
                    line = ""
                else:
                    self.send(ch)  # U-Boot echoes each character as it comes
                    line += ch

    def _line(self, line: str) -> None:
        for command in _split_commands(line):
            words = [self._expand(w) for w in shlex.split(command)]
            if words:
                self.status = self._command(words)
            if self.booted:
                return

    def _expand(self, word: str) -> str:
        word = word.replace("$?", str(self.status))
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), word)

    def _command(self, words: list[str]) -> int:
        name, args = words[0], words[1:]
        if name == "echo":
            self.send(" ".join(args) + "\r\n")
            return 0
        if name == "setenv":
            self.env[args[0]] = " ".join(args[1:])
            return 0
        if name in ("true", "false"):
            return 0 if name == "true" else 1
        if name == "sleep":
            self.sleep(float(args[0]))
            return 0
        if name == "tftpboot":
            return self._tftp(args[-1])
        if name in ("bootz", "bootm", "booti"):
            return self._boot(name)
        self.send(f"Unknown command '{name}' - try 'help'\r\n")
        return 1

    def _tftp(self, filename: str) -> int:
        self.send(f"Using virtio-net#31 device\r\nTFTP from server {self.env.get('serverip')}; "
                  f"our IP address is {self.env.get('ipaddr')}\r\nFilename '{filename}'.\r\n"
                  "Load address: 0x40400000\r\nLoading: ")
        size = self.files.get(filename)
        if size is None:
            self.send("*\r\nTFTP error: 'File not found' (1)\r\nNot retrying...\r\n")
            return 1
        self.send("#################\r\n\t 12 MiB/s\r\ndone\r\n")
        self.send(f"Bytes transferred = {size} ({size:x} hex)\r\n")
        return 0

    def _boot(self, name: str) -> int:
        if self.boot_error:
            self.send(f"## Loading init Ramdisk from Legacy Image at 44000000 ...\r\n"
                      f"{self.boot_error}\r\n")
            return 1
        self.send("Starting kernel ...\r\n\r\n")
        self.booted = True
        for delay, text in self.kernel:
            self.sleep(delay)
            self.send(text.replace("\n", "\r\n"))
        return 0


def _split_commands(line: str) -> list[str]:
    """Split a U-Boot command line at ``;`` outside quotes."""
    out, cur, quote = [], "", ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            out.append(cur)
            cur = ""
            continue
        cur += ch
    return [*out, cur]


KERNEL_LINE = "[   12.345678] random: crng init done\n"
_B64_LINE = re.compile(rb"^@@([0-9a-f]{8,})\|[A-Za-z0-9+/=]{8,}")


class FakeShell(FakeDevice):
    """A real ``sh`` on a second pty (cooked, echoing, like a console shell), relayed
    to the console with kernel lines mixed in and bytes lost like on a UART without
    flow control.

    Args:
        workdir: the shell's working and home folder.
        kernel_every: a kernel line between output lines after every this many lines.
        split_lines: put a kernel line inside this many framed base64 lines.
        drop_in_b64: drop one byte in a framed base64 line of this many fetches.
        late_prompt: the shell's prompt comes after the echo of the next command typed
            (a shell descheduled between a command's last output and its prompt, while
            the line discipline echoes input at once): the command's first output line
            starts with the prompt.
    """

    def __init__(self, workdir: Path, kernel_every: int = 0, split_lines: int = 0,
                 drop_in_b64: int = 0, late_prompt: bool = False) -> None:
        super().__init__()
        self.kernel_every = kernel_every
        self.split_lines = split_lines
        self.drop_in_b64 = drop_in_b64
        self.late_prompt = late_prompt
        self._held = b""  # a prompt held back, and the lines still to pass before it
        self._held_after = 0
        self.dropped = 0
        self._dropped_in = b""
        self.b64_lines = 0
        self.sh_master, sh_slave = os.openpty()
        self.proc = subprocess.Popen(
            ["sh"], stdin=sh_slave, stdout=sh_slave, stderr=sh_slave, cwd=workdir,
            env={"PATH": os.environ["PATH"], "HOME": str(workdir), "PS1": "# ", "LC_ALL": "C"},
            start_new_session=True,
        )
        os.close(sh_slave)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        super().close()
        os.close(self.sh_master)

    def run(self) -> None:
        pending = b""
        lines = 0
        while True:
            ready, _, _ = select.select([self.master, self.sh_master], [], [], 0.02)
            self._check()
            if self.master in ready:
                os.write(self.sh_master, self.recv(0))
            if self.sh_master in ready:
                try:
                    pending += os.read(self.sh_master, 4096)
                except OSError:  # the shell exited
                    return
                *full, pending = pending.split(b"\n")
                for line in full:
                    lines += 1
                    if self._held:
                        if not self._held_after:
                            line, self._held = self._held + line, b""
                        self._held_after -= 1
                    self.send(self._mangle(line) + b"\n")
                    if self.kernel_every and lines % self.kernel_every == 0:
                        self.send(KERNEL_LINE)
            elif pending:
                if self.late_prompt and pending == b"# " and not self._held:
                    # After the echo of the next command line (its first full line).
                    self._held, self._held_after = pending, 1
                else:
                    self.send(pending)  # a prompt or a line still being written
                pending = b""

    def _mangle(self, line: bytes) -> bytes:
        m = _B64_LINE.match(line)
        if not m:
            return line
        self.b64_lines += 1
        if self.dropped < self.drop_in_b64 and m.group(1) != self._dropped_in:
            self.dropped += 1
            self._dropped_in = m.group(1)  # one loss per fetch, so each fetch is damaged
            cut = len(line) * 2 // 3
            return line[:cut] + line[cut + 1 :]
        if self.split_lines:
            # The kernel does not know the line is unfinished: its message lands inside.
            self.split_lines -= 1
            half = len(line) // 2
            return line[:half] + KERNEL_LINE.encode() + line[half:]
        return line
