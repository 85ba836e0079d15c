"""Signing a FIT without the private key entering the store.

The step's key covers the unsigned FIT (the step that made it, with its signature-N
nodes naming algo and key-name-hint) and the PUBLIC keys of the signers. Its build runs
``mkimage -F -k KEYDIR`` on a copy of the unsigned FIT, KEYDIR being the user's key
folder read at build time (its path is not part of the key, and nothing from it is
copied), then verifies the result with our own check against those public keys.

Why this is sound for a content-addressed store:
- RSA PKCS#1 v1.5 signing is deterministic, and for a given public key (n, e) the
  signature of a message is the one number s with s^e = pad(hash) mod n: any private
  key that matches the public key yields the same bytes. mkimage's other additions are
  fixed (timestamp from SOURCE_DATE_EPOCH=0, signer-name, signer-version), so the output
  is a function of what the key covers.
- The output is checked, so a private key that does not match the public key (or is
  missing: mkimage then skips the node without failing) fails the step instead of
  storing an unsigned or wrongly signed image under the key of a signed one.
- The store item and anything pushed to a binary cache hold the signed FIT only (public
  data). A machine without the private key can still get the item from a cache.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from pathlib import Path

from embedbuild import fdt
from embedbuild.errors import StepError
from embedbuild.fit import FitDescription
from embedbuild.step import Context, Step
from embedbuild.vboot.keys import default_keydir, load_public
from embedbuild.vboot.uboot_key import PublicKey
from embedbuild.vboot.verify import keyring_from_keys, verify


def check_private_keys(keydir: Path, keys: list[PublicKey]) -> None:
    """Each signer's NAME.key is in keydir, readable by its owner alone, beside the very
    NAME.crt this build was planned with."""
    for k in keys:
        private = keydir / f"{k.name}.key"
        if not private.is_file():
            raise StepError(f"cannot sign with {k.name}: no {private.name} in {keydir}",
                            hint="this machine can verify, not sign: sign where the key is "
                            "(EMBEDBUILD_KEYS names the folder), or substitute the signed "
                            "image from a binary cache")
        if stat.S_IMODE(private.stat().st_mode) & 0o077:
            raise StepError(f"{private} can be read by others: refusing to sign with it",
                            hint=f"chmod 600 {private}")
        if load_public(keydir, k.name).n != k.n:
            raise StepError(f"{keydir / (k.name + '.crt')} is not the key {k.name} this "
                            "build was planned with", hint="plan again (rerun the build)")


def sign(unsigned: Path, out: Path, keydir: Path, keys: list[PublicKey], run) -> None:
    """Sign a copy of ``unsigned`` into ``out`` with mkimage -F -k keydir, then check
    every configuration that has signature nodes against ``keys`` (each must have
    signed) with our verifier. ``run`` runs a command (a step's Runner.run)."""
    check_private_keys(keydir, keys)
    shutil.copyfile(unsigned, out)
    out.chmod(0o644)
    run(["mkimage", "-F", "-k", keydir, out], env={"SOURCE_DATE_EPOCH": "0"},
        what="mkimage -F -k (signing)")
    blob = out.read_bytes()
    ring = keyring_from_keys(keys, "all", "the signing keys")
    nodes = fdt.tree(blob)
    configs = sorted({p.rsplit("/", 1)[0] for p in nodes
                      if p.startswith("/configurations/") and p.count("/") == 3
                      and p.rsplit("/", 1)[1].startswith("signature")})
    if not configs:
        raise StepError(f"{unsigned.name} has no signature node to sign",
                        hint="its FIT description needs signatures for the board's keys")
    for conf in configs:
        v = verify(blob, ring, conf.rsplit("/", 1)[1], name=out.name)
        if not v.ok:
            raise StepError(f"signing did not produce a valid image: {v.line()}",
                            hint="is KEYDIR/NAME.key the private half of NAME.crt?")


def fit_sign_step(name: str, unsigned: Step, output: str, keys: list[PublicKey],
                  desc: FitDescription | None = None, image: str = "image") -> Step:
    """A step whose output ``image`` (file ``output``) is ``unsigned``'s output ``image``
    signed by ``keys`` (the keys named in its signature nodes). With ``desc`` (what the
    unsigned FIT was made from) the signed FIT is checked against it as well (each image's
    data as the unsigned FIT holds it, every signature node signed and covering what it
    signs) and output ``header`` holds what was read back, for the manifest."""

    def build(ctx: Context) -> None:
        src = ctx.input("unsigned", image)
        sign(src, ctx.output("image"), default_keydir(), keys, ctx.run.run)
        if desc is None:
            return
        blob = ctx.output("image").read_bytes()
        before = fdt.tree(src.read_bytes())
        data = {img.node: before[f"/images/{img.node}"].get("data", b"")
                for img in desc.images}
        if problems := desc.check(blob, data):
            raise StepError(f"{output} failed verification after signing: "
                            + "; ".join(problems))
        ctx.output("header").write_text(json.dumps(desc.facts(blob), indent=1))

    return Step(
        kind="fit-sign",
        name=name,
        version=2,
        inputs={"keys": [{"name": k.name, "n": f"{k.n:x}", "e": k.e, "algo": k.algo}
                         for k in keys], "image": image,
                "description": dataclasses.asdict(desc) if desc else None},
        deps={"unsigned": unsigned},
        build=build,
        outputs={"image": output} | ({"header": "fit.json"} if desc else {}),
    )
