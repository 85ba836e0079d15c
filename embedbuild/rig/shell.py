"""The Linux shell driver: run a command on the booted board's console and get its
exact output and exit status, even when kernel messages interleave.

The command's output goes to a file on the board; it comes back base64-encoded,
each line framed with a per-call tag, and is checked against the board's own
``cksum`` of the file, framed too. Kernel lines between or inside the framed lines are
dropped by the framing; a damaged transfer fails the checksum and is fetched again.
Nothing is looked for at the start of a line only: a shell's prompt can come after the
echo of the next command typed, and so at the start of that command's first output.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

from embedbuild.rig.console import ConsoleError
from embedbuild.rig.protocol import ConsoleProtocol

FETCH_TRIES = 5


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def posix_cksum(data: bytes) -> int:
    """The CRC that POSIX cksum prints (polynomial 0x04C11DB7, MSB first, length appended)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ b]
    n = len(data)
    while n:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ (n & 0xFF)]
        n >>= 8
    return ~crc & 0xFFFFFFFF


class ShellError(ConsoleError):
    """A command failed (from ``succeed``) or its output could not be fetched intact."""


class ShellDriver:
    """Drives a root shell on a console (the system's console shell).

    Args:
        console: the board's console, after the init's ready line.
        login: (user, password) if the console asks for a login first.
    """

    def __init__(self, console: ConsoleProtocol, login: tuple[str, str] | None = None) -> None:
        self.console = console
        self.login = login
        self._synced = False

    def sync(self, timeout: float = 15) -> None:
        """Get a shell that answers: log in if asked, then match a fresh marker."""
        c = self.console
        if self.login:
            c.write("\n")
            c.expect(r"login: ?$", timeout)
            c.sendline(self.login[0])
            c.expect(r"[Pp]assword: ?$", timeout)
            c.write(self.login[1] + "\n")
        tag = secrets.token_hex(4)
        c.write("\n")
        # A wide terminal: line editing must not wrap (and redraw) long commands.
        c.sendline(f'stty columns 4096 2>/dev/null; echo "@@{tag}""SYNC"', echo_timeout=None)
        c.expect(f"@@{tag}SYNC", timeout)
        self._synced = True

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run a shell command; returns (exit status, exact output, stderr included)."""
        if not self._synced:
            self.sync()
        tag = secrets.token_hex(4)
        out = f"/tmp/.eb-{tag}"
        c = self.console
        try:
            # No echo check: the init and the kernel write to this console too, so
            # the echo can be interleaved; the tagged markers cannot be faked by it.
            # The command reads no console input: the console is ours.
            c.sendline(f'( {command} ) >{out} 2>&1 </dev/null; echo "@@{tag}""S$?"',
                       echo_timeout=None)
            status = int(c.expect(rf"@@{tag}S(\d+)", timeout).match.group(1))
            return status, self._fetch(out, tag, timeout)
        except ConsoleError:
            # Leave a clean prompt behind for the next command.
            c.write("\x03\n")
            self._synced = False
            raise

    def _fetch(self, path: str, tag: str, timeout: float) -> str:
        c = self.console
        for attempt in range(FETCH_TRIES):
            # A tag per attempt: lines left over from a damaged attempt cannot mix in.
            ftag = f"{tag}{attempt}"
            c.sendline(f'echo "@@{ftag}""C$(cksum <{path})"; '
                       f'base64 {path} | sed "s/^/@@{ftag}|/"; echo "@@{ftag}""END"',
                       echo_timeout=None)
            data = _decode(c.expect(rf"@@{ftag}END", timeout).before, ftag)
            if data is not None:
                c.sendline(f"rm -f {path}", echo_timeout=None)
                return data.decode(errors="replace")
        raise ShellError(f"could not fetch the output of a command intact in {FETCH_TRIES} tries",
                         log_tail=c.tail())

    def succeed(self, command: str, timeout: float = 60) -> str:
        """Run a command that must exit 0; returns its output."""
        status, output = self.run(command, timeout)
        if status != 0:
            raise ShellError(f"`{command}` exited with status {status}: {output.strip()[-500:]}",
                             log_tail=self.console.tail())
        return output


def _decode(text: str, tag: str) -> bytes | None:
    """The file's bytes from a fetch's framed base64 lines, or None when a line was
    damaged (a byte lost on the wire, a kernel line inside it) or one is missing."""
    ck = re.search(rf"@@{tag}C(\d+) (\d+)\r?$", text, re.M)
    if not ck:
        return None
    try:
        # Line by line: base64 wraps at 76 characters, so each line decodes alone,
        # and a line that lost a byte is refused instead of shifting all after it.
        data = b"".join(base64.b64decode(line, validate=True)
                        for line in re.findall(rf"^@@{tag}\|(.*)$", text, re.M))
    except binascii.Error:
        return None
    if int(ck.group(1)) != posix_cksum(data) or int(ck.group(2)) != len(data):
        return None
    return data
