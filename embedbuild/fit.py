"""FIT images as data: a description (images with their hashes, configurations with
what they name and, when signed, their signatures) rendered to the .its mkimage
reads, and the image mkimage wrote checked against it (our own FDT parser).

Signatures are ready for verified boot (issue 25): a configuration's ``signatures``
render as ``signature-N`` nodes (``algo``, ``key-name-hint``, ``sign-images``); after
``mkimage -k KEYDIR`` the check wants each signed, with ``hashed-nodes`` covering the
root, the configuration and every image it signs with that image's hashes.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from embedbuild import fdt

# U-Boot's names for the architectures (include/image.h, uimage_arch).
FIT_ARCH = {"arm": "arm", "arm64": "arm64", "mips": "mips"}


@dataclass(frozen=True)
class FitImage:
    """An image node (``/images/NODE``).

    Args:
        node: its name, e.g. kernel-1.
        description: what it is.
        data: the file (beside the .its) mkimage includes with /incbin/.
        type: kernel, ramdisk, flat_dt, ...
        arch: U-Boot's architecture name.
        os: the operating system it is for.
        compression: of the data as stored.
        load: where U-Boot copies it, if anywhere.
        entry: where U-Boot jumps (a kernel).
        hashes: the algorithm of each hash-N node (sha256, crc32, ...).
    """

    node: str
    description: str
    data: str
    type: str
    arch: str
    os: str = "linux"
    compression: str = "none"
    load: int | None = None
    entry: int | None = None
    hashes: tuple[str, ...] = ("sha256",)


@dataclass(frozen=True)
class FitSignature:
    """A ``signature-N`` node of a configuration: mkimage -k signs the configuration
    with the key ``KEYDIR/<key_name_hint>.key``.

    Args:
        algo: e.g. sha256,rsa2048.
        key_name_hint: the key's name (also its node in U-Boot's control DTB).
        sign_images: the configuration's properties whose images are signed with it.
    """

    algo: str
    key_name_hint: str
    sign_images: tuple[str, ...] = ("kernel", "ramdisk")


# The configuration property holding the anti-rollback version (a 32-bit cell): covered
# by the configuration's signature, read by the boot commands with `fdt get value`.
VERSION_PROP = "embedbuild,version"


@dataclass(frozen=True)
class FitConfig:
    """A configuration node (``/configurations/NODE``): the images one boot uses.

    Args:
        node: its name, e.g. conf-1.
        description: what it boots.
        kernel, ramdisk, fdt: the image nodes it names.
        signatures: its signature-N nodes (signed by mkimage -k).
        version: the anti-rollback version (``embedbuild,version``), signed with the
            configuration; None: none.
    """

    node: str
    description: str
    kernel: str
    ramdisk: str | None = None
    fdt: str | None = None
    signatures: tuple[FitSignature, ...] = ()
    version: int | None = None

    def images(self) -> dict[str, str]:
        """Property -> image node, for the images it names."""
        return {k: v for k, v in (("kernel", self.kernel), ("ramdisk", self.ramdisk),
                                  ("fdt", self.fdt)) if v is not None}


@dataclass(frozen=True)
class FitDescription:
    """A whole FIT: images, configurations and the default one."""

    description: str
    address_cells: int
    images: tuple[FitImage, ...]
    configurations: tuple[FitConfig, ...]
    default: str

    # -- rendering -------------------------------------------------------------------

    def its(self) -> str:
        """The image tree source mkimage builds the FIT from."""
        out = ["/dts-v1/;", "", "/ {", f"\tdescription = {_str(self.description)};",
               f"\t#address-cells = <{self.address_cells}>;", "", "\timages {"]
        for img in self.images:
            props = [("description", _str(img.description)),
                     ("data", f'/incbin/("{img.data}")'), ("type", _str(img.type)),
                     ("arch", _str(img.arch)), ("os", _str(img.os)),
                     ("compression", _str(img.compression))]
            props += [(k, self._cells(v)) for k, v in (("load", img.load),
                                                       ("entry", img.entry)) if v is not None]
            subs = [(f"hash-{i}", [("algo", _str(a))]) for i, a in enumerate(img.hashes, 1)]
            out += _node(img.node, props, subs, 2)
        out += ["\t};", "", "\tconfigurations {", f"\t\tdefault = {_str(self.default)};"]
        for conf in self.configurations:
            props = [("description", _str(conf.description))]
            props += [(k, _str(v)) for k, v in conf.images().items()]
            if conf.version is not None:
                props.append((VERSION_PROP, f"<{conf.version}>"))
            subs = [(f"signature-{i}", [("algo", _str(s.algo)),
                                        ("key-name-hint", _str(s.key_name_hint)),
                                        ("sign-images", ", ".join(map(_str, s.sign_images)))])
                    for i, s in enumerate(conf.signatures, 1)]
            out += _node(conf.node, props, subs, 2)
        out += ["\t};", "};", ""]
        return "\n".join(out)

    def _cells(self, value: int) -> str:
        return "<" + " ".join(f"0x{(value >> (32 * i)) & 0xFFFFFFFF:08x}"
                              for i in reversed(range(self.address_cells))) + ">"

    # -- checking what mkimage wrote -------------------------------------------------

    def check(self, blob: bytes, data: dict[str, bytes], signed: bool = True) -> list[str]:
        """What in the FIT ``blob`` differs from this description (empty: nothing), with
        ``data``: each image's file contents by image node. ``signed`` False: the
        signature nodes are checked as mkimage -f leaves them before signing (no value)."""
        try:
            nodes = fdt.tree(blob)
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            return [f"not a readable FIT image: {e}"]
        problems: list[str] = []
        for img in self.images:
            problems += _check_image(nodes, img, data[img.node])
        confs = nodes.get("/configurations", {})
        if _get_str(confs, "default") != self.default:
            problems.append(f"the default configuration is {_get_str(confs, 'default')!r}, "
                            f"not {self.default}")
        for conf in self.configurations:
            problems += self._check_config(nodes, conf, signed)
        return problems

    def _check_config(self, nodes: dict, conf: FitConfig, signed: bool) -> list[str]:
        path = f"/configurations/{conf.node}"
        props = nodes.get(path)
        if props is None:
            return [f"no {path}"]
        problems = [f"{path} {k} is {_get_str(props, k)!r}, not {v!r}"
                    for k, v in conf.images().items() if _get_str(props, k) != v]
        version = props.get(VERSION_PROP)
        if conf.version != (fdt.cells(version) if version else None):
            problems.append(f"{path} {VERSION_PROP} is not {conf.version}")
        for i, sig in enumerate(conf.signatures, 1):
            spath = f"{path}/signature-{i}"
            s = nodes.get(spath)
            if s is None:
                problems.append(f"no {spath}")
                continue
            if _get_str(s, "algo") != sig.algo or _get_str(s, "key-name-hint") != \
                    sig.key_name_hint:
                problems.append(f"{spath} is not {sig.algo} with key {sig.key_name_hint}")
            if not signed:
                continue
            if "value" not in s:
                problems.append(f"{spath} holds no signature (mkimage ran without -k?)")
                continue
            hashed = set(fdt.strings(s.get("hashed-nodes", b"")))
            want = {"/", path}
            for prop in sig.sign_images:
                node = conf.images().get(prop)
                if node is None:
                    problems.append(f"{spath} signs {prop}, which {conf.node} names not")
                    continue
                img = next(x for x in self.images if x.node == node)
                want |= {f"/images/{node}"} | {f"/images/{node}/hash-{n}"
                                              for n in range(1, len(img.hashes) + 1)}
            if missing := sorted(want - hashed):
                problems.append(f"{spath} does not cover {', '.join(missing)}")
        return problems

    def facts(self, blob: bytes) -> dict:
        """What the manifest says about the FIT (read back from ``blob``)."""
        nodes = fdt.tree(blob)
        images = {}
        for img in self.images:
            p = nodes[f"/images/{img.node}"]
            images[img.node] = {
                "type": _get_str(p, "type"), "size": len(p.get("data", b"")),
                "load": _hex(p.get("load")), "entry": _hex(p.get("entry")),
                "hash": ",".join(_get_str(nodes[f"/images/{img.node}/hash-{n}"], "algo")
                                 for n in range(1, len(img.hashes) + 1))}
        confs = {}
        for conf in self.configurations:
            p = nodes[f"/configurations/{conf.node}"]
            confs[conf.node] = {k: _get_str(p, k) for k in conf.images()} | {
                "signatures": [_get_str(nodes[f"/configurations/{conf.node}/signature-{i}"],
                                        "key-name-hint")
                               for i in range(1, len(conf.signatures) + 1)]}
            if VERSION_PROP in p:
                confs[conf.node]["version"] = fdt.cells(p[VERSION_PROP])
        return {"default": self.default, "images": images, "configurations": confs}


def digest(algo: str, data: bytes) -> bytes:
    """What mkimage stores in a hash node's value."""
    if algo == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    return hashlib.new(algo, data).digest()


def _check_image(nodes: dict, img: FitImage, data: bytes) -> list[str]:
    path = f"/images/{img.node}"
    props = nodes.get(path)
    if props is None:
        return [f"no {path}"]
    problems = []
    if props.get("data") != data:
        problems.append(f"{path} data differs from the file it was made from")
    for key in ("type", "arch", "os", "compression"):
        if _get_str(props, key) != getattr(img, key):
            problems.append(f"{path} {key} is {_get_str(props, key)!r}")
    for key in ("load", "entry"):
        want = getattr(img, key)
        if want is not None and fdt.cells(props.get(key, b"")) != want:
            problems.append(f"{path} {key} is not 0x{want:08x}")
    for n, algo in enumerate(img.hashes, 1):
        h = nodes.get(f"{path}/hash-{n}", {})
        if _get_str(h, "algo") != algo or h.get("value") != digest(algo, data):
            problems.append(f"{path} has no matching {algo} hash")
    return problems


def _str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _get_str(props: dict[str, bytes], key: str) -> str:
    return fdt.string(props.get(key, b""))


def _hex(value: bytes | None) -> str | None:
    return f"0x{fdt.cells(value):08x}" if value else None


def _node(name: str, props: list[tuple[str, str]], subs: list[tuple[str, list]],
          depth: int) -> list[str]:
    tab = "\t" * depth
    out = [f"{tab}{name} {{"] + [f"{tab}\t{k} = {v};" for k, v in props]
    for sub, sprops in subs:
        out += _node(sub, sprops, [], depth + 1)
    return [*out, f"{tab}}};"]
