"""Steps and their keys: the nodes of a build graph.

A step is a pure function of its inputs: ``inputs`` (JSON data, including the
sha256 of every file it reads) and the outputs of ``deps``. Its key hashes all
of that plus the step kind's code version, so an unchanged key means an
unchanged output. A step declares the files it writes by name; the steps after
it ask for them by that name, never by a file name of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from embedbuild.command import Runner


@dataclass
class Context:
    """What a step's build function gets: where to write and what it may read."""

    out: Path
    deps: dict[str, Path]
    run: Runner
    jobs: int
    step: Step
    # Intermediate files (a kernel's object tree): removed after the step, in the background.
    scratch: Path
    # Set by a step that unpacks a pinned archive: see Store.realise.
    origin: dict | None = None
    # Fetches a missing source download from the substituters (steps/source.py).
    substitute_download: Callable[[Any, Path], bool] | None = None

    def input(self, role: str, name: str) -> Path:
        """The file (or folder) ``name`` that the dependency ``role`` declared."""
        return self.deps[role] / self.step.deps[role].output_path(name)

    def output(self, name: str) -> Path:
        """Where this step writes its declared output ``name``."""
        return self.out / self.step.output_path(name)


@dataclass(eq=False)
class Step:
    """One node of the build graph.

    Args:
        kind: the kind of step ("kernel", "kconfig", ...).
        name: human-readable name, part of the store path.
        version: code version of this kind of step; bump when its output changes.
        inputs: JSON-able data the output depends on (file contents by sha256).
        build: the function that writes the output into ``ctx.out``.
        deps: role -> step whose output this step reads.
        outputs: name -> path inside the output of what the step writes.
        jobs: cores the step keeps busy (the kernel's make -j); at most the machine's.
        compilers: the compilers (names on PATH) the step runs, which go through the
            compiler cache (compiler_cache.py). Not part of the key: the cache must
            never change an output.
        secret: its output holds a secret (an access point's passphrase). A step that
            depends on a secret one holds it too (``holds_secret``): such items are
            readable by their owner only, never asked of nor pushed to a binary cache.
            Its inputs must not hold the secret itself, only a digest.
        count: counts the work done so far in the step's scratch folder (the kernel:
            object files), for the progress display; not part of the key.
    """

    kind: str
    name: str
    version: int
    inputs: dict[str, Any]
    build: Callable[[Context], None]
    deps: dict[str, Step] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    jobs: int = 1
    compilers: tuple[str, ...] = ()
    secret: bool = False
    count: Callable[[Path], int] | None = None

    @cached_property
    def holds_secret(self) -> bool:
        """Whether the output may hold a secret: the step is secret, or reads the output
        of one that may (a concatenation, a kernel with the initramfs built in, the
        result)."""
        return self.secret or any(d.holds_secret for d in self.deps.values())

    @cached_property
    def key(self) -> str:
        """sha256 of everything that can change the output."""
        doc = {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "deps": {role: d.key for role, d in sorted(self.deps.items())},
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def output_path(self, name: str) -> str:
        """The declared path of output ``name``; asking for an undeclared one is a bug."""
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"step {self.name} declares no output {name!r} "
                           f"(it has {', '.join(self.outputs) or 'none'})") from None

    def walk(self) -> Iterator[Step]:
        """This step and all it depends on, dependencies first, each once."""
        seen: set[int] = set()

        def visit(s: Step) -> Iterator[Step]:
            if id(s) in seen:
                return
            seen.add(id(s))
            for d in s.deps.values():
                yield from visit(d)
            yield s

        yield from visit(self)
