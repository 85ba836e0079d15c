"""Autotools packages (libnl, wolfssl): ``configure --host``, make, ``make install``
into a folder of the scratch space, from which the recipe's declared files are taken:
``stages`` into the ``stage`` output (headers, static libraries, pkg-config files
for the packages that link it), ``installs`` into the image tree ``root``.

Static only (``--disable-shared``): the image's programs link their libraries in.
Builds run in a writable copy of the source, so every path the compiler sees is
relative to it (``__FILE__``), and without debug information: the same inputs give
the same bytes in any store.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from typing import ClassVar

from embedbuild.buildsys.common import (
    check_binaries,
    copy_tree,
    cross_env,
    files_of,
    identity_of,
    library_deps,
    links_libc,
    stage_sysroot,
)
from embedbuild.errors import StepError
from embedbuild.recipe import PackageSteps, Recipe, Target
from embedbuild.step import Context, Step
from embedbuild.toolchain import tool_packages


class AutotoolsRecipe(Recipe):
    """A package with an autoconf configure script and an automake Makefile.

    Class attributes:
        configure_args: besides ``--host``, ``--prefix=/``, ``--disable-shared`` and
            ``--enable-static``.
        cflags: the compiler flags (no -g: debug information would record the build
            folder).
        make_args: what ``make`` builds (targets, variables); empty: everything.
        install_args: what ``make install`` runs (targets, variables overriding the
            Makefile's lists, e.g. only some of its libraries).
        autoreconf: regenerate configure first (a git archive without one, such as
            wolfSSL's; the host's autoconf, automake and libtool go into the key).
    """

    configure_args: ClassVar[tuple[str, ...]] = ()
    cflags: ClassVar[str] = "-Os"
    make_args: ClassVar[tuple[str, ...]] = ()
    install_args: ClassVar[tuple[str, ...]] = ("install",)
    autoreconf: ClassVar[bool] = False

    def key_inputs(self, target: Target) -> dict:
        # A regenerated configure script is the output of the host's autotools.
        if not self.autoreconf:
            return {}
        return {"autotools": tool_packages("autoconf", "automake", "libtoolize")}

    def installed(self, ctx: Context, dest: Path, target: Target) -> None:
        """Add to what ``make install`` wrote in ``dest``, before the declared files are
        taken from it (a libc's kernel headers and specs)."""

    def plan(self, target: Target) -> PackageSteps:
        tc = target.toolchain
        libc = links_libc(self, target)  # built against the board's libc recipe
        libs = library_deps(self, target)
        outputs = {"root": "root"} | ({"stage": "stage"} if self.library else {})

        def build(ctx: Context) -> None:
            b, dest = ctx.scratch / "build", ctx.scratch / "dest"
            copy_tree(ctx, ctx.input("tree", "tree"), b, self.name)
            env = cross_env(tc, stage_sysroot(ctx), libc) | {
                "CFLAGS": self.cflags}
            if self.autoreconf:
                ctx.run.run(["autoreconf", "-fi"], cwd=b, env=env, what="autoreconf")
            ctx.run.run(["./configure", f"--host={tc.triplet}", "--prefix=/",
                         "--disable-shared", "--enable-static", *self.configure_args],
                        cwd=b, env=env, what=f"configuring {self.name}")
            ctx.run.run(["make", f"-j{ctx.jobs}", *self.make_args], cwd=b, env=env,
                        what=f"building {self.name}")
            ctx.run.run(["make", f"DESTDIR={dest}", *self.install_args], cwd=b, env=env,
                        what=f"installing {self.name}")
            self.installed(ctx, dest, target)
            for out, patterns in (("root", self.installs), ("stage", self.stages)):
                if out in outputs:
                    take(dest, ctx.output(out), patterns, f"{self.name} ({out})")
                    check_binaries(ctx.output(out), identity_of(tc), self.name,
                                   libc=libc)

        return PackageSteps(Step(
            kind=self.name,
            name=f"{self.name}-{tc.triplet}",
            version=self.step_version,
            inputs={"toolchain": tc.identity(), **self.key_inputs(target)},
            deps={**self.source_deps(target), **libs},
            build=build,
            outputs=outputs,
            jobs=target.jobs,
            compilers=tc.compilers,
        ))


def take(installed: Path, out: Path, patterns: tuple[str, ...], what: str) -> None:
    """Copy the installed files matching ``patterns`` into ``out``; each pattern must
    match (what else ``make install`` wrote, such as libtool's .la files, stays out)."""
    out.mkdir(exist_ok=True)
    found = files_of(installed) if installed.exists() else []
    for p in patterns:
        if not any(fnmatch.fnmatchcase(f, p) for f in found):
            raise StepError(f"{what}: nothing installed matches {p}",
                            hint="check the recipe's install arguments and declared files")
    for f in found:
        if any(fnmatch.fnmatchcase(f, p) for p in patterns):
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(installed / f, out / f, follow_symlinks=False)
