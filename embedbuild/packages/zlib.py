"""zlib: deflate and crc32, staged as a static library for the programs that link it
(libubootenv's crc32), built with its CMake build (Debian's source package zlib)."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedbuild.buildsys.cmake import CmakeRecipe
from embedbuild.errors import StepError
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context

# Debian's tarball (1.2.13.dfsg) leaves out win32/, which CMakeLists.txt names as a
# source of the shared library for any compiler but MinGW's: CMake then refuses to
# generate. The Windows resource means nothing here.
WIN32_RC = "        win32/zlib1.rc # If present will override custom build rule below.\n"


@recipe("zlib")
class Zlib(CmakeRecipe):
    """The compression library: its header and static library."""

    source = "zlib"
    library = True
    # Its CMake build always declares the shared library and two example programs beside
    # the static one: only the static one is built (a static-only libc links no shared
    # library), and it and the headers are staged.
    targets = ("zlibstatic",)
    cmake_install = False
    stages = ("include/zlib.h", "include/zconf.h", "lib/libz.a")

    def prepare(self, ctx: Context, src: Path, target: Target) -> None:
        if (src / "win32").exists():
            return
        cmake = src / "CMakeLists.txt"
        text = cmake.read_text()
        if WIN32_RC not in text:
            raise StepError(f"{self.name}: CMakeLists.txt no longer names win32/zlib1.rc as "
                            "expected", hint="a new upstream version: check its sources")
        cmake.write_text(text.replace(WIN32_RC, ""))

    def install(self, ctx: Context, build: Path, dest: Path, target: Target) -> None:
        (dest / "include").mkdir(parents=True)
        (dest / "lib").mkdir()
        # zconf.h is generated into the build folder (CMake moves the source's aside).
        for header in (ctx.scratch / "src" / "zlib.h", build / "zconf.h"):
            shutil.copyfile(header, dest / "include" / header.name)
        shutil.copyfile(build / "libz.a", dest / "lib" / "libz.a")
