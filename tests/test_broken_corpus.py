"""The broken-input corpus: every folder under tests/data/broken/ is one broken board or
system, as data. Each must be refused at load, the same way by `show` and `build`:
exit status 1, no traceback, one message naming the file (and line) it is about, and
nothing in the store.

A case folder holds ``case.toml``::

    about = "what is broken"
    board = "qemu-arm-virt"            # the project board it starts from (all boards are copied)
    target = "boards/empty"            # optional: what to pass as BOARD instead of its folder
    system = "systems/s.toml"          # optional: build with --system FILE
    expect = ["kernel.image", "..."]   # strings the error must contain
    where = "boards/qemu-arm-virt/board.toml"  # the file the error is located at
    line = 'image = "vmlinux.bin"'     # optional: ... at the first line holding this text

    [[replace]]                        # edits, applied in this order:
    file = "boards/qemu-arm-virt/board.toml"
    old = 'image = "zImage"'
    new = 'image = "vmlinux.bin"'
    encoding = "latin-1"               # optional: how the edited file is written back
    [[write]]                          # a new file: text, written in encoding (default UTF-8)
    file = "systems/s.toml"
    text = "..."
    mode = 0o600                       # optional: its mode (a passphrase file's)
    [[remove]]                         # a file or a folder
    file = "..."
    [[folder]]                         # an (empty) folder
    path = "..."

All paths are relative to a scratch folder holding ``boards/`` (a copy of the project's),
``overlays/`` (a copy of the project's, searched first), ``systems/`` and ``secrets/``
(the secrets folder, $EMBEDBUILD_SECRETS: passphrase files by name).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, Run, cli, snapshot

from embedbuild.cli import main

CORPUS = ROOT / "tests" / "data" / "broken"
# Every 25th case runs as a real process (exit status, stderr; a third of a second of
# interpreter start-up each); the rest in this process: main() is the same code, and a
# traceback would fail the test as surely.
IN_A_PROCESS = 25
CASES = sorted(d.name for d in CORPUS.iterdir() if (d / "case.toml").is_file())
KEYS = {"about", "board", "target", "system", "expect", "where", "line", "replace", "write",
        "remove", "folder"}


def _case(name: str) -> dict:
    case = tomllib.loads((CORPUS / name / "case.toml").read_text())
    assert set(case) <= KEYS, f"unknown keys in {name}/case.toml: {set(case) - KEYS}"
    return case


def _prepare(case: dict, work: Path) -> None:
    """The scratch folder with the case's edits applied."""
    shutil.copytree(ROOT / "boards", work / "boards")
    shutil.copytree(ROOT / "overlays", work / "overlays")
    (work / "systems").mkdir()
    (work / "secrets").mkdir(mode=0o700)
    for r in case.get("replace", []):
        path = work / r["file"]
        text = path.read_text()
        assert r["old"] in text, f"{r['old']!r} not in {r['file']}: update the case"
        path.write_bytes(text.replace(r["old"], r["new"]).encode(r.get("encoding", "utf-8")))
    for w in case.get("write", []):
        path = work / w["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(w["text"].encode(w.get("encoding", "utf-8")))
        if "mode" in w:
            path.chmod(w["mode"])
    for r in case.get("remove", []):
        path = work / r["file"]
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for f in case.get("folder", []):
        (work / f["path"]).mkdir(parents=True, exist_ok=True)


def _env(work: Path) -> dict[str, str]:
    return {"EMBEDBUILD_OVERLAYS": str(work / "overlays"),
            "EMBEDBUILD_BOARDS": str(work / "boards"),
            "EMBEDBUILD_SECRETS": str(work / "secrets")}


def _board(case: dict, work: Path) -> str:
    return str(work / case.get("target", f"boards/{case['board']}"))


def _system(case: dict, work: Path) -> list[str]:
    return ["--system", str(work / case["system"])] if "system" in case else []


@pytest.fixture(scope="session")
def built(request, tmp_path_factory) -> dict[str, tuple[Path, Run] | Exception]:
    """Every selected case prepared; every IN_A_PROCESS-th one also run as `embedbuild
    build` in a process of its own (as many at once as there are cores), which must fail
    at load: exit status 1, no traceback. The others are built in the test's process:
    the same code without another interpreter's start-up."""
    root = tmp_path_factory.mktemp("broken")
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.originalname == "test_refused_at_load"]

    def run(name: str) -> tuple[Path, Run | None] | Exception:
        work = root / name
        try:
            case = _case(name)
            _prepare(case, work)
        except (AssertionError, OSError) as e:  # a stale case: reported by its own test
            return e
        if selected.index(name) % IN_A_PROCESS:
            return work, None  # built in the test's own process
        argv = ["build", _board(case, work), *_system(case, work),
                "--out-link", str(work / "result")]
        try:
            return work, cli(*argv, store=work / "store", env=_env(work), timeout=120)
        except subprocess.TimeoutExpired:  # it got past load and is building: a failure
            return work, Run(-1, "", "timed out: the build was not refused at load")

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return dict(zip(selected, pool.map(run, selected), strict=True))


def _not_refused(*args, **kwargs):
    raise AssertionError("the build was not refused at load: it started realising steps")


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", CASES)
def test_refused_at_load(name: str, built, monkeypatch, capsys):
    case = _case(name)
    if isinstance(built[name], Exception):
        raise built[name]
    work, r = built[name]
    board = _board(case, work)
    for k, v in _env(work).items():
        monkeypatch.setenv(k, v)
    if r is None:
        monkeypatch.setattr("embedbuild.session.realise", _not_refused)
        code = main(["--store", str(work / "store"), "build", board, *_system(case, work),
                     "--out-link", str(work / "result")])
        out = capsys.readouterr()
        r = Run(code, out.out, out.err)
    assert r.code == 1, (r.code, r.out, r.err)
    assert "Traceback" not in r.err + r.out
    for needle in case["expect"]:
        assert needle in r.err, f"{needle!r} not in:\n{r.err}"
    where = str((work / case["where"]).resolve())
    if "line" in case:
        text = (work / case["where"]).read_bytes().decode("utf-8", "replace")
        n = next((n for n, t in enumerate(text.splitlines(), 1) if case["line"] in t), None)
        assert n, f"{case['line']!r} not in {case['where']}: update the case"
        where += f":{n}"
    error = _error_line(r.err)
    assert error.startswith(f"error: {where}: "), r.err
    assert snapshot(work / "store") == {}  # nothing stored, so nothing encodes the bad input
    assert not (work / "result").exists()

    # `show` says the same (in this process: it is the same code, without another start-up).
    assert main(["show", board, *_system(case, work)]) == 1
    shown = capsys.readouterr()
    assert shown.out == ""
    assert _error_line(shown.err) == error


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


def test_init_passes_user_values_through_quoted(tmp_path: Path):
    """What the corpus cannot show by refusing: values that are valid but full of shell
    syntax reach the service exactly as written, and nothing else of them runs in /init."""
    from embedbuild.load import load_system
    from embedbuild.rootfs.generated import render_init

    tricky = "it's $HOME; `reboot -f` \"$(halt)\" \\ & | > x"
    sysfile = tmp_path / "s.toml"
    sysfile.write_text(
        'hostname = "h"\n[network]\ninterface = "eth0.5"\naddress = "10.0.0.2/24"\n'
        'gateway = "10.0.0.1"\n[[services]]\nname = "a"\ncommand = "printenv V"\n'
        f"environment = {{ V = {_toml_string(tricky)}, PATH = \"/opt\" }}\n")
    init = render_init(load_system(sysfile), "b")
    (tmp_path / "init").write_text(init)
    assert subprocess.run(["sh", "-n", str(tmp_path / "init")]).returncode == 0
    line = next(line.strip() for line in init.splitlines()
                if line.strip().startswith("supervise a "))
    # The environment is the service's alone: /init itself never sets it.
    assert [ln.strip() for ln in init.splitlines() if "/opt" in ln or "HOME" in ln] == [line]
    _, name, respawn, output, command, exports, ready_fd, close, amp = shlex.split(line)
    # One simple command is exec'd by the service's shell (main's 05a7d12).
    assert (name, respawn, output, command, ready_fd, close, amp) == \
        ("a", "yes", "console", "exec printenv V", "", "7>&-", "&")
    # The service's sh, as supervise runs it: the value arrives unchanged.
    got = subprocess.run(["sh", "-c", f"{exports} exec /usr/bin/printenv V"],
                         capture_output=True, text=True)
    assert got.stdout == tricky + "\n"


def _toml_string(s: str) -> str:
    """A TOML basic string holding s."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
