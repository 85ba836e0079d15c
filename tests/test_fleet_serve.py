"""The fleet server without QEMU: the TFTP tree and its swaps (embedbuild/fleet/layout.py),
the server keeping it in step with the inventory (fleet/server.py) with builds that are
stand-ins, served over loopback by our TFTP server to real TFTP clients (tftpy) that
read configurations and the files they name while builds are swapped under them, and
the DHCP server (dnsmasq) handing out the inventory's addresses in a namespace of the
test's own. The real fleet (three QEMU guests) is test_fleet.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import tftpy
from conftest import cli, run_main

from embedbuild.errors import EmbedbuildError
from embedbuild.fleet.inventory import load_inventory
from embedbuild.fleet.layout import FleetTree
from embedbuild.fleet.server import FleetServer
from embedbuild.load import load_board
from embedbuild.manifest import FileInfo, Manifest
from embedbuild.outputs.kernel import KernelInfo
from embedbuild.pxe import PxeEntry
from embedbuild.rig.dhcp import DhcpServer, FixedAddress
from embedbuild.rig.tftp import TftpServer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
BOARD = load_board("qemu-arm-virt")


def fake_result(where: Path, build_id: str) -> Path:
    """A result folder as a build leaves it, named KEY-BOARD-result, whose kernel and
    initramfs both say which build they are (and are large enough to take many blocks)."""
    key = hashlib.sha256(build_id.encode()).hexdigest()[:32]
    result = where / f"{key}-qemu-arm-virt-result"
    if result.is_dir():
        return result
    result.mkdir(parents=True)
    files = {}
    for name, role in (("zImage", "kernel"), ("initramfs.cpio.gz", "initramfs"),
                       ("vmlinux", "vmlinux")):
        data = f"{name} of build {build_id}\n".encode() * 4000
        (result / name).write_bytes(data)
        files[name] = FileInfo(role=role, size=len(data),
                               sha256=hashlib.sha256(data).hexdigest())
    Manifest(board="qemu-arm-virt", arch="arm", description="", outputs=["kernel"],
             files=files, kernel=KernelInfo(file="zImage", cmdline="console=ttyAMA0")
             ).write(result)
    return result


class FakeBuilds:
    """Builds that are stand-ins: a system file whose first line is ``# build ID`` gives
    result ID; ``# build fails`` fails like a broken build."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.count = 0

    def __call__(self, board: str, system: Path | None):
        self.count += 1
        first = system.read_text().splitlines()[0] if system else "# build base"
        build_id = first.removeprefix("# build ")
        if build_id == "fails":
            raise EmbedbuildError("step qemu-arm-virt-initramfs failed (a stand-in)")
        return BOARD, fake_result(self.where, build_id)


def write_inventory(path: Path, devices: dict[str, tuple[str, str | None]],
                    unknown: str | None = None) -> None:
    """devices: name -> (MAC, system file or None)."""
    text = ""
    if unknown is not None:
        text += f'[unknown]\nboard = "qemu-arm-virt"\nappend = "{unknown}"\n\n'
    for name, (mac, system) in devices.items():
        text += f'[[device]]\nname = "{name}"\nmac = "{mac}"\nboard = "qemu-arm-virt"\n'
        if system:
            text += f'system = "{system}"\n'
        text += "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_said(said: list[str], pattern: str, timeout: float = 10) -> None:
    """Until a line matching ``pattern`` was said: transfers are reported from the TFTP
    server's thread, after the client got its answer."""
    deadline = time.monotonic() + timeout
    while not any(re.search(pattern, line) for line in said):
        assert time.monotonic() < deadline, said
        time.sleep(0.02)


def system(folder: Path, name: str, build_id: str) -> str:
    (folder / name).write_text(f"# build {build_id}\n" + 'hostname = "x"\n')
    return name


# ---------------------------------------------------------------- the tree


def test_a_build_folder_appears_whole_and_a_configuration_by_rename(tmp_path):
    tree = FleetTree(tmp_path / "tftp")
    result = fake_result(tmp_path / "store", "a")
    folder = tree.publish(result, ["zImage", "initramfs.cpio.gz", "manifest.json"])
    assert folder == f"builds/{result.name.split('-')[0]}"
    files = sorted(p.name for p in (tree.root / folder).iterdir())
    assert files == ["initramfs.cpio.gz", "manifest.json", "zImage"]  # not vmlinux
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in (tree.root / folder).iterdir())
    assert tree.publish(result, ["zImage"]) == folder  # there already: untouched
    entry = PxeEntry(kernel=f"{folder}/zImage")
    assert tree.write("52:54:00:00:00:01", entry) and not tree.write("52:54:00:00:00:01", entry)
    assert tree.served() == {"52:54:00:00:00:01": entry.render()}
    assert not list(tree.configs.glob(".*"))  # no temporary file left
    # What a killed server left half-made is gone at the next start.
    (tree.builds / ".new-abc-1").mkdir()
    (tree.configs / ".01-x.tmp").write_text("half")
    FleetTree(tree.root)
    assert not list(tree.builds.glob(".new-*")) and not list(tree.configs.glob(".*"))


def test_a_folder_no_configuration_names_is_kept_a_while_then_removed(tmp_path):
    tree = FleetTree(tmp_path / "tftp", keep=60)
    old = tree.publish(fake_result(tmp_path / "s", "old"), ["zImage"])
    new = tree.publish(fake_result(tmp_path / "s", "new"), ["zImage"])
    tree.write("52:54:00:00:00:01", PxeEntry(kernel=f"{old}/zImage"))
    assert tree.prune(now=0) == []
    tree.write("52:54:00:00:00:01", PxeEntry(kernel=f"{new}/zImage"))
    assert tree.prune(now=100) == []           # retired now: a device may be loading it
    assert tree.prune(now=159) == []
    assert tree.prune(now=160) == [old.split("/")[1]]
    assert not (tree.root / old).exists() and (tree.root / new).is_dir()


# ---------------------------------------------------------------- the server


def _fetch(port: int, name: str) -> bytes:
    buf = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", port, options={"blksize": 1024}).download(
        name, buf, timeout=2, retries=5)
    return buf.getvalue()


def _boot_like_pxe(port: int, mac: str) -> tuple[str, str, str]:
    """What `pxe get; pxe boot` fetches: the configuration, then the files it names;
    returns (the build its configuration names, the kernel's build, the initramfs's)."""
    config = _fetch(port, f"pxelinux.cfg/01-{mac.replace(':', '-')}").decode()
    kernel = re.search(r"kernel (\S+)", config).group(1)
    initrd = re.search(r"initrd (\S+)", config).group(1)
    said = re.search(r"build (\S+)", _fetch(port, initrd).decode()).group(1)
    got = re.search(r"build (\S+)", _fetch(port, kernel).decode()).group(1)
    return kernel.split("/")[1], got, said


@pytest.fixture
def fleet(tmp_path):
    """A fleet server on loopback with stand-in builds: (server, TFTP port, lines said)."""
    said: list[str] = []
    tree = FleetTree(tmp_path / "tftp")
    server = FleetServer(tmp_path / "fleet.toml", tree, FakeBuilds(tmp_path / "store"),
                         said.append)
    with TftpServer(tree.root, "127.0.0.1", 0, on_transfer=server.on_transfer) as tftp:
        yield server, tftp.port, said


def test_swaps_under_loading_devices_never_mix_builds(tmp_path, fleet):
    """Three devices fetch their configuration and then its files, again and again, while
    dev01's build is swapped back and forth: every boot gets one build's kernel and
    initramfs, the one its configuration named; dev02 and dev03 only ever their own."""
    server, port, _ = fleet
    inv = tmp_path / "fleet.toml"
    macs = {f"dev0{i}": f"52:54:00:00:00:0{i}" for i in (1, 2, 3)}
    system(tmp_path, "a.toml", "a")
    system(tmp_path, "b.toml", "b")
    system(tmp_path, "c.toml", "c")
    layout = {"dev01": "a.toml", "dev02": "c.toml", "dev03": "c.toml"}
    write_inventory(inv, {n: (macs[n], s) for n, s in layout.items()})
    server.reload()
    keys = {b: hashlib.sha256(b.encode()).hexdigest()[:32] for b in "abc"}
    boots: dict[str, list[tuple[str, str, str]]] = {n: [] for n in macs}
    errors: list[BaseException] = []
    stop = threading.Event()

    def device(name: str) -> None:
        try:
            while not stop.is_set():
                boots[name].append(_boot_like_pxe(port, macs[name]))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=device, args=(n,)) for n in macs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    swaps = 0
    while (swaps < 12 or min(len(b) for b in boots.values()) < 10) and \
            time.monotonic() < deadline and not errors:
        layout["dev01"] = "b.toml" if layout["dev01"] == "a.toml" else "a.toml"
        write_inventory(inv, {n: (macs[n], s) for n, s in layout.items()})
        server.reload()
        swaps += 1
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert swaps >= 12 and all(len(b) >= 10 for b in boots.values()), \
        (swaps, {n: len(b) for n, b in boots.items()})
    by_key = {v: k for k, v in keys.items()}
    for name, seen in boots.items():
        for folder, kernel, initrd in seen:
            assert by_key[folder] == kernel == initrd, (name, folder, kernel, initrd)
    assert {k for _, k, _ in boots["dev01"]} == {"a", "b"}  # both builds were booted
    assert {k for b in ("dev02", "dev03") for _, k, _ in boots[b]} == {"c"}
    # Retired folders stay (a device may have read the old configuration a moment ago).
    assert {p.name for p in server.tree.builds.iterdir()} == set(keys.values())


def test_a_failed_build_leaves_the_devices_previous_files(tmp_path, fleet):
    server, port, said = fleet
    inv = tmp_path / "fleet.toml"
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", system(tmp_path, "a.toml", "a")),
                          "dev02": ("52:54:00:00:00:02", system(tmp_path, "b.toml", "b"))})
    server.reload()
    before = _fetch(port, "pxelinux.cfg/01-52-54-00-00-00-01")
    system(tmp_path, "a.toml", "fails")
    assert server.changed()  # a system file the inventory names is watched too
    server.reload()
    assert any("build of qemu-arm-virt with" in line and "failed: step" in line
               and "keep their previous files" in line for line in said), said
    assert _fetch(port, "pxelinux.cfg/01-52-54-00-00-00-01") == before
    assert _boot_like_pxe(port, "52:54:00:00:00:01")[1] == "a"
    # A device whose very first build fails gets nothing, and the server says so.
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", "a.toml"),
                          "dev09": ("52:54:00:00:00:09", "a.toml")})
    server.reload()
    assert "dev09: nothing to serve until its build succeeds" in said
    with pytest.raises(tftpy.TftpException, match="File not found"):
        _fetch(port, "pxelinux.cfg/01-52-54-00-00-00-09")
    wait_said(said, r"^dev09 \(127\.0\.0\.1\): no configuration yet")
    # dev02 left the inventory: its configuration is gone (no [unknown]: refused).
    assert "52:54:00:00:00:02: no longer in the inventory: refused" in said


def test_an_inventory_that_does_not_load_changes_nothing(tmp_path, fleet):
    server, port, said = fleet
    inv = tmp_path / "fleet.toml"
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", None)})
    server.reload()
    inv.write_text(inv.read_text() + 'mac = "oops"\n')
    assert server.changed()
    server.reload()
    assert any(line.startswith("inventory not reloaded, still serving the previous one: ")
               and "fleet.toml:6: malformed TOML" in line for line in said), said
    assert not server.changed()  # said once, not at every poll
    assert _boot_like_pxe(port, "52:54:00:00:00:01")[1] == "base"


def test_unknown_devices_get_the_default_or_are_refused(tmp_path, fleet):
    server, port, said = fleet
    inv = tmp_path / "fleet.toml"
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", None)}, unknown="fleet.role=spare")
    server.reload()
    with pytest.raises(tftpy.TftpException, match="File not found"):
        _fetch(port, "pxelinux.cfg/01-52-54-00-00-00-99")
    text = _fetch(port, "pxelinux.cfg/default").decode()
    key = hashlib.sha256(b"base").hexdigest()[:32]
    # No device name: it is unknown; the build it boots is named.
    assert f"append console=ttyAMA0 fleet.role=spare embedbuild.build={key}\n" in text
    assert f"embedbuild.device=dev01 embedbuild.build={key}\n" in \
        _fetch(port, "pxelinux.cfg/01-52-54-00-00-00-01").decode()
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", None)})  # no [unknown]: deny
    server.reload()
    assert "unknown devices: refused (the inventory has no [unknown])" in said
    for name in ("pxelinux.cfg/01-52-54-00-00-00-99", "pxelinux.cfg/default"):
        with pytest.raises(tftpy.TftpException, match="File not found"):
            _fetch(port, name)
    wait_said(said, r"^unknown device 52:54:00:00:00:99 at 127\.0\.0\.1: refused \(the "
              r"inventory has no \[unknown\]\)$")


def test_the_server_follows_the_inventory_and_a_wake_up(tmp_path, fleet):
    server, port, said = fleet
    inv = tmp_path / "fleet.toml"
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", None)})
    server.reload(load_inventory(inv))  # read by the caller first, as `serve` does
    stop, wake = threading.Event(), threading.Event()
    runner = threading.Thread(target=server.run, args=(stop, wake, 0.05))
    runner.start()
    try:
        write_inventory(inv, {"dev01": ("52:54:00:00:00:01", system(tmp_path, "b.toml", "b"))})
        deadline = time.monotonic() + 10
        while _boot_like_pxe(port, "52:54:00:00:00:01")[1] != "b":
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
        assert server.build.count == 2  # only the changed build (and the first one)
        builds = server.build.count
        wake.set()  # SIGHUP's way: reload although nothing changed, building everything
        deadline = time.monotonic() + 10
        while server.build.count == builds:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(10)


def test_the_server_grants_a_window_no_larger_than_its_limit(tmp_path):
    """serve's --tftp-window: a client asking for 16 blocks a window gets 4 (RFC 7440 lets
    the server offer less), and no more than 4 blocks come before its ACK."""
    import socket
    import struct

    from embedbuild.rig.tftp import Limits

    (tmp_path / "big.bin").write_bytes(os.urandom(64 * 1024))
    with TftpServer(tmp_path, "127.0.0.1", 0, limits=Limits(window=4)) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(struct.pack("!H", 1) + b"big.bin\0octet\0blksize\x001024\0windowsize\x0016\0",
                 ("127.0.0.1", server.port))
        oack, peer = s.recvfrom(70000)
        opts = oack[2:].split(b"\0")
        assert oack[:2] == struct.pack("!H", 6)
        assert opts[opts.index(b"windowsize") + 1] == b"4"
        s.sendto(struct.pack("!HH", 4, 0), peer)
        blocks = []
        s.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while len(blocks) < 12:
                blocks.append(struct.unpack("!HH", s.recvfrom(70000)[0][:4])[1])
        # The window, then only probes of it (its first and last block) until an ACK.
        assert blocks[:4] == [1, 2, 3, 4] and max(blocks) == 4, blocks


def test_a_sighup_that_comes_with_a_change_is_not_lost(tmp_path, fleet):
    """The inventory changes and SIGHUP comes as the server looks: both are served (a
    reload for the change, then one building everything)."""
    server, _, said = fleet
    write_inventory(tmp_path / "fleet.toml", {"dev01": ("52:54:00:00:00:01", None)})
    server.reload()
    stop, wake = threading.Event(), threading.Event()
    raced = []

    def changed() -> bool:  # the change is seen, and SIGHUP lands at that very moment
        if not raced:
            raced.append(True)
            wake.set()
            return True
        return False

    server.changed = changed
    runner = threading.Thread(target=server.run, args=(stop, wake, 0.05))
    runner.start()
    try:
        wait_said(said, r"^woken \(SIGHUP\): re-reading the inventory, building everything$")
    finally:
        stop.set()
        runner.join(10)


def test_a_build_folder_removed_as_unused_comes_back_when_named_again(tmp_path):
    """dev01 leaves build a, whose folder is removed after ``keep``; when the inventory
    names a again (no full rebuild), the folder is there again before any file names it."""
    said: list[str] = []
    tree = FleetTree(tmp_path / "tftp", keep=0)
    server = FleetServer(tmp_path / "fleet.toml", tree, FakeBuilds(tmp_path / "store"),
                         said.append)
    inv = tmp_path / "fleet.toml"
    system(tmp_path, "a.toml", "a")
    system(tmp_path, "b.toml", "b")
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", "a.toml")})
    server.reload()
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", "b.toml")})
    server.reload(rebuild=False)
    key_a = hashlib.sha256(b"a").hexdigest()[:32]
    tree.prune()
    assert not (tree.builds / key_a).exists()  # unused, and keep is 0
    write_inventory(inv, {"dev01": ("52:54:00:00:00:01", "a.toml")})
    server.reload(rebuild=False)
    assert (tree.builds / key_a / "zImage").is_file()
    assert f"builds/{key_a}/zImage" in tree.served()["52:54:00:00:00:01"]


# ---------------------------------------------------------------- the command line


def test_serve_check_prints_what_each_device_boots(tmp_path):
    inv = tmp_path / "fleet.toml"
    (tmp_path / "kiosk.toml").write_text('hostname = "kiosk"\n')
    inv.write_text('[[device]]\nname = "dev01"\nmac = "52:54:00:12:34:01"\n'
                   'board = "qemu-arm-virt"\nsystem = "kiosk.toml"\nip = "10.77.0.11"\n')
    r = run_main("serve", str(inv), "--check", store=tmp_path / "s")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"dev01            52:54:00:12:34:01  qemu-arm-virt system {tmp_path}/kiosk.toml "
        "ip 10.77.0.11", "unknown devices  refused"]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, needle", [
    ([], "serve needs --listen ADDR[:PORT]"),
    (["--listen", "10.0.0.1:x"], "port 'x' is not a number"),
    (["--listen", "127.0.0.1:0", "--dhcp-interface", "lo"],
     "needs --dhcp-interface IF and --dhcp-range FIRST,LAST together"),
    (["--listen", "127.0.0.1:0", "--dhcp-interface", "lo", "--dhcp-range", "1,2"],
     "give two IPv4 addresses"),
])
def test_serve_refuses_a_command_line_it_cannot_serve(tmp_path, args, needle):
    inv = tmp_path / "fleet.toml"
    inv.write_text("")
    r = run_main("serve", str(inv), *args, store=tmp_path / "s")
    assert r.code == 1 and needle in r.err and "Traceback" not in r.err, r.err


def test_a_broken_inventory_is_one_line_from_a_process_of_its_own(tmp_path):
    inv = tmp_path / "fleet.toml"
    inv.write_text('[[device]]\nname = "dev01"\nmac = "52:54:00:12:34:1"\n'
                   'board = "qemu-arm-virt"\n')
    r = cli("serve", str(inv), "--listen", "127.0.0.1:0", store=tmp_path / "s")
    assert r.code == 1 and "Traceback" not in r.err, r.err
    assert f"error: {inv}:3: device[0].mac: '52:54:00:12:34:1' is not a MAC address" in r.err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- DHCP


@pytest.fixture
def lan(tmp_path):
    """Two namespaces of the test's own joined by a veth pair: the server's end
    10.79.0.1/24 (w26s) and a device's end (w26c); yields (server ns, device ns, the
    device's MAC)."""
    tag = f"{os.getpid() % 100000}"
    ns_s, ns_c = f"ebtest-dhcps-{tag}", f"ebtest-dhcpc-{tag}"
    for ns in (ns_s, ns_c):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "w26s", "netns", ns_s, "type", "veth", "peer", "name",
                     "w26c", "netns", ns_c],):
            subprocess.run(["ip", *cmd], check=True)
        for ns, cmd in ((ns_s, ["addr", "add", "10.79.0.1/24", "dev", "w26s"]),
                        (ns_s, ["link", "set", "w26s", "up"]),
                        (ns_c, ["link", "set", "w26c", "up"])):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        mac = subprocess.run(["ip", "netns", "exec", ns_c, "cat", "/sys/class/net/w26c/address"],
                             capture_output=True, text=True, check=True).stdout.strip()
        yield ns_s, ns_c, mac
    finally:
        for ns in (ns_s, ns_c):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _lease(ns: str, tmp_path: Path) -> dict[str, str]:
    """What busybox's DHCP client on the device's end gets (its script's environment)."""
    script = tmp_path / "udhcpc.sh"
    out = tmp_path / "lease.txt"
    out.unlink(missing_ok=True)
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    subprocess.run(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "w26c", "-s",
                    str(script), "-q", "-n", "-t", "5", "-T", "1"], capture_output=True,
                   timeout=30)
    if not out.exists():
        return {}
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


@needs_root
def test_dhcp_gives_the_inventorys_addresses_and_names_this_machine_next(tmp_path, lan):
    ns_s, ns_c, mac = lan
    dhcp = DhcpServer("w26s", ipaddress.IPv4Address("10.79.0.100"),
                      ipaddress.IPv4Address("10.79.0.110"), ipaddress.IPv4Address("10.79.0.1"),
                      netns=ns_s, log=tmp_path / "dnsmasq.log")
    dhcp.start([FixedAddress(mac, ipaddress.IPv4Address("10.79.0.11"), "dev01")])
    try:
        lease = _lease(ns_c, tmp_path)
        assert lease.get("ip") == "10.79.0.11" and lease.get("siaddr") == "10.79.0.1", lease
        assert lease.get("hostname") == "dev01" and "router" not in lease
        dhcp.update([FixedAddress(mac, ipaddress.IPv4Address("10.79.0.12"), "dev01")])
        deadline = time.monotonic() + 20
        while (lease := _lease(ns_c, tmp_path)).get("ip") != "10.79.0.12":
            assert time.monotonic() < deadline, lease
        dhcp.update([])  # no fixed address: one from the range
        deadline = time.monotonic() + 20
        while not (lease := _lease(ns_c, tmp_path)).get("ip", "").startswith("10.79.0.1"):
            assert time.monotonic() < deadline, lease
    finally:
        dhcp.stop()
    assert "DHCPACK(w26s) 10.79.0.11" in (tmp_path / "dnsmasq.log").read_text()
    assert dhcp.proc.poll() is not None and not dhcp.folder.exists()


@needs_root
def test_dhcp_is_refused_where_it_would_answer_another_network(tmp_path, lan):
    ns_s, _, _ = lan
    a = ipaddress.IPv4Address

    def refused(interface, first, last, server, needle):
        with pytest.raises(EmbedbuildError, match=needle):
            DhcpServer(interface, a(first), a(last), a(server), netns=ns_s).check()

    refused("lo", "10.79.0.100", "10.79.0.110", "10.79.0.1", "loopback interface serves nobody")
    refused("eth9", "10.79.0.100", "10.79.0.110", "10.79.0.1", "no interface eth9 here")
    refused("w26s", "10.79.0.100", "10.79.0.110", "10.79.0.2", "10.79.0.2 is not an address")
    refused("w26s", "10.79.1.100", "10.79.1.110", "10.79.0.1", "is not a host of 10.79.0.0/24")
    refused("w26s", "10.79.0.1", "10.79.0.9", "10.79.0.1", "holds this machine's 10.79.0.1")
    with pytest.raises(EmbedbuildError, match=r"dev07's address 10\.80\.0\.7 is not a device's"):
        DhcpServer("w26s", a("10.79.0.100"), a("10.79.0.110"), a("10.79.0.1"),
                   netns=ns_s).check_fixed([FixedAddress("52:54:00:00:00:07", a("10.80.0.7"),
                                                         "dev07")])
    subprocess.run(["ip", "-n", ns_s, "route", "add", "default", "via", "10.79.0.254"],
                   check=True)
    refused("w26s", "10.79.0.100", "10.79.0.110", "10.79.0.1", "carries this machine's default")
