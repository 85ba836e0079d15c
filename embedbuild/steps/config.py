"""The checked Kconfig step shared by the kernel, busybox and U-Boot: a base target,
the merged fragments applied with kconfiglib, the project's own settling target
(olddefconfig), and every requested value verified in the final .config."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from embedbuild import kconfig
from embedbuild.errors import BoardError, ConfigError
from embedbuild.step import Context, Step
from embedbuild.toolchain import REPRODUCIBLE_ENV

# make(srctree, builddir, target, jobs) -> argv
MakeArgv = Callable[[Path, Path, str, int], list[str]]


def checked_config_step(
    *,
    kind: str,
    name: str,
    tree: Step,
    base: str,
    fragments: Mapping[Path, str],
    make: MakeArgv,
    kconfig_env: Callable[[Path], dict[str, str]],
    output: str,
    inputs: dict,
    top: str = "Kconfig",
    settle: str = "olddefconfig",
    env: Mapping[str, str] = REPRODUCIBLE_ENV,
    generated: bool = False,
) -> Step:
    """A step with outputs ``config`` (the final .config, written as ``output``) and
    ``request`` (what the fragments asked for).

    Args:
        top: the tree's top Kconfig file.
        settle: the make target that fills in what the request left open; it reads
            no answers (stdin is empty), so every open question takes its default.
        env: the environment of make.
        generated: the base make generates the Kconfig files below the top one into
            the build folder (busybox's Config.in from Config.src): parse there, after it.
    """
    requests = kconfig.merge_fragments(fragments)  # conflicts are refused before any work

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        # The base config and kconfiglib's parse of the tree do not depend on each
        # other: make (building the Kconfig tools) runs on the cores the parser leaves.
        if generated:
            ctx.run.run(make(src, b, base, ctx.jobs), env=env, what=f"make {base}")
            shutil.copyfile(src / top, b / top)
            kconf = kconfig.open_kconfig(b, kconfig_env(src), top=top)
        else:
            base_argv = make(src, b, base, max(1, ctx.jobs - 1))
            with ctx.run.start(base_argv, env=env, what=f"make {base}") as base_make:
                kconf = kconfig.open_kconfig(src, kconfig_env(src), top=top)
                base_make.wait()
        if not (b / ".config").is_file():
            raise ConfigError(
                f"`make {base}` wrote no .config",
                hint="kernel.base must be a config target: allnoconfig or a *_defconfig",
            )
        kconfig.check_known(kconf, requests)
        kconfig.apply_requests(kconf, b / ".config", requests, b / ".config")
        ctx.run.run(make(src, b, settle, 1), env=env, stdin=b"", what=f"make {settle}")
        kconfig.verify(kconf, b / ".config", requests)
        shutil.copyfile(b / ".config", ctx.output("config"))
        ctx.output("request").write_text(
            "".join(f"{r.config_line()}\n" for r in requests.values())
        )

    return Step(
        kind=kind,
        name=name,
        version=1,
        inputs={**inputs, "base": base, "fragments": kconfig.fragments_digest(fragments)},
        deps={"tree": tree},
        build=build,
        outputs={"config": output, "request": "request.config"},
        jobs=2,
    )


def read_fragments(paths: list[Path]) -> dict[Path, str]:
    """Fragments read once, in order: path -> text."""
    out = {}
    for p in paths:
        try:
            out[p] = p.read_text()
        except UnicodeDecodeError as e:
            raise BoardError(f"not UTF-8 text (byte {e.start})", where=str(p),
                             hint="a Kconfig fragment is plain text") from None
    return out
