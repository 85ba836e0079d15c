"""The files embedbuild writes into the image itself: the folders, /init (rendered from
the system), accounts, SSH keys, the udhcpc script."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterable
from pathlib import Path

from embedbuild.bootcmd import SLOT_ARG
from embedbuild.cpio import Entry
from embedbuild.model.system import READY_LINE, System, service_waves

INIT_TEMPLATE = Path(__file__).parent.parent / "init" / "init.sh.j2"
UDHCPC_SCRIPT = Path(__file__).parent.parent / "init" / "udhcpc.script"
# The A/B mark-good script (rootfs/markgood.py) /init runs when the system has [health].
MARK_GOOD = "/etc/embedbuild/mark-good"
# What /init mounts, in one `mount -a` (proc first: the others' table needs none).
FSTAB = "/etc/embedbuild/fstab"
FSTAB_TEXT = """\
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devtmpfs /dev devtmpfs defaults 0 0
tmpfs /tmp tmpfs mode=1777 0 0
tmpfs /run tmpfs mode=755 0 0
"""


# Tokens after which a command is more than one simple command: the shell's control
# operators and the words that open a compound command.
_CONTROL = {";", ";;", "&", "&&", "|", "||", "(", ")", "|&"}
_COMPOUND = {"if", "while", "until", "for", "case", "{", "!", "exec"}


def exec_form(command: str) -> str:
    """What the service's sh runs: ``exec COMMAND`` for one simple command, so that the
    supervisor's pid is the service itself (for stopping it and telling when it is
    idle); any other shell text (``a; b``, ``a && b``, a pipe, a loop, a leading
    ``VAR=value``) as written, since ``exec`` would run its first command only."""
    if "\n" in command:
        return command
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell says what is wrong
        return command
    if (not tokens or tokens[0] in _COMPOUND or "=" in tokens[0].split("/")[0]
            or any(t in _CONTROL for t in tokens)):
        return command
    return f"exec {command}"


@functools.cache  # compiled once per process: every board load renders it (40 ms a time)
def _init_template():
    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["shquote"] = shlex.quote
    env.filters["exec_form"] = exec_form
    # A service's environment as sh statements: names are validated, values quoted.
    env.filters["shexports"] = lambda variables: "".join(
        f"export {k}={shlex.quote(v)};" for k, v in variables.items())
    return env.from_string(INIT_TEMPLATE.read_text())


def render_init(system: System, board_name: str) -> str:
    """The /init shell script for a system."""
    return _init_template().render(
        board=board_name, hostname=system.hostname, network=system.network,
        waves=service_waves(system.services), console_shell=system.console_shell,
        ready_line=READY_LINE, mark_good=MARK_GOOD if system.health else None,
        slot_arg=SLOT_ARG, fstab=FSTAB)


def generated_entries(system: System, board_name: str, dirs: Iterable[str] = ()) -> list[Entry]:
    """The files embedbuild writes itself: folders (with ``dirs``, the ones the system's
    packages need), /init, accounts, keys, config."""
    folders = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "etc", "etc/embedbuild",
               "proc", "sys", "dev", "tmp", "run", "var", "var/log", "home"]
    folders += [d for d in dirs if d not in folders]
    e = [Entry(d, "dir", 0o755) for d in folders]
    e += [
        Entry("root", "dir", 0o700),
        Entry("dev/console", "char", 0o600, major=5, minor=1),
        Entry("dev/null", "char", 0o666, major=1, minor=3),
        Entry("init", "file", 0o755, data=render_init(system, board_name).encode()),
        Entry("etc/hostname", "file", 0o644, data=f"{system.hostname}\n".encode()),
        # Without a password hash root has none: '*' can never match, so no network
        # login by password.
        Entry("etc/passwd", "file", 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"),
        Entry("etc/shadow", "file", 0o600,
              data=f"root:{system.root_password_hash or '*'}:0:0:99999:7:::\n".encode()),
        Entry("etc/group", "file", 0o644, data=b"root:x:0:\ntty:x:5:\n"),
        Entry("etc/shells", "file", 0o644, data=b"/bin/sh\n"),
        Entry("etc/embedbuild/udhcpc.script", "file", 0o755, data=UDHCPC_SCRIPT.read_bytes()),
        Entry(FSTAB.lstrip("/"), "file", 0o644, data=FSTAB_TEXT.encode()),
    ]
    if system.authorized_keys:
        e += [Entry("root/.ssh", "dir", 0o700),
              Entry("root/.ssh/authorized_keys", "file", 0o600,
                    data="".join(k + "\n" for k in system.authorized_keys).encode())]
    return e
