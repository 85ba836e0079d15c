"""The checked Kconfig step shared by the kernel, busybox and U-Boot: a base target
and the merged fragments, then every requested value verified in the final .config.

Two ways to apply the request, by base:
- an ``all*config`` target (``allnoconfig``) takes the request itself through
  KCONFIG_ALLCONFIG, as the kernel's ``merge_config.sh -n`` does: every symbol the
  request does not name gets the target's answer, also those the request makes
  visible (ETHERNET under NET, BUG under EXPERT). Settling afterwards with
  olddefconfig would give those their defaults instead, so nothing runs after it;
- a defconfig: the request is applied with kconfiglib over the defconfig's .config,
  then the project's settling target (olddefconfig) fills in what it left open.
"""

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

# Targets that take the request as KCONFIG_ALLCONFIG and give every other symbol the
# same answer: the kernel's all*config (U-Boot's Kconfig is a copy of the kernel's).
ALLCONFIG_TARGETS = frozenset({"allnoconfig", "alldefconfig", "allyesconfig", "allmodconfig"})


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
        base: the make target the config starts from; one of ALLCONFIG_TARGETS takes
            the request itself (see the module's docstring).
        top: the tree's top Kconfig file.
        settle: for a defconfig base, the make target that fills in what the request
            left open; it reads no answers (stdin is empty), so every open question
            takes its default.
        env: the environment of make.
        generated: the base make generates the Kconfig files below the top one into
            the build folder (busybox's Config.in from Config.src): parse there, after it.
    """
    requests = kconfig.merge_fragments(fragments)  # conflicts are refused before any work
    allconfig = base in ALLCONFIG_TARGETS

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        request = ctx.output("request")
        request.write_text("".join(f"{r.config_line()}\n" for r in requests.values()))
        base_env = {**env, "KCONFIG_ALLCONFIG": str(request)} if allconfig else env
        # The base config and kconfiglib's parse of the tree do not depend on each
        # other: make (building the Kconfig tools) runs on the cores the parser leaves.
        if generated:
            ctx.run.run(make(src, b, base, ctx.jobs), env=base_env, what=f"make {base}")
            shutil.copyfile(src / top, b / top)
            kconf = kconfig.open_kconfig(b, kconfig_env(src), top=top)
        else:
            base_argv = make(src, b, base, max(1, ctx.jobs - 1))
            with ctx.run.start(base_argv, env=base_env, what=f"make {base}") as base_make:
                kconf = kconfig.open_kconfig(src, kconfig_env(src), top=top)
                base_make.wait()
        if not (b / ".config").is_file():
            raise ConfigError(
                f"`make {base}` wrote no .config",
                hint="kernel.base must be a config target: allnoconfig or a *_defconfig",
            )
        kconfig.check_known(kconf, requests)
        if allconfig:
            last = f"make {base}"
        else:
            kconfig.apply_requests(kconf, b / ".config", requests, b / ".config")
            ctx.run.run(make(src, b, settle, 1), env=env, stdin=b"", what=f"make {settle}")
            last = f"make {settle}"
        kconfig.verify(kconf, b / ".config", requests, after=last)
        shutil.copyfile(b / ".config", ctx.output("config"))

    return Step(
        kind=kind,
        name=name,
        version=1,
        # How the request is applied is part of the key only where it is KCONFIG_ALLCONFIG:
        # defconfig-based configs (busybox, U-Boot) keep their keys and outputs.
        inputs={**inputs, "base": base, "fragments": kconfig.fragments_digest(fragments),
                **({"apply": "KCONFIG_ALLCONFIG"} if allconfig else {})},
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
