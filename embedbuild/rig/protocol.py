"""Protocols: the few methods each capability of a bench offers, as small ABCs.

Drivers implement them (Console, UBootDriver, TftpServer, the power drivers) and bind
to them, never to a concrete class: the U-Boot driver runs on any ConsoleProtocol,
the strategy on any PowerProtocol. Test fakes implement the same protocols.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Match:
    """What expect found: which pattern, the match, and the text before it."""

    index: int
    match: re.Match
    before: str


class ConsoleProtocol(ABC):
    """A board's console: read with patterns and deadlines, write paced."""

    @abstractmethod
    def expect(self, patterns: str | Sequence[str], timeout: float,
               since: int | None = None) -> Match:
        """Wait until one of the regexes appears; raises ConsoleError after ``timeout``."""

    @abstractmethod
    def write(self, text: str) -> None:
        """Write text, paced as the line needs."""

    @abstractmethod
    def sendline(self, line: str, echo_timeout: float | None = 5.0) -> None:
        """Send a line, its echo awaited first unless ``echo_timeout`` is None."""

    @abstractmethod
    def mark(self) -> int:
        """A position in everything read."""

    @abstractmethod
    def since(self, mark: int) -> str:
        """What was read after a mark."""

    @abstractmethod
    def tail(self, lines: int = 25) -> str:
        """The last lines read (for error messages)."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once closed, or once the other end went away."""

    @abstractmethod
    def close(self) -> None:
        """Stop reading and release the line."""


class PowerProtocol(ABC):
    """Switching a board's power."""

    # Seconds the board may take from on() to its bootloader's first words (None: the
    # stage's own timeout). A person needs minutes.
    patience: float | None = None

    @abstractmethod
    def on(self) -> None:
        """Power the board on (or ask for it)."""

    @abstractmethod
    def off(self) -> None:
        """Power the board off (or leave it: a person does)."""

    def cycle(self) -> None:
        """Off, then on."""
        self.off()
        self.on()


class BootloaderProtocol(ABC):
    """A bootloader at a prompt: stop its autoboot, run commands with their status, boot."""

    @abstractmethod
    def interrupt(self, timeout: float = 60) -> float:
        """Stop autoboot and reach a prompt that answers; returns the seconds it took."""

    @abstractmethod
    def run(self, command: str, timeout: float = 30):
        """Run a command; returns its status, output and seconds."""

    @abstractmethod
    def check(self, command: str, timeout: float = 30):
        """Run a command that must succeed."""

    @abstractmethod
    def boot(self, command: str, timeout: float = 30) -> float:
        """Run a boot command until the kernel starts; returns the seconds it took."""

    @abstractmethod
    def wait_autoboot(self, timeout: float = 60) -> float:
        """Press no key; wait for the bootloader's own boot to start the kernel."""


class FileTransferProtocol(ABC):
    """A server the board loads files from (TFTP); used as a context manager."""

    @property
    @abstractmethod
    def address(self) -> str:
        """Where it listens, host:port."""

    @abstractmethod
    def __enter__(self) -> FileTransferProtocol: ...

    @abstractmethod
    def __exit__(self, *exc) -> None: ...
