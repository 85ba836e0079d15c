"""hostapd 2.10: the access point daemon (nl80211 only, WPA2-PSK and WPA3-SAE with
management frame protection; no RADIUS, EAP server, WPS or VLANs), static against libnl
and wolfSSL. Its configuration comes from the system's [access_point] (rootfs/ap.py)."""

from __future__ import annotations

from embedbuild.packages.wpa import WpaRecipe
from embedbuild.recipe import recipe


@recipe("hostapd")
class Hostapd(WpaRecipe):
    """The access point: authenticates stations with WPA2-PSK or WPA3-SAE."""

    program = "hostapd"
    subdir = "hostapd"
    make_args = ("hostapd",)
    installs = ("usr/sbin/hostapd",)
    # PMF and HT are always built in 2.10 (CONFIG_IEEE80211W/N are gone). Left out on
    # purpose: CONFIG_NO_STDOUT_DEBUG (it silences AP-ENABLED and AP-STA-CONNECTED, which
    # the service log and the tests read), 802.11ac/ax (the 5 GHz radio later), WPS,
    # EAP, OWE, DPP, FILS, 802.11r.
    options = {
        "CONFIG_DRIVER_NL80211": "y",
        "CONFIG_LIBNL32": "y",
        # ECC and big numbers for SAE (wpa's internal TLS has neither).
        "CONFIG_TLS": "wolfssl",
        "CONFIG_GETRANDOM": "y",
        # CCMP only: TKIP is deprecated and would need RC4.
        "CONFIG_NO_TKIP": "y",
        "CONFIG_NO_RADIUS": "y",
        "CONFIG_NO_ACCOUNTING": "y",
        "CONFIG_NO_VLAN": "y",
        "CONFIG_NO_DUMP_STATE": "y",
    }
    new_options = {"CONFIG_SAE": "y"}
    # nl80211 (cfg80211); EAPOL frames over a packet socket; CCMP and, with PMF, BIP
    # (CMAC) keys, which mac80211 needs in the kernel's crypto API or the key addition
    # fails ("nl80211: kernel reports: key addition failed").
    kernel = {"CFG80211": "y", "PACKET": "y", "CRYPTO_CCM": "y", "CRYPTO_CMAC": "y"}
    # One access point from a configuration in an overlay; a system with [access_point]
    # gets its hostapd services written for it instead.
    services = {"hostapd": {"command": "hostapd /etc/hostapd/hostapd.conf",
                            "ready": "grep -qx 1 /sys/class/net/wlan0/carrier"}}
