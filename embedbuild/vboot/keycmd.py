"""The work of ``embedbuild keys new|show|rotate|check``: each returns a Report, the lines to
print (the CLI prints them) and what needs fixing; errors are EmbedbuildError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedbuild.vboot import keys
from embedbuild.vboot.keys import KeyInfo
from embedbuild.vboot.verify import (
    FitSignatureError,
    check_file,
    keyring_from_dtb,
    keyring_from_keys,
)


@dataclass(frozen=True)
class Report:
    """What a keys command has to say, and the first problem found (or None)."""

    lines: list[str]
    problem: str | None = None


def new(keydir: Path, name: str, bits: int, forbidden: Sequence[Path] = ()) -> Report:
    """Make a key; refuses a folder inside a repository or a store."""
    keys.check_name(name)
    keys.check_keydir_place(keydir, forbidden)
    info = keys.new_key(keydir, name, bits)
    return Report([f"made {name}: {info.public.algo}, fingerprint {info.fingerprint}",
                   f"  private {info.key} (mode 0600: never share it, never commit it)",
                   f"  public  {info.crt}",
                   f"boards use it with [signing] keys = [\"{name}\"]"])


def _row(k: KeyInfo) -> str:
    private = "no private key (verify only)" if k.key is None else \
        "private key " + ("PROBLEM" if k.problems else "ok")
    return f"{k.name:24} {k.public.algo:16} {k.fingerprint[:23]}  {private}"


def show(keydir: Path, name: str | None = None) -> Report:
    """One line per key, or the details of one."""
    if name is None:
        found = keys.names(keydir)
        if not found:
            return Report([f"no keys in {keydir}", "make one: embedbuild keys new NAME"])
        infos = [keys.key_info(keydir, n) for n in found]
        bad = [f"{k.name}: {p}" for k in infos for p in k.problems]
        return Report([f"keys in {keydir}:"] + [_row(k) for k in infos],
                      _first(bad))
    k = keys.key_info(keydir, name)
    family = [n for n in keys.names(keydir) if keys.family(n) == keys.family(name)]
    return Report([
        f"name:         {k.name} (U-Boot's node /signature/key-{k.name})",
        f"algorithm:    {k.public.algo}, exponent {k.public.e}",
        f"fingerprint:  {k.fingerprint}",
        f"certificate:  {k.crt}",
        "private key:  " + (f"{k.key}" if k.key else "none here (this machine can verify, "
                            "not sign)"),
        f"created:      {k.created:%Y-%m-%d %H:%M} UTC",
        f"generations:  {', '.join(family)}"], _first([f"{k.name}: {p}" for p in k.problems]))


def _first(problems: list[str]) -> str | None:
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def rotate(keydir: Path, name: str) -> Report:
    """A new generation beside the key, and what a board does with it."""
    old, new_key = keys.rotate(keydir, name)
    o, n = old.name, new_key.name
    return Report([
        f"made {n} beside {o}: {new_key.public.algo}, fingerprint {new_key.fingerprint}",
        f"  private {new_key.key}",
        f"  public  {new_key.crt}",
        f"nothing uses {n} yet. To move a board from {o} to {n}:",
        f"  1. [signing] keys = [\"{o}\", \"{n}\"], required_mode = \"any\": U-Boot's "
        "control DTB trusts either key, and",
        "     images carry a signature by each (sign_with defaults to all keys), so "
        f"devices still on the U-Boot that trusts only {o} boot them too.",
        "     Build, then update U-Boot on every device.",
        f"  2. once every device runs that U-Boot: keys = [\"{n}\"] (required_mode "
        f"\"all\"); images are signed by {n} alone,",
        f"     and devices stop trusting {o} when they get this U-Boot. Remove "
        f"{o}.key after that.",
        "  (required_mode \"all\" with both keys demands both signatures on every image: "
        "for two signers, not for rotation.)",
    ])


def check(fit: Path, config: str | None, dtb: Path | None, names: Sequence[str],
          keydir: Path, required_mode: str = "all", strict: bool = True) -> Report:
    """Verify a FIT as U-Boot would, with the keys of a control DTB or of the key folder
    (what Debian's u-boot-tools lacks: fit_check_sign). Raises FitSignatureError."""
    if dtb is not None:
        try:
            ring = keyring_from_dtb(dtb.read_bytes(), str(dtb))
        except OSError as e:
            raise FitSignatureError(f"cannot read it: {e.strerror}", where=str(dtb)) from None
    else:
        ring = keyring_from_keys(keys.signing_keys(names or keys.names(keydir),
                                                   keydir=keydir), required_mode,
                                 str(keydir))
    v = check_file(fit, ring, config, strict=strict)
    return Report([v.line(), f"  keys required ({ring.required_mode}): "
                   + (", ".join(k.name for k in ring.required("conf")) or "none"),
                   "  signed nodes: " + (" ".join(v.covered) or "none")])
