"""What a system that marks its A/B slot good ([system.health]) gets in its image: the
fw_env.config that tells fw_printenv/fw_setenv where U-Boot's environment is (the
board's [flash.env], as Linux numbers the partitions), and the mark-good script /init
runs (init/mark-good.sh.j2)."""

from __future__ import annotations

import shlex
from pathlib import Path

from embedbuild import bootcmd
from embedbuild.cpio import Entry
from embedbuild.model.board import Board
from embedbuild.rootfs.generated import MARK_GOOD

TEMPLATE = Path(__file__).parent.parent / "init" / "mark-good.sh.j2"
SCRIPT = MARK_GOOD.lstrip("/")
FW_ENV_CONFIG = "etc/fw_env.config"
# The watchdog once the slot is good: petted every 5 s, the board reset after 30 s
# without it.
PET_TIMEOUT, PET_PERIOD = 30, 5


def env_device(board: Board) -> str:
    """The MTD device (mtdN) Linux gives U-Boot's environment partition: partitions are
    numbered in the order the layout lists them (mtdparts= or the device tree)."""
    flash = board.flash
    assert flash is not None and flash.env is not None
    return f"mtd{[p.name for p in flash.partitions].index(flash.env.partition)}"


def fw_env_config(board: Board) -> str:
    """/etc/fw_env.config: device, offset, size and sector of the environment."""
    flash = board.flash
    assert flash is not None and flash.env is not None
    env = flash.env
    return (f"# U-Boot's environment on {board.name}: device, offset, size, sector "
            "(board.toml [flash.env])\n"
            f"/dev/{env_device(board)} 0x{env.offset:x} 0x{env.size:x} 0x{env.sector:x}\n")


def render_mark_good(board: Board) -> str:
    """The mark-good script of the board's system."""
    import jinja2

    system, flash = board.system, board.flash
    assert system is not None and system.health is not None
    assert flash is not None and flash.ab is not None and flash.env is not None
    env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["shquote"] = shlex.quote
    health = system.health
    return env.from_string(TEMPLATE.read_text()).render(
        board=board.name, slot_arg=bootcmd.SLOT_ARG, watchdog=health.watchdog,
        check=health.check, within=health.within, device=env_device(board),
        partition=flash.env.partition, tries=flash.ab.tries, pending_var=bootcmd.BOOT_PENDING,
        watchdog_timeout=PET_TIMEOUT, watchdog_period=PET_PERIOD)


def mark_good_entries(board: Board) -> list[Entry]:
    """The files of a system with [system.health] (none for others)."""
    if board.system is None or board.system.health is None:
        return []
    return [Entry(FW_ENV_CONFIG, "file", 0o644, data=fw_env_config(board).encode()),
            Entry(SCRIPT, "file", 0o755, data=render_mark_good(board).encode())]
