"""Boot sources: where a target's kernel comes from, as U-Boot is to be told.

The U-Boot strategy (rig/strategy.py) asks a boot source, in this order:

1. ``check(target)``: refuse, before any power is switched, what cannot boot (the
   board lacks a flash layout, an image is not signed as the board requires...);
   also called before the build, with ``target.result`` None: refuse then what
   needs no build;
2. ``stage(target, folder)``: lay out what the TFTP server serves (by default the
   result's files);
3. ``machine(target, machine)``: what the QEMU model needs attached (a disk, a flash
   file, a control DTB); unchanged by default;
4. ``commands(target)``: what is typed at the U-Boot prompt once its network is set
   up, the last command booting; or None: no key is pressed and U-Boot's own boot
   command boots (distro boot from a card, a boot script in the environment).

Then the strategy follows the kernel to the ready line, whatever the source.

A new way to boot is one new class here (or in its own module) and its test, e.g.::

    @boot_source
    class PxeBoot(BootSource):
        name = "pxe"

        def stage(self, target, folder):
            super().stage(target, folder)
            ...  # write folder/pxelinux.cfg/01-<mac> naming the kernel and initrd

        def commands(self, target):
            return ["setenv bootfile pxelinux.cfg/", "pxe get", "pxe boot"]

Registered sources are chosen by name: ``embedbuild boot BOARD --boot pxe``, the
pytest plugin's ``--eb-boot pxe``. A source in a module of its own registers when
that module is imported: import it at the end of this one.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from embedbuild import bootcmd
from embedbuild.errors import EmbedbuildError
from embedbuild.manifest import Manifest
from embedbuild.rig.resource import QemuMachine

if TYPE_CHECKING:
    from embedbuild.rig.target import Target

# The copy of the SD-card image a QEMU board boots from, in the target's folder.
SD_FILE = "sd.img"


class BootSource(ABC):
    """How U-Boot boots a target (see the module's docstring for the order of calls)."""

    name: ClassVar[str]

    def check(self, target: Target) -> None:  # noqa: B027 (most sources refuse nothing)
        """Refuse what cannot boot, before anything is powered or served (and before
        the build, when ``target.result`` is None)."""

    def stage(self, target: Target, folder: Path) -> None:
        """Put what the TFTP server serves into ``folder``: the result's files (the
        tests fetch them back, whatever booted)."""
        stage_files(target.result, folder, [])

    def machine(self, target: Target, machine: QemuMachine) -> QemuMachine:
        """The QEMU model as this source needs it."""
        return machine

    @abstractmethod
    def commands(self, target: Target) -> list[str] | None:
        """The commands typed at the prompt after the network setup, the last one
        booting; None: press no key, U-Boot boots by itself."""


BOOT_SOURCES: dict[str, type[BootSource]] = {}


def boot_source(cls: type[BootSource]) -> type[BootSource]:
    """Register a boot source under its name (once)."""
    if cls.name in BOOT_SOURCES:
        raise RuntimeError(f"boot source {cls.name!r} registered twice")
    BOOT_SOURCES[cls.name] = cls
    return cls


def stage_files(result: Path | None, dest: Path, extra: Iterable[Path]) -> Path:
    """The folder served over TFTP: the result's files plus any extra ones."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(result.iterdir()) if result is not None else []
    for p in [*found, *extra]:
        if p.is_file() and not p.name.startswith("."):
            shutil.copyfile(p, dest / p.name)
    return dest


def _manifest(target: Target) -> Manifest:
    if target.result is None:
        raise EmbedbuildError("nothing built to boot", hint="build the board first")
    return Manifest.read(target.result)


@boot_source
class TftpBoot(BootSource):
    """Kernel, DTB and initramfs loaded over TFTP into RAM and booted: the manifest's
    commands, or with ``initrd`` (an extra initramfs file) in place of the built one.

    Args:
        initrd: an initramfs to load instead of the result's.
    """

    name = "tftp"

    def __init__(self, initrd: Path | None = None) -> None:
        self.initrd = initrd

    def check(self, target: Target) -> None:
        if self.initrd is not None and not self.initrd.is_file():
            raise EmbedbuildError(f"file to serve not found: {self.initrd}",
                                  hint="give an existing file")

    def stage(self, target: Target, folder: Path) -> None:
        stage_files(target.result, folder, [self.initrd] if self.initrd else [])

    def commands(self, target: Target) -> list[str]:
        manifest = _manifest(target)
        if self.initrd is None:
            return manifest.uboot.tftpboot
        board = target.require_board()
        appended = board.kernel.uimage is not None and board.kernel.uimage.append_dtb
        dtb = (next(iter(manifest.with_role("dtb")), None)
               if board.uboot.fdt_addr is not None and not appended else None)
        return bootcmd.tftp_boot(board, manifest.kernel.file, self.initrd.name, dtb)


@boot_source
class FlashBoot(BootSource):
    """The image in the board's firmware partition, booted from flash (on QEMU: the
    bench folder's flash file, where `embedbuild flash` wrote it)."""

    name = "flash"

    def check(self, target: Target) -> None:
        board = target.require_board()
        if board.firmware_partition() is None or (
                target.result is not None and _manifest(target).flash_image is None):
            raise EmbedbuildError(f"board {board.name} has no flash image to boot from",
                                  hint="give the board [flash] and a uImage or [kernel.fit]")

    def commands(self, target: Target) -> list[str]:
        self.check(target)
        board = target.require_board()
        manifest = _manifest(target)
        part = board.firmware_partition()
        assert part is not None and manifest.flash_image is not None
        return bootcmd.flash_boot(board, part, manifest.files[manifest.flash_image].size)


@boot_source
class AutoBoot(BootSource):
    """No key pressed: U-Boot's own boot command boots, as on a deployed board (a bootcmd
    that `flash --set-bootcmd` saved, or the firmware's default)."""

    name = "autoboot"

    def commands(self, target: Target) -> None:
        return None


@boot_source
class SdBoot(AutoBoot):
    """The SD-card image attached to the QEMU model (a copy: the store's is read-only and
    the board may write to its card); no key pressed, U-Boot's distro boot finds
    extlinux.conf on it. On a real board the card is written with `write-sd` instead."""

    name = "sd"

    def check(self, target: Target) -> None:
        board = target.require_board()
        if target.bench.qemu is None:
            raise EmbedbuildError("--from-sd boots the board's QEMU model from its SD-card "
                                  "image", hint="on the real board: `embedbuild write-sd "
                                  "BOARD DEVICE`, put the card in and power it on")
        if board.sdcard is None or (target.result is not None
                                    and _manifest(target).sdcard is None):
            raise EmbedbuildError(f"board {board.name} has no [sdcard]: it builds no SD-card "
                                  "image", hint="boot it over TFTP, or give it an [sdcard] "
                                  "table (see README.md)")

    def machine(self, target: Target, machine: QemuMachine) -> QemuMachine:
        sd = _manifest(target).sdcard
        assert sd is not None and target.result is not None
        target.workdir.mkdir(parents=True, exist_ok=True)
        copy = target.workdir / SD_FILE
        shutil.copyfile(target.result / sd.image, copy)
        copy.chmod(0o644)
        # From the card, U-Boot runs its default environment, as a board fresh from the
        # factory: a bootcmd that `flash --set-bootcmd` saved in the persistent flash
        # would boot the flash instead. A new erased flash in the target's folder gives that.
        return machine.model_copy(update={"disk": copy, "flash": None})


@boot_source
class AbBoot(AutoBoot):
    """The A/B slot U-Boot's boot script picks (`embedbuild update` stored it): no key
    pressed; the script counts the slot's try off and boots it (on QEMU: the flash in the
    bench folder, where `embedbuild update` wrote)."""

    name = "ab"

    def check(self, target: Target) -> None:
        board = target.require_board()
        if board.flash is None or board.flash.ab is None:
            raise EmbedbuildError(f"board {board.name} has no A/B slots ([flash.ab])",
                                  hint="boot it another way (--boot tftp, flash)")
