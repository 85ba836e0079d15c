"""Substitution inside realise, with small synthetic steps and a folder cache: what is
fetched, what is built, and in which order the graph is walked."""

from __future__ import annotations

from pathlib import Path

from embedbuild.cache.keys import keygen, load_public, load_secret
from embedbuild.cache.push import push
from embedbuild.cache.remote import Remote
from embedbuild.cache.substitute import Substituters
from embedbuild.scheduler import Events, realise
from embedbuild.step import Context, Step
from embedbuild.store import Store


def _graph(calls: list[str]) -> Step:
    def build(ctx: Context) -> None:
        calls.append(ctx.step.name)
        (ctx.out / "out.txt").write_text(
            ctx.step.name + "".join((d / "out.txt").read_text() for d in ctx.deps.values()))

    leaf = Step("t", "leaf", 1, {}, build)
    mid = Step("t", "mid", 1, {}, build, deps={"leaf": leaf})
    return Step("t", "top", 1, {}, build, deps={"mid": mid})


class _Seen(Events):
    def __init__(self) -> None:
        self.built: list[str] = []
        self.fetched: list[str] = []

    def started(self, step: Step) -> None:
        self.built.append(step.name)

    def substituted(self, step: Step, seconds: float, cache: str) -> None:
        self.fetched.append(step.name)


def _cache(tmp_path: Path) -> tuple[Substituters, list[str]]:
    """A folder cache holding a fresh build of the graph (pushing the top pushes its
    closure), its substituters and the warnings they give."""
    secret, public = keygen("t", tmp_path)
    a = Store(tmp_path / "a")
    top = _graph([])
    paths = realise(a, top)
    folder = Remote(str(tmp_path / "cache"))
    assert push(a, folder, [paths[top.key]], load_secret(secret), lambda line: None) == (3, 0)
    warnings: list[str] = []
    return Substituters([folder], {"t": load_public(public)}, warnings.append), warnings


def test_a_fetched_top_needs_nothing_below_it(tmp_path: Path):
    subs, warnings = _cache(tmp_path)
    calls: list[str] = []
    seen = _Seen()
    paths = realise(Store(tmp_path / "b"), _graph(calls), seen, substituters=subs)
    assert calls == [] and seen.fetched == ["top"] and warnings == []
    assert [(p / "out.txt").read_text() for p in paths.values()] == ["topmidleaf"]


def test_a_refused_top_is_built_from_fetched_dependencies(tmp_path: Path):
    subs, warnings = _cache(tmp_path)
    # The top's description is replaced by an unsigned one.
    top_key = _graph([]).key
    (tmp_path / "cache" / "items" / f"{top_key}.json").write_text("{}")
    calls: list[str] = []
    seen = _Seen()
    realise(Store(tmp_path / "b"), _graph(calls), seen, substituters=subs)
    assert calls == ["top"] and seen.fetched == ["mid"]
    assert warnings == ["cache " + str(tmp_path / "cache") + ": top refused: its description "
                        "is not signed; building it locally"]
