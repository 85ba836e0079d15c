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
   command boots (distro boot from a card, a boot script in the environment); each
   command but the last is run through ``run(uboot, command, timeout)``, which by
   default fails on a non-zero status or any U-Boot error string.

Then the strategy follows the kernel to the ready line, whatever the source.

A new way to boot is one new class here (or in its own module) and its test: see
PxeBoot at the end, which writes a configuration file in ``stage`` and types ``pxe get;
pxe boot``.

Registered sources are chosen by name: ``embedbuild boot BOARD --boot pxe``, the
pytest plugin's ``--eb-boot pxe``. A source in a module of its own registers when
that module is imported: rig/sources.py imports each (this module cannot: the source
imports it), and the command line and the plugin read the registry there.
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
from embedbuild.pxe import config_name, result_entry
from embedbuild.rig.resource import QemuMachine
from embedbuild.rig.uboot import BootError, UBootDriver

if TYPE_CHECKING:
    from embedbuild.model.board import Board
    from embedbuild.rig.target import Target

# The copy of the SD-card image a QEMU board boots from, in the target's folder.
SD_FILE = "sd.img"


class BootSource(ABC):
    """How U-Boot boots a target (see the module's docstring for the order of calls)."""

    name: ClassVar[str]

    def check(self, target: Target) -> None:  # noqa: B027 (most sources refuse nothing)
        """Refuse what cannot boot, before anything is powered or served (and before
        the build, when ``target.result`` is None). A source that serves a board with
        [signing] an image to boot verifies it first (vboot.gate.require_signed against
        the result's keyring, as rig/signedfit.py does) or refuses the board."""

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

    def run(self, uboot: UBootDriver, command: str, timeout: float) -> None:
        """Run one of the commands before the boot command: it must succeed, and print
        none of U-Boot's error strings."""
        uboot.check(command, timeout)


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
        board = target.require_board()
        if board.signing is not None:
            raise EmbedbuildError(
                f"board {board.name} requires signed images ([signing]): a raw kernel and "
                "initramfs are not served to it (its U-Boot would refuse them too)",
                hint="boot its signed FIT: --boot signed-fit (the default for it)")
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


def default_source(board: Board) -> str:
    """The boot source used when none is named: a board that requires signed images
    boots its signed FIT, any other the TFTP one."""
    return "signed-fit" if board.signing is not None else TftpBoot.name


# The MAC QEMU gives a board's first NIC when none is asked for.
QEMU_DEFAULT_MAC = "52:54:00:12:34:56"
PXE_GET = "pxe get"


@boot_source
class PxeBoot(BootSource):
    """U-Boot finds what to boot the way a deployed device does: `pxe get` asks the TFTP
    server for the device's configuration file (embedbuild/pxe.py: ``pxelinux.cfg/01-<its
    MAC>``, then its IP address in hex, then ``default``) and `pxe boot` loads the kernel,
    initramfs and DTB that file names and boots them with its ``append`` line. The bench
    serves one configuration, for the board's MAC (its QEMU model's) or, for a real board
    whose MAC it does not know, as ``default``; a fleet (`embedbuild serve`) one per device.

    Args:
        dhcp: take the address (and the server's) from a DHCP server first (`dhcp`, with
            U-Boot's autoload off), as a device on a fleet's LAN does; else the bench's
            static addresses.
        append: kernel arguments after the board's command line (the bench's own
            configuration; a fleet's server writes its devices' own).
    """

    name = "pxe"

    def __init__(self, dhcp: bool = False, append: str = "") -> None:
        self.dhcp = dhcp
        self.append = append

    def mac(self, target: Target) -> str | None:
        """The MAC the board asks with (its QEMU model's), None for a real board: its
        configuration is then served as ``default``."""
        machine = target.bench.qemu
        if machine is None:
            return None
        return machine.mac or QEMU_DEFAULT_MAC

    def check(self, target: Target) -> None:
        board = target.require_board()
        if board.signing is not None:
            # A pxelinux file sets the kernel command line from the network, unsigned.
            raise EmbedbuildError(f"board {board.name} boots signed images only: PXE would "
                                  "take its kernel command line from the network, unsigned",
                                  hint="boot it with --boot signed-fit (the default)")
        if target.result is not None and not Manifest.read(target.result).kernel:
            raise EmbedbuildError("the result has no kernel to boot",
                                  hint="build the board again (embedbuild build BOARD)")

    def stage(self, target: Target, folder: Path) -> None:
        """The result's files and the board's configuration file beside them."""
        stage_files(target.result, folder, [])
        if target.result is None:
            return
        board = target.require_board()
        entry = result_entry(board, Manifest.read(target.result), "", self.append,
                             comment=f"{board.name}: written by embedbuild boot --boot pxe")
        path = folder / config_name(self.mac(target))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry.render())

    def machine(self, target: Target, machine: QemuMachine) -> QemuMachine:
        """The QEMU model with the MAC its configuration file is named after."""
        return machine.model_copy(update={"mac": self.mac(target)})

    def commands(self, target: Target) -> list[str]:
        u = target.require_board().uboot
        # Where `pxe boot` loads things: the board's own addresses, which its RAM layout
        # was checked for (a distro U-Boot has its own; a vendor U-Boot may have none).
        cmds = [f"setenv kernel_addr_r 0x{u.kernel_addr:x}"]
        if u.ramdisk_addr is not None:
            cmds.append(f"setenv ramdisk_addr_r 0x{u.ramdisk_addr:x}")
        if u.fdt_addr is not None:
            cmds.append(f"setenv fdt_addr_r 0x{u.fdt_addr:x}")
        # The configuration file goes to U-Boot's pxefile_addr_r; one without it gets the
        # kernel's address: `pxe boot` reads the file before it loads anything there.
        cmds.append(f'test -n "${{pxefile_addr_r}}" || setenv pxefile_addr_r 0x{u.kernel_addr:x}')
        if self.dhcp:
            cmds += ["setenv autoload no", "dhcp"]
        return [*cmds, PXE_GET, "pxe boot"]

    def run(self, uboot: UBootDriver, command: str, timeout: float) -> None:
        """`pxe get` prints a TFTP error for every name it tries before the one that
        exists: only its status counts."""
        if command != PXE_GET:
            super().run(uboot, command, timeout)
            return
        r = uboot.run(command, timeout)
        if r.status != 0:
            raise BootError("U-Boot: `pxe get` found no configuration for this device: the "
                            "server has no pxelinux.cfg/01-<its MAC>, none for its IP address "
                            "and no default", log_tail=uboot.console.tail())
