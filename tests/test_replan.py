"""What a change replans: only the steps whose inputs it reaches. Planning only, no
build, so these run with the fast tests and catch a new step that holds the kernel or
the initramfs (a flash image, an SD-card image) as soon as it is planned."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import ROOT

from embedbuild.load import load_board
from embedbuild.plan import plan_board


def test_fragment_change_replans_only_config_and_kernel(boards: Path):
    plan = plan_board(load_board(str(boards / "qemu-arm-virt")))
    frag = boards / "qemu-arm-virt" / "kernel.config"
    frag.write_text(frag.read_text() + "CONFIG_PRINTK_TIME=y\n")
    changed = plan_board(load_board(str(boards / "qemu-arm-virt")))
    differ = {role for role, s in plan.steps.items() if changed.steps[role].key != s.key}
    # The config, the kernel, the flash and SD-card images holding it, and what depends
    # on them only to check, to collect or to measure (the packages' kernel symbols, the
    # FIT's size, the kernel's parts): busybox, dropbear, musl, the initramfs and its
    # segments stay as they are.
    assert differ == {"kconfig", "kernel", "initramfs-check", "kernel-needs", "fit", "fit-fits",
                      "sdimage", "kernel-parts", "result"}



def test_only_affected_segments_rebuild(boards: Path, tmp_path: Path):
    base = plan_board(load_board(str(boards / "qemu-arm-virt")))
    toml = boards / "qemu-arm-virt" / "board.toml"
    text = toml.read_text()

    def changed(new_text: str) -> set[str]:
        toml.write_text(new_text)
        plan = plan_board(load_board(str(boards / "qemu-arm-virt")))
        return {role for role, s in plan.steps.items() if base.steps[role].key != s.key}

    service = changed(text.replace("sleep 60", "sleep 61"))
    # The generated files only, and what holds the initramfs (the FIT flash image and
    # the SD-card image).
    assert service == {"segment0", "initramfs", "fit", "fit-fits", "sdimage", "result"}
    overlay_dir = tmp_path / "ov"
    (overlay_dir / "bench").mkdir(parents=True)
    toml.write_text(text)
    motd = ROOT / "overlays" / "bench" / "etc" / "motd"
    os.environ["EMBEDBUILD_OVERLAYS"] = str(overlay_dir)
    try:
        (overlay_dir / "bench" / "etc").mkdir()
        (overlay_dir / "bench" / "etc" / "motd").write_text(motd.read_text() + "changed\n")
        (overlay_dir / "bench" / "etc" / "profile").write_text(
            (ROOT / "overlays" / "bench" / "etc" / "profile").read_text())
        overlay = changed(text)
    finally:
        del os.environ["EMBEDBUILD_OVERLAYS"]
    assert overlay == {"segment4", "initramfs", "fit", "fit-fits", "sdimage", "result"}
