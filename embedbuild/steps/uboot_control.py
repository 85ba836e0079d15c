"""U-Boot's own control DTB, with the public keys FIT signatures are checked against,
appended to u-boot-nodtb.bin (CONFIG_OF_SEPARATE), as U-Boot's Makefile does: the keys
then travel inside the U-Boot image and no DTB from the stage before it (QEMU's -dtb, a
vendor loader) can take them away.

Only public data goes in: the step's key covers the board's control .dts (or U-Boot's
u-boot.dtb, via the build it depends on), each key's modulus and exponent, the required
mode. What dtc wrote is read back and must hold exactly those keys.
"""

from __future__ import annotations

from pathlib import Path

from embedbuild.errors import StepError
from embedbuild.kconfig import read_config
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.vboot import uboot_config
from embedbuild.vboot.uboot_key import PublicKey
from embedbuild.vboot.verify import FitSignatureError, keyring_from_dtb


def signature_dts(keys: list[PublicKey], required_mode: str) -> str:
    """A /signature node (U-Boot's layout) to merge into a control .dts."""
    body = "\n".join(k.dts() for k in keys)
    return f'\n/ {{\n\tsignature {{\n\t\trequired-mode = "{required_mode}";\n{body}\n\t}};\n}};\n'


def uboot_control_step(board: Board, build: Step, keys: list[PublicKey]) -> Step:
    """Outputs ``image`` (u-boot-nodtb.bin + the control DTB: what QEMU or the flash
    starts), ``dtb`` (the control DTB, for checking FITs on the host against exactly
    what U-Boot holds) and ``dts`` (its source)."""
    spec = board.uboot.build
    assert spec is not None
    signing = board.signing
    mode = signing.required_mode if signing else "all"
    base_dts = spec.control_dts.read_text() if spec.control_dts else None

    def build_fn(ctx: Context) -> None:
        config = read_config(ctx.input("build", "config"))
        found = uboot_config.problems(config) if signing else \
            [f"CONFIG_OF_SEPARATE is off: {uboot_config.NEEDED['OF_SEPARATE']}"] \
            if config.get("OF_SEPARATE") != "y" else []
        if found:
            raise StepError(f"U-Boot's configuration defeats verified boot: {found[0]}"
                            + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
                            hint="turn it off in a fragment of [uboot.build]; all of them:\n"
                            + "\n".join(found))
        text = base_dts
        if text is None:
            dtb = ctx.input("build", "dtb")
            if dtb.stat().st_size == 0:
                raise StepError("U-Boot built no u-boot.dtb to put the keys into",
                                hint="set CONFIG_OF_SEPARATE, unset CONFIG_OF_OMIT_DTB and "
                                "CONFIG_OF_BOARD, or give [uboot.build] control_dts")
            decompiled = ctx.scratch / "u-boot.dts"
            ctx.run.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", decompiled, dtb],
                        what="dtc (decompile u-boot.dtb)")
            text = decompiled.read_text()
        if signing:
            text += signature_dts(keys, mode)
        ctx.output("dts").write_text(text)
        include = spec.control_dts.parent if spec.control_dts else ctx.scratch
        ctx.run.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-i", include, "-o",
                     ctx.output("dtb"), ctx.output("dts")], what="dtc (control DTB)")
        if signing:
            check_keys(ctx.output("dtb"), keys, mode)
        with ctx.output("image").open("wb") as out:
            out.write(ctx.input("build", "nodtb").read_bytes())
            out.write(ctx.output("dtb").read_bytes())

    return Step(
        kind="uboot-control",
        name=f"{board.name}-uboot-control",
        version=1,
        inputs={"control_dts": base_dts, "required_mode": mode,
                "keys": [{"name": k.name, "n": f"{k.n:x}", "e": k.e, "algo": k.algo}
                         for k in keys]},
        deps={"build": build},
        build=build_fn,
        outputs={"image": Path(spec.image).name, "dtb": "u-boot-control.dtb",
                 "dts": "u-boot-control.dts"},
    )


def check_keys(dtb: Path, keys: list[PublicKey], mode: str) -> None:
    """The control DTB holds exactly ``keys``, each required for configurations, and
    ``mode``: U-Boot will check what the board says."""
    try:
        ring = keyring_from_dtb(dtb.read_bytes(), dtb.name)
    except FitSignatureError as e:
        raise StepError(str(e)) from None
    got = {(k.name, k.n, k.e, k.algo, k.required) for k in ring.keys}
    want = {(k.name, k.n, k.e, k.algo, "conf") for k in keys}
    if got != want or ring.required_mode != mode:
        extra = sorted(k[0] for k in got - want)
        raise StepError(f"{dtb.name} does not hold exactly the board's keys ({mode}): "
                        f"unexpected {', '.join(extra) or 'none'}, missing "
                        f"{', '.join(sorted(k[0] for k in want - got)) or 'none'}",
                        hint="a /signature node in the control .dts? remove it: [signing] "
                        "lists the keys")


def keyring_step(board: Board, keys: list[PublicKey]) -> Step:
    """For a board with [signing] whose U-Boot embedbuild does not build: output ``dtb``,
    a device tree holding only the /signature node with the board's keys, as U-Boot's
    control DTB must hold them (what the host checks images against, and what goes into
    that U-Boot's DTB, e.g. with fdtgrep or by its vendor)."""
    signing = board.signing
    assert signing is not None

    def build_fn(ctx: Context) -> None:
        source = ctx.scratch / "keyring.dts"
        source.write_text("/dts-v1/;\n\n/ {\n};\n" + signature_dts(keys, signing.required_mode))
        ctx.run.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", ctx.output("dtb"), source],
                    what="dtc (keyring)")
        check_keys(ctx.output("dtb"), keys, signing.required_mode)

    return Step(
        kind="keyring",
        name=f"{board.name}-keyring",
        version=1,
        inputs={"required_mode": signing.required_mode,
                "keys": [{"name": k.name, "n": f"{k.n:x}", "e": k.e, "algo": k.algo}
                         for k in keys]},
        deps={},
        build=build_fn,
        outputs={"dtb": "keyring.dtb"},
    )
