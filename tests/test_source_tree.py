"""Unpacked sources: the store keeps no hash list for them; verify derives one from the
pinned archive and still catches every kind of damage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from embedbuild.model.source import Source
from embedbuild.scheduler import realise
from embedbuild.steps.source import archive_manifest, unpack_step
from embedbuild.store import META, Store, tree_manifest


@pytest.fixture
def tree(tmp_path: Path, monkeypatch) -> tuple[Store, Path, Source]:
    monkeypatch.setenv("EMBEDBUILD_DOWNLOADS", str(tmp_path / "downloads"))
    top = tmp_path / "pkg-1.0"
    (top / "src" / "sub").mkdir(parents=True)
    (top / "src" / "a.c").write_text("int a;\n")
    (top / "src" / "sub" / "b.c").write_text("int b;\n" * 1000)
    (top / "configure").write_text("#!/bin/sh\n")
    (top / "configure").chmod(0o755)
    os.link(top / "src" / "a.c", top / "src" / "a-link.c")  # stored as a tar hard link
    (top / "latest").symlink_to("src")
    archive = tmp_path / "pkg-1.0.tar.xz"
    subprocess.run(["tar", "-cJf", archive, "-C", tmp_path, "pkg-1.0"], check=True)
    src = Source(file=archive, sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    store = Store(tmp_path / "store")
    step = unpack_step("pkg-src", src)
    return store, realise(store, step)[step.key], src


def test_source_item_keeps_its_origin_not_a_hash_list(tree):
    store, item, src = tree
    meta = store.meta_path(item)
    assert not (meta / "files.json").exists() and not (item / META).exists()
    origin = json.loads((meta / "origin.json").read_text())
    assert Source.model_validate(origin["source"]) == src
    # What the archive says is exactly what is on disk (and "." is the item itself).
    assert {".", *archive_manifest(origin)} == set(tree_manifest(item))
    assert store.verify(archive_manifest) == []


@contextlib.contextmanager
def writable(item: Path):
    """Store items are read-only: damage needs their folders writable for a moment."""
    dirs = [item, *(p for p in item.rglob("*") if p.is_dir() and not p.is_symlink())]
    for d in dirs:
        d.chmod(0o755)
    yield
    for d in dirs:
        d.chmod(0o555)


def _rewrite(f: Path, text: str) -> None:
    f.chmod(0o644)
    f.write_text(text)
    f.chmod(0o444)


@pytest.mark.parametrize("damage, problem", [
    (lambda t: _rewrite(t / "src" / "sub" / "b.c", "int c;\n"), "modified src/sub/b.c (content)"),
    (lambda t: (t / "configure").chmod(0o644), "modified configure (exec bit removed, writable)"),
    (lambda t: (t / "src" / "a.c").unlink(), "missing src/a.c"),
    (lambda t: (t / "src" / "new.c").write_text(""), "unexpected src/new.c (writable)"),
    (lambda t: ((t / "latest").unlink(), (t / "latest").symlink_to("src/sub")),
     "modified latest (points to src/sub instead of src)"),
])
def test_verify_finds_damage_to_a_source_tree(tree, damage, problem):
    store, item, _ = tree
    with writable(item):
        damage(item)
    assert store.verify(archive_manifest) == [f"{item.name}: {problem}"]


def test_verify_without_a_way_to_derive_says_so(tree):
    store, item, _ = tree
    assert store.verify() == [f"{item.name}: nothing to check it against "
                              f"(no {META}/{item.name}/files.json)"]


def test_verify_reports_an_archive_it_cannot_fetch(tree, tmp_path: Path, monkeypatch):
    store, item, src = tree
    monkeypatch.setenv("EMBEDBUILD_DOWNLOADS", str(tmp_path / "elsewhere"))
    src.file.unlink()
    [problem] = store.verify(archive_manifest)
    assert problem.startswith(f"{item.name}: cannot check it: source file not found")
