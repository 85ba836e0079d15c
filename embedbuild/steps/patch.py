"""A patched source tree, shared by every board with the same source and patches.

The tree is a hard-link copy of the unpacked source (cheap: no 1.5 GB copy);
GNU patch replaces the files it changes instead of writing through the links.
"""

from __future__ import annotations

import re
from pathlib import Path

from embedbuild.errors import StepError
from embedbuild.step import Context, Step
from embedbuild.store import hash_file


def patched_step(name: str, tree: Step, patches: list[Path]) -> Step:
    """The tree with patches applied in order (or the tree itself when there are none)."""
    if not patches:
        return tree

    def build(ctx: Context) -> None:
        ctx.run.run(["cp", "-al", f"{ctx.input('tree', 'tree')}/.", ctx.output("tree")],
                    what="hard-link copy of the source")
        # The store's folders are read-only and cp keeps that; patch must add files to
        # ours. Folders only: the files are the source item's own inodes.
        ctx.run.run(["find", ctx.output("tree"), "-type", "d", "-exec", "chmod", "u+w", "{}",
                     "+"], what="making the copy's folders writable")
        for p in patches:
            try:
                ctx.run.run(
                    [
                        "patch",
                        "-p1",
                        "--batch",
                        "--forward",
                        "--no-backup-if-mismatch",
                        "-r",
                        "-",
                        "-i",
                        p,
                    ],
                    cwd=ctx.output("tree"),
                    what=f"patch {p.name}",
                )
            except StepError as e:
                raise StepError(
                    f"patch does not apply: {_explain(e.log_tail or '')}",
                    where=str(p),
                    hint="refresh the patch against this source version",
                    log_tail=e.log_tail,
                    log_path=e.log_path,
                ) from None

    return Step(
        kind="patch",
        name=name,
        version=1,
        inputs={"patches": [{"name": p.name, "sha256": hash_file(p)} for p in patches]},
        deps={"tree": tree},
        build=build,
        outputs={"tree": "."},
    )


def _explain(tail: str) -> str:
    """'hunk #2 of drivers/x.c FAILED at 120' from patch's output."""
    current = None
    failures = []
    for line in tail.splitlines():
        if m := re.match(r"patching file '?(.+?)'?$", line):
            current = m.group(1)
        elif m := re.match(r"Hunk #(\d+) FAILED at (\d+)", line):
            failures.append(f"hunk #{m.group(1)} of {current} FAILED at line {m.group(2)}")
        elif m := re.match(r"can't find file to patch", line):
            failures.append("a file it patches does not exist")
        elif "Reversed (or previously applied) patch detected" in line:
            failures.append(f"{current} already has this change (reversed or applied twice)")
    return "; ".join(failures) or "see the log"
