"""musl: the C library of the userland (the default ``[userland] libc``), static, one
build per toolchain. Every other recipe compiles and links against its stage
through the specs of embedbuild/buildsys/libc.py: programs a third of glibc's
static size, with crypt() built in.

musl installs no kernel headers; the stage gets the cross toolchain's (the folders
Debian's linux-libc-dev-ARCH-cross installs), which busybox and the network tools
include. Built with the bare cross compiler (``--disable-wrapper``: its musl-gcc
would bake the store path in)."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedbuild.buildsys.autotools import AutotoolsRecipe
from embedbuild.buildsys.libc import KERNEL_HEADERS, SPECS, specs
from embedbuild.errors import StepError
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context


@recipe("musl")
class Musl(AutotoolsRecipe):
    """The C library (static): headers, crt files, libc.a, and gcc specs to use them."""

    source = "musl"
    library = True
    libc = True
    # musl's configure takes --host, --prefix, --disable-shared and --enable-static
    # like autoconf's.
    configure_args = ("--disable-wrapper",)
    stages = ("include/*", "lib/crt1.o", "lib/crti.o", "lib/crtn.o", "lib/libc.a",
              # Empty: their functions are in libc.a, so -lm, -lpthread, -lcrypt link.
              *(f"lib/lib{n}.a" for n in ("m", "rt", "pthread", "crypt", "util", "xnet",
                                           "resolv", "dl")),
              SPECS)

    def key_inputs(self, target: Target) -> dict:
        return {"specs": specs(), "kernel_headers": list(KERNEL_HEADERS)}

    def installed(self, ctx: Context, dest: Path, target: Target) -> None:
        include = Path("/usr") / target.toolchain.triplet / "include"
        for d in KERNEL_HEADERS:
            if not (include / d).is_dir():
                raise StepError(f"the cross toolchain has no kernel headers {include / d}",
                                hint=f"install linux-libc-dev-*-cross for "
                                f"{target.toolchain.triplet} (tools/setup does)")
            # musl's own headers win: scsi/scsi.h, sg.h and scsi_ioctl.h there are
            # glibc's (libc6-dev-*-cross), not the kernel's.
            shutil.copytree(include / d, dest / "include" / d, symlinks=True,
                            dirs_exist_ok=True, copy_function=_copy_new)
        (dest / SPECS).write_text(specs())


def _copy_new(src: str, dst: str) -> None:
    if not Path(dst).exists():
        shutil.copy2(src, dst)
