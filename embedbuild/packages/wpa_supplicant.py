"""wpa_supplicant 2.10: the station side of WPA2-PSK and WPA3-SAE (nl80211 only; no EAP,
WPS, P2P, AP mode or D-Bus), static against libnl and wolfSSL. The access point's test
runs it as the station that joins."""

from __future__ import annotations

from embedbuild.packages.wpa import WpaRecipe
from embedbuild.recipe import recipe


@recipe("wpa_supplicant")
class WpaSupplicant(WpaRecipe):
    """A WPA2/WPA3 station: joins a network with a passphrase."""

    program = "wpa_supplicant"
    subdir = "wpa_supplicant"
    make_args = ("wpa_supplicant",)
    installs = ("usr/sbin/wpa_supplicant",)
    options = {
        "CONFIG_DRIVER_NL80211": "y",
        "CONFIG_LIBNL32": "y",
        # ECC and big numbers for SAE.
        "CONFIG_TLS": "wolfssl",
        "CONFIG_SAE": "y",
        "CONFIG_GETRANDOM": "y",
        "CONFIG_NO_TKIP": "y",
        # The control socket (status queries) is small; keep it.
        "CONFIG_CTRL_IFACE": "y",
        "CONFIG_BACKEND": "file",
        "CONFIG_NO_CONFIG_WRITE": "y",
        "CONFIG_NO_CONFIG_BLOBS": "y",
    }
    # nl80211; EAPOL frames over a packet socket; CCMP and BIP keys (see hostapd).
    kernel = {"CFG80211": "y", "PACKET": "y", "CRYPTO_CCM": "y", "CRYPTO_CMAC": "y"}
    # A station on wlan0 from a configuration in an overlay.
    services = {"wpa_supplicant": {
        "command": "wpa_supplicant -i wlan0 -c /etc/wpa_supplicant/wpa_supplicant.conf"}}
