"""FIT signatures checked on the host, the way U-Boot 2023.01's ``bootm ADDR#CONF`` checks
them (boot/image-fit.c fit_image_load, boot/image-fit-sig.c; facts only, code ours).

For the selected configuration, with the keys of the control DTB (``/signature``):

1. the FIT must be a sound tree, no node name may hold '@', the root needs a
   description and ``/images`` must exist (fit_check_format with FIT_SIGNATURE);
2. every key with ``required = "conf"`` is tried against each ``signature*`` subnode of
   the configuration: the node's algo must equal the key's, ``hashed-nodes`` must list
   the configuration itself, and the RSA PKCS#1 v1.5 signature must hold over the bytes
   of :mod:`embedbuild.vboot.regions` plus ``hashed-strings``. With required-mode "all"
   (U-Boot's default) every required key must verify, with "any" one is enough. A control
   DTB without /signature, or with no key required for "conf", accepts anything: U-Boot
   boots unsigned images then, and so does :func:`verify` unless ``strict``;
3. each image the configuration names is checked against its ``hash*`` nodes (and
   keys required for "image" against its own signatures).

``strict`` (the default) adds what U-Boot does not check but our boards need: the keyring
must require something, and every image the configuration loads must be covered by the
signature that verified (mkimage signs only kernel and fdt unless ``sign-images`` says
more: an uncovered ramdisk can be swapped, its hash recomputed, and U-Boot boots it).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from embedbuild import fdt
from embedbuild.errors import EmbedbuildError
from embedbuild.vboot.regions import RegionError, hashed_regions
from embedbuild.vboot.uboot_key import PublicKey, key_from_node

MAX_FIT = 0x10000000  # U-Boot's FIT_SIGNATURE_MAX_SIZE default: "Total size too large"
MAX_HASHED_NODES = 100  # IMAGE_MAX_HASHED_NODES
# The configuration properties that name images U-Boot loads (FIT_*_PROP).
IMAGE_PROPS = ("kernel", "fdt", "ramdisk", "loadables", "fpga", "firmware", "setup",
               "standalone")
SIGN_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
               "sha512": hashes.SHA512}


class FitSignatureError(EmbedbuildError):
    """A FIT does not pass the check U-Boot would make (or our stricter one)."""


@dataclass(frozen=True)
class Keyring:
    """The public keys a U-Boot trusts and how many of them must have signed.

    Args:
        keys: the keys (each with ``required`` "conf", "image" or None).
        required_mode: "all" or "any" (/signature's required-mode; absent means all).
        source: where they came from, for messages (a control DTB, a key folder).
    """

    keys: tuple[PublicKey, ...]
    required_mode: str = "all"
    source: str = ""

    def required(self, what: str) -> list[PublicKey]:
        """The keys U-Boot demands a signature of for ``what`` ("conf" or "image")."""
        return [k for k in self.keys if k.required == what]


def keyring_from_keys(keys: Sequence[PublicKey], required_mode: str = "all",
                      source: str = "") -> Keyring:
    """A keyring of keys all required for configurations."""
    if required_mode not in ("all", "any"):
        raise ValueError(f"required mode {required_mode!r} is not 'all' or 'any'")
    return Keyring(tuple(PublicKey(k.name, k.n, k.e, k.hash, "conf") for k in keys),
                   required_mode, source)


def keyring_from_dtb(dtb: bytes, source: str = "control DTB") -> Keyring:
    """The keys of a U-Boot control DTB's /signature node (an empty keyring when it has
    none: U-Boot then verifies nothing). A key node U-Boot could not use is an error."""
    try:
        nodes = fdt.tree(dtb)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise FitSignatureError(f"not a device tree: {e}", where=source) from None
    sig = nodes.get("/signature")
    if sig is None:
        return Keyring((), "all", source)
    mode = fdt.string(sig["required-mode"]) if "required-mode" in sig else "all"
    keys = []
    for path, props in nodes.items():
        parent, _, name = path.rpartition("/")
        if parent != "/signature":
            continue
        try:
            keys.append(key_from_node(name, props))
        except ValueError as e:
            raise FitSignatureError(f"/signature/{e}: U-Boot can verify nothing with it",
                                    where=source) from None
    # U-Boot reads "any" literally; anything else means all.
    return Keyring(tuple(keys), "any" if mode == "any" else "all", source)


@dataclass(frozen=True)
class Attempt:
    """One required key tried on one configuration: which signature node verified with
    it, or why none did."""

    key: str
    node: str | None
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """What U-Boot (and our stricter check) would say of one configuration of a FIT.

    Args:
        fit: the FIT's name in messages.
        config: the configuration checked.
        reason: why it is refused; empty when it boots.
        attempts: each required key tried.
        covered: the hashed-nodes of the signatures that verified.
        images: configuration property -> image node, for the images it loads.
        regions: (offset, size) of the signed bytes, per verifying signature node.
    """

    fit: str
    config: str
    reason: str = ""
    attempts: tuple[Attempt, ...] = ()
    covered: tuple[str, ...] = ()
    images: dict[str, tuple[str, ...]] = field(default_factory=dict)
    regions: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def signed_by(self) -> tuple[str, ...]:
        """The required keys that verified it."""
        return tuple(a.key for a in self.attempts if a.node is not None)

    def line(self) -> str:
        """One line: the FIT, the configuration and the verdict."""
        if self.ok:
            keys = ", ".join(self.signed_by) or "no key (none required)"
            return f"{self.fit}: configuration {self.config}: signed by {keys}"
        return f"{self.fit}: configuration {self.config}: {self.reason}"

    def check(self) -> Verdict:
        """Self, if it boots; else FitSignatureError with the one line."""
        if not self.ok:
            raise FitSignatureError(f"configuration {self.config}: {self.reason}",
                                    where=self.fit,
                                    hint="rebuild and re-sign it, or check the key")
        return self


def _stringlist(value: bytes) -> list[str]:
    """A string-list property's non-empty strings."""
    return [s.decode(errors="replace") for s in value.split(b"\0") if s]


class _Tree:
    """The FIT's nodes (path -> properties) and their children in order."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.props: dict[str, dict[str, bytes]] = {}
        self.children: dict[str, list[str]] = {}
        stack: list[str] = []
        for t in fdt.tags(blob):
            if t.kind == fdt.BEGIN_NODE:
                path = "/" if not stack else \
                    (stack[-1].rstrip("/") + "/" + t.name)
                if stack:
                    self.children[stack[-1]].append(path)
                if path in self.props:
                    raise ValueError(f"node {path} appears twice")
                self.props[path] = {}
                self.children[path] = []
                stack.append(path)
            elif t.kind == fdt.PROP:
                if not stack:
                    raise ValueError("a property outside every node")
                self.props[stack[-1]][t.name] = t.value
            elif t.kind == fdt.END_NODE:
                if not stack:
                    raise ValueError("END_NODE without a node")
                stack.pop()
        if stack:
            raise ValueError("nodes left open at END")

    def str(self, path: str, prop: str) -> str | None:
        value = self.props.get(path, {}).get(prop)
        return None if value is None else fdt.string(value)

    def subnodes(self, path: str, prefix: str) -> list[str]:
        return [c for c in self.children.get(path, []) if
                c.rpartition("/")[2].startswith(prefix)]


def verify(blob: bytes, keyring: Keyring, config: str | None = None, *,
           name: str = "FIT", strict: bool = True) -> Verdict:
    """The verdict on configuration ``config`` (default: the FIT's default) of the FIT
    ``blob``, checked against ``keyring`` as U-Boot checks it (plus ``strict``)."""
    conf = config or "(default)"
    if len(blob) > MAX_FIT:
        return Verdict(name, conf, f"{len(blob)} bytes: larger than U-Boot's "
                       f"FIT_SIGNATURE_MAX_SIZE (0x{MAX_FIT:x})")
    try:
        tree = _Tree(blob)
    except (ValueError, struct.error) as e:
        return Verdict(name, conf, f"not a sound FIT (Bad FIT image format): {e}")
    if bad := [p for p in tree.props if "@" in p]:
        return Verdict(name, conf, f"node {bad[0]} has a unit address ('@'), which "
                       "signature checking refuses")
    if "description" not in tree.props.get("/", {}) or "/images" not in tree.props:
        return Verdict(name, conf, "not a FIT (no root description or no /images)")
    if config is None:
        config = tree.str("/configurations", "default")
        if config is None:
            return Verdict(name, conf, "no configuration named and no default one")
    conf_path = f"/configurations/{config}"
    if conf_path not in tree.props:
        return Verdict(name, config, "no such configuration (Could not find configuration "
                       "node)")
    images = {p: tuple(_stringlist(tree.props[conf_path][p]))
              for p in IMAGE_PROPS if p in tree.props[conf_path]}

    required = keyring.required("conf")
    if strict and not required:
        where = f" ({keyring.source})" if keyring.source else ""
        return Verdict(name, config, f"the keyring{where} requires no configuration "
                       "signature: U-Boot would boot any image", images=images)
    attempts: list[Attempt] = []
    regions: dict[str, tuple[tuple[int, int], ...]] = {}
    verified = False
    for key in required:
        attempt = _try_key(tree, conf_path, key, regions)
        attempts.append(attempt)
        if attempt.node is None and keyring.required_mode == "all":
            return Verdict(name, config, f"required key {key.name}: {attempt.reason} "
                           "(Failed to verify required signature)", tuple(attempts),
                           images=images)
        if attempt.node is not None:
            verified = True
            if keyring.required_mode == "any":
                break
    if required and not verified:
        why = "; ".join(f"{a.key}: {a.reason}" for a in attempts)
        return Verdict(name, config, f"no required key verified it ({why}) (Failed to "
                       "verify 'any' of the required signature(s))", tuple(attempts),
                       images=images)
    covered: list[str] = []
    for a in attempts:
        if a.node is not None:
            covered += [n for n in _stringlist(tree.props[a.node]["hashed-nodes"])
                        if n not in covered]
    verdict = Verdict(name, config, "", tuple(attempts), tuple(covered), images, regions)
    # U-Boot looks the images up only after the configuration's signature holds.
    for prop, nodes in images.items():
        for node in nodes:
            if f"/images/{node}" not in tree.props:
                return replace(verdict, reason=f"its {prop} {node!r} is not in /images")
            why = _check_image(tree, f"/images/{node}", keyring)
            if why:
                return replace(verdict, reason=f"{prop} {node}: {why}")
            if strict and required and not _covered(tree, f"/images/{node}", covered):
                return replace(verdict, reason=f"its {prop} {node} is not covered by the "
                               "signature (add it to sign-images): it could be swapped")
    return verdict


def _try_key(tree: _Tree, conf_path: str, key: PublicKey,
             regions: dict[str, tuple[tuple[int, int], ...]]) -> Attempt:
    """The first signature node of the configuration that verifies with ``key``."""
    reasons = []
    for sig in tree.subnodes(conf_path, "signature"):
        why = _check_conf_signature(tree, conf_path, sig, key, regions)
        if not why:
            return Attempt(key.name, sig)
        reasons.append(f"{sig.rpartition('/')[2]}: {why}")
    if not reasons:
        return Attempt(key.name, None, "the configuration is not signed (No 'signature' "
                       "subnode found)")
    return Attempt(key.name, None, "; ".join(reasons))


def _check_conf_signature(tree: _Tree, conf_path: str, sig: str, key: PublicKey,
                          regions: dict[str, tuple[tuple[int, int], ...]]) -> str:
    """Why signature node ``sig`` does not verify with ``key`` ("" when it does)."""
    props = tree.props[sig]
    algo = tree.str(sig, "algo")
    if algo is None:
        return "no algo (Can't get hash algo property)"
    hash_name, _, crypto = algo.partition(",")
    if hash_name not in SIGN_HASHES or crypto not in ("rsa2048", "rsa3072", "rsa4096"):
        return f"algo {algo!r} is not one U-Boot knows (Unknown signature algorithm)"
    pad = tree.str(sig, "padding") or "pkcs-1.5"
    if pad != "pkcs-1.5":
        return f"padding {pad!r}: this U-Boot verifies pkcs-1.5 only"
    value = props.get("value")
    if value is None:
        return "no value: never signed (Can't get hash value property)"
    listed = props.get("hashed-nodes", b"")
    nodes = _stringlist(listed)
    if not nodes:
        return "no hashed-nodes"
    if not listed.endswith(b"\0"):
        return "hashed-nodes is not null-terminated"
    if len(nodes) > MAX_HASHED_NODES:
        return "more hashed-nodes than U-Boot accepts"
    if conf_path not in nodes:
        return "hashed-nodes does not list the configuration (Selected config not in " \
               "hashed nodes)"
    if algo != key.algo:
        return f"{algo}, while key {key.name} is {key.algo}"
    try:
        runs = hashed_regions(tree.blob, nodes)
    except RegionError as e:
        return f"cannot hash the configuration: {e}"
    if len(runs) >= 20 + len(nodes) * 7 - 1:
        return "too many hash regions"
    strings = props.get("hashed-strings")
    if strings is not None:
        h = fdt.header(tree.blob)
        size = int.from_bytes(strings[4:8], "big")
        if h.off_strings + size > len(tree.blob):
            return "hashed-strings reaches past the file"
        runs.append((h.off_strings, size))
    if len(value) != key.bits // 8:
        return f"a {len(value)}-byte signature for a {key.bits}-bit key"
    digest = hashlib.new(hash_name, b"".join(tree.blob[o:o + n] for o, n in runs)).digest()
    public = rsa.RSAPublicNumbers(key.e, key.n).public_key()
    try:
        public.verify(value, digest, padding.PKCS1v15(),
                      utils.Prehashed(SIGN_HASHES[hash_name]()))
    except InvalidSignature:
        return f"does not verify with key {key.name} (Verification failed)"
    regions[sig] = tuple(runs)
    return ""


def image_data(tree: _Tree, image: str) -> bytes | str:
    """An image node's data (inline, or external after the tree), or why not."""
    props = tree.props[image]
    size = props.get("data-size")
    for prop, base in (("data-position", 0),
                       ("data-offset", (fdt.header(tree.blob).totalsize + 3) & ~3)):
        if prop in props:
            if size is None:
                return f"{prop} without data-size"
            start = base + fdt.cells(props[prop])
            end = start + fdt.cells(size)
            if end > len(tree.blob):
                return f"its external data ends past the file ({prop})"
            return tree.blob[start:end]
    if "data" not in props:
        return "no data"
    return props["data"]


def digest(algo: str, data: bytes) -> bytes | None:
    """What U-Boot compares a hash node's value with (None: an algorithm it lacks)."""
    if algo == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algo in ("md5", "sha1", "sha256", "sha384", "sha512"):
        return hashlib.new(algo, data).digest()
    return None


def _check_image(tree: _Tree, image: str, keyring: Keyring) -> str:
    """Why an image does not pass U-Boot's load-time check ("" when it does)."""
    data = image_data(tree, image)
    if isinstance(data, str):
        return data
    for key in keyring.required("image"):
        if not any(_image_signature_ok(tree, sig, data, key)
                   for sig in tree.subnodes(image, "signature")):
            return f"not signed by key {key.name}, required for images"
    for h in tree.subnodes(image, "hash"):
        algo = tree.str(h, "algo")
        if algo is None:
            return f"{h.rpartition('/')[2]} has no algo"
        if fdt.cells(tree.props[h].get("ignore", b"")) == 1:
            continue
        want = digest(algo, data)
        value = tree.props[h].get("value")
        if want is None:
            return f"{h.rpartition('/')[2]}: {algo} is not a hash U-Boot knows"
        if value != want:
            return f"{h.rpartition('/')[2]}: the {algo} of the data does not match " \
                   "(Bad Data Hash)"
    return ""


def _image_signature_ok(tree: _Tree, sig: str, data: bytes, key: PublicKey) -> bool:
    algo, value = tree.str(sig, "algo"), tree.props[sig].get("value")
    if algo != key.algo or value is None or len(value) != key.bits // 8:
        return False
    hash_name = algo.partition(",")[0]
    public = rsa.RSAPublicNumbers(key.e, key.n).public_key()
    try:
        public.verify(value, hashlib.new(hash_name, data).digest(), padding.PKCS1v15(),
                      utils.Prehashed(SIGN_HASHES[hash_name]()))
    except InvalidSignature:
        return False
    return True


def _covered(tree: _Tree, image: str, covered: Sequence[str]) -> bool:
    """Whether the signature covers the image: its node and a hash node that is not
    ignored."""
    if image not in covered:
        return False
    return any(h in covered and fdt.cells(tree.props[h].get("ignore", b"")) != 1
               and tree.str(h, "algo") is not None for h in tree.subnodes(image, "hash"))


def check_file(path: Path, keyring: Keyring, config: str | None = None, *,
               strict: bool = True, limit: int = MAX_FIT) -> Verdict:
    """verify() of a FIT file; FitSignatureError (one line: the file, the configuration,
    the reason) unless it boots."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise FitSignatureError(f"{size} bytes: larger than {limit}", where=str(path))
        blob = path.read_bytes()
    except OSError as e:
        raise FitSignatureError(f"cannot read it: {e.strerror}", where=str(path)) from None
    return verify(blob, keyring, config, name=str(path), strict=strict).check()
