"""QemuBoard started and stopped with a stand-in for qemu-system (no root, no QEMU):
a start that fails, times out or is interrupted leaves no process behind."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Qemu
from embedbuild.rig.qemu import QemuBoard
from embedbuild.rig.resource import QemuMachine


class NoNetwork:
    """A bench network that runs commands where we are."""

    tap = "tap0"

    def exec_argv(self, argv: list[str]) -> list[str]:
        return argv


def _board(tmp_path: Path, script: str) -> QemuBoard:
    fake = tmp_path / "qemu-system-fake"
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\n{script}\n")
    fake.chmod(0o755)
    return QemuBoard(QemuMachine(spec=Qemu(system=str(fake), machine="virt")), NoNetwork(),
                     tmp_path)


def _alive(tmp_path: Path) -> bool:
    pid = int((tmp_path / "pid").read_text())
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_start_returns_the_pty_and_stop_ends_it(tmp_path: Path):
    board = _board(tmp_path, "echo 'char device redirected to /dev/pts/99 (label serial0)'\n"
                             "exec sleep 60")
    assert board.start(timeout=10) == "/dev/pts/99"
    assert _alive(tmp_path)
    board.stop()  # no QMP socket here: it is killed
    assert not _alive(tmp_path)


def test_exit_at_start_is_reported(tmp_path: Path):
    board = _board(tmp_path, "echo 'qemu: could not load firmware' >&2; exit 1")
    with pytest.raises(EmbedbuildError, match=r"QEMU exited at start: .*could not load firmware"):
        board.start(timeout=10)


def test_no_pty_in_time_stops_qemu(tmp_path: Path):
    board = _board(tmp_path, "exec sleep 60")
    with pytest.raises(EmbedbuildError, match="did not open its serial pty"):
        board.start(timeout=0.5)
    assert not _alive(tmp_path)


def test_interrupted_start_stops_qemu(tmp_path: Path):
    board = _board(tmp_path, "exec sleep 60")
    # Ctrl-C while start waits for the pty line
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        board.start(timeout=30)
    timer.join()
    assert not _alive(tmp_path)


def test_console_link_for_a_serial_server(tmp_path: Path):
    """For a remote console: QEMU links its pty where the serial server's configuration
    says, replacing a link a killed QEMU left, and starts halted until release()."""
    link = tmp_path / "bench" / "console"
    link.parent.mkdir()
    link.symlink_to("/dev/pts/98")  # left behind: QEMU would refuse to start
    board = _board(tmp_path, f'[ -e "{link}" ] || [ -L "{link}" ] && exit 3\n'
                             "echo \"$@\" > " + str(tmp_path / "argv") + "\n"
                             "echo 'char device redirected to /dev/pts/99 (label console)'\n"
                             "exec sleep 60")
    board.console_link, board.halted = link, True
    try:
        assert board.start(timeout=10) == "/dev/pts/99"
    finally:
        board.stop()
    argv = (tmp_path / "argv").read_text().split()
    assert ["-chardev", f"pty,id=console,path={link}", "-serial", "chardev:console"] == \
        argv[argv.index("-chardev"):argv.index("-chardev") + 4]
    assert "-S" in argv and "pty" not in argv
