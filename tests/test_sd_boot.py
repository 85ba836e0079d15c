"""Booting from the SD-card image in QEMU with no key pressed: Debian's U-Boot runs its
own boot command (distro boot), finds extlinux/extlinux.conf on the virtio disk and
boots the kernel and initramfs from the card to `embedbuild: system ready`. The disk is
a copy in the bench folder; the store item is untouched.

CI cost: one QEMU boot per board (about 10 s each), on builds other tests make anyway."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import qemu_target

from embedbuild import session
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.rig.bootsource import SdBoot
from embedbuild.store import Store, hash_file

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


@pytest.mark.parametrize("board_name,machine", [("qemu-arm-virt", "armv7l"),
                                                ("qemu-aarch64-virt", "aarch64")])
def test_boots_from_its_sd_image_with_no_key_pressed(board_name: str, machine: str,
                                                     session_store: Path, tmp_path: Path,
                                                     monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_BENCH", str(tmp_path / "bench"))
    board = load_board(board_name)
    result = session.build(board, Store(session_store)).result
    m = Manifest.read(result)
    image = result / m.sdcard.image
    before = hash_file(image)
    workdir = tmp_path / "run"
    with qemu_target(board, workdir, result) as target:
        report = target.boot(SdBoot())
        log = target.console.text
        # U-Boot counted down and nobody stopped it; the card's extlinux.conf booted.
        assert "Hit any key to stop autoboot" in log
        assert "Found /extlinux/extlinux.conf" in log
        assert f"Retrieving file: /{m.kernel.file}" in log
        shell = target.shell()
        assert shell.run("uname -m") == (0, f"{machine}\n")
        status, cmdline = shell.run("cat /proc/cmdline")
        assert status == 0 and cmdline.strip() == m.kernel.cmdline
        stages = dict(report.stages)
        assert stages["power on to ready"] < 60
        print(f"{board_name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    # QEMU had a copy; the store's image is as built.
    assert (workdir / "sd.img").is_file() and hash_file(image) == before
