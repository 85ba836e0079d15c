"""The checked Kconfig step shared by the kernel and U-Boot: a base target, the
merged fragments applied with kconfiglib, the project's own olddefconfig, and
every requested value verified in the final .config."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from embedbuild import kconfig
from embedbuild.plan import Context, Step
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
) -> Step:
    """A step writing ``output`` (the final .config) and request.config (what was asked)."""
    requests = kconfig.merge_fragments(fragments)  # conflicts are refused before any work

    def build(ctx: Context) -> None:
        src = ctx.deps["tree"]
        b = ctx.scratch
        env = REPRODUCIBLE_ENV
        # The base config and kconfiglib's parse of the tree do not depend on each
        # other: make (building the Kconfig tools) runs on the cores the parser leaves.
        base_argv = make(src, b, base, max(1, ctx.jobs - 1))
        with ctx.run.start(base_argv, env=env, what=f"make {base}") as base_make:
            kconf = kconfig.open_kconfig(src, kconfig_env(src))
            base_make.wait()
        kconfig.check_known(kconf, requests)
        kconfig.apply_requests(kconf, b / ".config", requests, b / ".config")
        ctx.run.run(make(src, b, "olddefconfig", 1), env=env, what="make olddefconfig")
        kconfig.verify(kconf, b / ".config", requests)
        shutil.copyfile(b / ".config", ctx.out / output)
        (ctx.out / "request.config").write_text(
            "".join(f"{r.config_line()}\n" for r in requests.values())
        )

    return Step(
        kind=kind,
        name=name,
        version=1,
        inputs={**inputs, "base": base, "fragments": kconfig.fragments_digest(fragments)},
        deps={"tree": tree},
        build=build,
        jobs=2,
    )
