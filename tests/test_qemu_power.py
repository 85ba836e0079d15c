"""QemuBoard started and stopped with a stand-in for qemu-system (no root, no QEMU):
a start that fails, times out or is interrupted leaves no process behind."""

from __future__ import annotations

import os
import select
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


# What the stand-in does to look set up as QEMU does: its QMP socket appears (here a
# plain file at the -qmp path).
SET_UP = ('prev=; for a in "$@"; do [ "$prev" = -qmp ] && { q=${a#unix:}; : > "${q%%,*}"; }; '
          'prev=$a; done')
# The master end of the console's pty, as QEMU gets it (-add-fd fd=N,set=1).
CONSOLE_FD = 'for a in "$@"; do case $a in fd=*,set=1) fd=${a#fd=}; fd=${fd%%,*};; esac; done'


def _board(tmp_path: Path, script: str) -> QemuBoard:
    fake = tmp_path / "qemu-system-fake"
    # bash: it writes to descriptors above 9 (the pty's, under pytest); reopening
    # /dev/fd/N of a pty's master would make a new pty.
    fake.write_text(f"#!/bin/bash\necho $$ > {tmp_path}/pid\n{script}\n")
    fake.chmod(0o755)
    return QemuBoard(QemuMachine(spec=Qemu(system=str(fake), machine="virt")), NoNetwork(),
                     tmp_path)


def _read(port: str, n: int) -> bytes:
    """n bytes from a pty, or what came within 5 s."""
    fd = os.open(port, os.O_RDONLY | os.O_NOCTTY)
    try:
        got = b""
        while len(got) < n and select.select([fd], [], [], 5)[0]:
            got += os.read(fd, n - len(got))
        return got
    finally:
        os.close(fd)


def _alive(tmp_path: Path) -> bool:
    pid = int((tmp_path / "pid").read_text())
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_start_returns_the_pty_and_stop_ends_it(tmp_path: Path):
    # The board prints before anyone opened its console: nothing of it is lost.
    board = _board(tmp_path, f"{SET_UP}\n{CONSOLE_FD}\n"
                             'printf "U-Boot 2023.01" >&$fd\nexec sleep 60')
    port = board.start(timeout=10)
    try:
        assert port.startswith("/dev/pts/")
        assert _alive(tmp_path)
        assert _read(port, 14) == b"U-Boot 2023.01"
    finally:
        board.stop()  # no QMP answer here: it is killed
    assert not _alive(tmp_path)
    assert not Path(port).exists()  # the pty is gone with it


def test_qemu_runs_without_transparent_huge_pages(tmp_path: Path):
    # QEMU's first touches of guest RAM and translated code then cost a 4 KiB page each,
    # not a 2 MiB one (rig/qemu.py says what that was worth).
    if "\nTHP_enabled:\t1" not in Path("/proc/self/status").read_text():
        pytest.skip("this process has no transparent huge pages to turn off (or the kernel "
                    "does not say: no THP_enabled in /proc/PID/status)")
    # Read before it looks set up: start() returns once it does.
    board = _board(tmp_path, f"grep THP_enabled /proc/$$/status > {tmp_path}/thp\n"
                             f"{SET_UP}\nexec sleep 60")
    board.start(timeout=10)
    board.stop()
    assert (tmp_path / "thp").read_text().split() == ["THP_enabled:", "0"]
    # Only QEMU's: the rig's own process keeps its huge pages.
    assert "\nTHP_enabled:\t1" in Path("/proc/self/status").read_text()


def test_exit_at_start_is_reported(tmp_path: Path):
    board = _board(tmp_path, "echo 'qemu: could not load firmware' >&2; exit 1")
    with pytest.raises(EmbedbuildError, match=r"QEMU exited at start: .*could not load firmware"):
        board.start(timeout=10)


def test_not_set_up_in_time_stops_qemu(tmp_path: Path):
    board = _board(tmp_path, "exec sleep 60")
    with pytest.raises(EmbedbuildError, match="did not set up in time"):
        board.start(timeout=0.5)
    assert not _alive(tmp_path)


def test_interrupted_start_stops_qemu(tmp_path: Path):
    board = _board(tmp_path, "exec sleep 60")
    # Ctrl-C while start waits for QEMU to set up
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        board.start(timeout=30)
    timer.join()
    assert not _alive(tmp_path)


def test_console_link_for_a_serial_server(tmp_path: Path):
    """For a remote console: the pty is linked where the serial server's configuration
    says, replacing a link a killed QEMU's run left, and QEMU starts halted until
    release()."""
    link = tmp_path / "bench" / "console"
    link.parent.mkdir()
    link.symlink_to("/dev/pts/98")  # left behind
    board = _board(tmp_path, f"{SET_UP}\n{CONSOLE_FD}\n"
                             "echo \"$@\" > " + str(tmp_path / "argv") + "\n"
                             'printf "=> " >&$fd\nexec sleep 60')
    board.console_link, board.halted = link, True
    try:
        port = board.start(timeout=10)
        assert link.resolve() == Path(port)
        assert _read(str(link), 3) == b"=> "
    finally:
        board.stop()
    argv = (tmp_path / "argv").read_text().split()
    i = argv.index("-chardev")
    assert argv[i - 2] == "-add-fd" and argv[i - 1].endswith(",set=1")
    assert argv[i:i + 4] == ["-chardev", "serial,id=console,path=/dev/fdset/1",
                             "-serial", "chardev:console"]
    assert "-S" in argv and "pty" not in argv


def test_a_bench_folder_too_deep_for_a_socket_address_still_gets_qmp(tmp_path: Path):
    """QMP's socket is a real AF_UNIX address (108 bytes at most): a bench folder deeper
    than that (a long TMPDIR or home) gets the socket in a short folder of its own,
    removed with QEMU. The stand-in binds the socket and speaks QMP as QEMU does (a
    greeting, an answer per command, gone after `quit`), so stop() ends it through QMP."""
    deep = tmp_path / ("a-bench-folder-with-a-long-name-" * 4) / "run"
    fake = tmp_path / "qemu-system-fake"
    fake.write_text(
        "#!/usr/bin/python3\n"
        "import os, socket, sys, time\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "path = sys.argv[sys.argv.index('-qmp') + 1].removeprefix('unix:').split(',')[0]\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.bind(path)\n"
        "s.listen()\n"
        "c = s.accept()[0].makefile('rw')\n"
        "c.write('{\"QMP\": {}}\\n'); c.flush()\n"
        "for line in c:\n"
        "    c.write('{\"return\": {}}\\n'); c.flush()\n"
        "    if '\"quit\"' in line:\n"
        "        sys.exit(0)\n"
        "time.sleep(60)\n")
    fake.chmod(0o755)
    board = QemuBoard(QemuMachine(spec=Qemu(system=str(fake), machine="virt")), NoNetwork(),
                      deep)
    assert len(os.fsencode(deep / "qmp.sock")) > 108
    board.start(timeout=10)
    try:
        assert _alive(tmp_path)
        short = board.qmp_path
        assert short.is_socket() and len(os.fsencode(short)) <= 107
    finally:
        board.stop()
    assert not _alive(tmp_path)
    assert not short.parent.exists()
