"""Editing the lock file in place: one table's keys rewritten, every comment kept.

`embedbuild sources update` changes a few values of a few tables; rewriting the file
from the model would lose the why-comments beside each entry, so the lines of the
table are edited instead, and the result is parsed again before it replaces the file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

from embedbuild.load import dotted_key

Value = str | int

_HEADER = re.compile(r"^\s*\[(?!\[)")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+)\s*=""")


def _value(v: Value) -> str:
    # TOML basic strings share JSON's escapes for everything a version or path holds.
    return str(v) if isinstance(v, int) else json.dumps(v)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _table_name(line: str) -> tuple[str, ...] | None:
    if not _HEADER.match(line):
        return None
    parsed = dotted_key(line, line.index("[") + 1)
    return tuple(parsed[0]) if parsed else None


def set_table(text: str, table: tuple[str, ...], values: dict[str, Value],
              replace: bool = False) -> str:
    """``text`` with ``values`` set in ``table`` (keys rewritten where they stand, new
    ones added after the table's last key); with ``replace``, keys of the table not in
    ``values`` are removed. A table not in the text is appended."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _table_name(line) == table), None)
    if start is None:
        body = [f"{_key(k)} = {_value(v)}" for k, v in values.items()]
        header = "[" + ".".join(_key(p) for p in table) + "]"
        tail = [""] if lines and lines[-1].strip() else []
        return "\n".join([*lines, *tail, header, *body]) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if _table_name(lines[i]) is not None
                or lines[i].lstrip().startswith("[[")), len(lines))
    left = dict(values)
    out = lines[: start + 1]
    last_key = start
    for line in lines[start + 1: end]:
        m = _KEY.match(line)
        if m:
            k = json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
            if k in left:
                line = f"{_key(k)} = {_value(left.pop(k))}"
            elif replace:
                continue
            out.append(line)
            last_key = len(out) - 1
        else:
            out.append(line)
    out[last_key + 1: last_key + 1] = [f"{_key(k)} = {_value(v)}" for k, v in left.items()]
    out += lines[end:]
    return "\n".join(out) + "\n"


def write_checked(path: Path, text: str) -> None:
    """Replace the file by ``text`` once it parses as TOML (atomically: a crash leaves the
    old lock or the new one, never half of one)."""
    tomllib.loads(text)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
