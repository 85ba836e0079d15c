"""dropbear, the SSH server: the second package, proving the package model.

Built without password authentication at all (localoptions.h), linked
dynamically so glibc's name service works; the rootfs step brings its
libraries from the toolchain sysroot. Host keys are made on the device at
first start (dropbear -R), never baked into the image.
"""

from __future__ import annotations

from embedbuild.step import Context, Step
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

LOCAL_OPTIONS = b"""\
/* embedbuild: keys only; nobody gets in with a password. */
#define DROPBEAR_SVR_PASSWORD_AUTH 0
#define DROPBEAR_SVR_PAM_AUTH 0
#define DSS_PRIV_FILENAME "/etc/dropbear/dropbear_dss_host_key"
#define RSA_PRIV_FILENAME "/etc/dropbear/dropbear_rsa_host_key"
#define ECDSA_PRIV_FILENAME "/etc/dropbear/dropbear_ecdsa_host_key"
#define ED25519_PRIV_FILENAME "/etc/dropbear/dropbear_ed25519_host_key"
"""


def dropbear_step(tree: Step, tc: Toolchain, jobs: int) -> Step:
    """Configure and build dropbear and dropbearkey; output ``root`` holds usr/sbin."""

    def build(ctx: Context) -> None:
        b = ctx.scratch
        ctx.run.run(["cp", "-a", f"{ctx.input('tree', 'tree')}/.", b],
                    what="copying the dropbear source")
        # Store items are read-only, and cp -a keeps that; this copy is ours to build in.
        ctx.run.run(["chmod", "-R", "u+w", b], what="making the copy writable")
        (b / "localoptions.h").write_bytes(LOCAL_OPTIONS)
        env = {**REPRODUCIBLE_ENV, "CC": tc.cc}
        ctx.run.run(["./configure", f"--host={tc.triplet}", "--disable-zlib", "--disable-lastlog",
                     "--disable-utmp", "--disable-utmpx", "--disable-wtmp", "--disable-wtmpx",
                     "--disable-pututline", "--disable-pututxline"],
                    cwd=b, env=env, what="configuring dropbear")
        ctx.run.run(["make", f"-j{ctx.jobs}", "PROGRAMS=dropbear dropbearkey"], cwd=b, env=env,
                    what="building dropbear")
        dest = ctx.output("root") / "usr" / "sbin"
        dest.mkdir(parents=True)
        for prog in ("dropbear", "dropbearkey"):
            ctx.run.run([f"{tc.prefix}strip", "-o", dest / prog, b / prog], what=f"strip {prog}")

    return Step(
        kind="dropbear",
        name=f"dropbear-{tc.triplet}",
        version=1,
        inputs={"toolchain": tc.identity(), "options": LOCAL_OPTIONS.decode()},
        deps={"tree": tree},
        build=build,
        outputs={"root": "root"},
        jobs=jobs,
        compilers=tc.compilers,
    )
