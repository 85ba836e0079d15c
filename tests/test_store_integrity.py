"""Store items are read-only, verify reports every kind of damage item by item, and a
damaged item is never reused: builds refuse it until --repair rebuilds it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import cli, run_main

from embedbuild.errors import EmbedbuildError
from embedbuild.model.source import Source
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.steps.source import unpack_step
from embedbuild.store import META, Store


def _tree(ctx: Context) -> None:
    (ctx.out / "bin").mkdir()
    (ctx.out / "bin" / "tool").write_text("#!/bin/sh\n")
    (ctx.out / "bin" / "tool").chmod(0o4775)  # setuid and group-writable: both dropped
    (ctx.out / "empty").mkdir()
    (ctx.out / "link").symlink_to("bin/tool")
    (ctx.out / "data").write_text(ctx.step.name)


def _item(store: Store, name: str = "a") -> tuple[Step, Path]:
    s = Step("t", name, 1, {}, _tree)
    return s, realise(store, s)[s.key]


def _writable(path: Path) -> None:
    path.chmod(stat.S_IMODE(path.lstat().st_mode) | 0o200)


def _sealed(path: Path) -> None:
    path.chmod(stat.S_IMODE(path.lstat().st_mode) & 0o555)


def test_items_are_read_only_and_recorded_with_modes(tmp_path: Path):
    store = Store(tmp_path / "s")
    _, item = _item(store)
    modes = {p.relative_to(item).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in [item, *item.rglob("*")] if not p.is_symlink()}
    assert modes == {".": 0o555, "bin": 0o555, "bin/tool": 0o555, "empty": 0o555,
                     "data": 0o444}
    files = json.loads((store.meta_path(item) / "files.json").read_text())
    assert files["empty"] == {"type": "dir", "mode": 0o555}
    assert files["bin/tool"]["mode"] == 0o555 and files["link"] == {
        "type": "symlink", "link": "bin/tool"}
    assert json.loads((store.meta_path(item) / "info.json").read_text())["store_format"] == 2
    assert store.verify() == []


def test_a_step_writing_a_special_file_fails_and_leaves_nothing(tmp_path: Path):
    store = Store(tmp_path / "s")

    def fifo(ctx: Context) -> None:
        os.mkfifo(ctx.out / "pipe")

    with pytest.raises(EmbedbuildError, match="holds a fifo, pipe") as e:
        realise(store, Step("t", "fifo", 1, {}, fifo))
    assert e.value.where == "step fifo"
    assert store.items() == [] and not list((store.root / ".tmp").iterdir())


def _chmod(rel: str, mode: int):
    return lambda item: (item / rel).chmod(mode)


def _add(kind: str):
    def damage(item: Path) -> None:
        _writable(item)
        if kind == "fifo":
            os.mkfifo(item / "new", 0o444)
        elif kind == "device":
            os.mknod(item / "new", 0o400 | stat.S_IFCHR, os.makedev(1, 3))
        elif kind == "folder":
            (item / "new").mkdir(0o555)
        _sealed(item)

    return damage


def _replace_with_fifo(item: Path) -> None:
    _writable(item)
    (item / "data").unlink()
    os.mkfifo(item / "data", 0o444)
    _sealed(item)


@pytest.mark.parametrize("damage, problem", [
    (_chmod("bin/tool", 0o4555), "modified bin/tool (mode 0555 -> 4555, setuid bit)"),
    (_chmod("bin/tool", 0o2555), "modified bin/tool (mode 0555 -> 2555, setgid bit)"),
    (_chmod("data", 0o446), "modified data (mode 0444 -> 0446, world-writable)"),
    (_chmod("data", 0o644), "modified data (mode 0444 -> 0644, writable)"),
    (_chmod("empty", 0o1777), "modified empty (mode 0555 -> 1777, sticky bit, world-writable)"),
    (_chmod(".", 0o755), "modified . (mode 0555 -> 0755, writable)"),
    (_add("fifo"), "unexpected new (fifo)"),
    pytest.param(_add("device"), "unexpected new (char device)",
                 marks=pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")),
    (_add("folder"), "unexpected new (empty folder)"),
    (_replace_with_fifo, "modified data (now a fifo)"),
])
def test_verify_reports_mode_and_special_file_damage(tmp_path: Path, damage, problem):
    store = Store(tmp_path / "s")
    _, item = _item(store)
    damage(item)
    assert store.verify() == [f"{item.name}: {problem}"]


def _truncate(path: Path) -> None:
    path.write_text(path.read_text()[:20])


@pytest.fixture
def three(tmp_path: Path, monkeypatch) -> tuple[Store, list[Path], Path]:
    """Two synthetic items and an unpacked source (checked against its archive)."""
    downloads = tmp_path / "downloads"
    monkeypatch.setenv("EMBEDBUILD_DOWNLOADS", str(downloads))
    top = tmp_path / "pkg-1.0"
    top.mkdir()
    (top / "f.c").write_text("int f;\n")
    archive = tmp_path / "pkg-1.0.tar.gz"
    subprocess.run(["tar", "-czf", archive, "-C", tmp_path, "pkg-1.0"], check=True)
    src = Source(file=archive, sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    store = Store(tmp_path / "s")
    s = unpack_step("pkg-src", src)
    items = [_item(store, "a")[1], realise(store, s)[s.key], _item(store, "b")[1]]
    store.release_temp_roots()  # as if the build had been another command
    return store, items, downloads


@pytest.mark.parametrize("record", ["info.json", "files.json", "origin.json"])
def test_corrupt_records_are_reported_per_item_without_a_traceback(three, record):
    store, items, downloads = three
    damaged = items[1] if record == "origin.json" else items[0]
    _truncate(store.meta_path(damaged) / record)
    # One item's intact content is damaged too: checking goes on past the bad record.
    last = items[2] / "data"
    _writable(last)
    last.write_text("tampered")
    env = {"EMBEDBUILD_DOWNLOADS": str(downloads)}
    r = run_main("verify", store=store.root, env=env)
    assert r.code == 1 and "Traceback" not in r.err
    bad_record, bad_data = sorted(r.out.splitlines(), key=lambda line: items[2].name in line)
    assert bad_record.startswith(f"{damaged.name}: {META}/{damaged.name}/{record} is unreadable")
    assert bad_data == f"{items[2].name}: modified data (content, mode 0444 -> 0644, writable)"
    assert "2 problem(s) in 3 item(s)" in r.err
    r = run_main("gc", store=store.root, env=env)  # nothing links them: all go, record or not
    assert r.code == 0 and "Traceback" not in r.err and store.items() == []


def test_gc_refuses_when_a_kept_item_has_an_unreadable_record(three, tmp_path: Path):
    store, items, _ = three
    store.link_result(items[0], tmp_path / "result")
    _truncate(store.meta_path(items[0]) / "info.json")
    r = run_main("gc", store=store.root)
    assert r.code == 1 and "Traceback" not in r.err
    assert f"their info.json is unreadable or ill-typed: {items[0].name}" in r.err
    assert "nothing was removed" in r.err and len(store.items()) == 3


def test_damaged_item_is_refused_until_repaired(tmp_path: Path):
    store = Store(tmp_path / "s")
    calls: list[str] = []

    def build(ctx: Context) -> None:
        calls.append(ctx.step.name)
        (ctx.out / "data").write_text("good")

    top = Step("t", "top", 1, {}, build, deps={"dep": Step("t", "dep", 1, {}, build)})
    paths = realise(store, top)
    dep = paths[top.deps["dep"].key]
    _writable(dep / "data")
    (dep / "data").write_text("bad")
    _sealed(dep / "data")
    # Not yet found: builds trust the store (as Nix does: checking every use costs too much).
    realise(store, top)
    assert store.verify() == [f"{dep.name}: modified data (content)"]
    # Found: no build uses it any more.
    with pytest.raises(EmbedbuildError, match="verify` found damage: modified data"):
        realise(store, top)
    # --repair: the damaged item goes, building again makes it anew (same path). The top
    # item is intact, so it needs nothing below it; the dependency is rebuilt when asked.
    assert store.repair(paths.values()) == [f"{dep.name}: modified data (content)"]
    assert realise(store, top) == {top.key: paths[top.key]}
    assert realise(store, top.deps["dep"])[top.deps["dep"].key] == dep
    assert (dep / "data").read_text() == "good" and calls == ["dep", "top", "dep"]
    assert store.verify() == []


def test_verify_repair_in_the_cli_removes_damaged_items(tmp_path: Path):
    store = Store(tmp_path / "s")
    _, a = _item(store, "a")
    _, b = _item(store, "b")
    (store.meta_path(a) / "info.json").write_text("{")
    r = run_main("verify", "--repair", store=store.root)
    assert r.code == 0 and r.out.startswith(f"{a.name}: {META}/{a.name}/info.json is unreadable")
    assert "removed the damaged item(s) above (1 left)" in r.out
    assert store.items() == [b]
    assert run_main("verify", store=store.root).code == 0


def test_a_fixed_item_loses_its_damage_mark(tmp_path: Path):
    store = Store(tmp_path / "s")
    s, item = _item(store)
    (item / "data").chmod(0o644)
    assert len(store.verify()) == 1
    with pytest.raises(EmbedbuildError):
        store.lookup(s.key, s.name)
    (item / "data").chmod(0o444)
    assert store.verify() == []
    assert store.lookup(s.key, s.name) == item


def test_items_of_an_older_format_are_not_trusted(tmp_path: Path):
    store = Store(tmp_path / "s")
    _, item = _item(store)
    info = store.meta_path(item) / "info.json"
    info.write_text(json.dumps({k: v for k, v in json.loads(info.read_text()).items()
                                if k != "store_format"}))
    assert store.verify() == [f"{item.name}: made by an older embedbuild (modes not "
                              "recorded, not read-only)"]


def test_gc_and_discard_remove_read_only_items(tmp_path: Path):
    store = Store(tmp_path / "s")
    _, item = _item(store)
    store.release_temp_roots()
    assert store.gc()[0] == 1 and not item.exists()
    _, item = _item(store)
    store.discard(item)
    assert not item.exists()


def test_a_store_path_with_whitespace_is_refused(tmp_path: Path):
    with pytest.raises(EmbedbuildError, match="contains whitespace") as e:
        Store(tmp_path / "my store")
    assert e.value.where == str(tmp_path / "my store")
    r = cli("build", "qemu-arm-virt", "--step", "busybox-src", store=tmp_path / "my store")
    assert r.code == 1 and "Traceback" not in r.err and "--store DIR" in r.err


@pytest.mark.slow
def test_build_repair_rebuilds_a_tampered_source_item(tmp_path: Path):
    """Through the real CLI: verify finds the damage, build refuses, build --repair heals."""
    store, link = tmp_path / "s", tmp_path / "result"
    args = ("build", "qemu-arm-virt", "--step", "busybox-src", "--out-link", str(link))
    assert cli(*args, store=store).code == 0
    item = link.resolve()
    makefile = item / "Makefile"
    good = makefile.read_bytes()
    makefile.chmod(0o644)
    makefile.write_bytes(good + b"junk\n")
    makefile.chmod(0o444)
    r = cli("verify", store=store)
    assert r.code == 1 and r.out == f"{item.name}: modified Makefile (content)\n"
    r = cli(*args, store=store)
    assert r.code == 1 and "not trusted" in r.err and "--repair" in r.err
    r = cli(*args, "--repair", store=store)
    assert r.code == 0 and "repairing" in r.err and makefile.read_bytes() == good
    assert cli("verify", store=store).code == 0


def _edit(record: str, change):
    """Rewrite a JSON record of the store with change(value) -> new value."""
    def damage(meta: Path) -> None:
        path = meta / record
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return damage


def _field(record: str, key: str, value):
    return _edit(record, lambda d: {**d, key: value})


def _replace(record: str, how: str):
    def damage(meta: Path) -> None:
        path = meta / record
        path.unlink()
        if how == "folder":
            path.mkdir()
        elif how == "/dev/zero":
            path.symlink_to("/dev/zero")
        elif how == "brackets":
            path.write_text("[" * 100_000 + "]" * 100_000)
    return damage


def _entry(rel: str, key: str | None, value):
    def change(files: dict) -> dict:
        files[rel] = value if key is None else {**files[rel], key: value}
        return files
    return _edit("files.json", change)


BAD_RECORDS = {
    "deps a number": (_field("info.json", "deps", 5), "info.json is ill-typed: deps: Input "
                      "should be a valid list"),
    "deps of numbers": (_field("info.json", "deps", [1]), "info.json is ill-typed: deps.0: "
                        "Input should be a valid string"),
    "deps outside the store": (_field("info.json", "deps", ["../../etc"]), "info.json is "
                               "ill-typed: deps.0: Value error, '../../etc' is not the name of a "
                               "store item"),
    "name a number": (_field("info.json", "name", 7), "info.json is ill-typed: name: Input "
                      "should be a valid string"),
    "version as text": (_field("info.json", "version", "1"), "info.json is ill-typed: "
                        "version: Input should be a valid integer"),
    "info a list": (_edit("info.json", lambda d: [d]), "info.json is ill-typed: (top): Input "
                    "should be a valid dictionary"),
    "info deeply nested": (_replace("info.json", "brackets"), "info.json is unreadable: JSON "
                           "nested deeper than 64 levels"),
    "info a symlink to /dev/zero": (_replace("info.json", "/dev/zero"), "info.json is "
                                    "unreadable: a symlink, not a regular file"),
    "files entry a string": (_entry("data", None, "file"), "files.json is ill-typed: data: "
                             "Input should be a valid dictionary"),
    "unknown entry type": (_entry("data", "type", "fifo"), "files.json is ill-typed: data: "
                           "Input tag 'fifo' found using 'type' does not match"),
    "size as text": (_entry("data", "size", "4"), "files.json is ill-typed: data.file.size: "
                     "Input should be a valid integer"),
    "mode as text": (_entry("data", "mode", "0444"), "files.json is ill-typed: data.file.mode: "
                     "Input should be a valid integer"),
    "files a symlink to /dev/zero": (_replace("files.json", "/dev/zero"), "files.json is "
                                     "unreadable: a symlink, not a regular file"),
}


def _linked_pair(tmp_path: Path) -> tuple[Store, Step, dict[str, Path], Path]:
    """A result (top) linked, and the item it was built from (dep)."""
    store = Store(tmp_path / "s")

    def build(ctx: Context) -> None:
        (ctx.out / "data").write_text(ctx.step.name)

    top = Step("t", "top", 1, {}, build, deps={"dep": Step("t", "dep", 1, {}, build)})
    paths = realise(store, top)
    store.link_result(paths[top.key], tmp_path / "result")
    store.release_temp_roots()
    return store, top, paths, paths[top.deps["dep"].key]


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_bad_record_is_damage_for_verify_and_gc(tmp_path: Path, case: str):
    """Each kind of bad record, on the dependency of a linked result: verify reports it
    in one line, gc refuses rather than guess (or goes on, when only the file list is
    bad), builds refuse the item, repair removes it and the next build makes it anew."""
    damage, problem = BAD_RECORDS[case]
    store, top, paths, dep = _linked_pair(tmp_path)
    damage(store.meta_path(dep))
    [line] = store.verify()
    assert line.startswith(f"{dep.name}: {META}/{dep.name}/{problem}"), line
    with pytest.raises(EmbedbuildError, match="not trusted"):
        realise(store, top.deps["dep"])
    store.release_temp_roots()
    if "info.json" in problem:
        with pytest.raises(EmbedbuildError, match=f"ill-typed: {dep.name}"):
            store.gc()
        assert dep.exists()
    else:
        store.gc()
    assert store.repair([dep]) == [line]
    assert store.gc()[0] == 0  # nothing left to remove: the repair removed it
    assert realise(store, top)[top.key] == paths[top.key]
    assert realise(store, top.deps["dep"])[top.deps["dep"].key] == dep
    assert store.verify() == []


def test_bad_record_through_the_cli(tmp_path: Path):
    """The same through the commands: one line each, never a traceback."""
    store, _, _, dep = _linked_pair(tmp_path)
    BAD_RECORDS["deps a number"][0](store.meta_path(dep))
    r = run_main("verify", store=store.root)
    assert r.code == 1 and "Traceback" not in r.err
    assert r.out == (f"{dep.name}: {META}/{dep.name}/info.json is ill-typed: deps: Input "
                     "should be a valid list\n")
    r = run_main("gc", store=store.root)
    assert r.code == 1 and "Traceback" not in r.err and "nothing was removed" in r.err
    assert len(r.own_err.splitlines()) == 2 and "gc --repair" in r.err  # error and hint
    r = run_main("gc", "--repair", store=store.root)
    assert r.code == 0 and "Traceback" not in r.err, r.err
    assert r.out.splitlines()[0] == (f"{dep.name}: {META}/{dep.name}/info.json is ill-typed: "
                                     "deps: Input should be a valid list: removed")
    assert not dep.exists() and run_main("verify", store=store.root).code == 0


def test_odd_store_metadata_does_not_stop_gc(tmp_path: Path):
    """A damage mark that is a folder, a temporary root that is no text, a gc root that
    is a folder: gc and verify go on."""
    store = Store(tmp_path / "s")
    _, item = _item(store)
    store.link_result(item, tmp_path / "result")
    (store.meta_path(item) / "damage").mkdir()
    (store.root / ".roots" / "odd").mkdir()
    (store.root / ".temproots" / f"{os.getpid()}-junk").write_bytes(b"\xff\x00" * 100)
    with pytest.raises(EmbedbuildError, match="damage mark is unreadable"):
        store.lookup(_item(store)[0].key, "a")
    assert store.verify() == []  # intact: the odd mark goes
    assert store.lookup(_item(store)[0].key, "a") == item
    store.release_temp_roots()
    store.gc()
    assert store.items() == [item]
