"""A board's verified boot: which keys its U-Boot trusts and which sign its images."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from embedbuild.model.base import Strict

# A key's name: its files KEYDIR/NAME.key and NAME.crt, and U-Boot's node key-NAME.
KeyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$")]


class Signing(Strict):
    """Signed FIT images, checked by a U-Boot whose control DTB holds the public keys.

    The keys are files outside the repository (``embedbuild keys new NAME``): NAME.crt
    (public) is read when planning, NAME.key (private) only by the step that signs.

    Args:
        keys: the keys U-Boot's control DTB carries, each required for configurations.
        required_mode: "all": an image must be signed by every key; "any": one is
            enough. Rotating a key is "any" with the old and the new key until every
            device runs a U-Boot with the new one.
        sign_with: the keys that sign images (default: all of ``keys``); with "all" it
            must be all of them.
        algo: the hash of the signature (the key size gives the rest: sha256,rsa2048).
        version: the anti-rollback version of the images this board builds, written into
            the signed configuration (``embedbuild,version``); the boot commands refuse an
            image whose version is below ``min_version`` in the device's U-Boot
            environment. Raise it when older images must no longer boot. Small numbers
            only (U-Boot's ``fdt get value`` reads a 32-bit cell whose bytes look like
            text as a string).
    """

    keys: list[KeyName] = Field(min_length=1, max_length=8)
    required_mode: Literal["all", "any"] = "all"
    sign_with: list[KeyName] | None = None
    algo: Literal["sha256", "sha384", "sha512"] = "sha256"
    version: int | None = Field(default=None, ge=0, le=0xFFFF)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("a key is listed twice in keys")
        signers = self.signers
        if not signers:
            raise ValueError("sign_with is empty: nothing would sign the images")
        if stray := [k for k in signers if k not in self.keys]:
            raise ValueError(f"sign_with names {', '.join(stray)}, which keys does not list: "
                             "U-Boot would not trust its signature")
        if self.required_mode == "all" and set(signers) != set(self.keys):
            raise ValueError("with required_mode = \"all\" every key must sign (sign_with "
                             "leaves out " + ", ".join(k for k in self.keys if k not in signers)
                             + "): U-Boot would refuse every image; use \"any\" to rotate")
        return self

    @property
    def signers(self) -> list[str]:
        """The keys that sign images."""
        return list(self.sign_with if self.sign_with is not None else self.keys)
