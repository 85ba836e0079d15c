"""Secret store items, with small synthetic steps: a step marked secret and every step
made from it are private to their owner (item, record and the build's own folders), never
asked of a binary cache, and `cache push` skips them, saying so, while it pushes the rest.
The passphrase-in-no-pushed-item test on a real access point build is in
tests/system/test_access_point.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from embedbuild.cache.keys import keygen, load_secret
from embedbuild.cache.push import push
from embedbuild.cache.remote import Remote
from embedbuild.cache.substitute import Substituters
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.store import Store

SECRET = b"not for sharing"


def _graph() -> tuple[Step, Step, Step, Step]:
    """public -> (secret) -> joined (reads both) -> top; and public alone."""

    def write(ctx: Context) -> None:
        data = b"".join((d / "out").read_bytes() for d in ctx.deps.values())
        (ctx.out / "out").write_bytes(ctx.step.name.encode() + data)
        (ctx.out / "sub").mkdir()

    def secret(ctx: Context) -> None:
        # What the build leaves readable to others must not stay so in the store.
        (ctx.out / "out").write_bytes(SECRET)
        (ctx.out / "out").chmod(0o644)
        # The scratch space is private too while the step runs.
        assert stat.S_IMODE(ctx.scratch.parent.stat().st_mode) == 0o700

    def link(ctx: Context) -> None:
        # What the result step does: hard links to its dependencies' files.
        for role, d in ctx.deps.items():
            os.link(d / "out", ctx.out / role)
        write(ctx)

    public = Step("t", "public", 1, {}, write)
    hidden = Step("t", "hidden", 1, {"digest": "abc"}, secret, secret=True)
    joined = Step("t", "joined", 1, {}, link, deps={"public": public, "hidden": hidden})
    top = Step("t", "top", 1, {}, write, deps={"joined": joined})
    return public, hidden, joined, top


def _modes(item: Path) -> set[int]:
    return {stat.S_IMODE(p.lstat().st_mode) for p in [item, *item.rglob("*")]}


def test_a_secret_and_what_is_made_from_it_are_private(tmp_path: Path):
    store = Store(tmp_path / "s")
    public, hidden, joined, top = _graph()
    assert not public.holds_secret and hidden.holds_secret
    assert joined.holds_secret and top.holds_secret
    paths = realise(store, top)
    for step in (hidden, joined, top):
        item = paths[step.key]
        assert store.secret(item)
        # Owner-only: no group or other bit on the item, its files or its record.
        assert all(m & 0o077 == 0 for m in _modes(item)), _modes(item)
        meta = store.meta_path(item)
        assert stat.S_IMODE(meta.stat().st_mode) == 0o700
        assert store.damage(item) is None
    # The public item the secret one hard-linked keeps its modes: the link was replaced
    # by a copy of the secret item's own.
    item = paths[public.key]
    assert not store.secret(item) and _modes(item) == {0o555, 0o444}
    assert (paths[joined.key] / "public").read_bytes() == (item / "out").read_bytes()
    assert (paths[hidden.key] / "out").read_bytes() == SECRET
    # verify finds nothing wrong with the private modes it recorded.
    assert store.verify(lambda origin: {}) == []


def test_cache_push_skips_secret_items_and_says_so(tmp_path: Path):
    store = Store(tmp_path / "s")
    _public, hidden, joined, top = _graph()
    paths = realise(store, top)
    secret, _ = keygen("t", tmp_path)
    said: list[str] = []
    pushed, there = push(store, Remote(str(tmp_path / "cache")), [paths[top.key]],
                         load_secret(secret), said.append)
    assert (pushed, there) == (1, 0)
    assert [line for line in said if line.startswith("not pushed")] == [
        f"not pushed: {paths[s.key].name} holds a secret (each machine builds it from its "
        "own secret file)" for s in (hidden, joined, top)]
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 2  # the public item's description and archive
    assert not any(SECRET in p.read_bytes() for p in files)
    assert not any(paths[s.key].name[:32] in p.read_text(errors="replace")
                   for p in files for s in (hidden, joined, top))


class _Asked(Substituters):
    """Substituters that note every step they are asked for and supply none."""

    def __init__(self) -> None:
        super().__init__([], {}, lambda line: None)
        self.asked: list[str] = []

    def substitute(self, store, step):
        self.asked.append(step.name)
        return None


def test_a_secret_step_is_never_asked_of_a_cache(tmp_path: Path):
    """Its key is made from the secret: asking for it would tell the cache a digest."""
    subs = _Asked()
    _public, _hidden, _joined, top = _graph()
    realise(Store(tmp_path / "s"), top, substituters=subs)
    assert subs.asked == ["public"]


def test_a_secret_build_that_fails_leaves_nothing_readable(tmp_path: Path):
    store = Store(tmp_path / "s")

    def fail(ctx: Context) -> None:
        (ctx.out / "out").write_bytes(SECRET)
        raise RuntimeError("boom")

    step = Step("t", "failing", 1, {}, fail, secret=True)
    with pytest.raises(RuntimeError, match="boom"):
        realise(store, step)
    leftovers = [p for p in store.root.rglob("*") if p.is_file()
                 and ".trash" not in p.parts and ".locks" not in p.parts]
    readable = [p for p in leftovers if os.stat(p).st_mode & 0o044]
    assert not any(SECRET in p.read_bytes() for p in readable), readable
