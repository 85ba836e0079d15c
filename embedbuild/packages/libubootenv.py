"""libubootenv: fw_printenv and fw_setenv, U-Boot's environment read and written from
Linux (the configuration /etc/fw_env.config says which device, where and how large).
A system booted from an A/B slot marks the slot good with it.

Built with CMake and linked statically, its own library, zlib, libyaml and the C
library: upstream links fw_printenv against the shared libubootenv, which the image would
then have to carry, and a dynamic fw_printenv would bring the toolchain's C library into
the image a second time beside dropbear's (each package's initramfs segment carries the
libraries its programs need).
"""

from __future__ import annotations

import os
from pathlib import Path

from embedbuild.buildsys.cmake import CmakeRecipe
from embedbuild.errors import StepError
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context

LINK = "target_link_libraries(fw_printenv ubootenv)"
STATIC_LINK = "target_link_libraries(fw_printenv ubootenv_static z yaml)"


@recipe("libubootenv")
class Libubootenv(CmakeRecipe):
    """U-Boot's environment tools: fw_printenv, and fw_setenv (the same program)."""

    source = "libubootenv"
    depends = ("zlib", "libyaml")
    cmake_args = ("-DBUILD_DOC=OFF",)
    ldflags = "-static"
    targets = ("fw_printenv",)
    cmake_install = False
    installs = ("usr/bin/fw_printenv", "usr/bin/fw_setenv")
    # fw_setenv writes the environment's flash through the MTD character device.
    kernel = {"MTD": "y"}

    def prepare(self, ctx: Context, src: Path, target: Target) -> None:
        cmake = src / "src" / "CMakeLists.txt"
        text = cmake.read_text()
        if LINK not in text:
            raise StepError(f"{self.name}: src/CMakeLists.txt no longer says {LINK!r}",
                            hint="a new upstream version: check how fw_printenv is linked")
        cmake.write_text(text.replace(LINK, STATIC_LINK))

    def install(self, ctx: Context, build: Path, dest: Path, target: Target) -> None:
        bindir = dest / "usr" / "bin"
        bindir.mkdir(parents=True)
        ctx.run.run([f"{target.toolchain.prefix}strip", "-o", bindir / "fw_printenv",
                     build / "src" / "fw_printenv"], what="strip fw_printenv")
        # One program: it sets variables when called as fw_setenv.
        os.symlink("fw_printenv", bindir / "fw_setenv")
