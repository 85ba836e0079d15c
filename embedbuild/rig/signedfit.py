"""The signed-FIT boot source: the way a board with [signing] boots over TFTP.

Before anything is powered or served, the FIT (the result's, or a given file) must verify
against the result's keyring (the public keys exactly as the board's U-Boot holds them,
outputs/signing.py) under the host's strict check (vboot/gate.py); the copy the TFTP
server serves is checked again. U-Boot is then told to load it to uboot.fit_addr and to
boot it through its configuration (``bootm ADDR#conf-1 ADDR#conf-1 FDT``), after the
anti-rollback check when the board versions its images, so that U-Boot checks the
signature itself too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild import bootcmd
from embedbuild.errors import EmbedbuildError
from embedbuild.manifest import Manifest
from embedbuild.rig.bootsource import BootSource, boot_source, stage_files
from embedbuild.vboot.gate import require_signed
from embedbuild.vboot.verify import Keyring, Verdict, keyring_from_dtb

if TYPE_CHECKING:
    from embedbuild.rig.target import Target


def result_keyring(result: Path, manifest: Manifest | None = None) -> Keyring:
    """The keyring of a signed build result (its ``signing`` section's file)."""
    m = manifest or Manifest.read(result)
    if m.signing is None:
        raise EmbedbuildError(f"the result of {m.board} holds no keyring: it was built "
                              "without [signing]", where=str(result),
                              hint="build the board again (embedbuild build BOARD)")
    path = result / m.signing.keyring
    return keyring_from_dtb(path.read_bytes(), str(path))


def check_result_image(result: Path, image: Path, board: str) -> Verdict:
    """``image`` checked against a signed result's keyring and configuration."""
    m = Manifest.read(result)
    keyring = result_keyring(result, m)
    assert m.signing is not None
    return require_signed(image, keyring, m.signing.config, board)


@boot_source
class SignedFitBoot(BootSource):
    """A signed FIT over TFTP, booted through its configuration: the result's, or
    ``image``, refused unless it verifies against the result's keyring.

    Args:
        image: a FIT to boot instead of the built one (e.g. one signed elsewhere).
    """

    name = "signed-fit"

    def __init__(self, image: Path | None = None) -> None:
        self.image = image
        self.verdict: Verdict | None = None

    def check(self, target: Target) -> None:
        board = target.require_board()
        if board.signing is None:
            raise EmbedbuildError(f"board {board.name} has no [signing]: its U-Boot checks "
                                  "no signature", where=str(board.dir / "board.toml"),
                                  hint="boot it with --boot tftp, or give it [signing] "
                                  "(README: Verified boot)")
        if self.image is not None and not self.image.exists():
            raise EmbedbuildError(f"file to serve not found: {self.image}",
                                  hint="give an existing file")
        if target.result is not None:
            self.verdict = check_result_image(target.result, self._fit(target), board.name)

    def _fit(self, target: Target) -> Path:
        if self.image is not None:
            return self.image
        assert target.result is not None
        name = Manifest.read(target.result).flash_image
        if name is None:
            raise EmbedbuildError("the result holds no FIT image", where=str(target.result),
                                  hint="build the board again (embedbuild build BOARD)")
        return target.result / name

    def stage(self, target: Target, folder: Path) -> None:
        # The result's files (tests fetch them back), and the FIT; what the TFTP server
        # will serve is checked again, not only the file it was copied from.
        fit = self._fit(target)
        stage_files(target.result, folder, [fit])
        assert target.result is not None
        check_result_image(target.result, folder / fit.name, target.require_board().name)

    def commands(self, target: Target) -> list[str]:
        return bootcmd.signed_fit_boot(target.require_board(), self._fit(target).name)
