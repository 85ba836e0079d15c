"""Real kernel builds: qemu-arm-virt built once per session, booted in QEMU, and the
failures that need a real Kconfig tree, patch or dtc."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import cli, manifest, snapshot

from embedbuild.load import load_board

pytestmark = pytest.mark.slow


def test_manifest_describes_files(arm_result: Path):
    m = manifest(arm_result)
    assert m.board == "qemu-arm-virt" and m.arch == "arm"
    for name, f in m.files.items():
        data = (arm_result / name).read_bytes()
        assert f.size == len(data)
        assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert m.uboot.tftpboot[-1].startswith("bootz 0x40400000")


def test_noop_rebuild_builds_nothing(arm_result: Path, session_store: Path, tmp_path: Path):
    before = snapshot(session_store)
    r = cli("build", "qemu-arm-virt", "--out-link", str(tmp_path / "r"), store=session_store)
    assert r.code == 0, r.err
    assert "built " not in r.err
    assert Path(r.out.strip()) == arm_result
    after = snapshot(session_store)
    changed = {k for k in after if before.get(k) != after[k]}
    # The result link's root, and the build's temporary roots (gone again at its exit).
    assert all(k.startswith((".roots", ".temproots")) for k in changed), changed


def test_kernel_boots_in_qemu_and_runs_init(arm_result: Path, hello_initramfs: Path):
    initrd = hello_initramfs
    # The board's RAM: its command line may limit what the kernel uses (mem=), and QEMU
    # puts the initramfs higher in a larger RAM, where such a kernel would not find it.
    qemu = load_board("qemu-arm-virt").qemu
    assert qemu is not None
    p = subprocess.run(
        [
            qemu.system,
            "-M",
            qemu.machine,
            *(["-cpu", qemu.cpu] if qemu.cpu else []),
            "-m",
            qemu.memory,
            "-nographic",
            "-no-reboot",
            "-kernel",
            arm_result / "zImage",
            "-initrd",
            initrd,
            "-append",
            manifest(arm_result).kernel.cmdline,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    # The board's command line shows the kernel's warnings and worse (loglevel=5), not
    # its "Run /init": the init's own line says it ran.
    assert "embedbuild-test-init: running on armv7l 6.1" in p.stdout


def _board_in(boards: Path, edit) -> Path:
    bdir = boards / "qemu-arm-virt"
    edit(bdir)
    return bdir


def _fails(bdir: Path, store: Path, *needles: str) -> str:
    r = cli("build", str(bdir), "--out-link", str(bdir / "result"), store=store)
    assert r.code == 1, r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, f"{n!r} not in:\n{r.err}"
    assert not list((store / ".tmp").iterdir())
    return r.err


def test_unknown_symbol(boards: Path, session_store: Path, arm_result: Path):
    def edit(b: Path):
        (b / "kernel.config").write_text(
            (b / "kernel.config").read_text() + "CONFIG_VIRTIO_NETT=y\n"
        )

    b = _board_in(boards, edit)
    n = len((b / "kernel.config").read_text().splitlines())
    _fails(
        b,
        session_store,
        f"kernel.config:{n}",
        "unknown symbol CONFIG_VIRTIO_NETT",
        "did you mean CONFIG_VIRTIO_NET",
    )


def test_value_lost_to_unmet_dependency(boards: Path, session_store: Path, arm_result: Path):
    def edit(b: Path):
        # ag71xx is the ath79 Ethernet driver: it cannot exist on an ARM virt kernel.
        (b / "kernel.config").write_text(
            (b / "kernel.config").read_text() + "CONFIG_AG71XX=y\nCONFIG_VIRTIO_BLK=y\n"
        )

    b = _board_in(boards, edit)
    err = _fails(
        b,
        session_store,
        "CONFIG_AG71XX=y requested, got n: depends on",
        "NET_VENDOR_ATHEROS [=n]",
        "CONFIG_VIRTIO_BLK=y requested, got n",
        "BLK_DEV [=n]",
        "2 requested value(s)",
    )
    assert "kernel.config:" in err


def test_what_allnoconfig_turns_off_is_named(boards: Path, session_store: Path,
                                             arm_result: Path):
    # Under allnoconfig a symbol the request makes visible stays off unless asked for:
    # SHMEM (default y, but only under EXPERT's prompt), which TMPFS depends on.
    def edit(b: Path):
        base = b.parent / "common" / "kernel-base.config"
        base.write_text(base.read_text().replace("CONFIG_SHMEM=y\n", ""))

    _fails(
        _board_in(boards, edit),
        session_store,
        "1 requested value(s) did not survive make allnoconfig",
        "CONFIG_TMPFS=y requested, got n: depends on SHMEM [=n]",
    )


def test_patch_that_does_not_apply(boards: Path, session_store: Path, arm_result: Path):
    def edit(b: Path):
        (b / "patches").mkdir()
        (b / "patches" / "0001-bad.patch").write_text(
            "--- a/init/main.c\n+++ b/init/main.c\n@@ -1,3 +1,3 @@\n"
            " no such line one\n-no such line two\n+replacement\n no such line three\n"
        )
        # After the board's own patches: the bad one is the one that fails.
        t = b / "board.toml"
        old = 'patches = ["linux-keep-init-memory.patch", "linux-tlb-range.patch"]'
        assert old in t.read_text(), "the board's kernel patches changed: update this test"
        t.write_text(t.read_text().replace(
            old, old[:-1] + ', "patches/0001-bad.patch"]', 1))

    b = _board_in(boards, edit)
    _fails(
        b, session_store, "0001-bad.patch", "patch does not apply", "hunk #1 of init/main.c FAILED"
    )


def test_dts_syntax_error(boards: Path, session_store: Path, arm_result: Path):
    def edit(b: Path):
        (b / "broken.dts").write_text(
            '/dts-v1/;\n/ {\n\tmodel = "broken";\n\tcompatible = "x,y"\n\tfoo { };\n};\n'
        )
        t = b / "board.toml"
        t.write_text(
            t.read_text().replace('image = "zImage"', 'image = "zImage"\ndts = "broken.dts"')
        )
        (b / "kernel.config").write_text((b / "kernel.config").read_text() + "CONFIG_OF=y\n")

    b = _board_in(boards, edit)
    _fails(b, session_store, "broken.dts:5", "device tree error")


def test_verify_real_store(arm_result: Path, session_store: Path):
    r = cli("verify", store=session_store)
    assert r.code == 0, r.out + r.err
    assert "verified, no damage" in r.out
