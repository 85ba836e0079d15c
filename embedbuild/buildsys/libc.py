"""The C library a board's userland links, when it is a recipe (musl) rather than the
cross toolchain's own (glibc): what such a recipe stages, and the compiler command
that builds against it.

A libc recipe stages a sysroot: ``include/`` (its headers and the kernel's UAPI
headers), ``lib/`` (``crt1.o``, ``crti.o``, ``crtn.o``, ``libc.a`` and the empty
``libm.a``-style stubs) and ``SPECS``, a gcc specs file written by ``specs()``.
Every other recipe of the board then compiles with ``libc_cc``: the board's cross
gcc, ``--sysroot`` the staging sysroot of its build (the libc's stage merged with
its libraries'), and that specs file.

Why a specs file without a path in it: musl's own ``musl-gcc`` wrapper and specs
bake the install prefix in, which in a store is a different folder for every
build. These specs name the sysroot only as ``%R`` (gcc's --sysroot), so the file
is the same bytes in every store; ccache hashes a specs file by content (the compiler
cache sets ``compiler_check``, see compiler_cache.py; the path is not hashed) and
rewrites ``--sysroot=`` and ``-I`` relative to its base_dir, so a second store still
hits the cache.
"""

from __future__ import annotations

from pathlib import Path

from embedbuild.toolchain import Toolchain

SPECS = "lib/embedbuild-libc.specs"

# The kernel's UAPI header folders a libc without its own kernel headers (musl) takes
# from the cross toolchain's linux-libc-dev-ARCH-cross (the same list for every arch
# Debian ships; its version is part of the toolchain's identity, so of every key).
KERNEL_HEADERS = ("asm", "asm-generic", "drm", "linux", "misc", "mtd", "rdma", "scsi",
                  "sound", "video", "xen")


def specs() -> str:
    """The gcc specs that make the cross gcc build static programs against the libc in
    its --sysroot, and against nothing of the toolchain's own C library.

    - self_spec: always static, and position-dependent unless a build asks for PIC (the
      toolchains default to PIE, which costs MIPS code size for nothing in a static
      program);
    - headers: only the sysroot's ``include`` and gcc's own (stddef.h, stdarg.h);
    - link: the sysroot's crt files and libraries, libgcc, and ld's ``-nostdlib`` so
      neither the compiler's nor the linker's default folders (the toolchain's glibc)
      are searched. The toolchain's own link spec stays (emulation, endianness, the
      Cortex-A53 erratum fix), extended rather than replaced.
    """
    return """\
*self_spec:
+ %{!static:-static} %{!fpie:%{!fPIE:%{!fpic:%{!fPIC:-fno-pie}}}} -no-pie

%rename cpp_options embedbuild_cpp_options

*cpp_options:
-nostdinc -isystem %R/include -isystem include%s %(embedbuild_cpp_options)

%rename cc1 embedbuild_cc1

*cc1:
%(embedbuild_cc1) -nostdinc -isystem %R/include -isystem include%s

*link_libgcc:
-L%R/lib -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
%R/lib/crt1.o %R/lib/crti.o crtbeginT.o%s

*endfile:
crtend.o%s %R/lib/crtn.o

%rename link embedbuild_link

*link:
%(embedbuild_link) -nostdlib

"""


def libc_flags(sysroot: Path) -> str:
    """The compiler arguments of a build against the libc staged in ``sysroot``."""
    return f"--sysroot={sysroot} -specs={sysroot / SPECS}"


def libc_cc(tc: Toolchain, sysroot: Path) -> str:
    """The C compiler command of a build against the libc staged in ``sysroot``."""
    return f"{tc.cc} {libc_flags(sysroot)}"
