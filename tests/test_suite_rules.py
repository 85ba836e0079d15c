"""Rules the tests themselves keep, checked over their source.

A machine whose toolchain differs from the lock (a newer Debian gcc, say) prints one
warning line on stderr at every build. A test that compares a command's whole stderr,
or takes its lines by position or counts them, fails there while the product is
right: 22 fast tests did, once. Such a test reads ``Run.own_err`` (stderr without that
line; see conftest.py), never ``.err``. Looking for a word in ``.err`` is fine.

One rule here is over all the project's Python (product, tests, tools): no Python
between fork and exec."""

from __future__ import annotations

import ast

from conftest import ROOT

# str methods that give a whole stderr's shape, not a search in it.
SHAPE = {"strip", "rstrip", "lstrip", "splitlines", "split"}


def _is_err(node: ast.AST) -> bool:
    """``X.err`` or ``X.err.strip()`` and the like: a whole stderr."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in SHAPE:
        node = node.func.value
    return isinstance(node, ast.Attribute) and node.attr == "err"


def _by_shape(node: ast.AST) -> bool:
    """Whether ``node`` compares a whole stderr, indexes its lines or counts them."""
    if isinstance(node, ast.Compare):
        return any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops) \
            and any(_is_err(x) for x in (node.left, *node.comparators))
    if isinstance(node, ast.Subscript):  # r.err.splitlines()[0]
        return isinstance(node.value, ast.Call) and _is_err(node.value)
    if not isinstance(node, ast.Call) or not node.args:
        return False
    f, first = node.func, node.args[0]
    if isinstance(f, ast.Name):  # len(r.err.splitlines())
        return f.id == "len" and _is_err(first)
    # r.err.count("\n")
    return isinstance(f, ast.Attribute) and f.attr == "count" and _is_err(f.value) \
        and isinstance(first, ast.Constant) and first.value == "\n"


def _stderr_by_shape(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a test reads a whole stderr by its shape: (line, code)."""
    return [(n.lineno, ast.unparse(n)) for n in ast.walk(tree) if _by_shape(n)]


def test_no_test_reads_a_whole_stderr_that_a_drifted_machine_adds_to():
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for line, text in _stderr_by_shape(ast.parse(path.read_text(), str(path))):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {text[:100]}")
    assert not bad, "use .own_err (see conftest.Run):\n" + "\n".join(bad)


def test_the_rule_finds_each_shape():
    """Each way of reading stderr by its shape is found; searching it is not."""
    found = _stderr_by_shape(ast.parse(
        'assert r.err == ""\n'
        'assert r.err.strip() != "x"\n'
        'first = r.err.splitlines()[0]\n'
        'assert len(r.err.splitlines()) == 1\n'
        'n = r.err.count("\\n")\n'
        'assert "warning" in r.err and r.err.count("error:") == 1\n'
        'assert r.own_err == "" and r.own_err.splitlines()[0] == "x"\n'))
    assert sorted(line for line, _ in found) == [1, 2, 3, 4, 5]


def test_nothing_runs_python_between_fork_and_exec():
    """subprocess's preexec_fn forks with Python code to run in the child, and so runs the
    at-fork handlers of every library loaded: with a labgrid place that is gRPC's, which
    aborted QEMU's child before its exec. Whatever a child needs is set in the parent
    (it inherits it) or by the program it runs (``prlimit``, ``ip netns exec``). The
    tests too: pytest's process loads gRPC once the labgrid tests have run."""
    found = []
    paths = [*(ROOT / "embedbuild").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "tools").rglob("*.py")]
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "preexec_fn":
                found.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert not found, f"preexec_fn at {', '.join(found)}: set it up in the parent instead"
