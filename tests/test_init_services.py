"""The init's service startup, run on the build host: the services part of a rendered
/init under busybox's sh (Debian's busybox, the same 1.35 as the boards'), with its
run folder and console pointed into a temporary folder. What "up" means for each kind
of readiness, that a service which dies at start is never called up, and that
dependents start once what they depend on has settled."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from embedbuild.load import load_system
from embedbuild.rootfs.generated import render_init

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed "
                                "(tools/setup installs it)")

UP = re.compile(r"embedbuild: service (\S+) up: started (\d+\.\d+), ready (\d+\.\d+)")
DOWN = re.compile(r"embedbuild: service (\S+) did not come up: (.*) "
                  r"\(started \d+\.\d+, gave up \d+\.\d+\)")


def _run_services(tmp_path: Path, system: str, up_within: int = 30, deadline: float = 60,
                  pids: dict[str, str] | None = None
                  ) -> tuple[str, dict[str, tuple[float, float]]]:
    """Render /init for ``system`` (a system file's text), run its services part until
    it has settled every service; returns the console text and, per service that came
    up, (started, ready) in seconds of uptime. With ``pids``, it gets each service's
    command line as its pid file names it. Everything it started is killed after."""
    sysfile = tmp_path / "system.toml"
    sysfile.write_text(system)
    init = render_init(load_system(sysfile), "test")
    part = init[init.index("# >>> services"):init.index("# <<< services")]
    script = tmp_path / "services.sh"
    script.write_text(part + 'echo "all_up=$all_up" >> "$console"\n')
    bin_dir, svc = tmp_path / "bin", tmp_path / "svc"
    bin_dir.mkdir()
    svc.mkdir()
    # busybox's applets first on PATH, as on the board (sh, sleep, logger...).
    subprocess.run([BUSYBOX, "--install", "-s", str(bin_dir)], check=True)
    console = tmp_path / "console.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "svc": str(svc),
           "console": str(console), "up_within": str(up_within)}
    p = subprocess.Popen([BUSYBOX, "sh", str(script)], env=env, start_new_session=True)
    try:
        p.wait(timeout=deadline)
        for f in svc.glob("*.pid") if pids is not None else ():
            cmdline = Path(f"/proc/{f.read_text().strip()}/cmdline").read_bytes()
            pids[f.stem] = cmdline.replace(b"\0", b" ").decode().strip()
    finally:
        # The services and their supervisors live on: stop the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    text = console.read_text()
    assert "all_up=" in text, text
    return text, {m[1]: (float(m[2]), float(m[3])) for m in UP.finditer(text)}


def test_each_kind_of_readiness(tmp_path: Path):
    pids: dict[str, str] = {}
    text, up = _run_services(tmp_path, f"""
[[services]]
name = "idle"
command = "sleep 1000"
[[services]]
name = "notifies"
command = "sh -c 'sleep 0.5; echo ready >&4; exec sleep 1000'"
ready_fd = 4
[[services]]
name = "tested"
command = "sh -c 'sleep 0.5; : > {tmp_path}/flag; exec sleep 1000'"
ready = "test -e {tmp_path}/flag"
[[services]]
name = "busy"
command = "sh -c 'while :; do :; done'"
[[services]]
name = "logs"
command = "sleep 999"
output = "syslog"
""", pids=pids)
    assert "all_up=yes" in text and not DOWN.search(text), text
    assert set(up) == {"idle", "notifies", "tested", "busy", "logs"}
    # The pid file names the service itself, not the logger its output goes to.
    assert pids["logs"] == "sleep 999" and pids["idle"] == "sleep 1000"
    # Asleep for 0.5 s, both are idle long before: up only once they said so (the
    # line on their descriptor) or their test passed.
    for name in ("notifies", "tested"):
        started, ready = up[name]
        assert ready - started >= 0.5, (name, up[name])


def test_the_longest_process_name_with_parentheses_is_still_read_right(tmp_path: Path):
    """A look reads /proc/PID/stat only as far as the state letter (27 bytes: a pid of
    up to 7 digits, a name of up to the kernel's 15 characters). Names that fill the 15
    and read like a state of their own must not fool it: one sleeps (S) while its name
    says R, and must come up; one is stopped (T) while its name says S, and must not."""
    (tmp_path / "bin15").mkdir()
    sleeper = tmp_path / "bin15" / "a) R 1 1 1 1 1x"
    sleeper.symlink_to(shutil.which("sleep"))
    # A script's process takes the script's name; this one stops itself.
    stopped = tmp_path / "bin15" / "b) S 1 1 1 1 1x"
    stopped.write_text("#!/bin/sh\nkill -STOP $$\n")
    stopped.chmod(0o755)
    assert len(sleeper.name) == len(stopped.name) == 15
    text, up = _run_services(tmp_path, f"""
[[services]]
name = "sleeper"
command = "'{sleeper}' 1000"
[[services]]
name = "stopped"
command = "'{stopped}'"
""", up_within=5)
    assert set(up) == {"sleeper"}, text
    assert "embedbuild: service stopped did not come up: not up after 5 s" in text, text


def test_dependents_start_once_what_they_need_is_up(tmp_path: Path):
    text, up = _run_services(tmp_path, """
[[services]]
name = "base"
command = "sh -c 'sleep 0.3; echo >&3; exec sleep 1000'"
ready_fd = 3
[[services]]
name = "middle"
command = "sleep 1000"
depends_on = ["base"]
[[services]]
name = "top"
command = "sleep 1000"
depends_on = ["middle", "base"]
[[services]]
name = "alone"
command = "sleep 1000"
""")
    assert "all_up=yes" in text, text
    assert up["middle"][0] >= up["base"][1]
    assert up["top"][0] >= up["middle"][1]
    # Not held back by the others: it starts with the first.
    assert up["alone"][0] <= up["base"][0] + 0.1


FAILS_AT_ONCE = [
    ("exits", "sh -c 'echo starting; exit 3'", "exited with status 3"),
    ("not-found", "no-such-program --flag", "exited with status 127"),
    ("false", "false", "exited with status 1"),
    ("usage", "sleep --no-such-option", "exited with status 1"),
]


def test_a_service_that_dies_at_start_is_never_up(tmp_path: Path):
    # Many at once, each several times, so that a race between the look and the exit
    # would show: none may be called up, all are reported, and no ready line.
    services = "".join(
        f'[[services]]\nname = "{name}-{i}"\ncommand = "{command}"\nrespawn = false\n'
        for i in range(5) for name, command, _ in FAILS_AT_ONCE)
    text, up = _run_services(tmp_path, services + '[[services]]\nname = "ok"\n'
                             'command = "sleep 1000"\n')
    assert set(up) == {"ok"}, text
    downs = dict(DOWN.findall(text))
    for i in range(5):
        for name, _, why in FAILS_AT_ONCE:
            assert downs[f"{name}-{i}"] == why, text
    assert "all_up=no" in text


def test_a_respawning_service_that_never_stays_up(tmp_path: Path):
    text, up = _run_services(tmp_path, """
[[services]]
name = "crashes"
command = "sh -c 'exit 2'"
[[services]]
name = "after"
command = "sleep 1000"
depends_on = ["crashes"]
""", up_within=1)
    assert "embedbuild: service crashes exited with status 2, restarting in 1s" in text
    assert dict(DOWN.findall(text)) == {"crashes": "not up after 1 s"}
    # As before, its dependents start anyway once it has settled.
    assert set(up) == {"after"} and "all_up=no" in text


def test_a_service_that_exits_before_it_notifies(tmp_path: Path):
    text, up = _run_services(tmp_path, """
[[services]]
name = "quits"
command = "sh -c 'sleep 0.2; exit 5'"
respawn = false
ready_fd = 3
""")
    assert up == {} and dict(DOWN.findall(text)) == {"quits": "exited with status 5"}


def test_shell_text_runs_whole_and_a_simple_command_is_the_service(tmp_path: Path):
    """A command with `;`, `&&` or a pipe runs as written (exec would have run its first
    command only); a simple command is exec'd, so its pid file names it."""
    pids: dict[str, str] = {}
    text, _ = _run_services(tmp_path, f"""
[[services]]
name = "list"
command = "touch {tmp_path}/one; touch {tmp_path}/two; exec sleep 1001"
[[services]]
name = "and"
command = "true && touch {tmp_path}/three && exec sleep 1002"
[[services]]
name = "pipe"
command = "echo piped | cat > {tmp_path}/four; exec sleep 1003"
[[services]]
name = "assigns"
command = "WHAT=five; touch {tmp_path}/$WHAT; exec sleep 1004"
[[services]]
name = "simple"
command = "sleep 1005"
""", pids=pids)
    assert "all_up=yes" in text, text
    for name in ("one", "two", "three", "five"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "four").read_text() == "piped\n"
    assert pids["simple"] == "sleep 1005"


@pytest.mark.parametrize(("command", "form"), [
    ("dropbear -F -E -p 22", "exec dropbear -F -E -p 22"),
    ("syslogd -n -O /var/log/messages > /dev/null 2>&1",
     "exec syslogd -n -O /var/log/messages > /dev/null 2>&1"),
    ("sh -c 'a; b'", "exec sh -c 'a; b'"),
    ("a; b", "a; b"),
    ("a && b", "a && b"),
    ("a || b", "a || b"),
    ("a | b", "a | b"),
    ("a & b", "a & b"),
    ("(a)", "(a)"),
    ("{ a; }", "{ a; }"),
    ("while :; do a; done", "while :; do a; done"),
    ("if a; then b; fi", "if a; then b; fi"),
    ("VAR=1 a", "VAR=1 a"),
    ("exec a", "exec a"),
    ("a\nb", "a\nb"),
    ("a 'unclosed", "a 'unclosed"),
])
def test_exec_form(command: str, form: str):
    from embedbuild.rootfs.generated import exec_form

    assert exec_form(command) == form


def test_the_init_starts_mark_good_only_on_a_slot_boot_and_mounts_in_one_go(tmp_path: Path):
    """Each program /init starts costs ~10 ms of emulated CPU at every boot: the A/B
    mark-good script runs only when the command line names a slot (looked at with the
    shell's own read), every file system comes from the image's table in one mount."""
    from embedbuild.load import load_board
    from embedbuild.rootfs.generated import FSTAB, generated_entries

    board = load_board("qemu-arm-virt")
    assert board.system is not None and board.system.health is not None
    init = render_init(board.system, board.name)
    assert f"mount -a -T {FSTAB}\n" in init
    fstab = next(e for e in generated_entries(board.system, board.name)
                 if e.path == FSTAB.lstrip("/"))
    assert [line.split()[1] for line in fstab.data.decode().splitlines()] == \
        ["/proc", "/sys", "/dev", "/tmp", "/run"]
    guard = re.search(r"^read -r cmdline < /proc/cmdline\n.*?esac\n", init, re.M | re.S)
    assert guard is not None
    ran = tmp_path / "ran"
    (tmp_path / "mark-good").write_text(f"#!/bin/sh\necho \"$*\" >> {ran}\n")
    (tmp_path / "mark-good").chmod(0o755)
    script = guard.group(0).replace("/proc/cmdline", str(tmp_path / "cmdline")).replace(
        "/etc/embedbuild/mark-good", str(tmp_path / "mark-good"))
    for cmdline, runs in [("console=ttyAMA0 loglevel=5", ""),
                          ("console=ttyAMA0 embedbuild.slot=B panic=1", "arm\n"),
                          ("embedbuild.slot=A", "arm\n")]:
        (tmp_path / "cmdline").write_text(cmdline + "\n")
        ran.unlink(missing_ok=True)
        subprocess.run([BUSYBOX, "sh", "-c", script], check=True, timeout=10)
        assert (ran.read_text() if ran.exists() else "") == runs, cmdline
