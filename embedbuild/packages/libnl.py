"""libnl: the netlink library hostapd, wpa_supplicant and iw talk to the kernel's
nl80211 with (Debian's source package libnl3). Only the core and generic-netlink
libraries are built and staged, static: the programs that link them carry them."""

from __future__ import annotations

from embedbuild.buildsys.autotools import AutotoolsRecipe
from embedbuild.recipe import recipe

LIBS = ("libnl-3", "libnl-genl-3")


@recipe("libnl")
class Libnl(AutotoolsRecipe):
    """Netlink sockets and messages (libnl-3) and generic netlink (libnl-genl-3)."""

    source = "libnl3"
    library = True
    configure_args = ("--disable-cli", "--disable-debug")
    make_args = tuple(f"lib/{lib}.la" for lib in LIBS)
    # The Makefile's lists cut to the two libraries, their headers and .pc files.
    install_args = ("install-libLTLIBRARIES", "install-libnlinclude_netlinkHEADERS",
                    "install-libnlinclude_netlink_genlHEADERS", "install-pkgconfigDATA",
                    f"lib_LTLIBRARIES={' '.join(f'lib/{lib}.la' for lib in LIBS)}",
                    f"pkgconfig_DATA={' '.join(f'{lib}.0.pc' for lib in LIBS)}")
    stages = ("include/libnl3/netlink/*.h", "include/libnl3/netlink/genl/*.h",
              *(f"lib/{lib}.a" for lib in LIBS),
              *(f"lib/pkgconfig/{lib}.0.pc" for lib in LIBS))
    # Netlink sockets are part of the networking core.
    kernel = {"NET": "y"}
