"""iw 5.19: shows and sets up radios over nl80211 (``iw dev``, ``iw reg get``, ``iw phy
phyN set netns PID``, which the access point's test moves its station's radio with),
static against libnl."""

from __future__ import annotations

from pathlib import Path

from embedbuild.buildsys.common import install_stripped, static_program_env
from embedbuild.buildsys.make import MakeRecipe
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context


@recipe("iw")
class Iw(MakeRecipe):
    """The nl80211 command line tool."""

    source = "iw"
    depends = ("libnl",)
    # libnl's private libraries too (pthread, m): the link is static. Without a .git
    # folder its version.sh takes the release's version.
    make_args = ("PKG_CONFIG=pkg-config --static", "iw")
    installs = ("usr/sbin/iw",)
    kernel = {"CFG80211": "y"}

    def environment(self, env: dict[str, str], target: Target) -> dict[str, str]:
        # CFLAGS from the environment replace the Makefile's "-O2 -g". iw's command
        # tables sit in a section found through __start/__stop symbols, which
        # --gc-sections keeps.
        return static_program_env(env)

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        install_stripped(ctx, target.toolchain, build / "iw", root / "usr" / "sbin" / "iw")
