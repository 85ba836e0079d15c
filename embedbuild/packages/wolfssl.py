"""wolfSSL: the crypto library hostapd and wpa_supplicant take SAE (WPA3) from.

SAE needs elliptic curves and big numbers, which wpa's internal TLS lacks (WPA2-PSK
only). wolfSSL rather than OpenSSL: measured on big-endian MIPS, static, stripped,
hostapd with OpenSSL 3.0's libcrypto is 2.7 times as large (2.28 MB against 0.85 MB:
OpenSSL's provider tables pull in every algorithm left enabled) and libcrypto takes
2.5 times as long to build. ``--enable-wpas`` turns on what wpa's crypto_wolfssl.c
calls (ECC with point arithmetic, AES key wrap, CMAC, HKDF, DH).
"""

from __future__ import annotations

from embedbuild.buildsys.autotools import AutotoolsRecipe
from embedbuild.recipe import recipe


@recipe("wolfssl")
class Wolfssl(AutotoolsRecipe):
    """The crypto and TLS library (static), with what hostapd and wpa_supplicant need."""

    source = "wolfssl"
    library = True
    # Debian's orig tarball is a git tag's archive: it has no configure script.
    autoreconf = True
    configure_args = ("--enable-wpas", "--disable-examples", "--disable-crypttests",
                      "--disable-benchmark", "--disable-asm", "--disable-jobserver",
                      # Else the library keeps its configure arguments and CFLAGS (with
                      # the build folder's path) for wolfSSL_configure_args().
                      "--enable-reproducible-build")
    # Sections per function and datum: the programs' --gc-sections drop what they
    # never call.
    cflags = "-Os -ffunction-sections -fdata-sections"
    # The headers include the generated options.h, which the library was built with.
    stages = ("include/wolfssl/*.h", "include/wolfssl/wolfcrypt/*.h", "lib/libwolfssl.a",
              "lib/pkgconfig/wolfssl.pc")
