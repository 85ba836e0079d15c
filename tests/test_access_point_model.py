"""The access point without building: the system description checked against the board,
the files and services embedbuild writes from it, the passphrase file's refusals, the
secrets segment and what it makes secret, the recipes planned for every toolchain (arm,
aarch64, big-endian MIPS), and the base images untouched by the AP system's kernel
fragments. (Broken descriptions: tests/data/broken/165-... to 187-...)"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from embedbuild.buildsys.common import cross_env
from embedbuild.errors import BoardError
from embedbuild.load import load_board, read_passphrase
from embedbuild.model.access_point import AccessPoint
from embedbuild.packages import registry
from embedbuild.plan import Planner, plan_board
from embedbuild.rootfs import access_point as ap_files
from embedbuild.rootfs.generated import exec_form
from embedbuild.toolchain import Toolchain

TWIN_AP = ROOT / "boards" / "qemu-malta-be" / "access-point.toml"
AC_LITE_AP = ROOT / "boards" / "ap-ac-lite" / "access-point.toml"
PASSPHRASE = "correct horse | battery"
# One board per toolchain the project has: arm, aarch64, big-endian MIPS.
TOOLCHAIN_BOARDS = {"arm-linux-gnueabihf": "qemu-arm-virt",
                    "aarch64-linux-gnu": "qemu-aarch64-virt",
                    "mips-linux-gnu": "qemu-malta-be"}
AP_PACKAGES = ("hostapd", "wpa_supplicant", "iw", "wolfssl", "libnl", "wireless-regdb")


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch) -> Path:
    """A secrets folder holding both committed systems' passphrase files."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    for name in ("qemu-malta-be-ap.psk", "ap-ac-lite.psk"):
        (folder / name).write_text(PASSPHRASE + "\n")
        (folder / name).chmod(0o600)
    monkeypatch.setenv("EMBEDBUILD_SECRETS", str(folder))
    return folder


def test_the_twins_access_point_system(secrets: Path):
    board = load_board("qemu-malta-be", TWIN_AP)
    system = board.system
    assert system is not None and system.access_point is not None
    ap = system.access_point
    assert ap.passphrase == PASSPHRASE
    # The system file's kernel fragment and command line join the board's.
    assert board.kernel.fragments[-1] == ROOT / "boards" / "qemu-malta-be" / "wireless.config"
    assert board.kernel.cmdline == "console=ttyS0,115200 mac80211_hwsim.radios=3"
    names = [s.name for s in system.services]
    assert names == ["syslogd", "lan", "hostapd-radio0", "hostapd-radio1", "dhcpd"]
    by = {s.name: s for s in system.services}
    assert by["hostapd-radio1"].depends_on == ["lan", "syslogd"]
    assert by["hostapd-radio1"].output == "syslog"
    assert by["hostapd-radio1"].ready == ('read -r c < /sys/class/net/wlan1/carrier && '
                                          '[ "$c" = 1 ] && [ -e /sys/class/net/wlan1/brport ]')
    # The bridge says it is up itself; udhcpd is up once idle (the init's readiness).
    assert (by["lan"].ready, by["lan"].ready_fd) == (None, 3)
    assert (by["dhcpd"].ready, by["dhcpd"].ready_fd) == (None, None)
    radios = {r.name: r for r in board.radios}
    conf = ap_files.hostapd_conf(ap, ap.radios[1], radios["radio1"]).splitlines()
    for line in ("interface=wlan1", "bridge=br-lan", "driver=nl80211", "country_code=DE",
                 f"ssid2={b'embedbuild-wpa3'.hex()}", "hw_mode=g", "channel=11", "wpa=2",
                 "wpa_key_mgmt=SAE", "ieee80211w=2", "sae_pwe=2", "rsn_pairwise=CCMP"):
        assert line in conf
    assert ap_files.udhcpd_conf(ap).splitlines()[1:] == [
        "interface br-lan", "start 192.168.50.100", "end 192.168.50.150", "max_leases 51",
        "lease_file /run/udhcpd.leases", "option subnet 255.255.255.0",
        "option router 192.168.50.1", "option lease 3600"]
    # The passphrase is only in the secrets segment: owner-only, as hostapd's line.
    public = ap_files.public_entries(ap, radios)
    assert not any(PASSPHRASE.encode() in e.data for e in public)
    secret = {e.path: e for e in ap_files.secret_entries(ap)}
    assert secret["etc/embedbuild/secrets"].mode == 0o700
    entry = secret["etc/embedbuild/secrets/access-point.conf"]
    assert (entry.mode, entry.data) == (0o600, f"wpa_passphrase={PASSPHRASE}\n".encode())
    # The model never shows it (show, logs, reprs).
    assert PASSPHRASE not in board.model_dump_json() + repr(board)


def test_the_access_points_services_run_as_the_init_runs_them(secrets: Path):
    """The init's sh runs a service's text whole unless it is one simple command: each
    generated one is a script that parses and ends by exec-ing its daemon."""
    generated = [s for name, path in (("qemu-malta-be", TWIN_AP), ("ap-ac-lite", AC_LITE_AP))
                 for s in load_board(name, path).system.services
                 if s.name in ("lan", "dhcpd") or s.name.startswith("hostapd-")]
    assert len(generated) == 7
    for s in generated:
        # Shell text run as written (exec would run its first command only).
        assert exec_form(s.command) == s.command, s.command
        assert subprocess.run(["sh", "-n", "-c", s.command]).returncode == 0, s.command
        assert re.search(r"exec (sleep|hostapd|udhcpd) ", s.command), s.command
        if s.ready is not None:
            assert subprocess.run(["sh", "-n", "-c", s.ready]).returncode == 0, s.ready
        if s.ready_fd is not None:
            assert f"echo up >&{s.ready_fd} && exec sleep" in s.command, s.command


def test_hostapd_lines_per_mode_and_ssid_as_hex(secrets: Path):
    board = load_board("ap-ac-lite", AC_LITE_AP)
    ap = board.system.access_point
    radio = board.radios[0]
    conf = ap_files.hostapd_conf(ap, ap.radios[0], radio).splitlines()
    assert {"wpa_key_mgmt=WPA-PSK SAE", "ieee80211w=1", "sae_require_mfp=1",
            "sae_pwe=2"} <= set(conf)
    use = ap.radios[0].model_copy(update={"ssid": "café #1 = ok", "mode": "wpa2"})
    conf = ap_files.hostapd_conf(ap, use, radio).splitlines()
    assert f"ssid2={'café #1 = ok'.encode().hex()}" in conf and "utf8_ssid=1" in conf
    assert "wpa_key_mgmt=WPA-PSK" in conf and not any(c.startswith("ieee80211w") for c in conf)
    # The AP AC Lite's LAN bridges its wired port; its network is the bridge's.
    lan = next(s for s in board.system.services if s.name == "lan")
    assert "brctl addif br-lan eth0" in lan.command and board.system.network is None


def test_passphrase_files_are_refused_outside_safe_places(tmp_path: Path, secrets: Path):
    board = load_board("qemu-malta-be")
    system_file = tmp_path / "sys" / "s.toml"
    system_file.parent.mkdir()

    def read(name: str) -> str:
        return read_passphrase(name, board, system_file, "s.toml:3")

    def refused(name: str, *needles: str) -> None:
        with pytest.raises(BoardError) as e:
            read(name)
        assert e.value.where == "s.toml:3"
        for n in needles:
            assert n in e.value.message + (e.value.hint or ""), e.value.message
        assert PASSPHRASE not in e.value.message

    assert read("qemu-malta-be-ap.psk") == PASSPHRASE
    assert read(str(secrets / "ap-ac-lite.psk")) == PASSPHRASE
    for text, ok in (("12345678", True), ("x" * 63 + "\r\n", True), (" spaces  ok ", True),
                     ("1234567", False), ("x" * 64, False), ("pässword1", False),
                     ("tab\there1", False), ("", False)):
        (secrets / "t.psk").write_text(text)
        (secrets / "t.psk").chmod(0o600)
        if ok:
            assert read("t.psk") == text.rstrip("\r\n")
        else:
            refused("t.psk", "passphrase_file")
    refused("nope.psk", "does not exist", "chmod 600")
    refused("sub/x.psk", "give a file name")
    (secrets / "t.psk").chmod(0o640)
    refused("t.psk", "can be read by others (mode 0640)", "chmod 600")
    (secrets / "dir.psk").mkdir()
    refused("dir.psk", "not a regular file")
    # In shared places: the project (through a symlink too), beside the system file, a
    # git work tree.
    inside = ROOT / "boards" / ".test-passphrase.psk"
    try:
        inside.write_text(PASSPHRASE)
        inside.chmod(0o600)
        refused(str(inside), "inside the project")
        os.symlink(inside, secrets / "link.psk")
        refused("link.psk", "inside the project")
    finally:
        inside.unlink()
    beside = system_file.parent / "s.psk"
    beside.write_text(PASSPHRASE)
    beside.chmod(0o600)
    refused(str(beside), "inside the system file's folder")
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    in_git = tmp_path / "repo" / "p.psk"
    in_git.write_text(PASSPHRASE)
    in_git.chmod(0o600)
    refused(str(in_git), "inside a git work tree")


@pytest.mark.parametrize("triplet", TOOLCHAIN_BOARDS)
def test_the_access_point_recipes_plan_for_every_toolchain(triplet: str):
    planner = Planner(load_board(TOOLCHAIN_BOARDS[triplet]))
    steps = {name: planner.package(name) for name in AP_PACKAGES}
    for name, step in steps.items():
        assert step.name == f"{name}-{triplet}"
    hostapd = steps["hostapd"]
    # Every compiling recipe gets the board's C library (musl) in its staging sysroot.
    assert set(hostapd.deps) == {"tree", "src-debian", "lib-libnl", "lib-wolfssl", "lib-musl"}
    assert hostapd.deps["lib-wolfssl"] is steps["wolfssl"]
    assert hostapd.deps["src-debian"].inputs["basename"] == "wpa_2.10-12+deb12u3.debian.tar.xz"
    assert set(steps["iw"].deps) == {"tree", "lib-libnl", "lib-musl"}
    regdb = steps["wireless-regdb"]
    assert regdb.deps["tree"].inputs == {"sha256": regdb.deps["tree"].inputs["sha256"],
                                         "basename": "regulatory.db-upstream", "as_file": True}
    # wolfSSL's configure is regenerated: the host's autotools are in its key.
    assert {"autoconf", "automake", "libtool"} <= set(steps["wolfssl"].inputs["autotools"])


def test_the_recipes_take_the_compiler_from_the_build_environment():
    """No recipe names a C library or compiler: when the infrastructure's environment
    gives another (musl's wrapper), it is what builds them."""
    tc = Toolchain("mips-linux-gnu-", load_board("qemu-malta-be").arch)
    reg = registry()
    env = {**cross_env(tc, Path("/sysroot")), "CC": "/opt/musl/bin/musl-gcc", "CFLAGS": "-x"}
    for name in ("hostapd", "wpa_supplicant", "iw"):
        got = reg[name].environment(dict(env), None)  # type: ignore[arg-type]
        assert got["CC"] == "/opt/musl/bin/musl-gcc"
        assert got["CFLAGS"].split()[:4] == ["-Os", "-ffunction-sections", "-fdata-sections",
                                             "-x"]
        assert "-I/sysroot/include" in got["CFLAGS"] and "-static" in got["LDFLAGS"]
        assert "-L/sysroot/lib" in got["LDFLAGS"]


def test_the_secret_reaches_only_what_is_made_from_it(secrets: Path):
    plan = plan_board(load_board("qemu-malta-be", TWIN_AP))
    steps = plan.steps
    secret = [r for r, s in steps.items() if s.holds_secret]
    [seg] = [s for s in steps.values() if s.secret]
    assert seg.name == "qemu-malta-be-seg-secrets" and [r for r in secret
                                                        if r.startswith("segment")] != []
    assert len([r for r in secret if r.startswith("segment")]) == 1
    assert PASSPHRASE not in json.dumps(seg.inputs)
    # A separate initramfs: only its concatenation and the result hold the secret; the
    # kernel, the U-Boot, every other segment stay shareable.
    assert sorted(r for r in secret if not r.startswith("segment")) == ["initramfs", "result"]
    assert not any(steps[r].holds_secret for r in ("kernel", "image", "uboot", "kconfig"))
    needs = steps["kernel-needs"].inputs["needs"]
    assert ["the access point", "BRIDGE", "y"] in needs
    assert ["package hostapd", "CFG80211", "y"] in needs
    # Built in (the AP AC Lite boots one uImage): the kernel holds it too.
    plan = plan_board(load_board("ap-ac-lite", AC_LITE_AP))
    assert plan.steps["kernel"].holds_secret and plan.steps["image"].holds_secret
    assert not plan.steps["kconfig"].holds_secret and not plan.steps["dtb"].holds_secret
    # Another passphrase: another secrets segment, the same everything else.
    (secrets / "ap-ac-lite.psk").write_text("another passphrase\n")
    again = plan_board(load_board("ap-ac-lite", AC_LITE_AP))
    assert again.steps["kconfig"].key == plan.steps["kconfig"].key
    changed = {r for r, s in again.steps.items() if s.key != plan.steps[r].key}
    assert changed == {r for r, s in plan.steps.items() if s.holds_secret}


def test_the_ac_lites_base_system_does_without_the_wireless_stack(secrets: Path):
    """The AP system's kernel fragments come with it: the board's own system builds the
    kernel it built before (same config request, no secret, no AP package)."""
    base = plan_board(load_board("ap-ac-lite"))
    ap = plan_board(load_board("ap-ac-lite", AC_LITE_AP))
    assert not any(f.name == "wireless.config" for f in base.board.kernel.fragments)
    assert base.steps["kconfig"].key != ap.steps["kconfig"].key
    assert not any(s.holds_secret for s in base.steps.values())
    assert not any(r.startswith(("hostapd", "wolfssl", "wireless")) for r in base.steps)


def test_the_twins_access_point_boots_the_twins_own_kernel(secrets: Path):
    """The twin carries the radios in its own kernel, so that CI compiles one malta
    kernel for all its tests: the AP system differs in its initramfs only."""
    base = plan_board(load_board("qemu-malta-be"))
    ap = plan_board(load_board("qemu-malta-be", TWIN_AP))
    assert base.steps["kernel"].key == ap.steps["kernel"].key
    assert not any(s.holds_secret for s in base.steps.values())
    assert ap.steps["initramfs"].holds_secret and not ap.steps["kernel"].holds_secret


def test_access_point_service_names_are_known_to_the_systems_own():
    ap = AccessPoint.model_validate({
        "country": "DE", "passphrase_file": "x.psk",
        "lan": {"address": "10.1.0.1/24"},
        "radios": [{"radio": "radio0", "ssid": "s", "mode": "wpa3", "channel": 1}]})
    assert ap.service_names() == ["lan", "hostapd-radio0"]
    with pytest.raises(RuntimeError, match="not read by the loader"):
        ap.passphrase  # noqa: B018
