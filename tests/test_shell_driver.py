"""The shell driver's framing against a real sh behind a relaying pty that mixes in
kernel lines and loses bytes: exact output and status, or a fetch again."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
from fakes import FakeShell

from embedbuild.rig.shell import FETCH_TRIES, ShellDriver, ShellError, posix_cksum


def test_posix_cksum_matches_cksum():
    # Values printed by coreutils' cksum for these inputs.
    assert posix_cksum(b"") == 4294967295
    assert posix_cksum(b"hello\n") == 3015617425
    data = random.Random(1).randbytes(70_000)
    out = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()
    assert (posix_cksum(data), len(data)) == (int(out[0]), int(out[1]))


def test_exact_output_and_status(tmp_path: Path):
    with FakeShell(tmp_path) as dev, dev.console() as c:
        sh = ShellDriver(c)
        assert sh.run("printf 'a\\n\\n  b  \\tc'") == (0, "a\n\n  b  \tc")
        assert sh.run("echo out; echo err >&2; exit 3") == (3, "out\nerr\n")
        assert sh.run("true") == (0, "")
        assert sh.succeed("printf '\\303\\251t\\303\\251'") == "été"
        with pytest.raises(ShellError, match="status 1"):
            sh.succeed("echo nope; false")


def test_output_amid_kernel_lines(tmp_path: Path):
    # A kernel line after every 3rd line, and inside two of the framed lines.
    with FakeShell(tmp_path, kernel_every=3, split_lines=2) as dev, dev.console() as c:
        sh = ShellDriver(c)
        status, out = sh.run("seq 1 3000; exit 7", timeout=60)
        assert status == 7
        assert out == "".join(f"{i}\n" for i in range(1, 3001))
        assert "random: crng init done" in c.text  # the kernel did speak
        assert dev.b64_lines > 2


def test_dropped_byte_in_a_base64_line_is_fetched_again(tmp_path: Path):
    with FakeShell(tmp_path, drop_in_b64=2) as dev, dev.console() as c:
        sh = ShellDriver(c)
        assert sh.succeed("seq 1 100") == "".join(f"{i}\n" for i in range(1, 101))
        assert dev.dropped == 2  # both damaged fetches were refused, the third taken


def test_gives_up_after_every_fetch_was_damaged(tmp_path: Path):
    with FakeShell(tmp_path, drop_in_b64=FETCH_TRIES) as dev, dev.console() as c:
        sh = ShellDriver(c)
        with pytest.raises(ShellError, match="intact"):
            sh.run("seq 1 10")
        # the shell is usable again afterwards
        assert sh.succeed("echo back") == "back\n"


def test_a_prompt_that_comes_late_does_not_hide_the_checksum(tmp_path: Path):
    """The shell's prompt printed after the echo of the next command (a busy machine):
    the command's first output line starts with "# ". Every fetch still succeeds at
    once; when the checksum line was taken only at the start of a line, every fetch
    was refused and the driver gave up."""
    with FakeShell(tmp_path, late_prompt=True) as dev, dev.console() as c:
        sh = ShellDriver(c)
        for _ in range(3):
            assert sh.succeed("seq 1 100") == "".join(f"{i}\n" for i in range(1, 101))
        assert sh.run("echo out; exit 3") == (3, "out\n")
        # The prompt did come late: at the start of the checksum's line.
        assert re.search(r"^# @@[0-9a-f]+C\d+ \d+", c.text, re.M), c.text[-2000:]
