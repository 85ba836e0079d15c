"""PXE: MAC addresses and the configuration files U-Boot's `pxe get` reads
(embedbuild/pxe.py), and the PXE boot source (rig/bootsource.py PxeBoot) driven by the
U-Boot strategy against a fake U-Boot that looks its configuration up as U-Boot does.
The real `pxe get; pxe boot` in QEMU is in test_fleet.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from fakes import FakePower, FakeUBoot
from test_target import KERNEL, LINK, _result

from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.model.system import READY_LINE
from embedbuild.pxe import PxeEntry, config_name, mac_address, mac_of_config, result_entry
from embedbuild.rig.bench import Bench, BenchOptions
from embedbuild.rig.bootsource import BOOT_SOURCES, PxeBoot
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.qemu import QemuBoard
from embedbuild.rig.resource import ManualPower, SerialLine
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import BootError

# ---------------------------------------------------------------- names and files


def test_a_mac_names_its_configuration_in_lowercase_with_dashes():
    assert mac_address("52:54:00:AB:cd:01") == "52:54:00:ab:cd:01"
    assert mac_address("52-54-00-ab-cd-01") == "52:54:00:ab:cd:01"
    assert config_name("52:54:00:AB:CD:01") == "pxelinux.cfg/01-52-54-00-ab-cd-01"
    assert config_name(None) == "pxelinux.cfg/default"
    assert mac_of_config("pxelinux.cfg/01-52-54-00-ab-cd-01") == "52:54:00:ab:cd:01"
    assert mac_of_config("pxelinux.cfg/0A4D000B") is None
    assert mac_of_config("pxelinux.cfg/01-zz") is None


@pytest.mark.parametrize("text, needle", [
    ("52:54:00:12:34", "is not a MAC address"),
    ("52:54:00:12:34:0g", "is not a MAC address"),
    ("52:54-00:12:34:01", "is not a MAC address"),  # one separator throughout
    ("525400123401", "is not a MAC address"),
    ("01:00:5e:00:00:01", "is a multicast address"),
])
def test_a_bad_mac_is_refused_saying_why(text, needle):
    with pytest.raises(ValueError, match=needle):
        mac_address(text)


def test_an_entry_is_one_directive_a_line():
    entry = PxeEntry(kernel="b/1/zImage", initrd="b/1/rd.gz", append="console=ttyAMA0",
                     comment="dev01")
    assert entry.render() == ("# dev01\ndefault embedbuild\nlabel embedbuild\n"
                              "  kernel b/1/zImage\n  initrd b/1/rd.gz\n"
                              "  append console=ttyAMA0\n")
    with pytest.raises(ValueError, match="no control characters"):
        PxeEntry(kernel="zImage", append="quiet\n  kernel other").render()


def test_a_results_entry_names_its_files_in_its_folder(tmp_path):
    board = load_board("qemu-arm-virt")
    result = _result(tmp_path)
    (result / "initramfs.cpio.gz").touch()
    m = Manifest.read(result)
    files = {**{k: v.model_dump() for k, v in m.files.items()},
             "initramfs.cpio.gz": {"role": "initramfs", "size": 1, "sha256": "0" * 64}}
    m = Manifest.model_validate({**m.model_dump(), "files": files})
    entry = result_entry(board, m, "builds/abc/", "embedbuild.device=dev01")
    assert entry.kernel == "builds/abc/zImage"
    assert entry.initrd == "builds/abc/initramfs.cpio.gz"
    assert entry.fdt is None  # QEMU's DTB, which U-Boot already has
    assert entry.append == ("console=ttyAMA0,115200 i6300esb.heartbeat=10 loglevel=5 mem=127M "
                            "fw_devlink=off embedbuild.device=dev01")
    assert result_entry(board, m, "").kernel == "zImage"


# ---------------------------------------------------------------- the boot source


def test_the_qemu_model_gets_the_mac_its_configuration_is_named_after(tmp_path):
    board = load_board("qemu-arm-virt")
    target = Target(board, BenchOptions().bench(board), tmp_path / "w", _result(tmp_path))
    assert BOOT_SOURCES["pxe"] is PxeBoot
    machine = PxeBoot().machine(target, target.bench.qemu)
    assert machine.mac == "52:54:00:12:34:56"
    folder = tmp_path / "served"
    PxeBoot(append="x=1").stage(target, folder)
    text = (folder / "pxelinux.cfg" / "01-52-54-00-12-34-56").read_text()
    assert "  kernel zImage\n" in text
    assert ("append console=ttyAMA0,115200 i6300esb.heartbeat=10 loglevel=5 mem=127M "
            "fw_devlink=off x=1") in text
    assert (folder / "zImage").is_file()
    qemu = QemuBoard(machine.model_copy(update={"mac": "52:54:00:00:00:07"}),
                     BenchNetwork().port(0), tmp_path)
    assert "virtio-net-device,netdev=net0,mac=52:54:00:00:00:07" in qemu.argv()
    # A real board's MAC is not known here: its configuration is the default one.
    real = Target(board, BenchOptions(serial="/dev/ttyUSB0").bench(board), tmp_path / "r",
                  target.result)
    PxeBoot().stage(real, tmp_path / "real")
    assert (tmp_path / "real" / "pxelinux.cfg" / "default").is_file()


def test_the_commands_set_the_boards_addresses_then_get_and_boot(tmp_path):
    board = load_board("qemu-arm-virt")
    target = Target(board, BenchOptions().bench(board), tmp_path, None)
    assert PxeBoot().commands(target) == [
        "setenv kernel_addr_r 0x40400000", "setenv ramdisk_addr_r 0x44000000",
        "setenv fdt_addr_r 0x40000000",
        'test -n "${pxefile_addr_r}" || setenv pxefile_addr_r 0x40400000',
        "pxe get", "pxe boot"]
    assert PxeBoot(dhcp=True).commands(target)[-4:] == [
        "setenv autoload no", "dhcp", "pxe get", "pxe boot"]


class FakePxeUBoot(FakeUBoot):
    """A fake U-Boot with `test -n X || ...`, and `pxe get` / `pxe boot` that look a
    configuration up in a folder in U-Boot's order (MAC, IP in hex, default), printing a
    TFTP error for each name that is missing."""

    def __init__(self, root: Path, mac: str, **kw) -> None:
        super().__init__(**kw)
        self.root = root
        self.mac = mac
        self.asked: list[str] = []
        self.config: str | None = None

    def _command(self, words: list[str]) -> int:
        if words[0] == "test" and "||" in words:
            i = words.index("||")
            return 0 if words[1:i] == ["-n"] or (len(words[1:i]) == 2 and words[2]) \
                else self._command(words[i + 1:])
        if words[:2] == ["pxe", "get"]:
            return self._pxe_get()
        if words[:2] == ["pxe", "boot"]:
            return self._boot("bootz") if self.config else 1
        return super()._command(words)

    def _pxe_get(self) -> int:
        ip = ipaddress.IPv4Address(self.env["ipaddr"]).packed.hex().upper()
        names = [f"01-{self.mac.replace(':', '-')}", *(ip[:n] for n in range(8, 0, -1)),
                 "default-arm-qemu", "default-arm", "default"]
        for name in names:
            self.asked.append(name)
            self.send(f"Retrieving file: pxelinux.cfg/{name}\r\n")
            path = self.root / "pxelinux.cfg" / name
            if path.is_file():
                self.config = path.read_text()
                return 0
            self.send("TFTP error: 'File not found' (1)\r\nNot retrying...\r\n")
        return 1


def _fake_pxe_target(tmp_path: Path, dev: FakeUBoot, result: Path) -> Target:
    board = load_board("qemu-arm-virt")
    bench = Bench(SerialLine(port=dev.port), LINK, ManualPower(), tftp_port=0)
    target = Target(board, bench, tmp_path / "w", result)
    target.power = FakePower(dev, None)
    return target


def test_pxe_get_finds_the_default_after_other_names_and_boots(tmp_path):
    """The misses `pxe get` prints before the default are no failure: its status counts."""
    result = _result(tmp_path)
    with FakePxeUBoot(tmp_path / "w" / "tftp", "02:00:00:00:00:09", kernel=KERNEL) as dev, \
            _fake_pxe_target(tmp_path, dev, result) as target:
        report = target.boot(PxeBoot(), READY_LINE, timeout=10)
        assert dev.booted and dev.asked[0] == "01-02-00-00-00-00-09"
        assert dev.asked[-1] == "default" and "kernel zImage" in dev.config
        assert dev.env["kernel_addr_r"] == "0x40400000"
        assert dev.env["pxefile_addr_r"] == "0x40400000"  # this U-Boot had none
    assert "U-Boot pxe get" in dict(report.stages)


def test_no_configuration_for_the_device_is_named(tmp_path):
    result = _result(tmp_path)

    class Nothing(PxeBoot):  # a server that has nothing for this device (deny mode)
        name = "pxe-deny-test"

        def stage(self, target, folder):
            folder.mkdir(parents=True, exist_ok=True)

    with FakePxeUBoot(tmp_path / "w" / "tftp", "02:00:00:00:00:09") as dev, \
            _fake_pxe_target(tmp_path, dev, result) as target, \
            pytest.raises(BootError, match="`pxe get` found no configuration for this device"):
        target.boot(Nothing(), READY_LINE, timeout=10)
    assert len(dev.asked) == 12 and not dev.booted  # MAC, 8 IP prefixes, 3 defaults
