"""The SD-card image step on small files (fast): the table, the FAT files and the raw
blobs read back with tools of their own (sfdisk --json, mtools), the same bytes from two
stores; and the image of a real build checked against its manifest.json (slow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import cli, manifest

from embedbuild.bootcmd import extlinux_conf
from embedbuild.cli import main
from embedbuild.errors import BoardError
from embedbuild.load import load_board
from embedbuild.model.board import SdCard, SdRaw
from embedbuild.outputs.sdimage import SdCardInfo
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.steps.sdimage import read_mbr, sdimage_step
from embedbuild.store import Store

MTOOLS = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}


def _file_step(name: str, data: bytes) -> Step:
    def build(ctx: Context) -> None:
        ctx.output("f").write_bytes(data)

    return Step("test-file", f"sd-{name}", 1, {"data": data.hex()}, build, outputs={"f": name})


def _board(tmp_path: Path):
    """qemu-arm-virt with two raw blobs (the RK3326's places) and a DTB-like file."""
    blobs = tmp_path / "blobs"
    blobs.mkdir(exist_ok=True)
    (blobs / "idbloader.img").write_bytes(b"IDB!" * 1000)
    (blobs / "u-boot.itb").write_bytes(b"ITB." * 3000)
    board = load_board("qemu-arm-virt")
    sd = SdCard(partition_offset=0x1000000, margin=0x80000, label="EMBEDBOOT", raw=[
        SdRaw(name="idbloader", offset=0x8000, size=0x3f8000, file=blobs / "idbloader.img"),
        SdRaw(name="u-boot", offset=0x800000, size=0x400000, file=blobs / "u-boot.itb"),
        SdRaw(name="trust", offset=0xc00000, size=0x100000, env="EMBEDBUILD_TEST_UNSET")])
    return board.model_copy(update={"sdcard": sd})


def _build(board, store: Path) -> tuple[Path, dict[str, bytes]]:
    files = {"zImage": b"Z" * 300_000, "board.dtb": b"\xd0\x0d\xfe\xed" + bytes(2000),
             "initramfs.cpio.gz": bytes(range(256)) * 4000}
    steps = {name: (_file_step(name, data), "f") for name, data in files.items()}
    step = sdimage_step(board, steps, extlinux_conf(board, "zImage", "board.dtb",
                                                    "initramfs.cpio.gz"))
    paths = realise(Store(store), step)
    return paths[step.key], files


def _mcopy_out(image: Path, offset: int, name: str, dest: Path) -> bytes:
    out = dest / name.replace("/", "_")
    subprocess.run(["mcopy", "-n", "-i", f"{image}@@{offset}", f"::/{name}", out], check=True,
                   env=MTOOLS)
    return out.read_bytes()


def test_image_reads_back_with_other_tools(tmp_path: Path):
    board = _board(tmp_path)
    item, files = _build(board, tmp_path / "store")
    image = item / f"{board.name}-sd.img"
    layout = SdCardInfo.model_validate_json((item / "sdcard.json").read_text())
    # The table as sfdisk reads it.
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and table["id"] == layout.disk_id
    [part] = table["partitions"]
    assert part["start"] * 512 == 0x1000000 == layout.partitions[0].start
    assert part["size"] * 512 == layout.partitions[0].size
    assert part.get("bootable") and int(part["type"], 16) == layout.partitions[0].type
    assert image.stat().st_size == 0x1000000 + layout.partitions[0].size == layout.size
    # Sized to content plus the margin: at most a MiB of rounding and FAT overhead more.
    content = sum(len(d) for d in files.values())
    assert content + 0x80000 < layout.partitions[0].size <= content + 0x80000 + (2 << 20)
    # The files, as mtools reads them from the partition in place.
    for name, data in files.items():
        assert _mcopy_out(image, 0x1000000, name, tmp_path) == data
    conf = _mcopy_out(image, 0x1000000, "extlinux/extlinux.conf", tmp_path).decode()
    assert conf == layout.extlinux
    assert "\tkernel /zImage\n" in conf and "\tfdt /board.dtb\n" in conf
    assert "\tinitrd /initramfs.cpio.gz\n" in conf
    assert f"\tappend {board.kernel.cmdline}\n" in conf
    assert set(layout.partitions[0].files) == {*files, "extlinux/extlinux.conf"}
    label = subprocess.run(["mlabel", "-s", "-i", f"{image}@@{0x1000000}", "::"],
                           capture_output=True, text=True, env=MTOOLS).stdout
    assert "EMBEDBOOT" in label
    # The raw blobs where the board puts them; the unset one left zero, and said so.
    data = image.read_bytes()
    assert data[0x8000:0x8000 + 4000] == b"IDB!" * 1000
    assert data[0x800000:0x800000 + 12000] == b"ITB." * 3000
    assert data[0xc00000:0xd00000] == bytes(0x100000)
    raw = {r.name: r for r in layout.raw}
    assert raw["u-boot"].length == 12000 and raw["idbloader"].file == "idbloader.img"
    assert raw["trust"].file is None and raw["trust"].env == "EMBEDBUILD_TEST_UNSET"
    assert read_mbr(data)["disk_id"] == int(layout.disk_id, 16)


def test_two_stores_give_the_same_bytes(tmp_path: Path):
    board = _board(tmp_path)
    a, _ = _build(board, tmp_path / "one")
    b, _ = _build(board, tmp_path / "a-second" / "store-at-another-path")
    name = f"{board.name}-sd.img"
    assert a != b
    assert (a / name).read_bytes() == (b / name).read_bytes()


def test_a_changed_blob_makes_a_new_image(tmp_path: Path):
    board = _board(tmp_path)
    a, _ = _build(board, tmp_path / "store")
    (tmp_path / "blobs" / "u-boot.itb").write_bytes(b"NEW!" * 10)
    b, _ = _build(board, tmp_path / "store")  # the step's key hashes the blob
    assert a != b
    assert (b / f"{board.name}-sd.img").read_bytes()[0x800000:0x800004] == b"NEW!"


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-arm-virt", "odroid-go2"])
def test_built_image_matches_manifest(board: str, session_store: Path, tmp_path: Path):
    r = cli("build", board, "--out-link", str(tmp_path / "result"), store=session_store)
    assert r.code == 0, r.err
    result = (tmp_path / "result").resolve()
    m = manifest(result)
    sd = m.sdcard
    assert sd is not None and "sdimage" in m.outputs
    image = result / sd.image
    assert m.files[sd.image].role == "sdcard"
    assert m.files[sd.image].size == image.stat().st_size == sd.size
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    [part] = table["partitions"]
    [want] = sd.partitions
    assert (part["start"] * 512, part["size"] * 512) == (want.start, want.size)
    assert table["id"] == sd.disk_id and part.get("bootable")
    assert want.start == load_board(board).sdcard.partition_offset
    # Every file of the boot partition, and only those, is the result's file of that name.
    listing = subprocess.run(["mdir", "-b", "-/", "-i", f"{image}@@{want.start}", "::/"],
                             capture_output=True, check=True, text=True, env=MTOOLS).stdout
    names = sorted(line.removeprefix("::/") for line in listing.split()
                   if not line.endswith("/"))
    assert names == sorted(want.files)
    kernel, [initrd] = m.kernel.file, m.with_role("initramfs")
    dtbs = m.with_role("dtb")
    for name in (kernel, initrd, *dtbs):
        assert _mcopy_out(image, want.start, name, tmp_path) == (result / name).read_bytes()
        assert want.files[name].sha256 == m.files[name].sha256
    conf = _mcopy_out(image, want.start, "extlinux/extlinux.conf", tmp_path).decode()
    assert conf == sd.extlinux == (result / "extlinux.conf").read_text()
    assert f"\tkernel /{kernel}\n" in conf and f"\tinitrd /{initrd}\n" in conf
    assert f"\tappend {m.kernel.cmdline}\n" in conf
    # The board's own DTB when it has one; else U-Boot passes QEMU's.
    assert ("\tfdt /" + dtbs[0] + "\n" in conf) if dtbs else ("fdt" not in conf)
    # Blobs nobody supplied: their space is left zero, and the manifest says so.
    data = image.read_bytes()
    for raw in sd.raw:
        assert raw.file is None and raw.env
        assert data[raw.offset:raw.offset + raw.size] == bytes(raw.size)
    r = cli("size", board, store=session_store)
    assert r.code == 0, r.err
    assert f"SD-card image ({sd.image})" in r.out and f"{sd.size:,}" in r.out


def test_blob_named_by_env_is_resolved_at_load(boards: Path, tmp_path: Path, monkeypatch):
    toml = boards / "odroid-go2" / "board.toml"
    env_line = next(n for n, t in enumerate(toml.read_text().splitlines(), 1)
                    if "EMBEDBUILD_ODROID_GO2_IDBLOADER" in t)
    monkeypatch.delenv("EMBEDBUILD_ODROID_GO2_IDBLOADER", raising=False)
    assert load_board(str(boards / "odroid-go2")).sdcard.raw[0].file is None
    blob = tmp_path / "idbloader.img"
    blob.write_bytes(b"x" * 1000)
    monkeypatch.setenv("EMBEDBUILD_ODROID_GO2_IDBLOADER", str(blob))
    assert load_board(str(boards / "odroid-go2")).sdcard.raw[0].file == blob
    monkeypatch.setenv("EMBEDBUILD_ODROID_GO2_IDBLOADER", str(tmp_path / "missing.img"))
    with pytest.raises(BoardError, match=r"\$EMBEDBUILD_ODROID_GO2_IDBLOADER names .*missing"
                       r"\.img, which is not a file") as e:
        load_board(str(boards / "odroid-go2"))
    assert e.value.where == f"{toml}:{env_line}"
    with open(blob, "wb") as f:
        f.truncate(0x3f8000 + 1)
    monkeypatch.setenv("EMBEDBUILD_ODROID_GO2_IDBLOADER", str(blob))
    with pytest.raises(BoardError, match="more than the 4,161,536 reserved for idbloader"):
        load_board(str(boards / "odroid-go2"))


@pytest.mark.skipif(os.geteuid() != 0, reason="boot --qemu checks for root first")
def test_from_sd_is_refused_for_a_board_without_sdcard(tmp_path: Path, capsys):
    code = main(["--store", str(tmp_path / "store"), "boot", "qemu-malta-be", "--qemu",
                 "--from-sd", "--no-console"])
    err = capsys.readouterr().err
    assert code == 1 and "qemu-malta-be has no [sdcard]" in err
    assert not (tmp_path / "store").exists()  # refused before building
