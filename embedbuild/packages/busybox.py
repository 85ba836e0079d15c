"""busybox: the base userland (shell, init's tools, syslogd, udhcpc), one static
binary and its applet links, configured by the board's fragments ([userland] busybox)
over busybox's defconfig."""

from __future__ import annotations

from embedbuild.buildsys.kbuild import KbuildRecipe
from embedbuild.recipe import recipe
from embedbuild.toolchain import REPRODUCIBLE_ENV


@recipe("busybox")
class Busybox(KbuildRecipe):
    """The base userland: shell and tools in one binary."""

    source = "busybox"
    version = 2
    base = True
    config_top = "Config.in"
    config_settle = "oldconfig"
    # busybox generates its Config.in files from Config.src during `make defconfig`.
    config_generated = True
    # No build date in the banner: the same inputs give the same binary.
    make_env = {**REPRODUCIBLE_ENV, "KCONFIG_NOTIMESTAMP": "1"}
    make_target = "busybox"
    installs = ("bin/busybox", "bin/*", "sbin/*", "usr/bin/*", "usr/sbin/*", "linuxrc")
    # An ELF program; syslogd and logger talk over a Unix socket (/dev/log).
    kernel = {"BINFMT_ELF": "y", "UNIX": "y"}
    services = {"syslogd": {"command": "syslogd -n -O /var/log/messages"}}
