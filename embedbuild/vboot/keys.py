"""The signing key folder: ``KEYDIR/NAME.key`` (RSA private key, PEM, mode 0600) beside
``KEYDIR/NAME.crt`` (a self-signed X.509 certificate holding the public key), the
layout ``mkimage -k KEYDIR`` reads for a signature node whose key-name-hint is NAME.

The folder is outside every repository and every store: by default
``~/.config/embedbuild/keys`` (``$XDG_CONFIG_HOME``, or ``$EMBEDBUILD_KEYS`` for another
folder), mode 0700. Rotation makes NAME-2, NAME-3, ... beside NAME: a board then trusts
old and new together (required-mode "any") until every device has the new U-Boot.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from embedbuild.errors import EmbedbuildError
from embedbuild.vboot.uboot_key import KEY_BITS, PublicKey

# The name becomes a DTB node name (key-NAME) and a file stem: no '@' (U-Boot refuses unit
# addresses in signature checking), nothing a shell or path would read differently.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")
GENERATION = re.compile(r"^(?P<family>.+?)-(?P<gen>[2-9]|[1-9][0-9]+)$")


class SigningKeyError(EmbedbuildError):
    """A signing key is missing, malformed or unsafe."""


def default_keydir() -> Path:
    """$EMBEDBUILD_KEYS, else $XDG_CONFIG_HOME/embedbuild/keys, else
    ~/.config/embedbuild/keys."""
    if os.environ.get("EMBEDBUILD_KEYS"):
        return Path(os.environ["EMBEDBUILD_KEYS"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "embedbuild" / "keys"


def check_name(name: str) -> str:
    """The name, if a key may be called that."""
    if not NAME.fullmatch(name):
        raise SigningKeyError(f"{name!r} is not a usable key name",
                        hint="letters, digits, '.', '_', '+' and '-', starting with a letter "
                        "or digit, at most 63 (it becomes U-Boot's node key-NAME)")
    return name


def check_keydir_place(keydir: Path, forbidden: Sequence[Path] = ()) -> None:
    """Refuse a key folder inside a git work tree or inside one of ``forbidden`` (the
    store, a cache folder): private keys must never be committed, stored or pushed."""
    where = keydir.resolve()
    for d in [where, *where.parents]:
        if (d / ".git").exists():
            raise SigningKeyError(f"the key folder is inside the git work tree {d}",
                            where=str(keydir), hint="keep keys outside every repository, "
                            "e.g. the default ~/.config/embedbuild/keys")
    for f in forbidden:
        f = f.resolve()
        if where == f or f in where.parents:
            raise SigningKeyError(f"the key folder is inside {f}, whose contents are shared",
                            where=str(keydir), hint="choose a folder of its own")


@dataclass(frozen=True)
class KeyInfo:
    """What ``keys show`` says about one key.

    Args:
        name: the key's name (its key-name-hint).
        public: the public key (from NAME.crt).
        crt: the certificate file.
        key: the private key file, None when this machine has none (verify-only).
        problems: what is wrong (a private key others can read, one that does not match).
        created: when the certificate was made.
    """

    name: str
    public: PublicKey
    crt: Path
    key: Path | None
    problems: tuple[str, ...]
    created: datetime.datetime

    @property
    def fingerprint(self) -> str:
        """sha256 of the modulus, as colon-separated hex (first 16 bytes)."""
        digest = hashlib.sha256(self.public.n.to_bytes(self.public.bits // 8, "big")).digest()
        return ":".join(f"{b:02x}" for b in digest[:16])


def new_key(keydir: Path, name: str, bits: int = 2048) -> KeyInfo:
    """Make NAME.key (0600) and NAME.crt in keydir (made 0700 if missing); never
    overwrites."""
    check_name(name)
    if bits not in KEY_BITS:
        raise SigningKeyError(f"{bits}-bit keys are not an algorithm U-Boot knows",
                        hint=f"choose one of {', '.join(map(str, KEY_BITS))}")
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, crt_path = keydir / f"{name}.key", keydir / f"{name}.crt"
    for p in (key_path, crt_path):
        if p.exists():
            raise SigningKeyError("exists already: a key is never overwritten", where=str(p),
                            hint="choose another name, or `embedbuild keys rotate` it")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        crt_path.write_bytes(_certificate(name, private).public_bytes(
            serialization.Encoding.PEM))
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_info(keydir, name)


def _certificate(name: str, private: rsa.RSAPrivateKey) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            # mkimage reads only the public key; U-Boot checks no dates.
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365 * 100))
            .sign(private, hashes.SHA256()))


def load_public(keydir: Path, name: str) -> PublicKey:
    """The public key of NAME from NAME.crt."""
    return _read_crt(keydir / f"{check_name(name)}.crt", name)[0]


def _read_crt(path: Path, name: str) -> tuple[PublicKey, datetime.datetime]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(f"no key {name!r}: {path.name} is not in {path.parent}",
                        where=str(path), hint=f"make it with `embedbuild keys new {name}`, "
                        "or point EMBEDBUILD_KEYS (--keydir) at the folder holding it") \
            from None
    except (OSError, ValueError) as e:
        raise SigningKeyError(f"not a PEM certificate: {e}", where=str(path)) from None
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey) or pub.key_size not in KEY_BITS:
        raise SigningKeyError("not an RSA key of 2048, 3072 or 4096 bits", where=str(path))
    numbers = pub.public_numbers()
    return PublicKey(name, numbers.n, numbers.e), cert.not_valid_before_utc


def key_info(keydir: Path, name: str) -> KeyInfo:
    """NAME's public key and the state of its private key file."""
    crt = keydir / f"{check_name(name)}.crt"
    public, created = _read_crt(crt, name)
    key = keydir / f"{name}.key"
    problems: list[str] = []
    if not key.exists():
        return KeyInfo(name, public, crt, None, (), created)
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        problems.append(f"{key.name} is mode {mode:04o}: others can read it (chmod 600)")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        problems.append(f"{key.name} is not an unencrypted PEM private key: {e}")
    else:
        if not isinstance(private, rsa.RSAPrivateKey) or \
                private.public_key().public_numbers().n != public.n:
            problems.append(f"{key.name} does not belong to {crt.name}")
    return KeyInfo(name, public, crt, key, tuple(problems), created)


def names(keydir: Path) -> list[str]:
    """Every key in the folder (a NAME.crt), sorted by family, then generation."""
    if not keydir.is_dir():
        return []
    found = [p.stem for p in keydir.glob("*.crt") if NAME.fullmatch(p.stem)]
    return sorted(found, key=lambda n: (family(n), generation(n)))


def family(name: str) -> str:
    """The name without its generation: dev-3 -> dev."""
    m = GENERATION.match(name)
    return m["family"] if m else name


def generation(name: str) -> int:
    """dev -> 1, dev-2 -> 2."""
    m = GENERATION.match(name)
    return int(m["gen"]) if m else 1


def rotate(keydir: Path, name: str) -> tuple[KeyInfo, KeyInfo]:
    """A new key beside NAME: the next generation of its family (dev, dev-2 -> dev-3),
    of the same size. Returns (newest old key, new key); nothing is removed."""
    old = key_info(keydir, name)
    fam = family(name)
    gens = [generation(n) for n in names(keydir) if family(n) == fam]
    newest = max(gens)
    latest = key_info(keydir, fam if newest == 1 else f"{fam}-{newest}")
    return latest, new_key(keydir, f"{fam}-{newest + 1}", old.public.bits)


def signing_keys(names: Sequence[str], hash_name: str = "sha256",
                 keydir: Path | None = None, where: str | None = None) -> list[PublicKey]:
    """The public keys (NAME.crt in keydir, default default_keydir()) of a board's
    [signing] keys, each required for configurations; ``where`` names the board.toml
    key in the error when one is missing."""
    folder = keydir or default_keydir()
    out = []
    for name in names:
        try:
            k = load_public(folder, name)
        except SigningKeyError as e:
            raise SigningKeyError(e.message, where=where or e.where, hint=e.hint) from None
        out.append(PublicKey(k.name, k.n, k.e, hash_name, "conf"))
    return out
