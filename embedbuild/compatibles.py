"""Which kernel driver serves a device tree compatible, and which Kconfig symbol builds it.

Read from the kernel tree itself: ``.compatible = "..."`` tables and the
``*_DECLARE(name, "compat", ...)`` macros in C files, then the Makefile line
that builds that file (``obj-$(CONFIG_X) += file.o``, through composite objects).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_COMPAT = re.compile(rb'\.compatible\s*=\s*"([^"]+)"|_DECLARE\(\s*\w+\s*,\s*"([^"]+)"')
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.$()-]+?)\s*[:+]?=\s*(.*)$")
_OBJ_SYM = re.compile(r"^obj-\$\(CONFIG_([A-Za-z0-9_]+)\)$")


def _makefile_vars(makefile: Path) -> list[tuple[str, list[str]]]:
    try:
        text = makefile.read_text(errors="replace").replace("\\\n", " ")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if m := _ASSIGN.match(line.split("#", 1)[0]):
            out.append((m.group(1), m.group(2).split()))
    return out


def symbols_for(tree: Path, cfile: str) -> list[str]:
    """Kconfig symbols that build a C file ('y' when it is always built)."""
    path = tree / cfile
    assigns = _makefile_vars(path.parent / "Makefile") + _makefile_vars(path.parent / "Kbuild")
    wanted = [path.stem + ".o"]
    seen = set()
    syms: list[str] = []
    while wanted:
        obj = wanted.pop()
        if obj in seen:
            continue
        seen.add(obj)
        for var, values in assigns:
            if obj not in values:
                continue
            if m := _OBJ_SYM.match(var):
                syms.append(m.group(1))
            elif var in ("obj-y", "obj-m"):
                syms.append("y")
            else:
                # foo-y / foo-objs / foo-$(CONFIG_X): file is part of composite foo.o
                base = re.sub(r"-(y|objs|\$\(CONFIG_[A-Za-z0-9_]+\))$", "", var)
                if base != var:
                    wanted.append(base + ".o")
    return sorted(set(syms))


def _dir_gate(tree: Path, d: Path) -> list[str]:
    """Symbols that make the build descend into folder d ('y': unconditionally)."""
    rel = d.name + "/"
    syms = []
    sources = [d.parent / "Makefile", d.parent / "Kbuild", d.parent / "Kbuild.platforms",
               d / "Platform"]
    for var, values in (a for f in sources for a in _makefile_vars(f)):
        if rel in values or any(v.endswith("/" + rel) or v == rel for v in values):
            sym = re.search(r"\$\(CONFIG_([A-Za-z0-9_]+)\)", var)
            syms.append(sym.group(1) if sym else "y")
    return sorted(set(syms)) or ["y"]


def requirements(tree: Path, cfile: str) -> list[list[str]]:
    """What must be enabled for a C file to be built: for the file itself and for each
    folder above it, a list of alternatives ('y' is always met)."""
    reqs = [symbols_for(tree, cfile)]
    d = (tree / cfile).parent
    while d != tree and d.parent != tree:
        reqs.append(_dir_gate(tree, d))
        d = d.parent
    return reqs


def compatible_index(tree: Path, arch: str) -> dict[str, list[str]]:
    """compatible string -> C files (relative to the tree) that match it."""
    index: dict[str, set[str]] = {}
    for top in ("drivers", f"arch/{arch}", "sound", "net"):
        for dirpath, _dirs, files in os.walk(tree / top):
            for f in files:
                if not f.endswith(".c"):
                    continue
                full = os.path.join(dirpath, f)
                with open(full, "rb") as fh:
                    data = fh.read()
                if b"compatible" not in data and b"_DECLARE(" not in data:
                    continue
                rel = os.path.relpath(full, tree)
                for m in _COMPAT.finditer(data):
                    compat = (m.group(1) or m.group(2)).decode(errors="replace")
                    index.setdefault(compat, set()).add(rel)
    return {c: sorted(v) for c, v in sorted(index.items())}
