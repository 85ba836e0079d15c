"""ed25519 signing keys for the binary cache, in files that carry the key's name.

A key file holds one line, ``NAME:BASE64`` (as Nix's keys do): the secret file the
32-byte private seed, the public file the 32-byte public key. A description is
signed by the key's name and the signature of its canonical JSON (signature left out).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from embedbuild.bounded import FetchError, read_file
from embedbuild.errors import EmbedbuildError

MAX_KEY_FILE = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SecretKey:
    """A named private key: signs descriptions."""

    name: str
    key: Ed25519PrivateKey

    def sign(self, description: dict) -> dict:
        """The description with its ``signature`` (``NAME:BASE64``) added."""
        sig = self.key.sign(canonical(description))
        return {**description, "signature": f"{self.name}:{base64.b64encode(sig).decode()}"}


@dataclass(frozen=True)
class PublicKey:
    """A named public key: one a user trusts."""

    name: str
    key: Ed25519PublicKey


def canonical(description: dict) -> bytes:
    """The bytes a signature covers: the description without its signature, as JSON
    with sorted keys and no spaces."""
    body = {k: v for k, v in description.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BadSignature:
    """Why a description's signature is not accepted.

    Args:
        reason: in words.
        untrusted_signer: signed (maybe well) by a key not trusted here: every
            description from the same signer fails alike.
    """

    reason: str
    untrusted_signer: bool = False


def check_signature(description: dict, trusted: dict[str, PublicKey]) -> BadSignature | None:
    """None when the description is signed by a trusted key, else why not."""
    sig = description.get("signature")
    if not isinstance(sig, str) or ":" not in sig:
        return BadSignature("its description is not signed")
    name, _, b64 = sig.partition(":")
    key = trusted.get(name)
    if key is None:
        return BadSignature(f"signed by {name[:64]!r}, a key not trusted here",
                            untrusted_signer=True)
    try:
        key.key.verify(base64.b64decode(b64, validate=True), canonical(description))
    except (InvalidSignature, binascii.Error, ValueError):
        return BadSignature(f"the signature by {name!r} does not match its description")
    return None


def keygen(name: str, directory: Path = Path()) -> tuple[Path, Path]:
    """Write NAME.secret (mode 0600) and NAME.public in directory; refuses to overwrite."""
    if not _NAME.fullmatch(name):
        raise EmbedbuildError(f"{name!r} is not a usable key name",
                              hint="letters, digits, '.', '_' and '-', starting with a "
                              "letter or digit (e.g. ci.example.org-1)")
    secret, public = directory / f"{name}.secret", directory / f"{name}.public"
    for p in (secret, public):
        if p.exists():
            raise EmbedbuildError("exists already: a key is never overwritten", where=str(p),
                                  hint="choose another name, or remove the old files")
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization as ser

    seed = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    pub = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{name}:{base64.b64encode(seed).decode()}\n")
    public.write_text(f"{name}:{base64.b64encode(pub).decode()}\n")
    return secret, public


def _read(path: Path, what: str) -> tuple[str, bytes]:
    try:
        # A key file is one short line: anything else (a device, a huge file) is not read.
        text = read_file(path, limit=MAX_KEY_FILE, follow_symlinks=True).decode().strip()
    except FetchError as e:
        raise EmbedbuildError(f"cannot read this {what} key: {e.message}",
                              where=str(path)) from None
    except UnicodeDecodeError:
        text = ""
    name, _, b64 = text.partition(":")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not _NAME.fullmatch(name) or len(raw) != 32:
        raise EmbedbuildError(f"not a {what} key file (one line NAME:BASE64 of 32 bytes)",
                              where=str(path),
                              hint="make keys with `embedbuild cache keygen NAME`")
    return name, raw


def load_secret(path: Path) -> SecretKey:
    """Read a NAME.secret file."""
    name, raw = _read(path, "secret")
    return SecretKey(name, Ed25519PrivateKey.from_private_bytes(raw))


def load_public(path: Path) -> PublicKey:
    """Read a NAME.public file."""
    name, raw = _read(path, "public")
    return PublicKey(name, Ed25519PublicKey.from_public_bytes(raw))
