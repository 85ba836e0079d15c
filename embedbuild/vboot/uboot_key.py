"""An RSA public key as U-Boot's control DTB holds it (/signature/key-NAME), both ways.

Facts from U-Boot 2023.01 (lib/rsa/rsa-sign.c rsa_add_verify_data, rsa-verify.c): the
node has ``key-name-hint``, ``algo`` (e.g. "sha256,rsa2048", compared with the
signature's algo as a string), ``rsa,num-bits``, ``rsa,n0-inverse`` (-1/n mod 2^32),
``rsa,exponent`` (64 bits), ``rsa,modulus`` and ``rsa,r-squared`` ((2^bits)^2 mod n),
each big number as num-bits/8 big-endian bytes, and ``required`` ("conf" or "image").
U-Boot's Montgomery arithmetic trusts n0-inverse and r-squared: if they do not belong to
the modulus, every signature fails, so reading a key checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedbuild import fdt

DEFAULT_EXPONENT = 65537  # U-Boot's when rsa,exponent is absent
KEY_BITS = (2048, 3072, 4096)  # the rsaNNNN algorithms U-Boot 2023.01 knows


@dataclass(frozen=True)
class PublicKey:
    """An RSA public key with the name U-Boot finds it by.

    Args:
        name: the key-name-hint (the file stem in the key folder; node key-NAME).
        n: the modulus.
        e: the public exponent.
        hash: the hash half of the algorithm (sha256).
        required: "conf", "image" or None: what U-Boot demands this key to have signed.
    """

    name: str
    n: int
    e: int = DEFAULT_EXPONENT
    hash: str = "sha256"
    required: str | None = "conf"

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def algo(self) -> str:
        """The signature algorithm string U-Boot compares, e.g. sha256,rsa2048."""
        return f"{self.hash},rsa{self.bits}"

    def properties(self) -> dict[str, bytes]:
        """The key node's properties, as U-Boot's mkimage -K writes them."""
        nbytes = self.bits // 8
        out = {
            "key-name-hint": self.name.encode() + b"\0",
            "rsa,num-bits": self.bits.to_bytes(4, "big"),
            "rsa,n0-inverse": n0_inverse(self.n).to_bytes(4, "big"),
            "rsa,exponent": self.e.to_bytes(8, "big"),
            "rsa,modulus": self.n.to_bytes(nbytes, "big"),
            "rsa,r-squared": r_squared(self.n).to_bytes(nbytes, "big"),
            "algo": self.algo.encode() + b"\0",
        }
        if self.required:
            out["required"] = self.required.encode() + b"\0"
        return out

    def dts(self, indent: str = "\t\t") -> str:
        """The key node as device tree source (to merge into a control DTS)."""
        lines = [f"{indent}key-{self.name} {{"]
        for prop, value in self.properties().items():
            if prop in ("key-name-hint", "algo", "required"):
                lines.append(f'{indent}\t{prop} = "{fdt.string(value)}";')
            else:
                cells = " ".join(f"0x{int.from_bytes(value[i:i + 4], 'big'):08x}"
                                 for i in range(0, len(value), 4))
                lines.append(f"{indent}\t{prop} = <{cells}>;")
        return "\n".join([*lines, f"{indent}}};"])


def n0_inverse(n: int) -> int:
    """-1/n mod 2^32 (n odd)."""
    return (-pow(n, -1, 1 << 32)) % (1 << 32)


def r_squared(n: int) -> int:
    """(2^bits)^2 mod n, U-Boot's Montgomery constant."""
    return pow(2, 2 * n.bit_length(), n)


def key_from_node(name: str, props: dict[str, bytes]) -> PublicKey:
    """The key a control DTB's key node describes; ValueError saying what is wrong
    with it when U-Boot could not verify anything with it."""
    def need(prop: str) -> bytes:
        if prop not in props:
            raise ValueError(f"{name} has no {prop}")
        return props[prop]

    bits = int.from_bytes(need("rsa,num-bits"), "big")
    modulus = need("rsa,modulus")
    if bits not in KEY_BITS or len(modulus) * 8 < bits:
        raise ValueError(f"{name}: rsa,num-bits {bits} with a {len(modulus)}-byte modulus")
    n = int.from_bytes(modulus[: bits // 8], "big")
    exp = props.get("rsa,exponent")
    e = int.from_bytes(exp[:8], "big") if exp is not None and len(exp) >= 8 else \
        DEFAULT_EXPONENT
    if n.bit_length() != bits or n % 2 == 0:
        raise ValueError(f"{name}: rsa,modulus is not an odd {bits}-bit number")
    if int.from_bytes(need("rsa,n0-inverse"), "big") != n0_inverse(n):
        raise ValueError(f"{name}: rsa,n0-inverse does not belong to its modulus")
    if int.from_bytes(need("rsa,r-squared")[: bits // 8], "big") != r_squared(n):
        raise ValueError(f"{name}: rsa,r-squared does not belong to its modulus")
    algo = fdt.string(need("algo"))
    hash_name, _, rsa = algo.partition(",")
    if rsa != f"rsa{bits}":
        raise ValueError(f"{name}: algo {algo!r} does not match its {bits}-bit modulus")
    required = fdt.string(props["required"]) if "required" in props else None
    hint = fdt.string(props.get("key-name-hint", b"")) or name.removeprefix("key-")
    return PublicKey(hint, n, e, hash_name, required)
