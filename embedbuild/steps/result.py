"""The result step: the files every output published, in one folder, with the
manifest.json that describes them. It knows no output by name: each output's
sections (plan-time data and facts read from its steps' JSON outputs) are merged
and checked against what the outputs declare."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pydantic import ValidationError

from embedbuild.errors import StepError
from embedbuild.manifest import FileInfo, Manifest
from embedbuild.model.board import Board
from embedbuild.output import Output, Published
from embedbuild.step import Context, Step


def merge_section(sections: dict, key: str, value, who: str) -> None:
    """Add an output's part of a section: a table may be filled by several outputs, key
    by key; anything else, or a key given twice, is a bug of the outputs."""
    if key not in sections:
        sections[key] = value
        return
    old = sections[key]
    if not (isinstance(old, dict) and isinstance(value, dict)) or set(old) & set(value):
        raise StepError(f"manifest section {key!r} is written twice ({who})")
    sections[key] = {**old, **value}


def result_step(board: Board, outputs: list[Output], published: list[Published]) -> Step:
    """Collect the published files (hard links: store items are immutable) and write
    manifest.json from the outputs' sections."""
    picks = [f for p in published for f in p.files]
    deps: dict[str, Step] = {}
    roles: dict[int, str] = {}

    def role_of(s: Step) -> str:
        roles.setdefault(id(s), f"dep{len(roles)}")
        deps[roles[id(s)]] = s
        return roles[id(s)]

    for s in [*(f.step for f in picks), *(c for p in published for c in p.checks)]:
        role_of(s)
    static: dict = {}
    facts: list[tuple[str, str, str, list[str] | None]] = []
    for o, p in zip(outputs, published, strict=True):
        for key, value in p.manifest.items():
            if key not in o.sections:
                raise StepError(f"output {o.name} writes manifest section {key!r}, which it "
                                "does not declare")
            merge_section(static, key, value, o.name)
        for key, fact in p.facts.items():
            facts.append((key, role_of(fact.step), fact.output,
                          list(fact.keys) if fact.keys is not None else None))
    files = [(f.role, roles[id(f.step)], f.output, Path(f.step.output_path(f.output)).name)
             for f in picks]
    names = [o.name for o in outputs]

    def build(ctx: Context) -> None:
        infos = {}
        for role, dep, out, name in files:
            src = ctx.input(dep, out)
            dest = ctx.out / name
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            data = dest.read_bytes()
            infos[name] = FileInfo(role=role, size=len(data),
                                   sha256=hashlib.sha256(data).hexdigest())
        sections = json.loads(json.dumps(static))
        for key, dep, out, keys in facts:
            value = json.loads(ctx.input(dep, out).read_text())
            if keys is not None:
                value = {k: value[k] for k in keys}
            merge_section(sections, key, value, f"facts of {ctx.step.deps[dep].name}")
        try:
            manifest = Manifest(board=board.name, arch=board.arch.value, outputs=names,
                                description=board.description, files=infos, **sections)
        except ValidationError as e:
            raise StepError(f"the outputs' manifest sections are not what they declare: {e}",
                            hint="a bug of an output module (embedbuild/outputs/)") from None
        manifest.write(ctx.out)

    return Step(
        kind="result",
        name=f"{board.name}-result",
        version=8,
        # Exactly what the manifest is written from; file contents are covered by the deps.
        inputs={
            "board": board.name,
            "arch": board.arch.value,
            "description": board.description,
            "outputs": names,
            "files": files,
            "manifest": static,
            "facts": facts,
        },
        deps=deps,
        build=build,
        outputs={"manifest": "manifest.json"},
    )
