"""The host's gate for a board that requires signed images ([signing]): before an image
is served to such a board or written to its flash, it must be a FIT whose configuration
verifies against the board's keyring (exactly what its U-Boot trusts), under the strict
check (verify.py): a legacy uImage, a raw kernel, an unsigned or wrongly signed FIT is
refused in one line, naming the file, before anything is powered, served or erased.

Used by the signed-FIT boot source (rig/signedfit.py) and the flash path
(rig/flash.py FlashJob.prepare); an update path (A/B) calls :func:`require_signed` the
same way before it serves an image.
"""

from __future__ import annotations

from pathlib import Path

from embedbuild.vboot.verify import FitSignatureError, Keyring, Verdict, check_file

LEGACY_MAGIC = b"\x27\x05\x19\x56"  # a legacy uImage header (image.h IH_MAGIC)
FDT_MAGIC = b"\xd0\x0d\xfe\xed"     # a FIT is a device tree


def require_signed(image: Path, keyring: Keyring, config: str, board: str) -> Verdict:
    """The verdict on ``image`` for ``board``, if its configuration ``config`` verifies
    against ``keyring``; FitSignatureError otherwise (one line, where = the file)."""
    hint = (f"give {board} a FIT signed by its keys (`embedbuild build {board}` makes "
            "one); `embedbuild keys check FILE --dtb KEYRING` says why an image fails")
    if not image.is_file():  # never a device or a FIFO: reading it could block
        raise FitSignatureError("not a regular file", where=str(image), hint=hint)
    try:
        with open(image, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise FitSignatureError(f"cannot read it: {e.strerror}", where=str(image)) from None
    if head == LEGACY_MAGIC:
        raise FitSignatureError(f"a legacy uImage carries no signature: refused for {board}, "
                                "which boots signed FIT images only", where=str(image),
                                hint=hint)
    if head != FDT_MAGIC:
        raise FitSignatureError(f"not a FIT image (a raw kernel?): refused for {board}, "
                                "which boots signed FIT images only", where=str(image),
                                hint=hint)
    try:
        return check_file(image, keyring, config)
    except FitSignatureError as e:
        raise FitSignatureError(f"refused for {board}, which requires signed images: "
                                f"{e.message}", where=e.where, hint=hint) from None
