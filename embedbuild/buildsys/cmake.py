"""CMake packages (zlib, libubootenv): configure a build folder for the cross toolchain,
build the recipe's targets, ``cmake --install`` them into a folder of the scratch space,
from which the recipe's declared files are taken: ``stages`` into the ``stage`` output
(headers, static libraries for the packages that link it), ``installs`` into the image
tree ``root``. The same style as the autotools infrastructure (autotools.py).

Static only: ``BUILD_SHARED_LIBS`` off, and the programs link the staged static
libraries. The source is built from a writable copy (a recipe may adjust its build
files in ``prepare``) with paths inside it relative in the compiler's view, and without
debug information: the same inputs give the same bytes in any store.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from embedbuild.buildsys.autotools import take
from embedbuild.buildsys.common import (
    check_binaries,
    copy_tree,
    cross_env,
    identity_of,
    library_deps,
    links_libc,
    stage_sysroot,
)
from embedbuild.buildsys.libc import libc_flags
from embedbuild.recipe import PackageSteps, Recipe, Target
from embedbuild.step import Context, Step
from embedbuild.toolchain import Toolchain

# The CMake names of the cross target's operating system and processor, by ARCH.
SYSTEM_PROCESSOR = {"arm": "arm", "arm64": "aarch64", "mips": "mips"}


def toolchain_file(tc: Toolchain, sysroot: Path | None, libc: bool = False) -> str:
    """A CMake toolchain file for the cross compiler: programs run on the host, headers
    and libraries come only from the toolchain's and the staging sysroot. With ``libc``
    every compile and link (CMake's own compiler checks too) goes against the libc
    staged in the sysroot, as ``libc_cc`` does for the other build systems: CMake takes
    the compiler as one program, so its arguments go into the initial C flags, which
    CMake passes to links as well."""
    roots = " ".join(str(p) for p in ([sysroot] if sysroot else []))
    flags = [f'set(CMAKE_C_FLAGS_INIT "{libc_flags(sysroot)}")'] if libc and sysroot else []
    return "\n".join([
        "set(CMAKE_SYSTEM_NAME Linux)",
        f"set(CMAKE_SYSTEM_PROCESSOR {SYSTEM_PROCESSOR[tc.arch.value]})",
        f"set(CMAKE_C_COMPILER {tc.cc})",
        f"set(CMAKE_AR {tc.prefix}ar)",
        f"set(CMAKE_RANLIB {tc.prefix}ranlib)",
        f"set(CMAKE_STRIP {tc.prefix}strip)",
        *flags,
        f"set(CMAKE_FIND_ROOT_PATH {roots})",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)",
        "",
    ])


class CmakeRecipe(Recipe):
    """A package built with CMake.

    Class attributes:
        cmake_args: ``-D`` settings besides the toolchain, the install prefix (the root),
            ``CMAKE_INSTALL_LIBDIR=lib``, ``BUILD_SHARED_LIBS=OFF`` and the release
            build type.
        cflags: the compiler flags (no -g: debug information would record the build
            folder).
        ldflags: the linker flags of programs (``-static``).
        targets: what ``cmake --build`` builds; empty: everything.
        cmake_install: run ``cmake --install`` (else the recipe's ``install`` hook takes its
            files from the build folder, for targets that are not installed by
            themselves).
    Hooks: ``prepare`` (adjust the writable source copy before configuring) and
    ``install`` (put the built files into the install folder).
    """

    cmake_args: ClassVar[tuple[str, ...]] = ()
    cflags: ClassVar[str] = "-Os"
    ldflags: ClassVar[str] = ""
    targets: ClassVar[tuple[str, ...]] = ()
    cmake_install: ClassVar[bool] = True
    # This infrastructure's code version (part of every key, with the recipe's).
    # 2: built against the board's libc recipe (1 linked the toolchain's glibc).
    revision: ClassVar[int] = 2

    def prepare(self, ctx: Context, src: Path, target: Target) -> None:
        """Adjust the writable source copy before CMake reads it."""

    def install(self, ctx: Context, build: Path, dest: Path, target: Target) -> None:
        """Put the built files into ``dest`` (as ``cmake --install`` would), when the
        recipe does not use CMake's own install."""
        raise NotImplementedError(f"{self.name}: give install() or cmake_install = True")

    def plan(self, target: Target) -> PackageSteps:
        tc = target.toolchain
        libc = links_libc(self, target)  # built against the board's libc recipe
        libs = library_deps(self, target)
        outputs = {"root": "root"} | ({"stage": "stage"} if self.library else {})

        def build(ctx: Context) -> None:
            src, b, dest = ctx.scratch / "src", ctx.scratch / "build", ctx.scratch / "dest"
            copy_tree(ctx, ctx.input("tree", "tree"), src, self.name)
            self.prepare(ctx, src, target)
            sysroot = stage_sysroot(ctx)
            tcfile = ctx.scratch / "toolchain.cmake"
            tcfile.write_text(toolchain_file(tc, sysroot, libc))
            env = cross_env(tc, sysroot, libc)
            # CMake gives the compiler absolute paths: the scratch folder is mapped out
            # of __FILE__ (assert messages), so the bytes are the same in any store. The
            # staging sysroot's headers and libraries are named here, not left to CMake's
            # reading of CPPFLAGS and LDFLAGS.
            # -DNDEBUG as CMake's own Release flags have it (libubootenv prints debugging
            # lines to stdout without it).
            cflags = f"{self.cflags} -DNDEBUG -ffile-prefix-map={ctx.scratch}=."
            ldflags = self.ldflags
            if sysroot is not None:
                cflags += f" -I{sysroot}/include"
                ldflags = f"{ldflags} -L{sysroot}/lib".strip()
            b.mkdir()
            ctx.run.run(["cmake", "-S", "../src", "-B", ".", f"-DCMAKE_TOOLCHAIN_FILE={tcfile}",
                         "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_C_FLAGS_RELEASE={cflags}",
                         f"-DCMAKE_EXE_LINKER_FLAGS={ldflags}",
                         # An empty prefix: "/" would make "//lib" of "${prefix}/lib",
                         # which CMake's install takes for a network path.
                         "-DCMAKE_INSTALL_PREFIX=", "-DCMAKE_INSTALL_LIBDIR=lib",
                         "-DBUILD_SHARED_LIBS=OFF", *self.cmake_args],
                        cwd=b, env=env, what=f"configuring {self.name}")
            targets = [a for t in self.targets for a in ("--target", t)]
            ctx.run.run(["cmake", "--build", ".", f"-j{ctx.jobs}", *targets], cwd=b, env=env,
                        what=f"building {self.name}")
            if self.cmake_install:
                ctx.run.run(["cmake", "--install", "."], cwd=b,
                            env={**env, "DESTDIR": str(dest)}, what=f"installing {self.name}")
            else:
                dest.mkdir()
                self.install(ctx, b, dest, target)
            for out, patterns in (("root", self.installs), ("stage", self.stages)):
                if out in outputs:
                    take(dest, ctx.output(out), patterns, f"{self.name} ({out})")
                    check_binaries(ctx.output(out), identity_of(tc), self.name,
                                   libc=libc)

        return PackageSteps(Step(
            kind=self.name,
            name=f"{self.name}-{tc.triplet}",
            version=self.step_version,
            inputs={"toolchain": tc.identity(), "cmake_args": list(self.cmake_args),
                    "cflags": self.cflags, "ldflags": self.ldflags,
                    "targets": list(self.targets),
                    **self.key_inputs(target)},
            deps={"tree": target.source(self.source), **libs},
            build=build,
            outputs=outputs,
            jobs=target.jobs,
            compilers=tc.compilers,
        ))
