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
# musl has no <sys/queue.h> (a BSD header glibc carries): the list macros libubootenv
# uses come from a header of ours beside its sources.
QUEUE_INCLUDE = "#include <sys/queue.h>"
QUEUE_H = r"""/* The BSD list macros libubootenv uses: a list of elements that each point to
   the next and to the pointer that points to them (musl has no sys/queue.h). */
#ifndef EMBEDBUILD_SYS_QUEUE_H
#define EMBEDBUILD_SYS_QUEUE_H
#define LIST_HEAD(name, type) struct name { struct type *lh_first; }
#define LIST_ENTRY(type) struct { struct type *le_next; struct type **le_prev; }
#define LIST_INIT(head) ((head)->lh_first = NULL)
#define LIST_EMPTY(head) ((head)->lh_first == NULL)
#define LIST_FIRST(head) ((head)->lh_first)
#define LIST_NEXT(elm, field) ((elm)->field.le_next)
#define LIST_FOREACH(var, head, field) \
	for ((var) = LIST_FIRST(head); (var); (var) = LIST_NEXT(var, field))
#define LIST_INSERT_HEAD(head, elm, field) do { \
	if (((elm)->field.le_next = (head)->lh_first) != NULL) \
		(head)->lh_first->field.le_prev = &(elm)->field.le_next; \
	(head)->lh_first = (elm); \
	(elm)->field.le_prev = &(head)->lh_first; \
} while (0)
#define LIST_INSERT_AFTER(listelm, elm, field) do { \
	if (((elm)->field.le_next = (listelm)->field.le_next) != NULL) \
		(listelm)->field.le_next->field.le_prev = &(elm)->field.le_next; \
	(listelm)->field.le_next = (elm); \
	(elm)->field.le_prev = &(listelm)->field.le_next; \
} while (0)
#define LIST_INSERT_BEFORE(listelm, elm, field) do { \
	(elm)->field.le_prev = (listelm)->field.le_prev; \
	(elm)->field.le_next = (listelm); \
	*(listelm)->field.le_prev = (elm); \
	(listelm)->field.le_prev = &(elm)->field.le_next; \
} while (0)
#define LIST_REMOVE(elm, field) do { \
	if ((elm)->field.le_next != NULL) \
		(elm)->field.le_next->field.le_prev = (elm)->field.le_prev; \
	*(elm)->field.le_prev = (elm)->field.le_next; \
} while (0)
#endif
"""


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
        private = src / "src" / "uboot_private.h"
        text = private.read_text()
        if QUEUE_INCLUDE not in text:
            raise StepError(f"{self.name}: src/uboot_private.h no longer says {QUEUE_INCLUDE!r}",
                            hint="a new upstream version: check which list macros it needs")
        (src / "src" / "sys").mkdir()
        (src / "src" / "sys" / "queue.h").write_text(QUEUE_H)
        private.write_text(text.replace(QUEUE_INCLUDE, '#include "sys/queue.h"'))

    def install(self, ctx: Context, build: Path, dest: Path, target: Target) -> None:
        bindir = dest / "usr" / "bin"
        bindir.mkdir(parents=True)
        ctx.run.run([f"{target.toolchain.prefix}strip", "-o", bindir / "fw_printenv",
                     build / "src" / "fw_printenv"], what="strip fw_printenv")
        # One program: it sets variables when called as fw_setenv.
        os.symlink("fw_printenv", bindir / "fw_setenv")
