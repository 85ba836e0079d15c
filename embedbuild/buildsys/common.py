"""What every build infrastructure shares: the staging sysroot made of the library
recipes' outputs, the environment of a cross build against it, and the checks of
what a build wrote (the declared files and nothing else, every binary of the
toolchain's ELF identity)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from pathlib import Path

from embedbuild.buildsys.libc import libc_cc
from embedbuild.elf import AR_MAGIC, TOOLCHAIN_ELF, ElfIdentity, ar_members, read_elf
from embedbuild.errors import StepError
from embedbuild.recipe import REGISTRY, Recipe, Target, closure
from embedbuild.step import Context, Step
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

SYSROOT = "sysroot"


def library_deps(recipe: Recipe, target: Target) -> dict[str, Step]:
    """The build steps of every library the recipe links, its dependencies' too, and
    of the board's libc recipe (unless it is that libc), by role ``lib-NAME``."""
    libs = closure(REGISTRY, list(recipe.depends))
    if links_libc(recipe, target):
        libs = [target.libc, *libs]
    return {f"lib-{name}": target.package(name) for name in libs}


def links_libc(recipe: Recipe, target: Target) -> bool:
    """Whether the recipe builds against a libc recipe (embedbuild/buildsys/libc.py)
    rather than the toolchain's own C library."""
    return target.libc is not None and not recipe.libc and recipe.compiles


def stage_sysroot(ctx: Context) -> Path | None:
    """The staging sysroot of a build: the ``stage`` outputs of its library dependencies
    merged into one folder in its scratch space (None without libraries). Two libraries
    staging one path differently is an error.

    The folder is named by the store keys of what it merges (``sysroot-DIGEST``): the
    compiler cache sees its path relative, the same in every store, and in every
    compile line. ccache's direct mode checks only the headers a cached compile read,
    so a header staged later in a folder searched earlier (musl's stdio.h before the
    toolchain's, once a libc is staged) would go unseen under one name; under a name
    of its own, other contents are other compile lines."""
    roles = sorted(r for r in ctx.step.deps if r.startswith("lib-"))
    if not roles:
        return None
    staged = "\n".join(f"{r} {ctx.step.deps[r].key}" for r in roles)
    root = ctx.scratch / f"{SYSROOT}-{hashlib.sha256(staged.encode()).hexdigest()[:16]}"
    owner: dict[str, str] = {}
    for role in roles:
        stage = ctx.input(role, "stage")
        for dirpath, _dirs, files in os.walk(stage):
            for f in files:
                src = Path(dirpath) / f
                rel = src.relative_to(stage).as_posix()
                dest = root / rel
                if rel in owner:
                    if dest.read_bytes() != src.read_bytes():
                        raise StepError(f"{rel} is staged by both {owner[rel]} and "
                                        f"{role.removeprefix('lib-')}, with other contents")
                    continue
                owner[rel] = role.removeprefix("lib-")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest, follow_symlinks=False)
                if not dest.is_symlink():  # its own copy: the store's is read-only
                    dest.chmod(dest.stat().st_mode | 0o200)
    return root


def cross_env(tc: Toolchain, sysroot: Path | None, libc: bool = False) -> dict[str, str]:
    """The environment of a cross build: the reproducible identity, the cross tools and,
    with a staging sysroot, its headers, libraries and pkg-config files (pkg-config
    reads only the sysroot's .pc files and prefixes their paths with it). With ``libc``
    the sysroot holds a libc recipe's stage and CC builds against it."""
    if libc and sysroot is None:
        raise StepError("a build against a libc recipe has no staging sysroot",
                        hint="the libc's step must be among the build's dependencies")
    env = {**REPRODUCIBLE_ENV, "CC": libc_cc(tc, sysroot) if libc and sysroot else tc.cc}
    if sysroot is not None:
        env |= {
            "CPPFLAGS": f"-I{sysroot}/include",
            "LDFLAGS": f"-L{sysroot}/lib",
            "PKG_CONFIG_LIBDIR": f"{sysroot}/lib/pkgconfig",
            "PKG_CONFIG_PATH": "",
            "PKG_CONFIG_SYSROOT_DIR": str(sysroot),
        }
    return env


def copy_tree(ctx: Context, src: Path, dest: Path, what: str) -> None:
    """A writable copy of a (read-only) source tree to build in."""
    ctx.run.run(["cp", "-a", f"{src}/.", dest], what=f"copying the {what} source")
    # Store items are read-only, and cp -a keeps that; this copy is ours to build in.
    ctx.run.run(["chmod", "-R", "u+w", dest], what="making the copy writable")


def files_of(root: Path) -> list[str]:
    """Every non-folder entry under root, as relative paths, sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [(Path(dirpath) / f).relative_to(root).as_posix() for f in files]
    return sorted(out)


def check_declared(root: Path, patterns: tuple[str, ...], what: str) -> None:
    """A build wrote what its recipe declares and nothing else: every pattern matches a
    file, every file matches a pattern."""
    found = files_of(root) if root.exists() else []
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(f, p) for f in found)]
    if unmatched:
        raise StepError(f"{what}: nothing installed matches {', '.join(unmatched)}",
                        hint="the build did not write what the recipe declares: check the "
                        "recipe's install step, or its declared files")
    extra = [f for f in found if not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise StepError(f"{what}: installed files the recipe does not declare: {shown}",
                        hint="declare them in the recipe, or do not install them")


def identity_of(tc: Toolchain) -> ElfIdentity:
    """The ELF identity of what a toolchain builds (the loader refuses unknown ones)."""
    return TOOLCHAIN_ELF[tc.prefix]


def check_binaries(root: Path, want: ElfIdentity, what: str, libc: bool = False) -> None:
    """Every ELF file under root, and every object in its static libraries, is of the
    toolchain's identity (machine, class, endianness, ABI). With ``libc`` (a build
    against the board's libc recipe) no program carries the toolchain's C library's
    start files: a build that took the cross gcc as installed linked glibc, whose
    headers and types differ from the libc it was compiled against."""
    for rel in files_of(root):
        path = root / rel
        if path.is_symlink():
            continue
        data = path.read_bytes()
        members = ar_members(data, rel) if data.startswith(AR_MAGIC) else [("", data)]
        for member, blob in members:
            info = read_elf(blob, f"{rel}({member})" if member else rel)
            if info is None:
                continue
            where = f"/{rel}" + (f"({member})" if member else "")
            if not info.identity.fits(want):
                raise StepError(f"{what}: {where} is {info.identity}, but the toolchain "
                                f"builds {want}",
                                hint="the build used another compiler than the board's: "
                                "pass the recipe's CC/--host through")
            if libc and info.glibc_start:
                raise StepError(f"{what}: {where} was linked against the toolchain's glibc, "
                                "not the board's userland C library",
                                hint="the build used the cross gcc as installed: give it "
                                "the libc's compiler command (buildsys/libc.py libc_cc)")


def install_stripped(ctx: Context, tc: Toolchain, built: Path, dest: Path) -> None:
    """A built program into the image tree without symbols or the compiler's .comment
    notes (the image's bytes are what the device stores and loads)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    ctx.run.run([f"{tc.prefix}strip", "-s", "-R", ".comment", "-o", dest, built],
                what=f"stripping {built.name}")


def static_program_env(env: dict[str, str]) -> dict[str, str]:
    """A cross environment for a program linked statically against its libraries:
    optimised for size, no debug information (it would record the build folder),
    sections per function and datum so that --gc-sections drops what is never called,
    the staging sysroot's headers in CFLAGS (Makefiles that read no CPPFLAGS). For
    Makefiles that take CFLAGS and LDFLAGS from the environment and add their own."""
    cflags = " ".join(f for f in ("-Os -ffunction-sections -fdata-sections",
                                  env.get("CFLAGS", ""), env.get("CPPFLAGS", "")) if f)
    ldflags = " ".join(f for f in ("-static -Wl,--gc-sections", env.get("LDFLAGS", "")) if f)
    return {**env, "CFLAGS": cflags, "LDFLAGS": ldflags}
