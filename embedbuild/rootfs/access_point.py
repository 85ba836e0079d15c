"""What an access point system puts into the image: one hostapd configuration per radio
and udhcpd's (public: the same for everyone who builds the system), the passphrase in a
segment of its own (secret: never shared), and the services that run them (the LAN
bridge, hostapd on each radio, the DHCP server).

hostapd reads one file, so its service writes the running configuration at start into
/run (a tmpfs, mode 0600): the public file, then the secret line.
"""

from __future__ import annotations

import hashlib
import ipaddress

from embedbuild.cpio import Entry
from embedbuild.model.access_point import HW_MODE, AccessPoint, Radio, RadioUse
from embedbuild.model.system import Service

SECRETS_DIR = "etc/embedbuild/secrets"
SECRET_FILE = f"{SECRETS_DIR}/access-point.conf"
UDHCPD_CONF = "etc/udhcpd.conf"
LEASES = "/run/udhcpd.leases"
# What the init names the syslog service (busybox's recipe offers it): the access
# point's services log there when the system runs it, else to the console.
SYSLOG = "syslogd"
# The descriptor the LAN service writes its ready line to (the init's ready_fd).
READY_FD = 3

# hostapd's lines per mode: WPA2-PSK; SAE with management frame protection required and
# both of SAE's password derivations (hash-to-element and hunting-and-pecking); both,
# with PMF optional but required of SAE stations.
MODE_LINES = {
    "wpa2": ("wpa_key_mgmt=WPA-PSK",),
    "wpa3": ("wpa_key_mgmt=SAE", "ieee80211w=2", "sae_pwe=2"),
    "wpa2-wpa3": ("wpa_key_mgmt=WPA-PSK SAE", "ieee80211w=1", "sae_require_mfp=1",
                  "sae_pwe=2"),
}


def hostapd_conf(ap: AccessPoint, use: RadioUse, radio: Radio) -> str:
    """The public part of hostapd's configuration for one radio (no passphrase)."""
    lines = [
        f"# {use.radio} ({radio.phy}, {radio.band}): written by embedbuild from the system's",
        "# [access_point]; the hostapd service appends the passphrase at start.",
        f"interface={radio.interface}",
        f"bridge={ap.lan.bridge}",
        "driver=nl80211",
        "ctrl_interface=/run/hostapd",
        # As hex: hostapd takes the rest of a line raw, so no byte needs quoting.
        f"ssid2={use.ssid.encode().hex()}",
        *(["utf8_ssid=1"] if not use.ssid.isascii() else []),
        f"country_code={ap.country}",
        "ieee80211d=1",
        f"hw_mode={HW_MODE[radio.band]}",
        f"channel={use.channel}",
        "ieee80211n=1",
        "wmm_enabled=1",
        "auth_algs=1",
        "wpa=2",
        "rsn_pairwise=CCMP",
        *MODE_LINES[use.mode],
    ]
    return "\n".join(lines) + "\n"


def udhcpd_conf(ap: AccessPoint) -> str:
    """busybox udhcpd's configuration: the LAN's range, the AP as router."""
    lan, dhcp = ap.lan, ap.lan.dhcp
    assert dhcp is not None
    net = ipaddress.IPv4Interface(lan.address).network
    count = int(ipaddress.IPv4Address(dhcp.end)) - int(ipaddress.IPv4Address(dhcp.start)) + 1
    return "\n".join([
        "# written by embedbuild from the system's [access_point.lan]",
        f"interface {lan.bridge}",
        f"start {dhcp.start}",
        f"end {dhcp.end}",
        f"max_leases {count}",
        f"lease_file {LEASES}",
        f"option subnet {net.netmask}",
        f"option router {lan.ip}",
        f"option lease {dhcp.lease}",
    ]) + "\n"


def public_entries(ap: AccessPoint, radios: dict[str, Radio]) -> list[Entry]:
    """The access point's configuration files, which hold no secret."""
    out = [Entry("etc/hostapd", "dir", 0o755)]
    out += [Entry(f"etc/hostapd/{u.radio}.conf", "file", 0o644,
                  data=hostapd_conf(ap, u, radios[u.radio]).encode()) for u in ap.radios]
    if ap.lan.dhcp is not None:
        out.append(Entry(UDHCPD_CONF, "file", 0o644, data=udhcpd_conf(ap).encode()))
    return out


def secret_entries(ap: AccessPoint) -> list[Entry]:
    """The secrets segment: the passphrase as hostapd's line, readable by root only.
    ``wpa_passphrase`` serves SAE too (``sae_password`` would cut it at a '|')."""
    return [Entry(SECRETS_DIR, "dir", 0o700),
            Entry(SECRET_FILE, "file", 0o600,
                  data=f"wpa_passphrase={ap.passphrase}\n".encode())]


def secret_digest(entries: list[Entry]) -> str:
    """What the secrets segment's key is made of: a slow, salted hash of its contents
    (scrypt), so that the key, which the store's item name shows, is no quicker to test
    a guessed passphrase against than a captured WPA handshake is."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(repr((e.path, e.kind, e.mode, e.uid, e.gid)).encode())
        h.update(e.data)
    return hashlib.scrypt(h.digest(), salt=b"embedbuild secrets segment", n=1 << 14, r=8,
                          p=1, dklen=32).hex()


def services(ap: AccessPoint, radios: dict[str, Radio], syslog: bool) -> list[Service]:
    """The bridge, hostapd per radio and udhcpd as services (``syslog``: log there).
    Each is a short script the init's sh runs as written, ending by exec-ing its
    daemon, so that the supervised pid is the daemon's."""
    lan = ap.lan
    after = [SYSLOG] if syslog else []
    output = "syslog" if syslog else "console"
    members = "".join(f"ip link set {m} up && {{ brctl addif {lan.bridge} {m} 2>/dev/null "
                      f"|| [ -e /sys/class/net/{m}/brport ]; }} && " for m in lan.members)
    # The init has no one-shot services: this one sets the LAN up (again, when
    # restarted), says so on its ready descriptor (the init's ready_fd: no polling) and
    # stays, so that "up" means the bridge has its address.
    bridge = (f"{{ [ -e /sys/class/net/{lan.bridge} ] || brctl addbr {lan.bridge}; }} && "
              f"{members}ip addr flush dev {lan.bridge} && "
              f"ip addr add {lan.address} dev {lan.bridge} && ip link set {lan.bridge} up && "
              f"echo up >&{READY_FD} && exec sleep 2147483647 {READY_FD}>&-")
    out = [Service(name="lan", command=bridge, depends_on=after, output=output,
                   ready_fd=READY_FD)]
    for u in ap.radios:
        iface = radios[u.radio].interface
        run = f"/run/hostapd-{u.radio}.conf"
        out.append(Service(
            name=f"hostapd-{u.radio}",
            command=(f"umask 077 && cat /etc/hostapd/{u.radio}.conf /{SECRET_FILE} "
                     f"> {run} && exec hostapd {run}"),
            depends_on=["lan", *after], output=output,
            # hostapd cannot say when it is up, so the init tries this test: an AP
            # interface gets its carrier when it beacons (mac80211's start_ap), and
            # hostapd has put it into the bridge. Shell builtins only: no program is
            # started per look.
            ready=(f"read -r c < /sys/class/net/{iface}/carrier && [ \"$c\" = 1 ] && "
                   f"[ -e /sys/class/net/{iface}/brport ]")))
    if lan.dhcp is not None:
        # Up once idle (the init's default): udhcpd waits on its socket, bound at start.
        out.append(Service(
            name="dhcpd", command=f"touch {LEASES} && exec udhcpd -f /{UDHCPD_CONF}",
            depends_on=["lan", *after], output=output))
    return out
