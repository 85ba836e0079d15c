"""A/B slots without a board: the layout checked at load, U-Boot's environment as bytes,
the boot script's reading of BOOT_ORDER and the counters, the commands that store it,
the files a system that marks its slot good gets. The script itself runs on U-Boot in
tests/test_ab_qemu.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from conftest import run_main

from embedbuild import bootcmd, ubootenv
from embedbuild.errors import BoardError
from embedbuild.load import load_board
from embedbuild.model.board import SLOTS
from embedbuild.rig.update import UpdateError, refuse_running
from embedbuild.rootfs.generated import render_init
from embedbuild.rootfs.markgood import fw_env_config, mark_good_entries, render_mark_good
from embedbuild.slots import AbState, counter, describe, image_size


def test_the_twin_declares_two_slots_and_its_environment():
    board = load_board("qemu-arm-virt")
    flash = board.flash
    assert flash.ab.a == "firmware-a" and flash.ab.b == "firmware-b" and flash.ab.confirmed
    assert flash.env.partition == "u-boot-env" and flash.env.size == flash.env.sector == 0x40000
    a, b = flash.partition("firmware-a"), flash.partition("firmware-b")
    # Both slots where Debian's U-Boot sees the bank: its first 32 MiB.
    assert a.end <= b.offset and b.end <= 0x2000000
    assert ubootenv.location(board) == (0, flash.env)


def test_the_access_point_has_the_stock_split_and_is_not_confirmed():
    board = load_board("ap-ac-lite")
    flash = board.flash
    layout = {p.name: (p.offset, p.size) for p in flash.partitions}
    assert layout["kernel0"] == (0x70000, 0x790000) and layout["kernel1"] == (0x800000, 0x790000)
    assert layout["kernel1"][0] + layout["kernel1"][1] == layout["bs"][0]
    assert flash.ab.a == "kernel0" and not flash.ab.confirmed
    # Its environment stays read-only for Linux until a unit has run the A/B boot.
    assert bootcmd.mtdparts(board) is None


def test_mtdparts_lists_the_layout_with_the_environment_writable():
    board = load_board("qemu-arm-virt")
    assert bootcmd.mtdparts(board) == (
        "mtdparts=0.flash:256k@64m(u-boot-env),16128k@65792k(firmware-a),16m@80m(firmware-b)")


# -- U-Boot's environment as bytes ------------------------------------------------------


def _env_image(variables: dict[str, str], size: int, big_endian: bool = False) -> bytes:
    """An environment as U-Boot's saveenv writes it: crc32 in the CPU's byte order, then
    name=value strings ended by NULs, an empty one, NULs to the end."""
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in variables.items()) + b"\0"
    data += bytes(size - 4 - len(data))
    return struct.pack(">I" if big_endian else "<I", zlib.crc32(data)) + data


def test_environment_is_read_as_u_boot_writes_it():
    blob = _env_image({"bootcmd": "run eb_ab", "BOOT_ORDER": "B A"}, 0x100)
    env = ubootenv.parse(blob)
    assert env.valid and env.variables == {"bootcmd": "run eb_ab", "BOOT_ORDER": "B A"}
    # mkenvimage fills with 0xff: the crc covers the filler, whatever it is.
    data = b"a=1\0\0" + b"\xff" * 59
    assert ubootenv.parse(struct.pack("<I", zlib.crc32(data)) + data).variables == {"a": "1"}
    # A big-endian CPU stores the crc big-endian: read the other way, it does not match.
    big = _env_image({"a": "1"}, 64, big_endian=True)
    assert ubootenv.parse(big, big_endian=True).variables == {"a": "1"}
    assert not ubootenv.parse(big).valid


def test_a_damaged_or_erased_environment_is_not_valid():
    blob = bytearray(_env_image({"BOOT_ORDER": "A B"}, 64))
    blob[10] ^= 1
    env = ubootenv.parse(bytes(blob))
    assert not env.valid and not env.erased and env.variables == {}
    assert ubootenv.parse(b"\xff" * 64).erased


def test_an_environment_too_short_is_refused():
    with pytest.raises(ubootenv.EnvError, match="an environment of 4 bytes holds nothing"):
        ubootenv.parse(b"\0" * 4)


def test_the_environment_in_a_flash_file(tmp_path: Path):
    board = load_board("qemu-arm-virt")
    flash = tmp_path / "flash.img"
    flash.write_bytes(b"\xff" * 0x80000)
    assert ubootenv.read_flash(board, flash).erased
    env = {"bootcmd": "run eb_ab", "BOOT_ORDER": "A B", "BOOT_A_LEFT": "2"}
    flash.write_bytes(_env_image(env, 0x40000) + b"\xff" * 0x40000)
    assert ubootenv.read_flash(board, flash).variables == env
    flash.write_bytes(b"\xff" * 0x100)
    with pytest.raises(ubootenv.EnvError, match="ends before the environment"):
        ubootenv.read_flash(board, flash)


# -- the state as the script reads it ----------------------------------------------------


@pytest.mark.parametrize(("value", "tries"), [
    ("3", 3), ("0", 0), ("a", 10), ("0x2", 0), (None, 0), ("", 0), ("zz", 0), ("-1", 0),
])
def test_counters_are_read_as_hexadecimal_like_the_script(value, tries):
    # test 0x${BOOT_A_LEFT} -gt 0: setexpr writes "a" for ten; "0x2" would read 0x0x2.
    assert counter(value) == tries


@pytest.mark.parametrize(("order", "effective"), [
    ("A B", ["A", "B"]), ("B A", ["B", "A"]), ("B", ["B", "A"]), ("A A", ["A", "B"]),
    ("C D", ["A", "B"]), ("", ["A", "B"]), ("b a", ["A", "B"]),
])
def test_a_bad_boot_order_still_tries_every_slot(order, effective):
    assert AbState(order, {"A": "3", "B": "3"}).effective_order() == effective


def test_the_next_slot_and_the_slot_an_update_writes():
    ab = load_board("qemu-arm-virt").flash.ab
    fresh = AbState.of({})
    assert not fresh.configured and fresh.target("auto") == "A"
    assert fresh.after_update("A", ab) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3",
                                          "BOOT_PENDING": "A", "BOOT_B_LEFT": "0"}
    running_a = AbState.of({"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"})
    assert running_a.next_slot() == "A" and running_a.target("auto") == "B"
    assert running_a.after_update("B", ab) == {"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3",
                                               "BOOT_PENDING": "B", "BOOT_A_LEFT": "3"}
    spent = AbState.of({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"})
    assert spent.next_slot() is None and spent.target("auto") == "A"
    assert AbState("A B", {"A": "0", "B": "0"}).target("auto") == "B"
    fell_back = AbState.of({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"})
    assert fell_back.next_slot() == "A" and fell_back.target("auto") == "B"


def test_slots_describes_each_slot_and_the_order():
    board = load_board("qemu-arm-virt")
    lines = describe(board, {"BOOT_ORDER": "C", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"},
                     {"A": "FIT, 5,112,334 bytes", "B": "erased"})
    assert lines[0] == "slot A  firmware-a   FIT, 5,112,334 bytes; tries left 2 of 3  <- boots next"
    assert lines[1] == "slot B  firmware-b   erased; tries left 0 of 3"
    assert "tries left 0 of 3" in lines[1] and "boots next" not in lines[1]
    assert lines[2] == "BOOT_ORDER 'C' (tried as 'A B')"
    assert "no update has run" in describe(board, {"bootcmd": "run distro_bootcmd"}, {})[-1]


def test_what_a_slot_holds_from_its_first_bytes():
    fit = struct.pack(">II", 0xD00DFEED, 5_000_000) + bytes(56)
    assert image_size(fit) == ("FIT", 5_000_000)
    uimage = struct.pack(">IIII", 0x27051956, 0, 0, 3_000_000) + bytes(48)
    assert image_size(uimage) == ("uImage", 3_000_064)
    assert image_size(b"\xff" * 64) == ("erased", 0)
    assert image_size(b"\x00" * 64) == ("no image", 0)


# -- the script as U-Boot commands -------------------------------------------------------


def test_the_script_is_stored_in_lines_u_boot_reads_whole():
    board = load_board("qemu-arm-virt")
    cmds = bootcmd.ab_commands(board, {"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3"})
    assert cmds[-1] == "saveenv"
    assert all(len(c) < bootcmd.LINE_MAX for c in cmds)
    script = bootcmd.ab_script(board)
    assert script["bootcmd"] == "run eb_ab"
    # The hex trap: every counter is compared as 0x${...}; never bare.
    for s in SLOTS:
        assert f"0x${{BOOT_{s}_LEFT}} -gt 0" in script["eb_ab_pick"]
        assert f"setexpr BOOT_{s}_LEFT ${{BOOT_{s}_LEFT}} - 1" in script["eb_ab_pick"]
        boot = script[f"eb_ab_boot_{s}"]
        # The decremented counter is saved before the kernel may hang or crash.
        assert boot.index("saveenv") < boot.index("bootm")
        assert f"embedbuild.slot={s} panic=1 mtdparts=" in boot
    assert "bootm 0x4040000#conf-1" in script["eb_ab_boot_A"]
    assert "bootm 0x5000000#conf-1" in script["eb_ab_boot_B"]
    # Every slot is appended after BOOT_ORDER's own words; what is not set at all (U-Boot's
    # default environment) starts as a first boot.
    assert "for s in ${BOOT_ORDER} A B; do" in script["eb_ab_order"]
    assert 'env exists BOOT_ORDER || setenv BOOT_ORDER "A B";' in script["eb_ab_order"]
    assert "env exists BOOT_B_LEFT || setenv BOOT_B_LEFT 3;" in script["eb_ab_order"]
    # A slot is only tried when its image is intact.
    assert "-gt 0 && run eb_ab_check_A; then" in script["eb_ab_pick"]
    assert script["eb_ab_check_A"] == "iminfo 0x4040000"
    # Nothing booted: no image at all, the board's own boot; none left, both get their
    # tries again, saved, and the board resets.
    none = script["eb_ab_none"]
    assert "no slot holds an image; run eb_ab_clear; run distro_bootcmd;" in none
    assert "setenv BOOT_A_LEFT 3; setenv BOOT_B_LEFT 3;" in none
    assert none.endswith("saveenv; reset; fi")
    assert script["eb_ab"] == "run eb_ab_order; run eb_ab_pick; run eb_ab_none"


def test_the_default_environment_carries_the_whole_script():
    board = load_board("qemu-arm-virt")
    default = bootcmd.ab_default_bootcmd(board)
    assert default.startswith("setenv eb_ab_clear 'setenv eb_order;")
    assert default.endswith("; run eb_ab")
    # Inside single quotes: no value of the script may hold one.
    assert all("'" not in v for v in bootcmd.ab_script(board).values())


def test_a_command_line_u_boot_would_unquote_is_refused(boards: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('mem=127M fw_devlink=off"',
                                             'mem=127M fw_devlink=off x=$y"'))
    with pytest.raises(BoardError, match=r"'\$' cannot be in the command line of an A/B"):
        load_board(str(boards / "qemu-arm-virt"))


# -- the system that marks its slot good -------------------------------------------------


def test_a_healthy_slot_is_marked_good_with_fw_setenv():
    board = load_board("qemu-arm-virt")
    assert fw_env_config(board).splitlines()[-1] == "/dev/mtd0 0x0 0x40000 0x40000"
    script = render_mark_good(board)
    assert 'echo "BOOT_${slot}_LEFT=3"; [ "$pending" != "$slot" ] || echo "BOOT_PENDING="; }' \
        in script and "| fw_setenv -s -" in script
    assert "grep -q '^mtd0: .* \"u-boot-env\"$' /proc/mtd" in script
    assert "sh -c 'netstat -ltn | grep -q '\"'\"':22 '\"'\"''" in script
    assert ": > /dev/watchdog" in script and "exec watchdog -F -T 30 -t 5" in script
    names = [e.path for e in mark_good_entries(board)]
    assert names == ["etc/fw_env.config", "etc/embedbuild/mark-good"]
    init = render_init(board.system, board.name)
    assert init.index("/etc/embedbuild/mark-good arm") < init.index("supervise")
    assert '/etc/embedbuild/mark-good settle "$all_up" &' in init
    # A system without [health] runs none of it.
    plain = board.system.model_copy(update={"health": None})
    assert "mark-good" not in render_init(plain, board.name)



# -- the commands, refused before anything is built or powered ---------------------------


def _image(tmp_path: Path) -> Path:
    p = tmp_path / "image.itb"
    p.write_bytes(struct.pack(">II", 0xD00DFEED, 4096) + bytes(4088))
    return p


def test_update_refuses_a_board_whose_a_b_boot_is_not_confirmed(tmp_path: Path):
    r = run_main("update", "ap-ac-lite", "--serial", "/dev/null", "--server-ip", "10.0.0.1",
                 "--device-ip", "10.0.0.2", store=tmp_path / "s")
    assert r.code == 1 and "not confirmed on a real unit" in r.err
    assert "then set confirmed = true" in r.err
    r = run_main("update", "qemu-malta-be", "--qemu", store=tmp_path / "s")
    assert r.code == 1 and "board qemu-malta-be has no A/B slots" in r.err
    assert not (tmp_path / "s").exists()  # refused before anything was built


def test_update_dry_run_shows_every_command_of_one_slot(tmp_path: Path):
    image = _image(tmp_path)
    r = run_main("update", "qemu-arm-virt", "--dry-run", "--image", str(image),
                 store=tmp_path / "s")
    assert r.code == 1 and "give --slot A or B" in r.err
    r = run_main("update", "qemu-arm-virt", "--dry-run", "--slot", "B", "--image", str(image),
                 store=tmp_path / "s")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    # Only slot B's blocks are erased and written; then the environment.
    assert "erase 0x5000000 +0x1000000" in lines and "cp.b 0x40400000 0x5000000 0x1000" in lines
    assert not any(f" 0x4040000 {x}" in line or line.endswith(" 0x4040000") for line in lines
                   for x in ("+", "0x"))
    assert lines[-5:] == ["setenv BOOT_ORDER 'B A'", "setenv BOOT_B_LEFT '3'",
                          "setenv BOOT_PENDING 'B'", "setenv BOOT_A_LEFT '0'", "saveenv"]
    assert all(len(line) < bootcmd.LINE_MAX for line in lines if line.startswith("setenv"))


def test_the_slot_in_use_is_never_written():
    board = load_board("qemu-arm-virt")
    state = AbState.of({"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    with pytest.raises(UpdateError, match="slot A is the one that boots on qemu-arm-virt"):
        refuse_running(board, state.target("A"), state.in_use(), "that boots")
    refuse_running(board, state.target("auto"), state.in_use(), "that boots")
    with pytest.raises(UpdateError, match="slot B is the one that runs"):
        refuse_running(board, "B", "B", "that runs")
    # B written, not yet booted: A is the one to keep; auto writes B again.
    pending = AbState.of({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3",
                          "BOOT_PENDING": "B"})
    assert pending.in_use() == "A" and pending.target("auto") == "B"
    # B failed and U-Boot fell back to A: A is kept, auto writes B.
    failed = AbState.of({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0",
                         "BOOT_PENDING": "B"})
    assert failed.in_use() == "A" and failed.target("auto") == "B"


def test_slots_reads_a_flash_file(tmp_path: Path):
    r = run_main("slots", "qemu-arm-virt", "--flash-file", str(tmp_path / "none.img"),
                 store=tmp_path / "s")
    assert r.code == 1 and "no flash file of qemu-arm-virt" in r.err
    flash = tmp_path / "flash.img"
    flash.write_bytes(b"\xff" * 0x4000000)
    r = run_main("slots", "qemu-arm-virt", "--flash-file", str(flash), store=tmp_path / "s")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "U-Boot's environment is erased (never saved): U-Boot runs its default environment",
        "slot A  firmware-a   erased; tries left unset",
        "slot B  firmware-b   erased; tries left unset",
        "no A/B state in the environment: no update has run (U-Boot boots by its bootcmd: "
        "'(none)')"]


def test_the_cmake_toolchain_file_finds_only_the_sysroot(tmp_path: Path):
    from embedbuild.buildsys.cmake import toolchain_file
    from embedbuild.toolchain import Toolchain

    text = toolchain_file(Toolchain("arm-linux-gnueabihf-", load_board("qemu-arm-virt").arch),
                          tmp_path / "sysroot")
    assert "set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)" in text
    assert "set(CMAKE_SYSTEM_PROCESSOR arm)" in text
    assert f"set(CMAKE_FIND_ROOT_PATH {tmp_path / 'sysroot'})" in text
    assert "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)" in text



class _Printenv:
    """A U-Boot that only answers printenv, with these variables."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.text = "".join(f"{k}={v}\n" for k, v in variables.items())

    def check(self, command: str, timeout: float = 30):
        from embedbuild.rig.uboot import Result

        assert command == "printenv", command
        return Result(0, self.text + "\nEnvironment size: 100/262140 bytes", 0.0)


def test_through_u_boot_the_last_good_slot_is_never_written(tmp_path: Path):
    from embedbuild.rig.update import Update, UpdateReport, update_uboot

    board = load_board("qemu-arm-virt")
    # B was written and has not booted yet: A is the last proven good.
    uboot = _Printenv({"bootcmd": "run eb_ab", "BOOT_ORDER": "B A", "BOOT_A_LEFT": "3",
                       "BOOT_B_LEFT": "3", "BOOT_PENDING": "B"})
    with pytest.raises(UpdateError, match="slot A is the one U-Boot keeps to boot or fall "
                       "back to on qemu-arm-virt"):
        update_uboot(uboot, Update(board, _image(tmp_path), "A"), None, UpdateReport())
