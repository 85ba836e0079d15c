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

from embedbuild.errors import StepError

TAIL_LINES = 25


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


class Runner:
    """Runs commands for one step, appending their output to the step's log.

    Each command gets its own process group, so cancelling kills make and all
    its compilers; ``setpriv --pdeathsig`` makes it die with us even on SIGKILL.
    """

    def __init__(self, log: Path, cancel: threading.Event | None = None) -> None:
        self.log = log
        self.cancel = cancel or threading.Event()

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
        self._run(argv, cwd=cwd, env=env, what=what, stdin=stdin, capture=stdout)

    def _run(self, argv, *, cwd, env, what, stdin, capture: bool | Path | None) -> str:
        if self.cancel.is_set():
            raise Cancelled()
        argv = [str(a) for a in argv]
        self.note(f"$ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
        full_env = {**os.environ, **(env or {})}
        with contextlib.ExitStack() as files:
            logf = files.enter_context(open(self.log, "ab"))
            if isinstance(capture, Path):
                out_to = files.enter_context(open(capture, "wb"))
            else:
                out_to = subprocess.PIPE if capture else logf
            proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *argv],
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out_to,
                stderr=logf,
                start_new_session=True,
            )
            waiter = threading.Thread(target=self._watch, args=(proc,), daemon=True)
            waiter.start()
            out, _ = proc.communicate(stdin)
        if self.cancel.is_set():
            raise Cancelled()
        if proc.returncode != 0:
            raise StepError(
                f"{what or argv[0]} failed (exit status {proc.returncode})",
                log_tail=log_tail(self.log),
                log_path=str(self.log),
            )
        return out.decode(errors="replace") if capture is True else ""

    def _watch(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            if self.cancel.wait(0.2):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
