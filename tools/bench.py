"""embedbuild benchmarks, measured in one run on this machine (speed targets live here,
never in timed tests).

build:     cold kernel build of qemu-arm-virt (empty store, empty ccache) against the
           same kernel make by hand with the same .config (goal: ratio <= 1.05); no-op
           rebuild (goal: < 0.5 s); rebuild after changing one fragment line with the
           warm ccache, against the cold build (goal: ratio <= 0.3); a cold build into
           an empty store with that warm ccache (what a second checkout costs).
ccache:    the compiler cache's part of build alone: cold (empty ccache), no-op,
           fragment change (warm ccache) and its ratio, empty store with warm ccache.
userland:  rebuild after changing only a service, the init's settings, or an overlay
           (goal: < 2 s each).
rig:       16 MiB TFTP load into QEMU's U-Boot from embedbuild's server and from
           tftpd-hpa, median of 3 (goal: ratio >= 1.0); the same with 1% and 5% of the
           packets to the board lost, 2 MiB (rig-loss alone: goal ratio >= 1.0);
           then the boot bench.
boot:      power-on to `embedbuild: system ready` of qemu-arm-virt through U-Boot and
           embedbuild's TFTP server, split into U-Boot prompt, TFTP, kernel to /init and
           init to ready, median of 5 (goal: <= 0.8 s); the median boot's timeline
           goes to timeline.svg in the board's bench folder.
tftp-flood: a normal client's 300 KB download from `embedbuild tftp` on loopback, idle and
           while another address floods the server with requests from 300 ports
           (goal: < 1 s during the flood).
cache:     cold build of qemu-arm-virt into an empty store against the same build
           substituted from a binary cache served by nginx on 127.0.0.1, measured in one
           run (goal: substituted / cold <= 0.10); the push between them is shown too.
"""

from __future__ import annotations

import contextlib
import os
import re
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
SETTLE = 30  # seconds the disk gets after a sync before each timed build
BOOTS = 5  # boots of qemu-arm-virt the boot bench takes the median of


def timed(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, **kw)
    return time.monotonic() - t0


def _env(work: Path, ccache: Path | None = None) -> dict[str, str]:
    """A store and a compiler cache (default: a new one) in ``work``. Downloads are the
    user's own: fetching the locked sources is not building (kernel_tarball fetches them
    before anything is timed)."""
    env = {**os.environ, "EMBEDBUILD_STORE": str(work / "store"),
           "EMBEDBUILD_CCACHE_DIR": str(ccache or work / "ccache")}
    env.pop("EMBEDBUILD_NO_CCACHE", None)
    env.pop("EMBEDBUILD_CCACHE_REMOTE", None)  # a team's cache would make cold builds warm
    return env


def settle(work: Path) -> None:
    """Let the disk finish what earlier work left (the store deletes build folders in
    the background): on this kind of VM a 1.5 GB unpack right after another one or
    after a big delete takes up to three times as long."""
    while any(any(t.iterdir()) for t in work.glob("*/store/.trash")):
        time.sleep(1)
    subprocess.run(["sync"], check=True)
    time.sleep(SETTLE)



def cold_build(work: Path, board: str, link: str, ccache: Path | None = None
               ) -> tuple[float, dict[str, float]]:
    """A kernel build into an empty store (with an empty ccache unless ``ccache`` is
    given): wall time and each step's time."""
    t0 = time.monotonic()
    p = subprocess.run([EMBEDBUILD, "build", board, "--step", "kernel", "--out-link", link],
                       env=_env(work, ccache), check=True, capture_output=True, text=True)
    wall = time.monotonic() - t0
    steps = {m.group(1): float(m.group(2))
             for m in re.finditer(r"built (\S+) in ([\d.]+)s", p.stdout + p.stderr)}
    return wall, steps


def kernel_tarball() -> Path:
    """The locked kernel tarball of BOARD, fetched into the downloads cache if needed."""
    from embedbuild.load import load_board
    from embedbuild.steps.source import downloaded

    subprocess.run([EMBEDBUILD, "sources", "fetch", BOARD], check=True, capture_output=True)
    return downloaded(load_board(BOARD).kernel_source)


def by_hand(work: Path, config: Path) -> tuple[float, float]:
    """What a user types: tar, then make with the same .config. (unpack s, make s)"""
    work.mkdir()
    tarball = kernel_tarball()
    t0 = time.monotonic()
    subprocess.run(["tar", "-xf", tarball, "-C", work, "--strip-components=1"], check=True)
    t1 = time.monotonic()
    (work / "build").mkdir()
    shutil.copyfile(config, work / "build" / ".config")
    subprocess.run(["make", "-C", str(work), "O=build", "ARCH=arm",
                    "CROSS_COMPILE=arm-linux-gnueabihf-", f"-j{len(os.sched_getaffinity(0))}",
                    "-s", "olddefconfig", "zImage"], check=True, stdout=subprocess.DEVNULL)
    return t1 - t0, time.monotonic() - t1



def bench_build(work: Path) -> None:
    kernel_tarball()  # fetched once, before anything is timed
    boards = work / "boards"
    shutil.copytree(ROOT / "boards", boards)
    board = str(boards / BOARD)
    # Two rounds in opposite orders, nothing deleted in between, so that whatever the
    # first build of a round leaves to the disk weighs on both sides alike.
    ours: list[float] = []
    hand: list[float] = []
    for rnd in (1, 2):
        w = work / f"round{rnd}"
        w.mkdir()
        link = str(w / "kernel")
        runs = ["embedbuild", "by hand"] if rnd == 1 else ["by hand", "embedbuild"]
        for who in runs:
            settle(work)
            if who == "embedbuild":
                wall, steps = cold_build(w, board, link)
                ours.append(wall)
                parts = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
                print(f"round {rnd}: embedbuild cold  {wall:7.1f} s  ({parts})", flush=True)
            else:
                # Round 1 takes the .config from the build just made; round 2 from round 1.
                config = Path(work / "round1" / "kernel") / "kernel.config"
                unpack, make = by_hand(w / "hand", config)
                hand.append(unpack + make)
                print(f"round {rnd}: by hand          {unpack + make:7.1f} s  "
                      f"(tar {unpack:.1f}, make olddefconfig zImage {make:.1f})", flush=True)
    print(f"cold kernel build, embedbuild / by hand: {sum(ours) / sum(hand):.3f}   "
          f"(sum of both rounds; goal <= 1.05)")

    noop_and_warm(work / "round2", board, ours[1])


def bench_ccache(work: Path) -> None:
    """The compiler cache's part of the build bench alone (no build by hand): a cold
    build with an empty ccache, then what ``noop_and_warm`` measures."""
    shutil.copytree(ROOT / "boards", work / "boards")
    board = str(work / "boards" / BOARD)
    w = work / "cold"
    w.mkdir()
    settle(work)
    wall, steps = cold_build(w, board, str(w / "kernel"))
    parts = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
    print(f"embedbuild cold, empty ccache     {wall:7.1f} s  ({parts}; "
          f"{kernel_ccache(w / 'store')})", flush=True)
    noop_and_warm(w, board, wall)


def noop_and_warm(w: Path, board: str, cold: float) -> None:
    """After a cold build in ``w`` that took ``cold`` s (its store and ccache): no-op
    rebuild; one fragment line changed, compiled through the warm ccache; a cold build
    into an empty store with that ccache (a second checkout)."""
    env = _env(w)
    argv = [EMBEDBUILD, "build", board, "--step", "kernel", "--out-link", str(w / "kernel")]
    noop = statistics.median(timed(argv, env=env) for _ in range(5))
    print(f"no-op rebuild (median of 5):             {noop:7.3f} s   (goal < 0.5)", flush=True)

    frag = Path(board) / "kernel.config"
    frag.write_text(frag.read_text() + "CONFIG_PRINTK_TIME=y\n")
    settle(w.parent)
    change = timed(argv, env=env)
    print(f"one fragment line changed (config + kernel), warm ccache: {change:6.1f} s  "
          f"({kernel_ccache(w / 'store')})")
    print(f"fragment change / cold build:            {change / cold:7.3f}   (goal <= 0.3)",
          flush=True)
    frag.write_text(frag.read_text().replace("CONFIG_PRINTK_TIME=y\n", ""))
    checkout = w.parent / "checkout"
    checkout.mkdir()
    settle(w.parent)
    wall, steps = cold_build(checkout, board, str(checkout / "kernel"), ccache=w / "ccache")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
    print(f"empty store, warm ccache:         {wall:7.1f} s  ({parts}; "
          f"{kernel_ccache(checkout / 'store')})")
    print(f"empty store with warm ccache / cold build: {wall / cold:7.3f}")


def kernel_ccache(store: Path) -> str:
    """The ccache line of the newest kernel build in a store's records."""
    logs = sorted((store / ".meta").glob("*-kernel/build.log"), key=lambda p: p.stat().st_mtime)
    lines = [ln for ln in (logs[-1].read_text().splitlines() if logs else [])
             if ln.startswith("ccache: ")]
    return lines[-1] if lines else "no ccache line in the kernel's log"


def bench_userland(work: Path) -> None:
    env = _env(work)
    # The rebuild times do not depend on how the first build came about: a warm store
    # (EMBEDBUILD_BENCH_STORE) skips the 10-minute full build.
    if warm := os.environ.get("EMBEDBUILD_BENCH_STORE"):
        env["EMBEDBUILD_STORE"] = warm
    boards = work / "boards"
    shutil.copytree(ROOT / "boards", boards)
    overlays = work / "overlays"
    shutil.copytree(ROOT / "overlays", overlays)
    env["EMBEDBUILD_OVERLAYS"] = str(overlays)
    board = str(boards / BOARD)
    link = str(work / "result")
    first = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"full build (kernel, busybox, dropbear, initramfs): {first:6.1f} s")
    toml = boards / BOARD / "board.toml"
    toml.write_text(toml.read_text().replace("sleep 60", "sleep 61"))
    t = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"one service changed:                 {t:6.2f} s   (goal < 2)")
    toml.write_text(toml.read_text().replace('hostname = "arm-virt"', 'hostname = "arm-virt2"'))
    t = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"the init's settings changed:         {t:6.2f} s   (goal < 2)")
    motd = overlays / "bench" / "etc" / "motd"
    motd.write_text(motd.read_text() + "changed\n")
    t = timed([EMBEDBUILD, "build", board, "--out-link", link], env=env)
    print(f"one overlay file changed:            {t:6.2f} s   (goal < 2)")


def _tftpd_hpa() -> tuple[str | None, str]:
    """Debian's in.tftpd (tools/setup installs it, its service off), or why it cannot run."""
    path = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
    if not Path(path).exists():
        return None, "tftpd-hpa is not installed (tools/setup installs it)"
    p = subprocess.run([path, "-V"], capture_output=True, text=True)
    if p.returncode:
        return None, f"{path} does not run: {(p.stderr.strip().splitlines() or ['?'])[-1]}"
    return path, ""


def _hpa_load(uboot, target, served: Path, in_tftpd: str, command: str,
              timeout: float) -> float:
    """Seconds U-Boot's ``command`` takes with in.tftpd serving ``served`` on the target's
    bench network."""
    hpa = subprocess.Popen(target.network.exec_argv(
        [in_tftpd, "-L", "-s", "-a", f"{target.link.server_ip}:69", str(served)]))
    try:
        time.sleep(0.3)
        return uboot.check(command, timeout=timeout).seconds
    finally:
        hpa.terminate()
        hpa.wait()


@contextlib.contextmanager
def _uboot_on_bench(board, work: Path):
    """qemu-arm-virt's U-Boot at its prompt on a bench network, its network set up with
    the board's TFTP settings, port 69 left free for the servers compared; yields
    (uboot, target)."""
    from embedbuild.rig.bench import BenchOptions
    from embedbuild.rig.target import Target

    with Target(board, BenchOptions().bench(board), work) as target:
        uboot = target.prompt()
        target.tftp.stop()
        yield uboot, target


def _our_server(served: Path, target):
    """embedbuild's TFTP server on the target's bench network."""
    from embedbuild.rig.tftp import TftpServer

    return TftpServer(served, target.link.server_ip, 69, netns=target.network.path)


def bench_rig(work: Path) -> None:
    from embedbuild import bootcmd
    from embedbuild.load import load_board
    from embedbuild.rig.uboot import BootError

    board = load_board(BOARD)
    served = work / "served"
    served.mkdir()
    (served / "big.bin").write_bytes(os.urandom(16 * 2**20))
    in_tftpd, why = _tftpd_hpa()
    rates: dict[str, list[float]] = {"embedbuild": [], "tftpd-hpa": []}
    with _uboot_on_bench(board, work / "prompt") as (uboot, target):
        load = bootcmd.tftp_load(0x42000000, "big.bin")
        for _ in range(3):
            # Both measured the same way: the time of U-Boot's tftpboot command.
            with _our_server(served, target):
                r = uboot.check(load, timeout=120)
                rates["embedbuild"].append(16 / r.seconds)
            if in_tftpd:
                try:
                    rates["tftpd-hpa"].append(16 / _hpa_load(
                        uboot, target, served, in_tftpd, load, 120))
                except BootError as e:
                    in_tftpd, why = None, f"its load failed: {e.message}"
    ours = statistics.median(rates["embedbuild"])
    print(f"16 MiB TFTP into U-Boot, embedbuild: {ours:6.1f} MiB/s (median of 3)")
    if rates["tftpd-hpa"] and in_tftpd:
        theirs = statistics.median(rates["tftpd-hpa"])
        print(f"16 MiB TFTP into U-Boot, tftpd-hpa:  {theirs:6.1f} MiB/s (median of 3)")
        print(f"ratio embedbuild/tftpd-hpa:          {ours / theirs:6.2f}   (goal >= 1.0)")
    else:
        print(f"no comparison with tftpd-hpa: {why}")
    bench_rig_loss(work / "loss")

    bench_boot(work / "boot")


# The parts of a boot the bench splits it into, from the boot report's stages.
BOOT_PARTS = ("U-Boot prompt", "TFTP", "kernel to /init", "init to ready")


def boot_split(stages: list[tuple[str, float]], loaded: list[str]) -> dict[str, float]:
    """One boot's report stages as the bench's parts: power-on to the U-Boot prompt,
    the TFTP loads (U-Boot's command for each file in ``loaded``), kernel start to
    /init, /init to the ready line; "other" is what the total has beyond them (U-Boot's
    network setup and boot command)."""
    got = dict(stages)
    split = {"U-Boot prompt": got["power on to U-Boot prompt"],
             "TFTP": sum(got.get(f"tftp {f}", 0.0) for f in loaded),
             "kernel to /init": got["kernel to /init"],
             "init to ready": got["init to ready"]}
    split["other"] = got["power on to ready"] - sum(split.values())
    split["total"] = got["power on to ready"]
    return split


def bench_boot(work: Path) -> None:
    """Power-on to ready of qemu-arm-virt through U-Boot and embedbuild's TFTP server,
    BOOTS times: each boot's split and the median of each part (goal: total <= 0.8 s);
    the median boot's timeline as SVG in the board's bench folder."""
    from embedbuild import session
    from embedbuild.load import load_board
    from embedbuild.rig.bench import BenchOptions
    from embedbuild.rig.bootsource import TftpBoot
    from embedbuild.rig.target import Target
    from embedbuild.store import Store, cache_dir, default_root
    from embedbuild.timeline import boot_timeline_svg, seconds_of_day

    board = load_board(BOARD)
    result = session.build(board, Store(default_root())).result
    splits, svgs = [], []
    names = [*BOOT_PARTS, "other", "total"]
    print("  ".join(f"{n:>15}" for n in names))
    for i in range(BOOTS):
        with Target(board, BenchOptions().bench(board), work / f"boot{i}", result) as t:
            report = t.boot(TftpBoot())
            splits.append(boot_split(report.stages, [x.filename for x in report.transfers]))
            # When the power came on, on the console log's clock.
            assert report.powered_on is not None
            power_on = seconds_of_day(time.time() - (time.monotonic() - report.powered_on))
        svgs.append(boot_timeline_svg(work / f"boot{i}" / "console.log", power_on,
                                      title=f"{BOARD} boot {i + 1} of {BOOTS}"))
        print("  ".join(f"{splits[-1][n]:13.3f} s" for n in names), flush=True)
    medians = {n: statistics.median(s[n] for s in splits) for n in names}
    print("  ".join(f"{medians[n]:13.3f} s" for n in names) + f"   median of {BOOTS}")
    print(f"qemu-arm-virt power on to ready:     {medians['total']:6.2f} s   "
          f"(median of {BOOTS}; goal <= 0.8)")
    median_boot = sorted(range(BOOTS), key=lambda i: splits[i]["total"])[BOOTS // 2]
    svg = cache_dir("EMBEDBUILD_BENCH", "bench") / BOARD / "timeline.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(svgs[median_boot])
    print(f"timeline of the median boot: {svg}")


LOSSES = (1, 5)  # percent of the packets to the board that are dropped
LOSS_MIB = 2  # about a zImage: tftpd-hpa pays a whole timeout per lost block


class NoLoss(Exception):
    """Packet loss cannot be emulated here."""


def _set_loss(net, percent: int) -> str:
    """Make the bench tap drop ``percent``% of what it sends to the board; says how."""
    def tc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(net.exec_argv(["tc", *args]), capture_output=True, text=True)

    netem = tc("qdisc", "replace", "dev", net.tap, "root", "netem", "loss", f"{percent}%")
    if netem.returncode == 0:
        return "netem"
    # A kernel without sch_netem still has clsact and cls_bpf: a classic BPF program
    # drops at random ("ld rand"; below the threshold: TC_ACT_SHOT, else TC_ACT_OK).
    tc("qdisc", "del", "dev", net.tap, "clsact")
    threshold = 2**32 * percent // 100
    program = f"4,32 0 0 {0xFFFFF038},53 1 0 {threshold},6 0 0 2,6 0 0 0"
    bpf = tc("qdisc", "add", "dev", net.tap, "clsact")
    if bpf.returncode == 0:
        bpf = tc("filter", "add", "dev", net.tap, "egress", "bpf", "da", "bytecode", program)
    if bpf.returncode:
        raise NoLoss(f"netem: {netem.stderr.strip()}; tc bpf: {bpf.stderr.strip()}")
    return f"random-drop tc bpf filter, netem unavailable: {netem.stderr.strip()}"


def bench_rig_loss(work: Path) -> None:
    """A 2 MiB load into QEMU's U-Boot through a tap that loses 1% and 5% of the packets
    to the board: embedbuild against tftpd-hpa in the same run (goal: ratio >= 1.0)."""
    from embedbuild import bootcmd
    from embedbuild.load import load_board
    from embedbuild.rig.console import ConsoleError

    board = load_board(BOARD)
    served = work / "served"
    served.mkdir(parents=True)
    (served / "loss.bin").write_bytes(os.urandom(LOSS_MIB * 2**20))
    in_tftpd, why = _tftpd_hpa()
    load = bootcmd.tftp_load(0x42000000, "loss.bin")
    with _uboot_on_bench(board, work / "prompt") as (uboot, target):
        # The same U-Boot for both: its shortest timeout, and enough retries that
        # a lossy load goes on instead of starting over ("Retry count exceeded").
        for cmd in bootcmd.tftp_patience(timeout_ms=1000, retries=10000):
            uboot.check(cmd)
        for percent in LOSSES:
            try:
                how = _set_loss(target.network, percent)
            except NoLoss as e:
                print(f"{percent}% loss: not measured, no way to drop packets here ({e})")
                continue
            try:
                with _our_server(served, target):
                    ours = LOSS_MIB / uboot.check(load, timeout=300).seconds
            except ConsoleError as e:  # BootError included
                print(f"{percent}% loss: embedbuild's load failed, the rest not "
                      f"measured: {e.message}  [loss: {how}]")
                return
            line = f"{LOSS_MIB} MiB at {percent}% loss, embedbuild: {ours:6.2f} MiB/s"
            if in_tftpd:
                try:
                    theirs = LOSS_MIB / _hpa_load(uboot, target, served, in_tftpd, load, 900)
                    line += (f", tftpd-hpa: {theirs:6.2f} MiB/s, ratio {ours / theirs:6.2f}"
                             "  (goal >= 1.0)")
                except ConsoleError as e:
                    line += f"; no comparison with tftpd-hpa: its load failed: {e.message}"
            else:
                line += f"; no comparison with tftpd-hpa: {why}"
            print(f"{line}  [loss: {how}]", flush=True)


# The flooder, in a process of its own (not sharing the measuring client's interpreter):
# read requests for a big file from 300 ports of 127.0.0.2, as fast as it can.
FLOOD = """
import itertools, signal, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
rrq = b"\\0\\1big.bin\\0octet\\0"
socks = []
for _ in range(300):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    s.setblocking(False)
    socks.append(s)
start, sent = time.monotonic(), 0

def report(*_):
    print(f"{sent / (time.monotonic() - start):.0f}", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, report)
for s in itertools.cycle(socks):
    if sent % 1000 == 0 and time.monotonic() > start + seconds:
        report()
    try:
        s.sendto(rrq, ("127.0.0.1", port))
        sent += 1
    except BlockingIOError:
        time.sleep(0.001)
"""


def bench_tftp_flood(work: Path) -> None:
    import logging

    import tftpy

    logging.getLogger("tftpy").setLevel(logging.ERROR)
    served = work / "served"
    served.mkdir()
    (served / "big.bin").write_bytes(os.urandom(16 << 20))
    (served / "small.bin").write_bytes(os.urandom(300_000))
    log = work / "tftp.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([EMBEDBUILD, "tftp", str(served), "--listen", "127.0.0.1:0"],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "COLUMNS": "300"})
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"on 127\.0\.0\.1:(\d+)/udp", log.read_text())):
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"embedbuild tftp did not start: {log.read_text()[-300:]!r}")
                return
            time.sleep(0.05)
        port = int(m.group(1))

        def download() -> float:
            """Seconds one download took; infinite if the client gave up (3 tries)."""
            t0 = time.monotonic()
            client = tftpy.TftpClient("127.0.0.1", port, {"blksize": 1468}, localip="127.0.0.3")
            try:
                client.download("small.bin", str(work / "got"), timeout=1)
            except tftpy.TftpException:
                return float("inf")
            return time.monotonic() - t0

        idle = [download() for _ in range(5)]
        flooder = subprocess.Popen([sys.executable, "-c", FLOOD, str(port), "60"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1)  # the flood is in full swing
            flood = []
            for _ in range(10):
                flood.append(download())
                time.sleep(0.2)
        finally:
            flooder.terminate()
            rate = flooder.communicate()[0].strip()
        dropped = _udp_drops(port)
    finally:
        server.terminate()
        server.wait()
    print(f"normal client, 300 KB: idle median {statistics.median(idle):.3f} s; during a "
          f"flood of {rate} requests/s from 300 ports: median "
          f"{statistics.median(flood):.3f} s, worst {max(flood):.3f} s  (goal < 1 s; inf: "
          f"not served); "
          f"requests the listening port's full queue dropped: {dropped}")


def _udp_drops(port: int) -> int:
    """Packets the kernel dropped for a full queue on the UDP socket of this local port."""
    with open("/proc/net/udp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    return -1


def bench_cache(work: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from cache_server import nginx

    # No user's config: the cold build asks no cache, the substituted one only ours.
    base = {**_env(work), "XDG_CONFIG_HOME": str(work / "config")}
    cold_env = {**base, "EMBEDBUILD_STORE": str(work / "cold")}
    subst_env = {**base, "EMBEDBUILD_STORE": str(work / "substituted")}
    result = str(work / "result")
    settle(work)
    cold = timed([EMBEDBUILD, "build", BOARD, "--offline", "--out-link", result],
                 env=cold_env)
    print(f"cold build into an empty store:        {cold:7.1f} s", flush=True)
    subprocess.run([EMBEDBUILD, "cache", "keygen", "bench"], cwd=work, check=True,
                   capture_output=True)
    with nginx(work / "www", work / "nginx") as url:
        push = timed([EMBEDBUILD, "cache", "push", url, result, "--key",
                      str(work / "bench.secret")], env=cold_env)
        size = sum(f.stat().st_size for f in (work / "www").rglob("*") if f.is_file())
        print(f"push of its closure to nginx:          {push:7.1f} s   "
              f"({size / 1e6:.0f} MB in the cache)", flush=True)
        settle(work)
        subst_env |= {"EMBEDBUILD_SUBSTITUTERS": url,
                      "EMBEDBUILD_TRUSTED_KEYS": str(work / "bench.public")}
        t0 = time.monotonic()
        p = subprocess.run([EMBEDBUILD, "build", BOARD, "--out-link", str(work / "fetched")],
                           env=subst_env, check=True, capture_output=True, text=True)
        fetched = time.monotonic() - t0
    built = re.findall(r"built (\S+) in", p.stderr)
    same = subprocess.run(["diff", "-r", result, str(work / "fetched")],
                          capture_output=True).returncode == 0
    print(f"substituted build into an empty store: {fetched:7.2f} s   "
          f"(steps built: {len(built)}; result {'identical' if same else 'DIFFERENT'})")
    print(f"substituted / cold: {fetched / cold:.4f}   (goal <= 0.10)")


BENCHES = {"build": bench_build, "ccache": bench_ccache, "userland": bench_userland,
           "rig": bench_rig, "boot": bench_boot, "rig-loss": bench_rig_loss,
           "tftp-flood": bench_tftp_flood, "cache": bench_cache}


def main() -> None:
    # build includes ccache's part, rig the boot's.
    chosen = sys.argv[1:] or [n for n in BENCHES if n not in ("ccache", "boot")]
    for name in chosen:
        print(f"== {name}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"embedbuild-bench-{name}-") as d:
            BENCHES[name](Path(d))


if __name__ == "__main__":
    main()
