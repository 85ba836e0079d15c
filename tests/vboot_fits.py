"""Real signed FITs for the verified-boot tests: an .its written here, mkimage -f / -k
signing it with keys from a key folder (the layout `embedbuild keys` makes)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

ITS = """/dts-v1/;
/ {{
	description = "vboot test";
	#address-cells = <1>;
	images {{
		kernel-1 {{
			description = "kernel";
			data = /incbin/("{kernel}");
			type = "kernel"; arch = "arm"; os = "linux"; compression = "none";
			load = <0x40400000>; entry = <0x40400000>;
			hash-1 {{ algo = "sha256"; }};
		}};
		ramdisk-1 {{
			description = "initramfs";
			data = /incbin/("{ramdisk}");
			type = "ramdisk"; arch = "arm"; os = "linux"; compression = "none";
			load = <0x44000000>;
			hash-1 {{ algo = "sha256"; }};
		}};
		spare-1 {{
			description = "an image no configuration names";
			data = /incbin/("{ramdisk}");
			type = "ramdisk"; arch = "arm"; os = "linux"; compression = "none";
			hash-1 {{ algo = "sha256"; }};
		}};
	}};
	configurations {{
		default = "conf-1";
		conf-1 {{
			description = "the one that boots";
			kernel = "kernel-1";
			ramdisk = "ramdisk-1";
{version}{signatures}
		}};
	}};
}};
"""


def signature_nodes(signers: Sequence[tuple[str, str]], images: Sequence[str]) -> str:
    """signature-N nodes for (key name, algo) pairs."""
    return "\n".join(
        f'\t\t\tsignature-{i} {{ algo = "{algo}"; key-name-hint = "{name}"; '
        f'sign-images = {", ".join(chr(34) + x + chr(34) for x in images)}; }};'
        for i, (name, algo) in enumerate(signers, 1))


def make_fit(folder: Path, keydir: Path | None, signers: Sequence[tuple[str, str]] = (),
             images: Sequence[str] = ("kernel", "ramdisk"), kernel: bytes | None = None,
             ramdisk: bytes | None = None, control: Path | None = None,
             name: str = "image.itb", version: int | None = None) -> Path:
    """A FIT of a kernel and a ramdisk (deterministic filler unless given), conf-1 signed
    by ``signers`` with mkimage -k keydir (and their keys added to ``control`` with -K);
    without keydir the signature nodes are left for a later ``mkimage -F -k``. With
    ``version``, conf-1 carries that anti-rollback version (signed with it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.bin").write_bytes(kernel if kernel is not None else
                                        bytes(range(256)) * 400)
    (folder / "ramdisk.bin").write_bytes(ramdisk if ramdisk is not None else
                                         bytes(reversed(range(256))) * 200)
    its = folder / "image.its"
    its.write_text(ITS.format(
        kernel="kernel.bin", ramdisk="ramdisk.bin", signatures=signature_nodes(signers, images),
        version=f"\t\t\tembedbuild,version = <{version}>;\n" if version is not None else ""))
    out = folder / name
    cmd = ["mkimage", "-f", str(its)]
    if keydir is not None:  # else the signature nodes stay empty: an unsigned FIT
        cmd += ["-k", str(keydir)]
    if control is not None:
        cmd += ["-K", str(control), "-r"]
    subprocess.run([*cmd, str(out)], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "0"})
    return out


def empty_dtb(path: Path) -> Path:
    """A DTB with an empty root (for mkimage -K to add keys to)."""
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(path), "-"],
                   input=b"/dts-v1/; / { };", check=True, capture_output=True)
    return path


def flip(path: Path, offset: int, out: Path | None = None) -> Path:
    """A copy of the file (or the file itself) with one byte at offset inverted."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    target = out or path
    target.write_bytes(bytes(data))
    return target


def prop_offset(blob: bytes, node: str, prop: str) -> int:
    """Where in the blob the value of property ``prop`` of ``node`` starts."""
    from embedbuild import fdt

    h = fdt.header(blob)
    path: list[str] = []
    for t in fdt.tags(blob):
        if t.kind == fdt.BEGIN_NODE:
            path.append(t.name)
        elif t.kind == fdt.END_NODE:
            path.pop()
        elif t.kind == fdt.PROP and t.name == prop and "/" + "/".join(path[1:]) == node:
            return h.off_struct + t.offset + 12
    raise KeyError(f"{node} has no {prop}")


def swap_data(path: Path, image: str, out: Path, at: int = 1000) -> Path:
    """A copy of the FIT whose ``image`` node has one data byte changed and its sha256
    hash-1 recomputed to match: what an attacker does to an image no signature covers."""
    import hashlib

    blob = bytearray(path.read_bytes())
    start = prop_offset(bytes(blob), f"/images/{image}", "data")
    size = int.from_bytes(blob[start - 8:start - 4], "big")  # the property's length
    blob[start + at] ^= 0xFF
    digest = hashlib.sha256(bytes(blob[start:start + size])).digest()
    value = prop_offset(bytes(blob), f"/images/{image}/hash-1", "value")
    blob[value:value + len(digest)] = digest
    out.write_bytes(bytes(blob))
    return out
