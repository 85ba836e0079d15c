"""What hostapd and wpa_supplicant share: Debian's source package ``wpa`` (2.10) with
the Debian patches that touch what is built, a ``.config`` made from the program's
defconfig, and a static link against libnl and wolfSSL (no recipe of its own: the
two programs are hostapd.py and wpa_supplicant.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from embedbuild.buildsys.common import install_stripped, static_program_env
from embedbuild.buildsys.make import MakeRecipe, dotconfig
from embedbuild.recipe import Target
from embedbuild.step import Context

# Debian's patches (debian/patches/ of wpa 2.10-12+deb12u3) that change code these
# builds compile: nl80211 extra IEs only where the driver allows them; no FT-SAE
# advertised without 802.11r (else stations try FT and fail); the PKEX fix (CVE, not
# built here, applied so the tree is Debian's fixed one). The rest of the series is
# D-Bus, systemd, TLS policy and EAP, none of it built.
PATCHES = ("upstream-fixes/0001-nl80211-add-extra-ies-only-if-allowed-by-driver.patch",
           "upstream-fixes/0002-AP-guard-FT-SAE-code-with-CONFIG_IEEE80211R_AP.patch",
           "CVE-2022-37660.patch")
_ENABLED = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=", re.M)


class WpaRecipe(MakeRecipe):
    """A program of the wpa source package: set ``program`` (also its folder, ``subdir``,
    and make target) and ``options``.

    Class attributes:
        program: hostapd or wpa_supplicant.
        options: its .config: every option the defconfig turns on is off unless named
            here (so nothing comes in unasked); a name the defconfig lacks is an error
            unless it is listed in ``new_options``.
        new_options: options the defconfig does not mention.
    """

    source = "wpa"
    extra_sources = {"debian": "wpa-debian"}
    depends = ("libnl", "wolfssl")
    program: ClassVar[str]
    options: ClassVar[Mapping[str, str]] = {}
    new_options: ClassVar[Mapping[str, str]] = {}

    def key_inputs(self, target: Target) -> dict:
        return {"options": dict(self.options), "new_options": dict(self.new_options),
                "patches": list(PATCHES)}

    def prepare(self, ctx: Context, build: Path, target: Target) -> None:
        series = ctx.input("src-debian", "tree") / "patches"
        for patch in PATCHES:
            ctx.run.run(["patch", "-p1", "-s", "-i", series / patch], cwd=build,
                        what=f"applying Debian's {Path(patch).name}")
        folder = build / self.program
        template = (folder / "defconfig").read_text()
        off: dict[str, str | None] = {name: None for name in _ENABLED.findall(template)}
        (folder / ".config").write_text(dotconfig(
            template, off | dict(self.options), f"{self.program} .config",
            new=self.new_options))

    def environment(self, env: dict[str, str], target: Target) -> dict[str, str]:
        # Through the environment: on make's command line CFLAGS would replace the
        # Makefile's own additions (-I../src ...).
        return static_program_env(env)

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        install_stripped(ctx, target.toolchain, build / self.program / self.program,
                         root / "usr" / "sbin" / self.program)
