"""Unpacked sources: the store keeps no hash list for them; verify derives one from the
pinned archive and still catches every kind of damage."""

from __future__ import annotations

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
    # What the archive says is exactly what hashing the unpacked tree gives.
    assert archive_manifest(origin) == tree_manifest(item)
    assert store.verify(archive_manifest) == []


@pytest.mark.parametrize("damage, problem", [
    (lambda t: (t / "src" / "sub" / "b.c").write_text("int c;\n"), "modified src/sub/b.c"),
    (lambda t: (t / "configure").chmod(0o644), "modified configure"),
    (lambda t: (t / "src" / "a.c").unlink(), "missing src/a.c"),
    (lambda t: (t / "src" / "new.c").write_text(""), "unexpected src/new.c"),
    (lambda t: ((t / "latest").unlink(), (t / "latest").symlink_to("src/sub")),
     "modified latest"),
])
def test_verify_finds_damage_to_a_source_tree(tree, damage, problem):
    store, item, _ = tree
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
