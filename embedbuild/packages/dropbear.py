"""dropbear, the SSH server, and its client, key generator and scp, as one
multi-call binary (the links name the program).

Built without password authentication at all (localoptions.h), unless the system
sets root_password_hash: then with it, checked by musl's crypt() (bookworm's glibc
has none, so the loader refuses that with libc glibc). Linked against the
board's libc: with musl static (it reads /etc/passwd itself); with the toolchain's
glibc dynamically, so glibc's name service works, and the image gets its libraries
from the toolchain's sysroot. Host keys are made on the device at first start
(dropbear -R, into /etc/dropbear), never baked into the image.
"""

from __future__ import annotations

from pathlib import Path

from embedbuild.buildsys.make import MakeRecipe
from embedbuild.model.board import TOOLCHAIN_LIBC, Board
from embedbuild.recipe import Refusal, Target, recipe
from embedbuild.step import Context


def local_options(passwords: bool) -> bytes:
    """dropbear's localoptions.h: keys only, unless the system gives root a password
    (then its crypt(3) hash in /etc/shadow is checked by the libc's crypt())."""
    why = ("the system sets root_password_hash: keys or root's password" if passwords
           else "keys only; nobody gets in with a password")
    return f"""\
/* embedbuild: {why}. */
#define DROPBEAR_SVR_PASSWORD_AUTH {int(passwords)}
#define DROPBEAR_SVR_PAM_AUTH 0
#define DSS_PRIV_FILENAME "/etc/dropbear/dropbear_dss_host_key"
#define RSA_PRIV_FILENAME "/etc/dropbear/dropbear_rsa_host_key"
#define ECDSA_PRIV_FILENAME "/etc/dropbear/dropbear_ecdsa_host_key"
#define ED25519_PRIV_FILENAME "/etc/dropbear/dropbear_ed25519_host_key"
""".encode()


def wants_passwords(target: Target) -> bool:
    """Whether the board's system gives root a password to log in with."""
    system = target.board.system
    return system is not None and system.root_password_hash is not None


# The programs of the multi-call binary: the server is the binary, the others link
# to it (scp must be on the device's PATH for `scp` from a host to work).
PROGRAMS = ("dropbear", "dbclient", "dropbearkey", "scp")
LINKS = ("usr/bin/dbclient", "usr/bin/dropbearkey", "usr/bin/scp")


@recipe("dropbear")
class Dropbear(MakeRecipe):
    """The SSH server (keys only), client, key generator and scp in one binary."""

    source = "dropbear"
    version = 2
    configure_args = ("--disable-zlib", "--disable-lastlog", "--disable-utmp",
                      "--disable-utmpx", "--disable-wtmp", "--disable-wtmpx",
                      "--disable-pututline", "--disable-pututxline")
    make_args = (f"PROGRAMS={' '.join(PROGRAMS)}", "MULTI=1")
    installs = ("usr/sbin/dropbear", *LINKS)
    # Sessions get a pty from /dev/ptmx (devpts); it serves TCP.
    kernel = {"UNIX98_PTYS": "y", "INET": "y"}
    services = {"dropbear": {"command": "dropbear -F -E -R -p 22", "output": "syslog",
                             "ready": "netstat -ltn | grep -q ':22 '"}}
    dirs = ("etc/dropbear",)

    def refusal(self, board: Board) -> Refusal | None:
        if board.system and board.system.root_password_hash and board.userland \
                and board.userland.libc == TOOLCHAIN_LIBC:
            return Refusal("dropbear checks root's password with crypt(), which the "
                           "toolchain's glibc (bookworm) does not have",
                           ("system", "root_password_hash"),
                           'use [userland] libc = "musl" (the default), or log in with '
                           "authorized_keys only")
        return None

    def key_inputs(self, target: Target) -> dict:
        return {"options": local_options(wants_passwords(target)).decode()}

    def prepare(self, ctx: Context, build: Path, target: Target) -> None:
        (build / "localoptions.h").write_bytes(local_options(wants_passwords(target)))

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        server = root / "usr" / "sbin" / "dropbear"
        server.parent.mkdir(parents=True)
        ctx.run.run([f"{target.toolchain.prefix}strip", "-o", server,
                     build / "dropbearmulti"], what="strip dropbearmulti")
        for link in LINKS:
            (root / link).parent.mkdir(parents=True, exist_ok=True)
            (root / link).symlink_to("../sbin/dropbear")
