"""Verified boot's part of a result ([signing]): the keyring, i.e. the public keys the
board's U-Boot checks FIT signatures against exactly as it holds them (the control DTB
of the U-Boot embedbuild built, else a DTB of the keys alone), and the manifest's
``signing`` section that the bench reads before it serves or flashes anything
(rig/signedfit.py, rig/flash.py): an image that does not verify against this keyring
never reaches the board."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild.bootcmd import FIT_CONFIG
from embedbuild.output import Pick, PlanContext, Published, output
from embedbuild.step import Step


class SigningInfo(BaseModel):
    """What a signed result's images must pass.

    Args:
        keyring: the file holding the keys (a DTB with /signature, as U-Boot has it).
        required_mode: "all" or "any" of the keys.
        keys: the keys U-Boot trusts; signers: those that signed the FIT.
        config: the configuration the boot commands name (and the check verifies).
        version: the FIT's anti-rollback version (None: none).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyring: str
    required_mode: str
    keys: list[str]
    signers: list[str]
    config: str
    version: int | None


def keyring(p: PlanContext) -> Step:
    """The step (role ``keyring``, output ``dtb``) of the board's keyring: the control
    DTB of the U-Boot built for it, else the keys alone."""
    board = p.board

    def make() -> Step:
        from embedbuild.steps.uboot_control import keyring_step
        from embedbuild.vboot.keys import signing_keys

        if board.uboot.build is not None:
            return p.get("uboot")
        assert board.signing is not None
        return keyring_step(board, signing_keys(board.signing.keys, board.signing.algo,
                                                where=f"{board.dir / 'board.toml'}: signing.keys"))

    return p.add("keyring", make)


@output("signing", applies=lambda board: board.signing is not None,
        sections={"signing": SigningInfo})
def plan(p: PlanContext) -> Published:
    """The keyring the FIT is checked against before it is served or flashed."""
    s = p.board.signing
    assert s is not None
    step = keyring(p)
    return Published(files=[Pick("keyring", step, "dtb")], manifest={"signing": {
        "keyring": Path(step.output_path("dtb")).name, "required_mode": s.required_mode,
        "keys": list(s.keys), "signers": s.signers, "config": FIT_CONFIG,
        "version": s.version}})
