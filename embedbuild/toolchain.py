"""The board's cross toolchain: where it is, what version, how make is called."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import BoardError
from embedbuild.hostprobe import remembered
from embedbuild.model.board import Arch

# Fixed build identity, so the same inputs give the same bytes.
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_USER": "embedbuild",
    "KBUILD_BUILD_HOST": "embedbuild",
    "KBUILD_BUILD_VERSION": "1",
    "SOURCE_DATE_EPOCH": "0",
    "LC_ALL": "C",
    "TZ": "UTC",
}


@functools.cache
def version_line(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BoardError(
            f"{tool} not found on PATH",
            hint="run tools/setup (it installs the cross toolchains and build tools)",
        )

    def probe() -> str:
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else path

    return remembered(f"version {path}", [path], probe)


def _owners(paths: list[str]) -> dict[str, str]:
    """Debian package -> installed version of the packages that own these files (none
    for files no package owns: a toolchain the user installed by hand)."""
    real = sorted({str(Path(p).resolve()) for p in paths if p})
    if not real or shutil.which("dpkg-query") is None:
        return {}
    p = subprocess.run(["dpkg-query", "-S", *real], capture_output=True, text=True)
    # "pkg[:arch][, pkg2...]: /path"; "diversion by ..." lines name no owner.
    names = sorted({name.strip().split(":")[0] for line in p.stdout.splitlines()
                    if ": " in line and not line.startswith("diversion ")
                    for name in line.split(": ", 1)[0].split(",")})
    if not names:
        return {}
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *names],
                       capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in q.stdout.splitlines() if " " in line)


@functools.cache
def tool_packages(*tools: str) -> dict[str, str]:
    """The Debian packages of build-host tools found on PATH, with their versions (e.g.
    autoconf and automake, whose output a regenerated configure script is); remembered
    as the host's other facts are (hostprobe.py), so a no-op build runs no dpkg-query."""
    paths = [shutil.which(t) or "" for t in tools]
    return remembered(f"tool packages {' '.join(tools)}", paths, lambda: _owners(paths))


@functools.cache
def host_packages() -> dict[str, str]:
    """The Debian packages of the build host's compiler and make, with their versions."""
    tools = [shutil.which(t) or "" for t in ("gcc", "make")]
    return remembered("host packages", tools, lambda: _owners(tools))


@dataclass(frozen=True)
class Toolchain:
    """A GNU cross toolchain named by its prefix (e.g. arm-linux-gnueabihf-)."""

    prefix: str
    arch: Arch

    @property
    def cc(self) -> str:
        """The cross C compiler."""
        return f"{self.prefix}gcc"

    @property
    def compilers(self) -> tuple[str, ...]:
        """The C compilers a build with this toolchain runs: the cross compiler and the
        host's (kbuild's HOSTCC is gcc, U-Boot's cc), for the compiler cache."""
        return (self.cc, "gcc", "cc")

    @property
    def triplet(self) -> str:
        """The GNU target triplet, e.g. arm-linux-gnueabihf."""
        return self.prefix.rstrip("-")

    def sysroot_dirs(self) -> list[Path]:
        """Where Debian's cross toolchain keeps the target's shared libraries."""
        return [Path("/usr") / self.triplet / "lib", Path("/usr") / self.triplet / "lib64"]

    def identity(self) -> dict[str, object]:
        """Versions of every tool whose change can change an output (part of step keys):
        their version lines, and the exact Debian packages of the toolchain (compiler,
        binutils, C library and kernel headers) and of the host's compiler and make."""
        return {
            "cc": version_line(self.cc),
            "ld": version_line(f"{self.prefix}ld"),
            "hostcc": version_line("gcc"),
            "make": version_line("make"),
            "debian": {**host_packages(), **self.packages()},
        }

    def packages(self) -> dict[str, str]:
        """The Debian packages of this cross toolchain, with their installed versions."""
        return cross_packages(self.prefix)

    def drift(self, locked: dict[str, str]) -> list[str]:
        """How the installed toolchain (and host compiler) differs from the lock's: one
        'package installed (lock: version)' per difference."""
        installed = {**host_packages(), **self.packages()}
        out = []
        for pkg in sorted(set(locked) | set(installed)):
            have, want = installed.get(pkg), locked.get(pkg)
            if have != want:
                out.append(f"{pkg} {have or 'not installed'} (lock: {want or 'not in it'})")
        return out

    def make(self, src: Path, build: Path, *targets: str, jobs: int = 1,
             kernel: bool = True) -> list[str]:
        """argv of a kbuild-style out-of-tree make (the kernel's, U-Boot's, busybox's);
        ``kernel`` adds the kernel's ARCH."""
        arch = [f"ARCH={self.arch.value}"] if kernel else []
        return ["make", "-C", str(src), f"O={build}", *arch, f"CROSS_COMPILE={self.prefix}",
                f"-j{jobs}", "-s", *targets]

    def kconfig_env(self, srctree: Path) -> dict[str, str]:
        """The environment kconfiglib needs to evaluate the kernel's Kconfig like make does."""
        return {
            "ARCH": self.arch.value,
            "SRCARCH": self.arch.value,
            "KERNELVERSION": kernel_version(srctree),
            "CC": self.cc,
            "LD": f"{self.prefix}ld",
            "AS": f"{self.prefix}as",
            "OBJCOPY": f"{self.prefix}objcopy",
            "HOSTCC": "gcc",
            "HOSTCXX": "g++",
            "CC_VERSION_TEXT": version_line(self.cc),
            "RUSTC": "false",
            "BINDGEN": "false",
        }


@functools.cache
def cross_packages(prefix: str) -> dict[str, str]:
    """The Debian packages of the cross toolchain with this prefix (compiler, binutils,
    C library, kernel headers) and their installed versions."""
    cc = shutil.which(f"{prefix}gcc")
    if cc is None:
        return {}
    tools = [cc, shutil.which(f"{prefix}ld") or ""]
    # The rest are found through the compiler and owned by packages: dpkg's database
    # (part of every remembered fact's stamp) tells when they change.
    return remembered(f"cross packages {prefix}", tools, lambda: _cross_owners(prefix, tools))


def _cross_owners(prefix: str, tools: list[str]) -> dict[str, str]:
    cc, files = tools[0], list(tools)
    # The C library and the kernel headers a static userland is built against.
    for name in ("libc.a", "include/linux/version.h"):
        p = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True)
        found = p.stdout.strip()
        if "/" in found and Path(found).exists():
            files.append(found)
    sysroot = Path("/usr") / prefix.rstrip("-") / "include" / "linux" / "version.h"
    if sysroot.exists():
        files.append(str(sysroot))
    return _owners(files)


def kernel_version(srctree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the kernel's top Makefile."""
    head = (srctree / "Makefile").read_text()[:2000]
    parts = [re.search(rf"^{k} = (\S*)", head, re.M) for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL")]
    return ".".join(m.group(1) for m in parts if m)
