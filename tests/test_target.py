"""The bench as objects, without QEMU: resources, boot sources, power drivers, and the
one target driven by the U-Boot strategy against a fake U-Boot on a pty (power, prompt,
network, each command, the kernel, the ready line), with the steps and timeline it
reports. The real boots are in test_boot_uboot.py, test_flash_qemu.py, test_sd_boot.py
and test_remote_rig.py."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import ipaddress
import itertools
import os
import pkgutil
import time
from pathlib import Path

import pytest
from fakes import FakeDevice, FakeNoise, FakePower, FakeUBoot

from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.manifest import FileInfo, Manifest
from embedbuild.model.system import READY_LINE
from embedbuild.outputs.kernel import KernelInfo
from embedbuild.outputs.tftpboot import UBootInfo
from embedbuild.rig import bootsource
from embedbuild.rig.bench import Bench, BenchOptions, qemu_link
from embedbuild.rig.bootsource import (
    BOOT_SOURCES,
    AutoBoot,
    BootSource,
    FlashBoot,
    SdBoot,
    TftpBoot,
    boot_source,
)
from embedbuild.rig.power import CommandPowerDriver, PowerError
from embedbuild.rig.resource import CommandPower, LanLink, ManualPower, SerialLine
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import BootError

LINK = LanLink.parse("127.0.0.1", "127.0.0.2")
KERNEL = [(0.02, "Linux version 6.1.0 (fake)\n"), (0.05, "Run /init as init process\n"),
          (0.1, "embedbuild: system ready\n")]


# ---------------------------------------------------------------- resources


def test_a_lan_link_is_one_value():
    link = LanLink.parse("192.168.1.254", "192.168.1.20", "255.255.0.0")
    assert (link.server_ip, link.device_ip, link.netmask, link.prefix) == \
        ("192.168.1.254", "192.168.1.20", "255.255.0.0", 16)
    assert link.server == ipaddress.IPv4Interface("192.168.1.254/16")
    assert LanLink.parse("10.0.0.1", "10.0.0.2", "24") == LanLink.parse("10.0.0.1", "10.0.0.2")


@pytest.mark.parametrize("args, needle", [
    (("10.0.0.300", "10.0.0.2"), "--server-ip '10.0.0.300' is not an IPv4 address"),
    (("10.0.0.1", "board"), "--device-ip 'board' is not an IPv4 address"),
    (("10.0.0.1", "10.0.0.2", "255.0.255.0"), "--netmask '255.0.255.0' is not a netmask"),
    (("10.0.0.1", "10.0.1.2"), "are on different networks"),
    (("10.0.0.1", "10.0.0.1"), "is this machine's"),
])
def test_a_bad_link_is_refused_naming_the_option(args, needle):
    with pytest.raises(EmbedbuildError, match=needle):
        LanLink.parse(*args)


def test_the_qemu_lan_is_on_the_systems_own_subnet():
    link = qemu_link(load_board("qemu-arm-virt"))
    assert link.device_ip == "10.77.0.2" and link.server_ip == "10.77.0.1"
    assert LanLink.around(ipaddress.IPv4Interface("10.9.0.1/24")).server_ip == "10.9.0.2"


def test_bench_options_make_a_real_boards_resources():
    board = load_board("ap-ac-lite")
    bench = BenchOptions(serial="/dev/ttyUSB0", server_ip="192.168.1.254",
                         device_ip="192.168.1.20", power_timeout=30).bench(board)
    assert bench.real and bench.qemu is None
    assert bench.serial == SerialLine(port="/dev/ttyUSB0", baud=board.serial.baud,
                                      chunk=board.serial.write_chunk,
                                      delay=board.serial.write_delay)
    assert bench.link == LanLink.parse("192.168.1.254", "192.168.1.20")
    assert bench.power == ManualPower(timeout=30)
    relay = BenchOptions(serial="/dev/ttyUSB0", power_on="relay 1 on",
                         power_off="relay 1 off").bench(board)
    assert relay.power == CommandPower(on="relay 1 on", off="relay 1 off")
    with pytest.raises(EmbedbuildError, match="--power-off needs --power-on"):
        BenchOptions(serial="/dev/ttyUSB0", power_off="relay 1 off").bench(board)


def test_bench_options_make_a_qemu_models_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_BENCH", str(tmp_path))
    board = load_board("qemu-arm-virt")
    local = BenchOptions().bench(board, tmp_path / "flash.img")
    assert not local.real and local.serial.port is None
    assert local.qemu.flash == tmp_path / "flash.img" and local.qemu.console_link is None
    assert local.qemu.flash_size == board.flash.size
    remote = BenchOptions(serial="rfc2217://127.0.0.1:3001", qemu=True).bench(board)
    assert remote.serial.port == "rfc2217://127.0.0.1:3001"
    assert remote.qemu.console_link == tmp_path / "qemu-arm-virt" / "console"


# ---------------------------------------------------------------- boot sources


def _result(tmp_path: Path, board_name: str = "qemu-arm-virt") -> Path:
    """A result folder with a manifest as the build writes it (files are stand-ins)."""
    board = load_board(board_name)
    result = tmp_path / "result"
    result.mkdir()
    files = {}
    for name, role in (("zImage", "kernel"), ("initramfs.cpio.gz", "initramfs"),
                       ("image.itb", "flash")):
        (result / name).write_bytes(name.encode() * 100)
        files[name] = FileInfo(role=role, size=len(name) * 100, sha256="0" * 64)
    u = board.uboot
    Manifest(board=board.name, arch=board.arch.value, description="", outputs=["kernel"],
             files=files, kernel=KernelInfo(file="zImage", cmdline=board.kernel.cmdline),
             uboot=UBootInfo(prompt=u.prompt, kernel_addr=hex(u.kernel_addr),
                             ramdisk_addr=None, fdt_addr=None,
                             tftpboot=["tftpboot 0x40400000 zImage", "bootz 0x40400000"]),
             flash_image="image.itb").write(result)
    return result


def test_sources_are_registered_by_name_once():
    assert {"tftp", "flash", "sd", "autoboot"} <= set(BOOT_SOURCES)
    with pytest.raises(RuntimeError, match="registered twice"):
        boot_source(type("Again", (TftpBoot,), {"name": "tftp"}))


def test_each_source_says_what_u_boot_is_told(tmp_path):
    board = load_board("qemu-arm-virt")
    result = _result(tmp_path)
    target = Target(board, BenchOptions().bench(board), tmp_path / "w", result)
    assert TftpBoot().commands(target) == ["tftpboot 0x40400000 zImage", "bootz 0x40400000"]
    rd = tmp_path / "hello.cpio"
    rd.write_bytes(b"x")
    cmds = TftpBoot(rd).commands(target)
    assert "tftpboot 0x44000000 hello.cpio" in cmds and cmds[-1].startswith("bootz ")
    assert FlashBoot().commands(target)[-1] == "bootm 0x4040000#conf-1 0x4040000#conf-1 " \
        "0x40000000"
    assert AutoBoot().commands(target) is None and SdBoot().commands(target) is None
    with pytest.raises(EmbedbuildError, match="file to serve not found"):
        TftpBoot(tmp_path / "nope.cpio").check(target)
    folder = tmp_path / "served"
    TftpBoot(rd).stage(target, folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "hello.cpio", "image.itb", "initramfs.cpio.gz", "manifest.json", "zImage"]


def test_the_sd_card_is_for_the_qemu_model_and_a_board_that_has_one(tmp_path):
    board = load_board("qemu-arm-virt")
    real = Target(board, BenchOptions(serial="/dev/ttyUSB0").bench(board), tmp_path,
                  _result(tmp_path))
    with pytest.raises(EmbedbuildError, match="boots the board's QEMU model") as e:
        SdBoot().check(real)
    assert "write-sd" in e.value.hint
    qemu = Target(board, BenchOptions().bench(board), tmp_path, real.result)
    with pytest.raises(EmbedbuildError, match=r"has no \[sdcard\]: it builds no SD-card"):
        SdBoot().check(qemu)


def test_flash_boot_needs_a_flash_image(tmp_path):
    board = load_board("qemu-aarch64-virt")
    target = Target(board, BenchOptions().bench(board), tmp_path, _result(tmp_path))
    with pytest.raises(EmbedbuildError, match="has no flash image to boot from"):
        FlashBoot().check(target)


@pytest.mark.skipif(os.geteuid() != 0, reason="boot --qemu checks for root first")
@pytest.mark.parametrize("args, needle", [
    (["--from-flash", "--boot", "sd"], "one way to boot at a time, not flash and sd"),
    (["--from-flash", "--initrd", "x.cpio"], "--initrd goes with a TFTP boot, not --boot flash"),
    (["--power-on", "relay on"], "--power-on/--power-off switch a real board"),
    # Boot sources are checked when named (the parser imports none of them).
    (["--boot", "floppy"], "--boot floppy: no such boot source; choose one of"),
])
def test_the_command_line_refuses_a_boot_it_cannot_make(tmp_path, capsys, args, needle):
    from embedbuild.cli import main

    store = tmp_path / "store"
    try:
        code = main(["--store", str(store), "boot", "qemu-arm-virt", "--qemu", "--no-console",
                     *args])
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    err = capsys.readouterr().err
    assert code in (1, 2) and needle in err and "Traceback" not in err
    assert not store.exists()  # refused before building


# ---------------------------------------------------------------- power


def test_command_power_cycles_off_then_on(tmp_path):
    log = tmp_path / "relay.log"
    power = CommandPowerDriver(CommandPower(on=f"echo on >> {log}", off=f"echo off >> {log}"))
    power.cycle()
    assert log.read_text() == "off\non\n"


def test_a_failing_or_hanging_power_command_is_named(tmp_path):
    bad = CommandPowerDriver(CommandPower(on="echo relay not found >&2; exit 3"))
    with pytest.raises(PowerError, match="failed with status 3: relay not found"):
        bad.on()
    t0 = time.monotonic()
    slow = CommandPowerDriver(CommandPower(on="sleep 30", timeout=0.5))
    with pytest.raises(PowerError, match=r"did not finish within [01] s"):
        slow.on()
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------- the target, on a fake


class FakeLoads(BootSource):
    """A source typing two loads and a boot command."""

    name = "fake-loads"

    def commands(self, target) -> list[str]:
        return ["tftpboot 0x40400000 zImage", "setenv bootargs console=ttyAMA0",
                "tftpboot 0x44000000 rd", "bootz 0x40400000 0x44000000"]


def _fake_target(tmp_path: Path, dev: FakeDevice, power: ManualPower | None = None,
                 patience: float | None = None) -> Target:
    board = load_board("qemu-arm-virt")
    bench = Bench(SerialLine(port=dev.port), LINK, power or ManualPower(), tftp_port=0)
    target = Target(board, bench, tmp_path, None)
    target.power = FakePower(dev, patience)
    return target


def test_the_strategy_boots_through_a_source_and_reports_each_stage(tmp_path):
    seen = []
    with FakeUBoot(autoboot=2, tick=0.2, files={"zImage": 3_000_000, "rd": 2_000_000},
                   kernel=KERNEL) as dev, _fake_target(tmp_path, dev) as target:
        target.steps.subscribe(lambda event, phase: seen.append((event.name, phase)))
        report = target.boot(FakeLoads(), READY_LINE, timeout=10)
        assert dev.interrupted and dev.env["serverip"] == "127.0.0.1"
        assert dev.env["ipaddr"] == "127.0.0.2" and dev.env["netmask"] == "255.255.255.0"
        assert dev.env["bootargs"] == "console=ttyAMA0"
    names = [e.name for e in report.timeline]
    assert names == ["power on", "power on to ready", "power on to U-Boot prompt",
                     "U-Boot network setup", "tftp zImage", "U-Boot setenv bootargs",
                     "tftp rd", "boot command", "kernel to /init", "init to ready"]
    assert [n for n, _ in report.stages][-1] == "power on to ready"
    stages = report.timeline
    for a, b in itertools.pairwise(stages[2:]):  # one after the other, no gap
        assert a.end <= b.start < a.end + 0.05
    total = dict(report.stages)["power on to ready"]
    assert total == pytest.approx(stages[-1].end - stages[0].start, abs=0.01)
    # Every U-Boot command was a step too, started and stopped, inside its stage.
    runs = [e for e in target.steps.events if e.name == "U-Boot run"]
    assert [e.fields["command"] for e in runs][-3:] == FakeLoads().commands(None)[:-1]
    assert seen.count(("U-Boot run", "start")) == seen.count(("U-Boot run", "stop")) == len(runs)
    assert all(e.depth > 0 for e in runs)
    data = (tmp_path / "boot.json").read_text()
    assert '"name": "tftp zImage"' in data


def test_a_kernel_that_shows_only_warnings_ends_at_the_inits_first_line(tmp_path):
    """loglevel=5 (or quiet) hides the kernel's "Run /init": /init's own first line ends
    the kernel's stage, and a panic on such a console still fails at once."""
    quiet = [(0.2, "embedbuild: init at 0.41\n"),
             (0.3, "embedbuild: system ready\n")]
    with FakeUBoot(kernel=quiet, files={"zImage": 100, "rd": 100}) as dev, \
            _fake_target(tmp_path / "a", dev) as target:
        stages = {e.name: e for e in target.boot(FakeLoads(), READY_LINE, timeout=10).timeline}
    kernel, init = stages["kernel to /init"], stages["init to ready"]
    assert kernel.end - kernel.start == pytest.approx(0.2, abs=0.1)
    assert init.end - init.start == pytest.approx(0.3, abs=0.1)
    # An init of another's prints neither line: its ready line ends the kernel's stage.
    foreign = [(0.2, "my-init: up\n")]
    with FakeUBoot(kernel=foreign, files={"zImage": 100, "rd": 100}) as dev, \
            _fake_target(tmp_path / "c", dev) as target:
        stages = {e.name: e for e in target.boot(FakeLoads(), "my-init: up", timeout=10).timeline}
    kernel, init = stages["kernel to /init"], stages["init to ready"]
    assert kernel.end - kernel.start == pytest.approx(0.2, abs=0.1)
    assert init.end - init.start == pytest.approx(0, abs=0.05)
    panic = [(0.05, "Kernel panic - not syncing: Attempted to kill init!\n")]
    with FakeUBoot(kernel=panic, files={"zImage": 100, "rd": 100}) as dev, \
            _fake_target(tmp_path / "b", dev) as target, \
            pytest.raises(BootError, match="Kernel panic"):
        target.boot(FakeLoads(), READY_LINE, timeout=30)


def test_a_source_that_presses_no_key_lets_u_boot_boot(tmp_path):
    with FakeUBoot(autoboot=1, tick=0.2, kernel=KERNEL) as dev, \
            _fake_target(tmp_path, dev) as target:
        report = target.boot(AutoBoot(), READY_LINE, timeout=10)
        assert not dev.interrupted and dev.booted
    assert "power on to kernel (autoboot)" in dict(report.stages)
    assert "U-Boot network setup" not in dict(report.stages)


def test_a_panic_fails_at_once_and_everything_is_stopped(tmp_path):
    panic = [(0.02, "Linux version 6.1.0 (fake)\n"),
             (0.05, "Kernel panic - not syncing: VFS: Unable to mount root fs\n")]
    with FakeUBoot(kernel=panic, files={"zImage": 100, "rd": 100}) as dev:
        target = _fake_target(tmp_path, dev)
        t0 = time.monotonic()
        with target, pytest.raises(BootError, match="Kernel panic - not syncing"):
            target.boot(FakeLoads(), READY_LINE, timeout=30)
        assert time.monotonic() - t0 < 10
        assert target.console.closed
        failed = [e for e in target.steps.events if e.error]
        assert failed and failed[0].name == "kernel to /init"


def test_u_boot_errors_name_the_command(tmp_path):
    with FakeUBoot(files={}) as dev, _fake_target(tmp_path, dev) as target, \
            pytest.raises(BootError, match="`tftpboot 0x40400000 zImage` failed: TFTP error"):
        target.boot(FakeLoads(), READY_LINE, timeout=10)


def test_a_person_who_never_powers_on_hears_what_arrived(tmp_path):
    """The wait for a person ends at its deadline and says what the line showed."""
    with FakeDevice() as quiet, _fake_target(tmp_path / "a", quiet, patience=1.0) as target:
        t0 = time.monotonic()
        with pytest.raises(BootError, match=r"no U-Boot on .* after 1 s: nothing arrived"):
            target.boot(FakeLoads(), READY_LINE, timeout=10)
        assert time.monotonic() - t0 < 5
        assert "power on" not in [e.name for e in target.steps.events]  # a person's moment
    with FakeNoise() as noise, _fake_target(tmp_path / "b", noise, patience=1.0) as target, \
            pytest.raises(BootError, match="the line speed is probably wrong"):
        target.boot(FakeLoads(), READY_LINE, timeout=10)


def test_a_bare_serial_line_only_opens_a_console(tmp_path):
    with FakeDevice() as dev:
        bench = Bench(SerialLine(port=dev.port), None, ManualPower())
        with Target(None, bench, tmp_path) as target:
            target.console_log = None
            assert not target.open_console().closed
            with pytest.raises(EmbedbuildError, match="no board"):
                target.boot(TftpBoot())


# ---------------------------------------------------------------- structure


def _rig_functions():
    import embedbuild.rig as rig

    for m in pkgutil.iter_modules(rig.__path__):
        mod = importlib.import_module(f"embedbuild.rig.{m.name}")
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{m.name}.{name}", obj
            elif inspect.isclass(obj):
                for meth, fn in vars(obj).items():
                    generated = meth == "__init__" and dataclasses.is_dataclass(obj)
                    if inspect.isfunction(fn) and not generated and \
                            (not meth.startswith("_") or meth == "__init__"):
                        yield f"{m.name}.{name}.{meth}", fn


def test_no_function_of_the_bench_takes_more_than_a_handful_of_parameters():
    """At most 5 a caller must give, 7 in all (tuning knobs with defaults)."""
    for where, fn in _rig_functions():
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.name not in ("self", "cls")]
        required = [p for p in params if p.default is inspect.Parameter.empty]
        assert len(required) <= 5 and len(params) <= 7, (where, [p.name for p in params])


def test_the_rig_imports_no_build_step_and_no_session():
    import embedbuild.rig as rig

    for path in Path(rig.__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("embedbuild.steps", "embedbuild.plan",
                                            "embedbuild.session", "embedbuild.outputs",
                                            "embedbuild.scheduler", "embedbuild.cli")), \
                    (path.name, name)


def _runtime_imports(path: Path) -> set[str]:
    """The embedbuild.rig modules a rig module imports when it is loaded (not under
    TYPE_CHECKING, not inside a function)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedbuild.rig"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("embedbuild.rig")}
    return found


def test_the_rig_has_no_import_circle():
    import embedbuild.rig as rig

    modules = {f"embedbuild.rig.{p.stem}": p for p in Path(rig.__path__[0]).glob("*.py")}
    graph = {m: {i for i in _runtime_imports(p) if i in modules and i != m}
             for m, p in modules.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join((*path, m))
        if m not in done:
            for n in graph[m]:
                visit(n, (*path, m))
            done.add(m)

    for m in graph:
        visit(m, ())
    assert graph["embedbuild.rig.resource"] == set()  # data only, at the bottom


def test_a_new_way_to_boot_is_one_class():
    """The extension point the next boot sources (PXE, an A/B slot, a signed FIT) use."""
    assert bootsource.BootSource.__abstractmethods__ == frozenset({"commands"})


def test_a_qemu_model_whose_uboot_is_built_needs_the_result(tmp_path):
    """qemu-arm-virt's QEMU firmware is the U-Boot its build makes: a target without the
    result is refused (QEMU would start with no firmware and print nothing), one with it
    runs that U-Boot."""
    board = load_board("qemu-arm-virt")
    assert board.qemu.firmware is None
    bench = BenchOptions().bench(board, None)
    with pytest.raises(EmbedbuildError, match="runs the U-Boot its build makes"):
        Target(board, bench, tmp_path)._machine(None)
    result = tmp_path / "result"
    result.mkdir()
    Manifest(board=board.name, arch=board.arch.value, description="", outputs=["uboot"],
             files={"u-boot.bin": FileInfo(size=1, sha256="0" * 64, role="bootloader")}
             ).write(result)
    assert Target(board, bench, tmp_path, result)._machine(None).firmware == \
        result / "u-boot.bin"


def test_a_qemu_model_with_its_own_firmware_runs_it_without_a_result(tmp_path):
    """qemu-aarch64-virt's QEMU firmware is Debian's U-Boot, named in its [qemu]: a target
    made before its build (the pytest plugin's and boot's order) is not refused."""
    board = load_board("qemu-aarch64-virt")
    assert board.qemu.firmware is not None
    machine = Target(board, BenchOptions().bench(board, None), tmp_path)._machine(None)
    assert machine.firmware is None and machine.spec.firmware == board.qemu.firmware
