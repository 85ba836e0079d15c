"""embedbuild benchmarks, measured in one run on this machine.

build: cold build of qemu-arm-virt against the same kernel make run by hand with
the same .config (goal: ratio <= 1.05); no-op rebuild (goal: < 0.5 s); rebuild
after changing one fragment line.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDBUILD = str(Path(sys.executable).parent / "embedbuild")
BOARD = "qemu-arm-virt"


def timed(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def bench_build(work: Path) -> None:
    env = {
        **os.environ,
        "EMBEDBUILD_STORE": str(work / "store"),
        "EMBEDBUILD_DOWNLOADS": str(work / "downloads"),
    }
    boards = work / "boards"
    shutil.copytree(ROOT / "boards", boards)
    board = str(boards / BOARD)
    link = str(work / "result")

    cold = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"cold build (unpack + config + kernel): {cold:7.1f} s")

    # The same work by hand: unpack, the same .config, make.
    hand = work / "hand"
    hand.mkdir()
    t0 = time.monotonic()
    subprocess.run(
        ["tar", "-xf", "/usr/src/linux-source-6.1.tar.xz", "-C", hand, "--strip-components=1"],
        check=True,
    )
    (hand / "build").mkdir()
    shutil.copyfile(Path(link) / "kernel.config", hand / "build" / ".config")
    subprocess.run(
        [
            "make",
            "-C",
            str(hand),
            "O=build",
            "ARCH=arm",
            "CROSS_COMPILE=arm-linux-gnueabihf-",
            f"-j{len(os.sched_getaffinity(0))}",
            "-s",
            "olddefconfig",
            "zImage",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    by_hand = time.monotonic() - t0
    print(f"same kernel by hand (tar + make):      {by_hand:7.1f} s")
    print(f"ratio cold/hand:                       {cold / by_hand:7.3f}   (goal <= 1.05)")
    shutil.rmtree(hand)

    noop = statistics.median(
        timed([EMBEDBUILD, "build", board, "--out-link", link], env=env) for _ in range(5)
    )
    print(f"no-op rebuild (median of 5):           {noop:7.3f} s   (goal < 0.5)")

    frag = boards / BOARD / "kernel.config"
    frag.write_text(frag.read_text() + "CONFIG_PRINTK_TIME=y\n")
    change = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"one-fragment-line change rebuild:      {change:7.1f} s   (config + kernel)")


BENCHES = {"build": bench_build}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHES)
    for name in chosen:
        print(f"== {name}")
        with tempfile.TemporaryDirectory(prefix=f"embedbuild-bench-{name}-") as d:
            BENCHES[name](Path(d))


if __name__ == "__main__":
    main()
