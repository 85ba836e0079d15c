"""The regulatory database (Debian's wireless-regdb): which channels and powers each
country allows. A built-in cfg80211 asks the firmware loader for regulatory.db (and its
signature, regulatory.db.p7s, checked against the certificates the kernel tree carries)
before any root file system is mounted, so it goes into the initramfs under
/lib/firmware. Without it the kernel logs "failed to load regulatory.db" and keeps to
the world domain. Data only: nothing is compiled."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedbuild.buildsys.make import MakeRecipe
from embedbuild.recipe import Target, recipe
from embedbuild.step import Context

FIRMWARE = "lib/firmware"


@recipe("wireless-regdb")
class WirelessRegdb(MakeRecipe):
    """regulatory.db and its signature, for cfg80211."""

    # Upstream's files (signed by wens, whose certificate Linux 6.1 carries); Debian
    # ships them beside its own re-signed pair, the database byte for byte the same.
    source = "regulatory-db"
    extra_sources = {"signature": "regulatory-db-p7s"}
    make_args = None
    installs = (f"{FIRMWARE}/regulatory.db", f"{FIRMWARE}/regulatory.db.p7s")
    # cfg80211 reads it through the firmware loader (which CFG80211 selects).
    kernel = {"CFG80211": "y", "FW_LOADER": "y"}

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        dest = root / FIRMWARE
        dest.mkdir(parents=True)
        signature = ctx.input("src-signature", "tree")
        shutil.copyfile(build / "regulatory.db-upstream", dest / "regulatory.db")
        shutil.copyfile(signature / "regulatory.db.p7s-upstream", dest / "regulatory.db.p7s")
        for f in dest.iterdir():
            f.chmod(0o644)
