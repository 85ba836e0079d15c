"""`embedbuild cache push`: the closure of results, uploaded as signed descriptions
plus archives. What a cache already holds is skipped."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from embedbuild.cache.archive import COMPRESSION, pack
from embedbuild.cache.description import (
    FORMAT,
    DescriptionError,
    archive_path,
    description_path,
    validate,
)
from embedbuild.cache.downloads import push_download
from embedbuild.cache.keys import SecretKey
from embedbuild.cache.remote import Remote
from embedbuild.errors import EmbedbuildError, SourceError
from embedbuild.model.source import Source
from embedbuild.store import Store, hash_file


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
        if store.damage(item) is not None:
            raise EmbedbuildError(
                "`embedbuild verify` found damage in this item: it is not pushed",
                where=str(item), hint="repair it (embedbuild build BOARD --repair), then push")
        for dep in store.record(item).deps:
            visit(store.root / dep, item.name)
        order.append(item)

    for r in results:
        visit(r, str(r))
    return order


def describe(store: Store, item: Path, archive: Path) -> dict:
    """The unsigned description of item whose archive is ``archive``; checked against
    the model substituters check it with, so a bad one is never uploaded."""
    record = store.record(item)
    info = record.model_dump(exclude={"store_format"})
    files = store.files(item)
    digest = hash_file(archive)
    desc = {
        "format": FORMAT,
        "key": record.key,
        "name": record.name,
        "item": item.name,
        "info": info,
        "references": record.deps,
        "files": files,
        "size": sum(e.get("size", 0) for e in files.values()),
        "archive": {"path": archive_path(digest), "sha256": digest,
                    "size": archive.stat().st_size, "compression": COMPRESSION},
    }
    try:
        validate({**desc, "signature": "unsigned:"})
    except DescriptionError as e:
        raise EmbedbuildError(f"cannot describe it for a cache: {e}", where=str(item),
                              hint="`embedbuild verify` checks its record") from None
    return desc


def push_source(store: Store, dest: Remote, item: Path, say: Callable[[str], None]) -> None:
    """For an item unpacked from a locked file: upload that file too (cache/downloads.py),
    so the cache serves it after its origin dropped it."""
    from embedbuild.steps.source import fetch

    origin = store.origin(item)
    if origin is None:
        return
    try:
        src = Source.model_validate(origin.get("source"))
    except ValidationError:
        say(f"source of {item.name} not pushed: its origin record names no locked file")
        return
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
    items were unpacked from. An item that holds a secret (an access point's passphrase,
    and what was made from it) is never uploaded: skipped, and said so. Returns
    (pushed, already there) items."""
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
            if store.secret(item):
                say(f"not pushed: {item.name} holds a secret (each machine builds it from "
                    "its own secret file)")
                continue
            push_source(store, dest, item, say)
            rel = description_path(store.record(item).key)
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

