"""`embedbuild cache push`: the closure of results, uploaded as signed descriptions
plus archives. What a cache already holds is skipped."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from embedbuild.cache.archive import COMPRESSION, SUFFIX, pack
from embedbuild.cache.downloads import push_download
from embedbuild.cache.keys import SecretKey
from embedbuild.cache.remote import Remote
from embedbuild.errors import EmbedbuildError, SourceError
from embedbuild.model.source import Source
from embedbuild.store import Store, hash_file, tree_manifest

# Bumped when what a description holds changes; substituters refuse other formats.
FORMAT = 1


def description_path(key: str) -> str:
    """Where the description of the item with this step key lives in a cache."""
    return f"items/{key}.json"


def closure(store: Store, results: list[Path]) -> list[Path]:
    """The items results were built from, each once, dependencies first: everything a
    rebuild of them needs from the store."""
    order: list[Path] = []
    seen: set[Path] = set()

    def visit(item: Path, wanted_by: str) -> None:
        if item in seen:
            return
        seen.add(item)
        if not store.complete(item):
            raise EmbedbuildError(
                f"{item.name} is not in the store", where=wanted_by,
                hint="build the board again (gc may have removed it), then push")
        if (store.meta_path(item) / "damage").exists():
            raise EmbedbuildError(
                "`embedbuild verify` found damage in this item: it is not pushed",
                where=str(item), hint="repair it (embedbuild build BOARD --repair), then push")
        info = json.loads((store.meta_path(item) / "info.json").read_text())
        for dep in info.get("deps", []):
            visit(store.root / dep, item.name)
        order.append(item)

    for r in results:
        visit(r, str(r))
    return order


def describe(store: Store, item: Path, archive: Path) -> dict:
    """The unsigned description of item whose archive is ``archive``."""
    info = json.loads((store.meta_path(item) / "info.json").read_text())
    record = store.meta_path(item) / "files.json"
    # An item unpacked from a pinned archive records that archive instead of its files.
    files = json.loads(record.read_text()) if record.is_file() else tree_manifest(item)
    info.pop("store_format", None)
    digest = hash_file(archive)
    return {
        "format": FORMAT,
        "key": info["key"],
        "name": info["name"],
        "item": item.name,
        "info": info,
        "references": info.get("deps", []),
        "files": files,
        "size": sum(e.get("size", 0) for e in files.values()),
        "archive": {"path": f"archives/{digest}{SUFFIX}", "sha256": digest,
                    "size": archive.stat().st_size, "compression": COMPRESSION},
    }


def push_source(store: Store, dest: Remote, item: Path, say: Callable[[str], None]) -> None:
    """For an item unpacked from a locked file: upload that file too (cache/downloads.py),
    so the cache serves it after its origin dropped it."""
    from embedbuild.steps.source import fetch

    origin = store.meta_path(item) / "origin.json"
    if not origin.is_file():
        return
    src = Source.model_validate(json.loads(origin.read_text())["source"])
    try:
        path = fetch(src)
    except SourceError as e:
        say(f"source {src.basename} of {item.name} not pushed: {e.message}")
        return
    if push_download(dest, path, src.sha256):
        say(f"pushed source {src.basename} ({path.stat().st_size:,} bytes)")


def push(store: Store, dest: Remote, results: list[Path], key: SecretKey,
         say: Callable[[str], None]) -> tuple[int, int]:
    """Upload the closure of results to dest, signed with key: archive first, then its
    description (whose arrival makes the item available), and the locked source files
    items were unpacked from. Returns (pushed, skipped) items."""
    for r in results:
        if r.parent != store.root:
            raise EmbedbuildError("not a store item", where=str(r),
                                  hint=f"give result links or items of {store.root}")
    with store.session():
        for r in results:
            store.add_temp_root(r)
        items = closure(store, results)
        for item in items:
            store.add_temp_root(item)
    pushed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="embedbuild-push-") as tmp:
        for item in items:
            push_source(store, dest, item, say)
            info = json.loads((store.meta_path(item) / "info.json").read_text())
            rel = description_path(info["key"])
            if dest.exists(rel):
                skipped += 1
                continue
            archive = Path(tmp) / "archive"
            pack(item, archive)
            desc = describe(store, item, archive)
            if not dest.exists(desc["archive"]["path"]):
                dest.put(desc["archive"]["path"], archive)
            signed = key.sign(desc)
            dest.put(rel, json.dumps(signed, sort_keys=True, indent=1).encode())
            archive.unlink()
            say(f"pushed {item.name} ({desc['archive']['size']:,} bytes)")
            pushed += 1
    return pushed, skipped

