"""Running external commands for a build step: output to the step's log, tail on failure."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from embedbuild.errors import StepError

TAIL_LINES = 25

# Commands get the environment we started with, not os.environ as it is later:
# kconfiglib parses with its variables set in os.environ, and a make started by
# another step at that moment must not inherit them.
_BASE_ENV = dict(os.environ)


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class Cancelled(Exception):
    """The build was cancelled (another step failed, or the user interrupted)."""


class Running:
    """A command started by Runner.start. As a context manager, leaving it by an
    exception kills the command's process group."""

    def __init__(self, runner: Runner, proc: subprocess.Popen, what: str) -> None:
        self.runner = runner
        self.proc = proc
        self.what = what

    def wait(self) -> None:
        """Wait for the command; a non-zero exit raises StepError with the log's tail."""
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        rc = self.proc.wait()
        if self.runner.cancel.is_set():
            raise Cancelled()
        if rc != 0:
            raise StepError(
                f"{self.what} failed (exit status {rc})",
                log_tail=log_tail(self.runner.log),
                log_path=str(self.runner.log),
            )

    def __enter__(self) -> Running:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                with contextlib.suppress(BrokenPipeError):
                    f.close()


class Runner:
    """Runs commands for one step, appending their output to the step's log.

    Each command gets its own process group, so cancelling kills make and all
    its compilers; ``setpriv --pdeathsig`` makes it die with us even on SIGKILL.
    """

    def __init__(self, log: Path, cancel: threading.Event | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.log = log
        self.cancel = cancel or threading.Event()
        # Under every command's own env (the compiler cache's PATH and settings).
        self.env = dict(env or {})

    def note(self, text: str) -> None:
        """Write a line of our own into the log."""
        with open(self.log, "a") as f:
            f.write(text.rstrip("\n") + "\n")

    def run(
        self,
        argv: Sequence[str | os.PathLike],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
        stdin: bytes | None = None,
        stdout: Path | None = None,
    ) -> None:
        """Run argv to completion; a non-zero exit raises StepError with the log's tail.

        Its output goes to the log, or stdout to the file ``stdout`` when given.
        """
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(stdout, "wb")) if stdout is not None else None
            pipe = subprocess.PIPE if stdin is not None else None
            with self.start(argv, cwd=cwd, env=env, what=what, stdin=pipe, stdout=out) as p:
                p.proc.communicate(stdin)
                p.wait()

    def start(
        self,
        argv: Sequence[str | os.PathLike],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
        stdin: int | None = None,
        stdout: int | IO[bytes] | None = None,
    ) -> Running:
        """Start argv without waiting. stdin/stdout may be subprocess.PIPE (stdout also
        an open file); by default stdin is empty and stdout goes to the log."""
        if self.cancel.is_set():
            raise Cancelled()
        argv = [str(a) for a in argv]
        self.note(f"$ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
        with open(self.log, "ab") as logf:
            proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *argv],
                cwd=cwd,
                env={**_BASE_ENV, **self.env, **(env or {})},
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else logf,
                stderr=logf,
                start_new_session=True,
            )
        threading.Thread(target=self._watch, args=(proc,), daemon=True).start()
        return Running(self, proc, what or argv[0])

    def _watch(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            if self.cancel.wait(0.2):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
