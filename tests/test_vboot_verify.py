"""The host-side FIT signature check against real FITs that mkimage signs here: what
U-Boot accepts, what it refuses, and exactly which bytes a configuration signature covers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from vboot_fits import empty_dtb, flip, make_fit, prop_offset

from embedbuild import fdt
from embedbuild.vboot import keys
from embedbuild.vboot.regions import hashed_regions
from embedbuild.vboot.verify import (
    FitSignatureError,
    check_file,
    keyring_from_dtb,
    keyring_from_keys,
    verify,
)

pytestmark = pytest.mark.skipif(not shutil.which("mkimage") or not shutil.which("dtc"),
                                reason="needs mkimage (u-boot-tools) and dtc")

RSA2048 = "sha256,rsa2048"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    """dev, its rotation dev-2, an unrelated key and a 4096-bit one."""
    d = tmp_path_factory.mktemp("keys")
    keys.new_key(d, "dev")
    keys.rotate(d, "dev")
    keys.new_key(d, "other")
    keys.new_key(d, "big", 4096)
    return d


def ring(keydir: Path, *names: str, mode: str = "all"):
    return keyring_from_keys([keys.load_public(keydir, n) for n in names], mode, "test")


@pytest.fixture(scope="module")
def signed(keydir, tmp_path_factory) -> Path:
    """conf-1 signed by dev, covering kernel and ramdisk."""
    return make_fit(tmp_path_factory.mktemp("fit"), keydir, [("dev", RSA2048)])


def test_good_image_verifies_and_says_what_is_covered(keydir, signed):
    v = verify(signed.read_bytes(), ring(keydir, "dev"), "conf-1", name="image.itb")
    assert v.ok, v.reason
    assert v.signed_by == ("dev",)
    assert v.line() == "image.itb: configuration conf-1: signed by dev"
    # What mkimage lists and U-Boot hashes: the root, the configuration, each signed
    # image with its hash nodes; not /images or /configurations themselves, not spare-1.
    assert set(v.covered) == {"/", "/configurations/conf-1", "/images/kernel-1",
                              "/images/kernel-1/hash-1", "/images/ramdisk-1",
                              "/images/ramdisk-1/hash-1"}
    assert v.images == {"kernel": ("kernel-1",), "ramdisk": ("ramdisk-1",)}
    # The default configuration is the one checked when none is named.
    assert verify(signed.read_bytes(), ring(keydir, "dev")).config == "conf-1"


def test_control_dtb_key_is_the_one_mkimage_writes(keydir, tmp_path):
    """mkimage -K puts the key into a control DTB; our reading of it, and our own
    rendering of the .crt, agree with it property by property."""
    control = empty_dtb(tmp_path / "control.dtb")
    fit = make_fit(tmp_path / "f", keydir, [("dev", RSA2048)], control=control)
    from_dtb = keyring_from_dtb(control.read_bytes(), "control.dtb")
    assert [(k.name, k.required, k.algo) for k in from_dtb.keys] == [("dev", "conf", RSA2048)]
    assert from_dtb.required_mode == "all"
    assert from_dtb.keys[0].n == keys.load_public(keydir, "dev").n
    assert fdt.tree(control.read_bytes())["/signature/key-dev"] == \
        keys.load_public(keydir, "dev").properties()
    assert verify(fit.read_bytes(), from_dtb, "conf-1").ok


def test_flipped_kernel_byte_is_bad_data_hash(keydir, signed, tmp_path):
    blob = signed.read_bytes()
    bad = flip(signed, prop_offset(blob, "/images/kernel-1", "data") + 5000,
               tmp_path / "bad.itb")
    v = verify(bad.read_bytes(), ring(keydir, "dev"), "conf-1", name="bad.itb")
    assert not v.ok
    # The signature still holds (data is covered through the hash), the hash does not.
    assert v.signed_by == ("dev",)
    assert v.reason == "kernel kernel-1: hash-1: the sha256 of the data does not match " \
                       "(Bad Data Hash)"


def test_flipped_signature_byte_fails_verification(keydir, signed, tmp_path):
    blob = signed.read_bytes()
    sig = prop_offset(blob, "/configurations/conf-1/signature-1", "value")
    bad = flip(signed, sig + 100, tmp_path / "bad.itb")
    v = verify(bad.read_bytes(), ring(keydir, "dev"), "conf-1")
    assert not v.ok
    assert "required key dev: signature-1: does not verify with key dev " \
           "(Verification failed)" in v.reason


def test_image_signed_by_another_key_is_refused(keydir, tmp_path):
    fit = make_fit(tmp_path, keydir, [("other", RSA2048)])
    v = verify(fit.read_bytes(), ring(keydir, "dev"), "conf-1")
    assert not v.ok and "Failed to verify required signature" in v.reason
    assert verify(fit.read_bytes(), ring(keydir, "other"), "conf-1").ok


def test_unsigned_configuration_is_refused(keydir, tmp_path):
    fit = make_fit(tmp_path, None, [])
    v = verify(fit.read_bytes(), ring(keydir, "dev"), "conf-1")
    assert v.reason == "required key dev: the configuration is not signed (No 'signature' " \
                       "subnode found) (Failed to verify required signature)"


def test_keyless_control_dtb_accepts_anything_only_when_not_strict(keydir, tmp_path):
    """U-Boot with a control DTB without /signature boots unsigned images; the strict
    check (our default) refuses to call that verified."""
    fit = make_fit(tmp_path, None, [])
    keyless = keyring_from_dtb(empty_dtb(tmp_path / "keyless.dtb").read_bytes(),
                               "keyless.dtb")
    assert keyless.keys == ()
    assert verify(fit.read_bytes(), keyless, "conf-1", strict=False).ok
    v = verify(fit.read_bytes(), keyless, "conf-1")
    assert v.reason == "the keyring (keyless.dtb) requires no configuration signature: " \
                       "U-Boot would boot any image"


# Same-length edits, each in one node: whether the signature still verifies says
# whether U-Boot's hashed region covers that byte.
EDITS = [
    # (node, property, covered by the signature of conf-1)
    ("/", "description", True),
    ("/configurations/conf-1", "kernel", True),
    ("/configurations/conf-1", "description", True),
    ("/images/kernel-1", "load", True),
    ("/images/kernel-1", "description", True),
    ("/images/kernel-1/hash-1", "value", True),
    ("/images/ramdisk-1/hash-1", "value", True),
    ("/configurations", "default", False),
    ("/images/spare-1", "description", False),
    ("/images/spare-1", "data", False),
    ("/images/spare-1/hash-1", "value", False),
    ("/configurations/conf-1/signature-1", "signer-version", False),
    ("/configurations/conf-1/signature-1", "timestamp", False),
    ("/configurations/conf-1/signature-1", "key-name-hint", False),
]


@pytest.mark.parametrize(("node", "prop", "covered"), EDITS,
                         ids=[f"{n}:{p}" for n, p, _ in EDITS])
def test_which_bytes_the_signature_covers(keydir, signed, tmp_path, node, prop, covered):
    blob = signed.read_bytes()
    edited = flip(signed, prop_offset(blob, node, prop), tmp_path / "edited.itb")
    v = verify(edited.read_bytes(), ring(keydir, "dev"), "conf-1", strict=False)
    if covered:
        assert not v.ok and "Verification failed" in v.reason
    else:
        assert v.ok, f"{node} {prop} is not signed, yet the check failed: {v.reason}"


def test_every_covered_byte_matters(keydir, signed, tmp_path):
    """Each byte inside the hashed regions breaks the signature when flipped (sampled),
    and the regions are exactly what the signature's hashed-nodes select."""
    blob = signed.read_bytes()
    sig = "/configurations/conf-1/signature-1"
    nodes = [s.decode() for s in fdt.tree(blob)[sig]["hashed-nodes"].split(b"\0") if s]
    runs = hashed_regions(blob, nodes)
    v = verify(blob, ring(keydir, "dev"), "conf-1")
    assert list(v.regions[sig][:-1]) == runs  # the last one: hashed-strings
    positions = sorted({o + (i * 7919) % n for o, n in runs for i in range(12)})
    data = bytearray(blob)
    for pos in positions:
        data[pos] ^= 0x01
        got = verify(bytes(data), ring(keydir, "dev"), "conf-1", strict=False)
        data[pos] ^= 0x01
        assert not got.ok, f"byte 0x{pos:x} is in the hashed region but not checked"


@pytest.mark.parametrize("mode", ["any", "all"])
def test_key_rotation_required_mode(keydir, tmp_path, mode):
    """Two required keys (dev and its rotation dev-2): "any" boots an image signed by
    either, "all" only one signed by both."""
    both = ring(keydir, "dev", "dev-2", mode=mode)
    old = make_fit(tmp_path / "old", keydir, [("dev", RSA2048)])
    new = make_fit(tmp_path / "new", keydir, [("dev-2", RSA2048)])
    dual = make_fit(tmp_path / "dual", keydir, [("dev", RSA2048), ("dev-2", RSA2048)])
    results = {f.parent.name: verify(f.read_bytes(), both, "conf-1") for f in (old, new, dual)}
    assert results["dual"].ok and set(results["dual"].signed_by) == \
        ({"dev", "dev-2"} if mode == "all" else {"dev"})
    if mode == "any":
        assert results["old"].ok and results["new"].ok
        assert results["new"].signed_by == ("dev-2",)
    else:
        assert results["old"].reason.startswith("required key dev-2: signature-1: ")
        assert results["new"].reason.startswith("required key dev: signature-1: ")


def test_required_mode_any_with_no_matching_key(keydir, tmp_path):
    fit = make_fit(tmp_path, keydir, [("other", RSA2048)])
    v = verify(fit.read_bytes(), ring(keydir, "dev", "dev-2", mode="any"), "conf-1")
    assert "Failed to verify 'any' of the required signature(s)" in v.reason
    assert v.reason.startswith("no required key verified it (dev: signature-1: ")


def test_rsa4096(keydir, tmp_path):
    fit = make_fit(tmp_path, keydir, [("big", "sha256,rsa4096")])
    assert verify(fit.read_bytes(), ring(keydir, "big"), "conf-1").ok
    # A 2048-bit key of the same name would not do: U-Boot compares the algo strings.
    v = verify(fit.read_bytes(), ring(keydir, "dev"), "conf-1")
    assert "sha256,rsa4096, while key dev is sha256,rsa2048" in v.reason


def test_uncovered_ramdisk_is_refused_when_strict(keydir, tmp_path):
    """sign-images = "kernel" leaves the ramdisk swappable: U-Boot boots that, the strict
    check does not."""
    fit = make_fit(tmp_path, keydir, [("dev", RSA2048)], images=["kernel"])
    blob = fit.read_bytes()
    assert verify(blob, ring(keydir, "dev"), "conf-1", strict=False).ok
    assert verify(blob, ring(keydir, "dev"), "conf-1").reason == \
        "its ramdisk ramdisk-1 is not covered by the signature (add it to sign-images): " \
        "it could be swapped"


def test_error_is_one_line_naming_fit_configuration_and_reason(keydir, signed, tmp_path):
    bad = flip(signed, prop_offset(signed.read_bytes(), "/images/ramdisk-1", "data"),
               tmp_path / "bad.itb")
    with pytest.raises(FitSignatureError) as e:
        check_file(bad, ring(keydir, "dev"), "conf-1")
    assert str(e.value) == f"{bad}: configuration conf-1: ramdisk ramdisk-1: hash-1: the " \
                           "sha256 of the data does not match (Bad Data Hash)"
    assert "\n" not in str(e.value)
    with pytest.raises(FitSignatureError, match="no such configuration"):
        check_file(signed, ring(keydir, "dev"), "conf-9")


@pytest.mark.parametrize("cut", [0, 39, 200, 2000])
def test_damaged_files_get_a_verdict_not_a_traceback(keydir, signed, cut):
    blob = signed.read_bytes()
    v = verify(blob[:cut] + bytes(64), ring(keydir, "dev"), "conf-1")
    assert not v.ok and v.reason.startswith("not a sound FIT")


def test_random_damage_anywhere_gets_a_verdict(keydir, signed):
    """Bytes changed anywhere (header, structure, strings, data): always a verdict, never
    an exception, and never "boots" when the byte is signed or hashed."""
    import random

    blob = signed.read_bytes()
    good = verify(blob, ring(keydir, "dev"), "conf-1")
    protected = {p for o, n in good.regions["/configurations/conf-1/signature-1"]
                 for p in range(o, o + n)}
    for node in ("/images/kernel-1", "/images/ramdisk-1"):
        start = prop_offset(blob, node, "data")
        size = len(fdt.tree(blob)[node]["data"])
        protected |= set(range(start, start + size))
    value = prop_offset(blob, "/configurations/conf-1/signature-1", "value")
    protected |= set(range(value, value + 256))
    h = fdt.header(blob)
    rnd = random.Random(25)
    positions = [*range(40), *(rnd.randrange(h.off_strings + h.size_strings)
                               for _ in range(300))]
    for pos in positions:
        data = bytearray(blob)
        data[pos] ^= rnd.randrange(1, 256)
        v = verify(bytes(data), ring(keydir, "dev"), "conf-1")
        assert not (v.ok and pos in protected), f"byte 0x{pos:x} changed, still boots"
    # A tree holding nothing but its END token.
    header = bytearray(blob[:40])
    for field, value in ((4, 44), (8, 40), (12, 44), (32, 0), (36, 4)):
        header[field:field + 4] = value.to_bytes(4, "big")  # sizes and offsets
    assert verify(bytes(header) + (9).to_bytes(4, "big"), ring(keydir, "dev")).reason == \
        "not a FIT (no root description or no /images)"


def test_unit_addresses_are_refused(keydir, signed, tmp_path):
    blob = bytearray(signed.read_bytes())
    pos = blob.index(b"spare-1\0")
    blob[pos + 5] = ord("@")  # spare@1
    v = verify(bytes(blob), ring(keydir, "dev"), "conf-1")
    assert v.reason == "node /images/spare@1 has a unit address ('@'), which signature " \
                       "checking refuses"


def test_control_dtb_with_a_broken_key_is_an_error(keydir, tmp_path):
    control = empty_dtb(tmp_path / "control.dtb")
    make_fit(tmp_path / "f", keydir, [("dev", RSA2048)], control=control)
    blob = control.read_bytes()
    flip(control, prop_offset(blob, "/signature/key-dev", "rsa,r-squared") + 3)
    with pytest.raises(FitSignatureError, match="rsa,r-squared does not belong"):
        keyring_from_dtb(control.read_bytes(), str(control))
