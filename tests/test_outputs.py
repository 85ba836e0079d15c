"""Outputs that declare themselves, without building: manifest sections checked against
their declarations when written and read, and FIT descriptions rendered, made by
mkimage (signed with a throwaway key, as verified boot will) and checked back."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from embedbuild.errors import EmbedbuildError, StepError
from embedbuild.fit import FitConfig, FitDescription, FitImage, FitSignature
from embedbuild.manifest import Manifest
from embedbuild.output import Published, output, section_types
from embedbuild.outputs import registry, sections
from embedbuild.scheduler import realise
from embedbuild.step import Step
from embedbuild.steps.result import result_step
from embedbuild.store import Store

CORE = {"board": "b", "arch": "arm", "description": "d", "outputs": [], "files": {}}


def test_every_section_has_one_declared_type():
    assert {"kernel", "uboot", "initramfs", "flash_image", "fit", "sdcard"} <= set(sections())
    assert registry()["fit"].sections["flash_image"] is registry()["uimage"].sections[
        "flash_image"]
    from embedbuild.output import REGISTRY

    output("clash", applies=lambda b: False, sections={"kernel": str})(lambda p: None)
    try:
        with pytest.raises(RuntimeError, match="section 'kernel' is declared with two types"):
            section_types()
    finally:
        del REGISTRY["clash"]


def test_a_manifest_with_an_unknown_or_malformed_section_is_refused(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(json.dumps({**CORE, "surprise": 1}))
    with pytest.raises(EmbedbuildError, match="'surprise' is no section an output declares"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**CORE, "kernel": {"file": "zImage"}}))
    with pytest.raises(EmbedbuildError, match="not a readable build result"):
        Manifest.read(tmp_path)
    m = Manifest(**CORE, kernel={"file": "zImage", "cmdline": "console=ttyS0"})
    assert m.kernel.file == "zImage" and m.sdcard is None  # a declared section it has not


def test_an_output_writing_an_undeclared_section_is_a_bug():
    from embedbuild.load import load_board

    board = load_board("qemu-arm-virt")
    kernel_out = registry()["kernel"]
    with pytest.raises(StepError, match="output kernel writes manifest section 'uboot', "
                       "which it does not declare"):
        result_step(board, [kernel_out], [Published(manifest={"uboot": {}})])


def test_two_outputs_fill_one_section_key_by_key(tmp_path: Path):
    from embedbuild.load import load_board
    from embedbuild.output import Fact

    board = load_board("ap-ac-lite")
    header = Step("t", "header", 1, {}, lambda ctx: ctx.output("h").write_text(json.dumps(
        {"load": "0x80060000", "entry": "0x80060000", "compression": "lzma", "size": 9})),
        outputs={"h": "h.json"})
    outs = [registry()["kernel"], registry()["uimage"]]
    pubs = [Published(manifest={"kernel": {"file": "uImage", "cmdline": "c"}}),
            Published(facts={"kernel": Fact(header, "h", ("load", "entry", "compression"))})]
    step = result_step(board, outs, pubs)
    m = Manifest.read(realise(Store(tmp_path / "s"), step)[step.key])
    assert (m.kernel.file, m.kernel.load, m.kernel.compression) == ("uImage", "0x80060000",
                                                                   "lzma")


def _desc(signatures=()) -> FitDescription:
    return FitDescription(
        "test", 1,
        (FitImage("kernel-1", "k", "k.bin", "kernel", "arm", load=0x40400000, entry=0x40400000),
         FitImage("ramdisk-1", "r", "r.bin", "ramdisk", "arm", load=0x44000000)),
        (FitConfig("conf-1", "c", kernel="kernel-1", ramdisk="ramdisk-1",
                   signatures=tuple(signatures)),),
        "conf-1")


def _mkimage(tmp_path: Path, desc: FitDescription, *args) -> tuple[bytes, dict]:
    data = {"kernel-1": b"K" * 4000, "ramdisk-1": b"R" * 2000}
    (tmp_path / "k.bin").write_bytes(data["kernel-1"])
    (tmp_path / "r.bin").write_bytes(data["ramdisk-1"])
    (tmp_path / "x.its").write_text(desc.its())
    subprocess.run(["mkimage", "-f", tmp_path / "x.its", *args, tmp_path / "x.itb"],
                   check=True, capture_output=True)
    return (tmp_path / "x.itb").read_bytes(), data


def test_the_its_has_one_node_shape_per_image():
    its = _desc().its()
    assert its.count("hash-1 {") == 2 and 'data = /incbin/("k.bin");' in its
    assert "load = <0x44000000>;" in its and 'default = "conf-1";' in its


def test_a_fit_that_differs_from_its_description_is_named(tmp_path: Path):
    desc = _desc()
    blob, data = _mkimage(tmp_path, desc)
    assert desc.check(blob, data) == []
    other = dataclasses.replace(desc, images=(dataclasses.replace(desc.images[0],
                                                                  load=0x40800000),
                                              desc.images[1]))
    assert other.check(blob, data) == ["/images/kernel-1 load is not 0x40800000"]
    # A description that wants a signature, and an image mkimage made without a key.
    signed = _desc([FitSignature("sha256,rsa2048", "dev")])
    assert signed.check(blob, data) == ["no /configurations/conf-1/signature-1"]


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    """A throwaway RSA key (KEYDIR/dev.key and .crt), as mkimage -k wants."""
    d = tmp_path_factory.mktemp("keys")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", d / "dev.key"], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "req", "-batch", "-new", "-x509", "-key", d / "dev.key",
                    "-out", d / "dev.crt", "-subj", "/CN=dev"], check=True, capture_output=True)
    return d


def test_a_signed_configuration_covers_its_images(tmp_path: Path, keydir: Path):
    desc = _desc([FitSignature("sha256,rsa2048", "dev")])
    its = desc.its()
    assert 'key-name-hint = "dev";' in its and 'sign-images = "kernel", "ramdisk";' in its
    unsigned, data = _mkimage(tmp_path, desc)
    assert desc.check(unsigned, data) == [
        "/configurations/conf-1/signature-1 holds no signature (mkimage ran without -k?)"]
    blob, data = _mkimage(tmp_path, desc, "-k", keydir)
    assert desc.check(blob, data) == []
    assert desc.facts(blob)["configurations"]["conf-1"]["signatures"] == ["dev"]
    # An image whose signature leaves the ramdisk out is not what the description asks.
    narrow = _desc([FitSignature("sha256,rsa2048", "dev", ("kernel",))])
    blob, data = _mkimage(tmp_path, narrow, "-k", keydir)
    assert narrow.check(blob, data) == []
    assert desc.check(blob, data) == ["/configurations/conf-1/signature-1 does not cover "
                                      "/images/ramdisk-1, /images/ramdisk-1/hash-1"]


def test_a_result_made_before_sections_were_declared_reads_the_same(tmp_path: Path):
    # A manifest.json as the result step wrote it before: null for what a board has not.
    old = {**CORE, "kernel": {"file": "zImage", "cmdline": "c", "load": None, "entry": None,
                              "compression": None},
           "uboot": {"prompt": "=> ", "kernel_addr": "0x40400000", "ramdisk_addr": None,
                     "fdt_addr": None, "tftpboot": ["bootz 0x40400000"]},
           "initramfs": [], "flash_image": None, "sdcard": None}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    m = Manifest.read(tmp_path)
    assert m.flash_image is None and m.sdcard is None and m.initramfs == []
    assert m.uboot.tftpboot == ["bootz 0x40400000"]
