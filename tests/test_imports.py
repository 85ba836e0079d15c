"""Imports run downward: no module of embedbuild imports, however indirectly and
wherever in it (at the top or inside a function), a module that imports it back; and
the bench (rig/) never loads the build's steps. Names imported for type checking only
never run: a target and the strategy and boot sources it drives name each other in
their annotations, which is no circle."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "embedbuild"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The embedbuild modules a module imports at run time (``from X import Y`` counts
    Y when it is a module itself)."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_only(tree)
    nodes = [n for n in (tree.body if top_level_only else ast.walk(tree))
             if id(n) not in typing_only]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m.startswith("embedbuild")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_module_imports_what_imports_it():
    # A package's __init__ is not counted as importing its own submodules' importers:
    # ``import embedbuild.x.y`` runs embedbuild/x/__init__.py first, which is no edge.
    graph = {m: {i for i in _imports(p, top_level_only=False) if i != m}
             for m, p in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_bench_does_not_load_the_build():
    graph = {m: _imports(p, top_level_only=True) for m, p in MODULES.items()}
    seen: set[str] = set()
    todo = [m for m in MODULES if m.startswith("embedbuild.rig")] + ["embedbuild.manifest"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    build = sorted(m for m in seen if m.startswith(("embedbuild.steps", "embedbuild.plan",
                                                     "embedbuild.packages",
                                                     "embedbuild.buildsys")))
    assert build == []
