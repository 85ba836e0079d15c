"""The access point does its job, proven on the QEMU twin (qemu-malta-be: the AP AC
Lite's toolchain and packaging) with simulated radios: our kernel and initramfs boot
through our U-Boot over our TFTP server, with the AP system of
boards/qemu-malta-be/access-point.toml (mac80211_hwsim, three radios): hostapd serves a
WPA2-PSK network on radio0 and a WPA3-SAE one on radio1, both bridged into br-lan with
udhcpd on it; the test moves radio2 into a network namespace and runs our
wpa_supplicant there as the station. One boot for every round:

- the regulatory database loads (both files direct-loaded, no "failed to load");
- per mode: the station connects (AP-STA-CONNECTED), gets a lease from the AP, pings it
  and is pinged back;
- per mode, a wrong passphrase: no connection, and the station says why.

Then the built result goes to a folder cache, and the passphrase is in none of what
was pushed (every description and archive, and every file in them decompressed; each
locked download is the file its lock hash names).

CI cost: no kernel of its own. The twin's board carries the wireless stack and three
hwsim radios in its own kernel (boards/qemu-malta-be/wireless.config), so the one malta
kernel CI compiles for every malta test serves this one too: it has 889 objects instead
of about 720 (an estimate of +1 to 1.5 min on a cold CI compile, from the object count;
+365 KB of lzma uImage on every malta boot's TFTP). On top: the AP packages for MIPS
(wolfSSL, hostapd, wpa_supplicant, iw, the regulatory database; libnl and busybox are
built anyway): measured cold, without ccache, 100 s of CPU time (87 s user, 12 s system;
327 s wall at load average 19: wolfSSL 206 s with its autoreconf, hostapd 45 s,
wpa_supplicant 43 s, iw 21 s), so about 1 to 2 min of a 2-core CI machine; the system's
initramfs segments (seconds), one boot and the rounds, and the push of the result's
closure with its scan: in all about 5 min of CI (an estimate from these measures; the
module's own part, measured with the builds in the store on the shared 2-core machine
at load average 18-19 from other agents' kernel builds, was 239 s, about half of that
on an idle machine): the module 239 s (power-on to ready 47 s, of it 29 s of TFTP; a round
with a lease and both pings 15-18 s; a refusal 3-7 s; the push 95 s, the scan 28 s,
which checks each locked download against its lock hash instead of decompressing it).
Waits are deadlines: 30 s for a connection (under load a first 4-way handshake may time
out and the station joins again by itself), not counts of tries.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import lzma
import os
import re
import secrets
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, cli, qemu_target

from embedbuild import session
from embedbuild.cache.archive import pack
from embedbuild.load import load_board
from embedbuild.rig.bootsource import TftpBoot
from embedbuild.rig.shell import ShellDriver
from embedbuild.store import Store

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

SYSTEM = ROOT / "boards" / "qemu-malta-be" / "access-point.toml"
# A passphrase of this run only: no false match anywhere, no real secret in the test.
PASSPHRASE = f"eb-{secrets.token_urlsafe(18)}"
AP_ADDR = "192.168.50.1"
LOG = "/var/log/messages"
CONNECT_DEADLINE = 30


@dataclass
class Network:
    """One of the twin's access points as the station sees it."""

    mode: str
    ssid: str
    freq: int  # MHz: the station scans only the AP's channel (a full scan of hwsim's
    iface: str  # 2.4 and 5 GHz channels takes ~10 s under emulation)


NETWORKS = [Network("wpa2", "embedbuild-wpa2", 2412, "wlan0"),
            Network("wpa3", "embedbuild-wpa3", 2462, "wlan1")]


@dataclass
class Booted:
    shell: ShellDriver
    console_text: Callable[[], str]
    stages: dict[str, float]
    result: Path
    store: Path
    ns: str  # nsenter prefix of the station's network namespace
    mac: str  # the station's MAC address
    timings: dict[str, float]


def _wait(sh: ShellDriver, file: str, regex: str, seconds: float) -> float | None:
    """Seconds until an extended regex matches a line of ``file`` on the board, or None
    when ``seconds`` passed first (busybox timeout: a deadline on the board)."""
    t = time.monotonic()
    status, _ = sh.run(f"timeout {seconds:.0f} sh -c 'until grep -qE \"{regex}\" {file}; "
                       "do sleep 0.1; done'", seconds + 30)
    return time.monotonic() - t if status == 0 else None


def _write(sh: ShellDriver, path: str, text: str) -> None:
    sh.succeed(f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {path}")


def _station_conf(net: Network, passphrase: str) -> str:
    if net.mode == "wpa2":
        keys = f'\tkey_mgmt=WPA-PSK\n\tpsk="{passphrase}"\n'
    else:
        keys = f'\tkey_mgmt=SAE\n\tieee80211w=2\n\tsae_password="{passphrase}"\n'
    pwe = "sae_pwe=2\n" if net.mode == "wpa3" else ""
    return (f"ctrl_interface=/run/wpa_supplicant-sta\n{pwe}network={{\n"
            f'\tssid="{net.ssid}"\n\tscan_freq={net.freq}\n{keys}}}\n')


@pytest.fixture(scope="module")
def booted(session_store: Path, tmp_path_factory) -> Iterator[Booted]:
    """The twin built with the AP system and booted once; the station's radio in its
    namespace."""
    tmp = tmp_path_factory.mktemp("ap")
    folder = tmp / "secrets"
    folder.mkdir(mode=0o700)
    (folder / "qemu-malta-be-ap.psk").write_text(PASSPHRASE + "\n")
    (folder / "qemu-malta-be-ap.psk").chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDBUILD_SECRETS", str(folder))
        mp.setenv("EMBEDBUILD_BENCH", str(tmp / "bench"))
        t0 = time.monotonic()
        board = load_board("qemu-malta-be", SYSTEM)
        built = session.build(board, Store(session_store))
        timings = {"build": time.monotonic() - t0}
        with qemu_target(board, tmp / "run", built.result) as target:
            report = target.boot(TftpBoot())
            sh = target.shell()
            # The station's radio goes into a namespace of its own, held by a sleeper.
            pid = sh.succeed("unshare -n sleep 100000 >/dev/null 2>&1 </dev/null & "
                             "echo $!").strip()
            ns = f"nsenter -t {pid} -n"
            sh.succeed(f"iw phy phy2 set netns {pid} && {ns} ip link set lo up")
            # (/sys shows the root namespace's interfaces: ask ip in the namespace.)
            link = sh.succeed(f"{ns} ip link show dev wlan2")
            mac = re.search(r"link/ether (\S+)", link).group(1)
            yield Booted(sh, lambda: target.console.text, dict(report.stages), built.result,
                         session_store, ns, mac, timings)
    print("\naccess point test timings (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in {**dict(report.stages), **timings}.items()))


def test_the_regulatory_database_loads(booted: Booted):
    log = booted.console_text()
    assert "firmware: direct-loading firmware regulatory.db\n" in log.replace("\r", "")
    assert "firmware: direct-loading firmware regulatory.db.p7s" in log
    assert "failed to load regulatory.db" not in log
    # The database's rules, not the built-in world domain: hostapd set the country.
    assert "country DE:" in booted.shell.succeed("iw reg get")


def test_both_access_points_are_enabled_in_the_bridge(booted: Booted):
    sh = booted.shell
    for net in NETWORKS:
        assert _wait(sh, LOG, f"{net.iface}: AP-ENABLED", 5) is not None
        assert sh.succeed(f"cat /sys/class/net/{net.iface}/carrier").strip() == "1"
    bridge = sh.succeed("ls /sys/class/net/br-lan/brif").split()
    assert sorted(bridge) == ["wlan0", "wlan1"]
    assert f"inet {AP_ADDR}/24 " in sh.succeed("ip -4 addr show dev br-lan")
    # The running configuration (with the passphrase) is root's alone.
    assert sh.succeed("stat -c %a /run/hostapd-radio0.conf").strip() == "600"


def _start_station(b: Booted, net: Network, passphrase: str, name: str) -> tuple[str, str]:
    conf, log = f"/tmp/{name}.conf", f"/tmp/{name}.log"
    _write(b.shell, conf, _station_conf(net, passphrase))
    pid = b.shell.succeed(f"{b.ns} wpa_supplicant -t -i wlan2 -c {conf} >{log} 2>&1 "
                          "</dev/null & echo $!").strip()
    return pid, log


def _stop_station(b: Booted, pid: str) -> None:
    b.shell.succeed(f"kill {pid}; timeout 10 sh -c 'while kill -0 {pid} 2>/dev/null; "
                    f"do sleep 0.1; done' && {b.ns} ip addr flush dev wlan2")


@pytest.mark.parametrize("net", NETWORKS, ids=[n.mode for n in NETWORKS])
def test_a_station_joins_gets_a_lease_and_pings_both_ways(booted: Booted, net: Network):
    sh = booted.shell
    t0 = time.monotonic()
    pid, log = _start_station(booted, net, PASSPHRASE, f"sta-{net.mode}")
    try:
        # The AP's word first: hostapd says AP-STA-CONNECTED once the 4-way handshake is
        # done. Under load a first handshake may time out (the AP deauthenticates with
        # 4WAY_HANDSHAKE_TIMEOUT) and the station joins again by itself, as a real one
        # does: the deadline covers that.
        took = _wait(sh, LOG, f"{net.iface}: AP-STA-CONNECTED {booted.mac}", CONNECT_DEADLINE)
        assert took is not None, sh.succeed(f"cat {log}; tail -n 30 {LOG}")
        assert _wait(sh, LOG, f"{net.iface}: EAPOL-4WAY-HS-COMPLETED {booted.mac}", 5)
        assert _wait(sh, log, "CTRL-EVENT-CONNECTED", 5) is not None, sh.succeed(f"cat {log}")
        # The kernel's side: the station is associated and authorized on the AP.
        dump = sh.succeed(f"iw dev {net.iface} station dump")
        assert f"Station {booted.mac} (on {net.iface})" in dump, dump
        assert re.search(r"authorized:\s+yes", dump), dump
        out = sh.succeed(f"{booted.ns} udhcpc -i wlan2 -s /etc/embedbuild/udhcpc.script "
                         "-q -n -t 10 -T 2 2>&1", timeout=60)
        lease = re.search(r"lease of (192\.168\.50\.\d+) obtained from (\S+)", out)
        assert lease and lease.group(2).rstrip(",") == AP_ADDR, out
        station = lease.group(1)
        assert f"inet {station}/24 " in sh.succeed(f"{booted.ns} ip -4 addr show dev wlan2")
        for where, to in ((booted.ns, AP_ADDR), ("", station)):
            out = sh.succeed(f"{where} ping -c 3 -W 2 {to}".strip(), timeout=30)
            assert "3 packets transmitted, 3 packets received, 0% packet loss" in out, out
        booted.timings[f"{net.mode} connect"] = took
        booted.timings[f"{net.mode} round"] = time.monotonic() - t0
    finally:
        _stop_station(booted, pid)


@pytest.mark.parametrize("net", NETWORKS, ids=[n.mode for n in NETWORKS])
def test_a_wrong_passphrase_gets_no_connection_and_a_clear_line(booted: Booted, net: Network):
    sh = booted.shell
    before = sh.succeed(f"grep -c 'AP-STA-CONNECTED' {LOG} || true").strip()
    t0 = time.monotonic()
    pid, log = _start_station(booted, net, "not-" + PASSPHRASE, f"sta-{net.mode}-wrong")
    try:
        if net.mode == "wpa2":
            # The AP sees the handshake's MIC fail; the station says what is likely wrong.
            said = _wait(sh, log, "4-Way Handshake failed - pre-shared key may be incorrect",
                         CONNECT_DEADLINE)
            assert _wait(sh, LOG, f"AP-STA-POSSIBLE-PSK-MISMATCH {booted.mac}", 5)
        else:
            # SAE: the AP rejects the commit's confirm (status 1); hostapd 2.10 says
            # nothing at its default log level, the station does.
            said = _wait(sh, log, "CTRL-EVENT-AUTH-REJECT .* auth_type=3 "
                         "auth_transaction=2 status_code=1", CONNECT_DEADLINE)
        assert said is not None, sh.succeed(f"cat {log}")
        station = sh.succeed(f"cat {log}")
        assert "CTRL-EVENT-CONNECTED" not in station
        assert sh.succeed(f"grep -c 'AP-STA-CONNECTED' {LOG} || true").strip() == before
        booted.timings[f"{net.mode} refused"] = time.monotonic() - t0
    finally:
        _stop_station(booted, pid)


def _views(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """The bytes, and whatever they hold compressed (gzip, xz, lzma, zstd; a uImage's
    payload; concatenated gzip segments), decompressed, recursively."""
    yield data
    if depth > 3 or len(data) < 16:
        return
    inner: bytes | None = None
    try:
        if data[:2] == b"\x1f\x8b":
            inner = gzip.decompress(data)
        elif data[:6] == b"\xfd7zXZ\x00":
            inner = lzma.decompress(data, lzma.FORMAT_XZ)
        elif data[:3] == b"\x5d\x00\x00":
            inner = lzma.decompress(data, lzma.FORMAT_ALONE)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            inner = subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                                   check=True).stdout
        elif data[:4] == b"\x27\x05\x19\x56":  # legacy uImage: 64-byte header
            inner = data[64:]
    except (OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError):
        inner = None
    if inner is not None:
        yield from _views(inner, depth + 1)


def _holds(data: bytes, needle: bytes) -> bool:
    return any(needle in view for view in _views(data))


def _archive_holds(path: Path, needle: bytes) -> list[str]:
    """The members of a pushed archive (tar.zst, read as a stream) that hold needle, in
    their bytes or in anything they hold compressed; their names too."""
    found = []
    with subprocess.Popen(["zstd", "-dc", str(path)], stdout=subprocess.PIPE) as zstd:
        assert zstd.stdout is not None
        with tarfile.open(fileobj=zstd.stdout, mode="r|") as tf:
            for m in tf:
                if needle in m.name.encode() or needle in m.linkname.encode():
                    found.append(m.name)
                if m.isfile():
                    member = tf.extractfile(m)
                    assert member is not None
                    if _holds(member.read(), needle):
                        found.append(m.name)
        # tarfile stops at the end blocks; the rest (tar's record padding) is read too, so
        # that nothing hides after the end and zstd is not cut off by a closed pipe.
        rest = zstd.stdout.read()
        if rest.count(0) != len(rest):
            found.append("(after the end of the archive)")
    assert zstd.returncode == 0
    return found


def test_the_passphrase_is_in_no_pushed_cache_item(booted: Booted, tmp_path: Path):
    secret_key = tmp_path / "ci.secret"
    r = cli("cache", "keygen", "ci", store=booted.store, cwd=tmp_path)
    assert r.code == 0, r.err
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    r = cli("cache", "push", str(cache), str(booted.result), "--key", str(secret_key),
            store=booted.store, env={"EMBEDBUILD_SECRETS": "/nonexistent"})
    assert r.code == 0, r.err
    pushed = time.monotonic() - t0
    skipped = re.findall(r"^not pushed: (\S+) holds a secret", r.out, re.M)
    assert {name.split("-", 1)[1] for name in skipped} == {
        "qemu-malta-be-seg-secrets", "qemu-malta-be-initramfs", "qemu-malta-be-result"}
    names = [p.name for p in (cache / "items").iterdir()]
    assert len(names) > 10  # the kernel, U-Boot, the packages, the other segments...
    needle = PASSPHRASE.encode()
    locked = {v.get("sha256") for v in tomllib.loads(
        (ROOT / "boards" / "common" / "lock.toml").read_text())["sources"].values()}
    scanned = sources = 0
    for f in sorted(p for p in cache.rglob("*") if p.is_file()):
        scanned += f.stat().st_size
        if f.name.endswith(".tar.zst"):
            assert needle not in f.read_bytes(), f
            assert _archive_holds(f, needle) == [], f
        elif f.parent.name == "sources" and f.name in locked:
            # A locked download, named by its sha256: it is the very file the lock
            # names (made before this run's passphrase) when its bytes hash to it. Not
            # decompressed: the kernel's source alone is 1.3 GB unpacked.
            digest = hashlib.sha256()
            with open(f, "rb") as raw:
                while block := raw.read(1 << 20):
                    digest.update(block)
            assert digest.hexdigest() == f.name, f
            sources += 1
        else:  # descriptions, small downloads
            assert not _holds(f.read_bytes(), needle), f
    # The scan finds what it looks for: the skipped secrets segment, packed as push would
    # pack it, holds the passphrase in its gzip-compressed cpio.
    store = Store(booted.store)
    [item] = [store.root / name for name in skipped if name.endswith("-seg-secrets")]
    pack(item, tmp_path / "secret.tar.zst")
    assert _archive_holds(tmp_path / "secret.tar.zst", needle) == ["./segment.cpio.z"]
    booted.timings["push"] = pushed
    booted.timings["scan"] = time.monotonic() - t0 - pushed
    assert sources > 0  # the kernel's source at least
    print(f"\npushed {len(names)} items, scanned {scanned:,} bytes (and what they hold), "
          f"{sources} locked downloads checked against the lock")
