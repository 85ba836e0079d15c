"""dropbear, the SSH server.

Built without password authentication at all (localoptions.h), linked
dynamically so glibc's name service works; the image gets its libraries from the
toolchain's sysroot. Host keys are made on the device at first start (dropbear
-R, into /etc/dropbear), never baked into the image.
"""

from __future__ import annotations

from pathlib import Path

from embedbuild.buildsys.make import MakeRecipe
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context

LOCAL_OPTIONS = b"""\
/* embedbuild: keys only; nobody gets in with a password. */
#define DROPBEAR_SVR_PASSWORD_AUTH 0
#define DROPBEAR_SVR_PAM_AUTH 0
#define DSS_PRIV_FILENAME "/etc/dropbear/dropbear_dss_host_key"
#define RSA_PRIV_FILENAME "/etc/dropbear/dropbear_rsa_host_key"
#define ECDSA_PRIV_FILENAME "/etc/dropbear/dropbear_ecdsa_host_key"
#define ED25519_PRIV_FILENAME "/etc/dropbear/dropbear_ed25519_host_key"
"""
PROGRAMS = ("dropbear", "dropbearkey")


@recipe("dropbear")
class Dropbear(MakeRecipe):
    """The SSH server (keys only) and its key generator."""

    source = "dropbear"
    configure_args = ("--disable-zlib", "--disable-lastlog", "--disable-utmp",
                      "--disable-utmpx", "--disable-wtmp", "--disable-wtmpx",
                      "--disable-pututline", "--disable-pututxline")
    make_args = (f"PROGRAMS={' '.join(PROGRAMS)}",)
    installs = tuple(f"usr/sbin/{p}" for p in PROGRAMS)
    # Sessions get a pty from /dev/ptmx (devpts); it serves TCP.
    kernel = {"UNIX98_PTYS": "y", "INET": "y"}
    services = {"dropbear": {"command": "dropbear -F -E -R -p 22", "output": "syslog",
                             "ready": "netstat -ltn | grep -q ':22 '"}}
    dirs = ("etc/dropbear",)

    def key_inputs(self, target: Target) -> dict:
        return {"options": LOCAL_OPTIONS.decode()}

    def prepare(self, ctx: Context, build: Path, target: Target) -> None:
        (build / "localoptions.h").write_bytes(LOCAL_OPTIONS)

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        dest = root / "usr" / "sbin"
        dest.mkdir(parents=True)
        for prog in PROGRAMS:
            ctx.run.run([f"{target.toolchain.prefix}strip", "-o", dest / prog, build / prog],
                        what=f"strip {prog}")
