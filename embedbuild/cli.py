"""The command line: parse, call one function per command, render errors.

Expected failures are EmbedbuildError: one short message, exit status 1, no
traceback (set EMBEDBUILD_BACKTRACE=1 to see one).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.model.system import READY_LINE

DESCRIPTION = """\
embedbuild builds tiny cross-compiled Linux systems (kernel + initramfs) for real
devices from a board folder, and boots them through U-Boot over TFTP, on a real
board's serial console or in QEMU.

example:
  embedbuild build ap-ac-lite                    # result/uImage for the UniFi AP AC Lite
  embedbuild boot qemu-arm-virt --qemu           # build, boot in QEMU, attach the console
"""

SERIAL_HELP = ("a real board's console: a device path, or a serial server's URL "
               "(rfc2217://HOST:PORT, socket://HOST:PORT); with --qemu, the URL that serves "
               "the QEMU board's console")


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _store(args):
    from embedbuild.store import Store, default_root

    return Store(Path(args.store) if args.store else default_root())


def cmd_boards(args) -> int:
    from embedbuild.load import known_boards, load_board

    for name in known_boards():
        try:
            desc = load_board(name).description
        except EmbedbuildError as e:
            desc = f"(invalid: {e})"
        print(f"{name:20} {desc}")
    return 0


def cmd_show(args) -> int:
    from embedbuild.load import load_board

    board = load_board(args.board, Path(args.system) if args.system else None)
    print(json.dumps(board.model_dump(mode="json"), indent=2))
    return 0


class _Progress:
    """Shows running steps with their elapsed time; finished steps as one line each."""

    def __init__(self, console) -> None:
        from rich.live import Live

        self.console = console
        self.running: dict[str, float] = {}
        self.fetching: dict[str, tuple[str, float, int, int]] = {}
        # Live re-renders this object 4 times a second, so the clocks tick.
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def __rich__(self):
        from rich.filesize import decimal
        from rich.text import Text

        now = time.monotonic()
        lines = [f"  building {n} ({now - t0:.0f}s)" for n, t0 in list(self.running.items())]
        for name, (cache, t0, done, total) in list(self.fetching.items()):
            rate = done / max(now - t0, 1e-3)
            lines.append(f"  fetching {name} from {cache}: {decimal(done)} of "
                         f"{decimal(total)}, {decimal(int(rate))}/s")
        return Text("\n".join(lines))

    def fetching_bytes(self, step, cache: str, done: int, total: int) -> None:
        """A substituter's download progress (bytes so far of total)."""
        t0 = self.fetching.get(step.name, (cache, time.monotonic(), 0, 0))[1]
        self.fetching[step.name] = (cache, t0, done, total)

    def substituted(self, step, seconds: float, cache: str) -> None:
        from rich.filesize import decimal

        got = self.fetching.pop(step.name, None)
        size = f", {decimal(got[2])}" if got else ""
        self.console.print(f"  fetched {step.name} from {cache} in {seconds:.1f}s{size}",
                           markup=False)

    def warn(self, line: str) -> None:
        """One warning line (a cache refused or unreachable)."""
        self.console.print(f"warning: {line}", markup=False, soft_wrap=True)

    def started(self, step) -> None:
        self.running[step.name] = time.monotonic()

    def finished(self, step, seconds: float) -> None:
        self.running.pop(step.name, None)
        self.console.print(f"  built {step.name} in {seconds:.1f}s")

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def build_board(args, store, console, role: str = "result"):
    """Build args.board (with args.system) up to the step of ``role``, showing progress."""
    from embedbuild import session

    system = Path(args.system) if getattr(args, "system", None) else None
    def repairing(problem: str) -> None:
        console.print(f"repairing {problem}", markup=False, soft_wrap=True)

    with _Progress(console) as progress:
        caches = None
        if not getattr(args, "offline", False):
            from embedbuild.cache.config import substituters

            caches = substituters(progress.warn, progress.fetching_bytes)
        return session.build(args.board, store, system=system, role=role, events=progress,
                             repair=repairing if getattr(args, "repair", False) else None,
                             substituters=caches,
                             ccache=not getattr(args, "no_ccache", False), warn=progress.warn)


def cmd_build(args) -> int:
    store = _store(args)
    console = _console()
    out = build_board(args, store, console, role=args.step).path(args.step)
    store.link_result(out, Path(args.out_link))
    print(out)
    return 0


def cmd_config(args) -> int:
    from embedbuild.kconfig import read_config
    from embedbuild.steps.config import ALLCONFIG_TARGETS

    built = build_board(args, _store(args), _console(), role="kconfig")
    step = built.plan.steps["kconfig"]
    item = built.path("kconfig")
    request_file = item / step.output_path("request")
    request = read_config(request_file)
    final = read_config(item / step.output_path("config"))
    print(f"# requested by the fragments of {built.board.name} ({len(request)} symbols)")
    print(request_file.read_text(), end="")
    added = {s: v for s, v in final.items() if s not in request and v != "n"}
    base = built.board.kernel.base
    by = base if base in ALLCONFIG_TARGETS else f"{base} and olddefconfig"
    print(f"\n# added by {by} beyond the request ({len(added)} symbols)")
    for s, v in added.items():
        print(f"CONFIG_{s}={v}")
    return 0


def _options(args):
    """What the command line says about the bench (rig/bench.py), validated."""
    from pydantic import ValidationError

    from embedbuild.rig.bench import BenchOptions

    if not args.serial and not getattr(args, "power_on", None):
        return BenchOptions()
    try:
        return BenchOptions(serial=args.serial, qemu=getattr(args, "qemu", False),
                            baud=args.baud, server_ip=args.server_ip, device_ip=args.device_ip,
                            netmask=args.netmask, power_timeout=args.power_timeout,
                            power_on=getattr(args, "power_on", None),
                            power_off=getattr(args, "power_off", None))
    except ValidationError as e:
        err = e.errors()[0]
        raise EmbedbuildError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


def _boot_source(args, board):
    """The boot source the command line asks for (--boot NAME, --from-flash, --from-sd)."""
    from embedbuild.rig.bootsource import BOOT_SOURCES, TftpBoot

    asked = [name for name, on in (("flash", args.from_flash), ("sd", args.from_sd),
                                   (args.boot, args.boot != TftpBoot.name)) if on]
    if len(set(asked)) > 1:
        raise EmbedbuildError(f"one way to boot at a time, not {' and '.join(asked)}")
    name = asked[0] if asked else TftpBoot.name
    if args.initrd:
        if name != TftpBoot.name:
            raise EmbedbuildError(f"--initrd goes with a TFTP boot, not --boot {name}: what "
                                  "boots is the board's own image there")
        return TftpBoot(Path(args.initrd).resolve())
    return BOOT_SOURCES[name]()


class _PowerPrompt:
    """Tells a person to power the board on, then shows how long we have listened."""

    def __init__(self, console, board, options, target) -> None:
        self.console, self.board, self.options, self.target = console, board, options, target
        self.status = None
        self.t0 = 0.0

    def __call__(self, event, phase: str) -> None:
        if event.name == "power on by hand" and phase == "start":
            self.console.print(f"power on (or reset) {self.board.name} now; waiting for U-Boot "
                               f"on {self.options.serial} ({self.options.power_timeout:.0f} s "
                               "at most)", markup=False)
        elif event.name == "waiting for U-Boot":
            if phase == "start":
                self.t0 = time.monotonic()
                self.status = self.console.status(self, spinner="dots")
                self.status.start()
            elif self.status is not None:
                self.status.stop()

    def __rich__(self) -> str:
        line = self.target.bench.serial
        return (f"listening on {line.port} at {line.baud} baud, serving "
                f"{self.target.link.server_ip}:69: {time.monotonic() - self.t0:.0f} s")


def _target(board, options):
    """The one target of this command (rig/target.py), made before the build (its
    result comes after), its folder run/ in the board's bench folder; a person is told
    when to power on."""
    from embedbuild.rig.bench import bench_folder, flash_file
    from embedbuild.rig.target import Target

    target = Target(board, options.bench(board, flash_file(board)), bench_folder(board) / "run")
    if options.real:
        target.steps.subscribe(_PowerPrompt(_console(), board, options, target))
    return target


def cmd_boot(args) -> int:
    import contextlib

    from embedbuild.load import load_board
    from embedbuild.rig.bench import bench_dir

    if not (args.qemu or args.serial):
        raise EmbedbuildError("boot needs --qemu or --serial DEV")
    console = _console()
    options = _options(args)
    board = load_board(args.board, Path(args.system) if args.system else None)
    source = _boot_source(args, board)
    # Before building: never fail half-way.
    options.check(board, [source.initrd] if getattr(source, "initrd", None) else [])
    target = _target(board, options)
    source.check(target)
    args.board = board
    target.result = build_board(args, _store(args), console).result
    with contextlib.ExitStack() as stack:
        # Kept after the run (console.log, QEMU's output, the files served, boot.json).
        workdir = stack.enter_context(bench_dir(board))
        stack.enter_context(target)
        try:
            report = target.boot(source, args.ready, args.timeout)
        except EmbedbuildError as e:
            e.log_path = e.log_path or str(workdir / "console.log")
            raise
        for line in report.lines():
            console.print(line, markup=False)
        console.print(f"console log: {workdir / 'console.log'}", markup=False)
        if args.no_console:
            return 0
        console.print("console attached; quit with Ctrl-]", markup=False)
        target.open_console().interact()
    return 0


def cmd_flash(args) -> int:
    import contextlib

    from embedbuild import bootcmd
    from embedbuild.load import load_board
    from embedbuild.rig import flash as rig_flash
    from embedbuild.rig.bench import bench_dir, qemu_link

    board = load_board(args.board)
    # Refusals first: before building or powering.
    rig_flash.writable_partition(board, args.partition)
    if args.set_bootcmd:
        rig_flash.check_set_bootcmd(board)
    options = _options(args)
    if not args.dry_run:
        if not (args.qemu or args.serial):
            raise EmbedbuildError("flash needs --qemu or --serial DEV (or --dry-run)")
        options.check(board)
    result = None if args.image else build_board(args, _store(args), _console()).result
    image = Path(args.image) if args.image else rig_flash.built_image(board, result)
    job = rig_flash.FlashJob.prepare(board, args.partition, image)
    if args.dry_run:
        link = options.link() if options.real or board.qemu is None else qemu_link(board)
        for cmd in job.sequence(link):
            print(cmd.describe())
        if args.set_bootcmd:
            for text in bootcmd.set_bootcmd(board, job.part, len(job.data)):
                print(text)
        return 0
    options.check(board, [image])
    target = _target(board, options)
    target.result = result
    report = rig_flash.FlashReport(job.part.name)
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(bench_dir(board))
        stack.enter_context(target)
        try:
            uboot = target.prompt([image])
            rig_flash.flash(uboot, job, target.link, report)
            if args.set_bootcmd:
                rig_flash.set_bootcmd(uboot, job, report)
        except EmbedbuildError as e:
            e.log_path = e.log_path or str(workdir / "console.log")
            raise
        finally:
            for line in report.lines():
                print(line)
    return 0


def cmd_write_sd(args) -> int:
    from embedbuild.load import load_board
    from embedbuild.manifest import Manifest
    from embedbuild.sdwrite import check, check_device, write_sd

    board = load_board(args.board)
    if board.sdcard is None:
        raise EmbedbuildError(f"board {board.name} has no [sdcard]: it builds no SD-card image")
    device = Path(args.device)
    # Refusals that need no build come first: a wrong device or image fails in a second.
    if args.image:
        image = Path(args.image)
        check(image, device, args.max_size)
    else:
        check_device(device, args.max_size)
        result = build_board(args, _store(args), _console()).result
        sd = Manifest.read(result).sdcard
        assert sd is not None
        image = result / sd.image
    console = _console()

    def confirm(lines: list[str]) -> bool:
        for line in lines:
            console.print(line, markup=False, soft_wrap=True)
        if not sys.stdin.isatty():
            raise EmbedbuildError("not written: confirmation needs a terminal",
                                  hint="add --yes to write without asking")
        return input("type yes to write: ").strip() == "yes"

    report = write_sd(image, device, max_size=args.max_size,
                      confirm=None if args.yes else confirm)
    for line in report.lines():
        console.print(line, markup=False, soft_wrap=True)
    return 0


def _size(text: str) -> int:
    """A byte count: 68719476736, 0x1000000000, 64G, 512M."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 64G, 512M, "
                                         "68719476736)") from None


def cmd_console(args) -> int:
    from embedbuild.rig.bench import Bench
    from embedbuild.rig.preflight import check_serial
    from embedbuild.rig.resource import ManualPower, SerialLine
    from embedbuild.rig.target import Target

    check_serial(args.serial)
    bench = Bench(SerialLine(port=args.serial, baud=args.baud), None, ManualPower())
    with Target(None, bench, Path.cwd()) as target:
        target.console_log = Path(args.log) if args.log else None
        console = target.open_console()
        _console().print(f"{args.serial} at {args.baud} baud; quit with Ctrl-]", markup=False)
        console.interact()
    return 0


def cmd_doctor(args) -> int:
    from embedbuild.doctor import findings
    from embedbuild.load import load_board

    board = load_board(args.board) if args.board else None
    found = findings(_store(args), board, args.serial, args.server_ip, args.device_ip)
    for f in found:
        mark = "FIX" if not f.ok else "note" if f.note else "ok "
        print(f"{mark} {f.what}: {f.detail}" + (f"\n      -> {f.fix}" if f.fix else ""))
    bad = [f for f in found if not f.ok]
    if bad:
        raise EmbedbuildError(f"{len(bad)} of {len(found)} checks need fixing (FIX above)")
    print(f"all {len(found)} checks fine")
    return 0


def cmd_tftp(args) -> int:
    import logging

    from embedbuild.rig.tftp import TftpServer, parse_listen

    root = Path(args.root)
    if not root.is_dir():
        raise EmbedbuildError(f"not a folder: {root}", hint="give a build result or a folder")
    host, port = parse_listen(args.listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with TftpServer(root.resolve(), host, port) as server:
        _console().print(
            f"serving {root.resolve()} on {server.address}/udp (read-only); Ctrl-C stops",
            markup=False,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_test(args) -> int:
    import subprocess

    from embedbuild.load import PROJECT_BOARDS

    options = _options(args)
    options.check()
    # The store is passed on explicitly, so the tests boot what this command would build.
    argv = [sys.executable, "-m", "pytest", str(PROJECT_BOARDS.parent / "tests" / "system"),
            "--eb-board", args.board, "--eb-store", str(_store(args).root)]
    env = {**os.environ, "EMBEDBUILD_NO_CCACHE": "1"} if args.no_ccache else None
    if options.qemu:
        argv += ["--eb-qemu"]
    for option, value in (("serial", options.serial), ("server-ip", options.server_ip),
                          ("device-ip", options.device_ip), ("baud", options.baud),
                          ("power-on", options.power_on), ("power-off", options.power_off)):
        if value is not None:
            argv += [f"--eb-{option}", str(value)]
    if options.real:
        argv += ["--eb-netmask", options.netmask,
                 "--eb-power-timeout", str(options.power_timeout)]
    name = "flash" if args.from_flash else "sd" if args.from_sd else args.boot
    return subprocess.call([*argv, "--eb-boot", name, *args.pytest_args], env=env)


def cmd_size(args) -> int:
    from embedbuild.manifest import Manifest
    from embedbuild.outputs import registry

    built = build_board(args, _store(args), _console())
    m = Manifest.read(built.result)
    outputs = registry()
    # Each output says what it adds: the initramfs its components, the kernel its image...
    lines = [line for name in m.outputs if (size := outputs[name].size) for line in size(m)]
    total = sum(line.loaded for line in lines)

    def num(n: int | None, width: int) -> str:
        return f"{n:{width},}" if n is not None else " " * width

    print(f"{'component':40} {'raw':>10} {'compressed':>11}")
    for line in lines:
        print(f"{line.what:40} {num(line.raw, 10)} {num(line.stored, 11)}".rstrip())
    print(f"{'total loaded':40} {'':10} {total:11,}")
    part = built.board.firmware_partition()
    if part is not None:
        print(f"share of the {part.name} partition ({part.size:,} bytes): "
              f"{100 * total / part.size:.1f}%")
    return 0


def cmd_gc(args) -> int:
    store = _store(args)
    if args.repair:
        for problem in store.repair_records():
            print(problem)
    items, freed = store.gc()
    print(f"removed {items} item(s), {freed / 2**20:.1f} MiB")
    return 0


def cmd_verify(args) -> int:
    from embedbuild.steps.source import archive_manifest

    store = _store(args)
    problems = store.verify(archive_manifest, repair=args.repair)
    for p in problems:
        print(p)
    n = len(store.items())
    if problems and args.repair:
        print(f"removed the damaged item(s) above ({n} left); building again rebuilds them")
        return 0
    if problems:
        raise EmbedbuildError(
            f"{len(problems)} problem(s) in {n} item(s) of {store.root}",
            hint="builds refuse damaged items: `embedbuild verify --repair` removes them and "
            "the next build rebuilds them (`embedbuild build BOARD --repair` does both)",
        )
    print(f"{n} item(s) verified, no damage")
    return 0


def cmd_cache_keygen(args) -> int:
    from embedbuild.cache.keys import keygen

    secret, public = keygen(args.name)
    print(f"wrote {secret} (keep it secret: it signs what you push) and {public} "
          "(give it to whoever substitutes from your cache)")
    return 0


def cmd_cache_push(args) -> int:
    from embedbuild.cache.keys import load_secret
    from embedbuild.cache.push import push
    from embedbuild.cache.remote import Remote, Unreachable

    store = _store(args)
    key = load_secret(Path(args.key))
    items = []
    for r in args.results:
        p = Path(r)
        if not p.exists():
            raise EmbedbuildError("no such result link or store item", where=r,
                                  hint="build first (embedbuild build BOARD), or name the link")
        items.append(p.resolve())
    dest = args.dest if "://" in args.dest else str(Path(args.dest).absolute())
    remote = Remote(dest, timeout=30)
    try:
        pushed, skipped = push(store, remote, items, key, print)
    except Unreachable as e:
        raise EmbedbuildError(f"cannot push: {e.message}", where=args.dest,
                              hint="check the URL and that the server takes PUT") from None
    print(f"{pushed} item(s) pushed, {skipped} already in {args.dest}")
    return 0


def _lock_file(args) -> Path:
    from embedbuild.load import PROJECT_BOARDS, lock_path

    if args.lock:
        return Path(args.lock)
    return lock_path(PROJECT_BOARDS / "any")


def cmd_sources_fetch(args) -> int:
    from embedbuild.load import known_boards, load_board
    from embedbuild.sources import fetch_boards

    names = args.boards or list(known_boards())
    boards = [load_board(n) for n in names]
    caches = None
    if not args.offline:
        from embedbuild.cache.config import substituters

        caches = substituters(lambda line: print(f"warning: {line}", file=sys.stderr))
    fetch_boards(boards, print, caches.fetch_download if caches else None)
    return 0


def cmd_sources_update(args) -> int:
    from embedbuild import sources
    from embedbuild.load import lock_path, read_toml

    path = _lock_file(args).resolve()
    if not path.is_file():
        raise EmbedbuildError("no lock file here", where=str(path),
                              hint="give the lock with --lock FILE")
    # The toolchains of the boards beside this lock, read raw: a lock being filled in
    # may not load with a board yet.
    prefixes = set()
    for toml in sorted(path.parent.parent.glob("*/board.toml")):
        if lock_path(toml.parent) == path:
            prefix = read_toml(toml)[0].get("cross_compile")
            if isinstance(prefix, str):
                prefixes.add(prefix)
    changes = sources.update(path, prefixes, args.names, args.check, print)
    if not changes:
        print(f"{path}: every locked input is the newest the Debian archive offers")
        return 0
    if args.check:
        print(f"{len(changes)} update(s) available (nothing changed): "
              "`embedbuild sources update` applies them")
        return 1
    print(f"{path}: {len(changes)} entr{'y' if len(changes) == 1 else 'ies'} moved")
    return 0


@functools.cache  # ~20 sub-parsers, each looking gettext up on disk: 30 ms, made once
def parser() -> argparse.ArgumentParser:
    from embedbuild.rig.bootsource import BOOT_SOURCES

    boot_sources = sorted(BOOT_SOURCES)
    p = argparse.ArgumentParser(prog="embedbuild", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--store", help="store folder (default $EMBEDBUILD_STORE or ~/.cache/embedbuild/store)"
    )
    # What reaching a real board over its serial console takes: shared by boot and test.
    serial = argparse.ArgumentParser(add_help=False)
    serial.add_argument("--baud", type=int, help="line speed (default: the board's)")
    serial.add_argument("--server-ip", help="this machine's address on the board's network "
                        "(where the board reaches the TFTP server, also for a remote rig)")
    serial.add_argument("--device-ip", help="address to give the board")
    serial.add_argument("--netmask", default="255.255.255.0")
    serial.add_argument("--power-timeout", type=float, default=300, metavar="SECONDS",
                        help="how long to wait for a real board to be powered on")
    serial.add_argument("--power-on", metavar="CMD",
                        help="a command that powers the real board on (e.g. a USB relay's), "
                        "instead of asking a person")
    serial.add_argument("--power-off", metavar="CMD",
                        help="a command that powers it off, run first so it boots afresh")
    system = argparse.ArgumentParser(add_help=False)
    system.add_argument("--system", metavar="FILE",
                        help="a system file instead of the board's [system]")
    # Commands that may compile: the compiler cache can be turned off for them.
    cc = argparse.ArgumentParser(add_help=False)
    cc.add_argument("--no-ccache", action="store_true",
                    help="compile without the compiler cache (ccache; see README)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("boards", help="list boards").set_defaults(fn=cmd_boards)
    s = sub.add_parser("show", help="print a board's resolved definition as JSON",
                       parents=[system])
    s.add_argument("board")
    s.set_defaults(fn=cmd_show)
    s = sub.add_parser("build", help="build a board", parents=[system, cc])
    s.add_argument("board")
    s.add_argument("--out-link", default="result", help="result link to create (default: result)")
    s.add_argument("--step", default="result",
                   help="build only up to this step (e.g. kernel, kconfig, initramfs)")
    s.add_argument("--repair", action="store_true",
                   help="check the board's store items first and rebuild damaged ones")
    s.add_argument("--offline", action="store_true",
                   help="ask no binary cache (substituter); build what the store lacks")
    s.set_defaults(fn=cmd_build)
    s = sub.add_parser(
        "config", help="print the merged Kconfig request and what the final config added",
        parents=[system],
    )
    s.add_argument("board")
    s.set_defaults(fn=cmd_config)
    s = sub.add_parser("boot", help="build, TFTP-boot through U-Boot, wait for the ready line",
                       parents=[system, serial, cc])
    s.add_argument("board")
    s.add_argument("--qemu", action="store_true", help="boot the board's QEMU model (root)")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP)
    s.add_argument("--initrd", help="an extra initramfs file to load and boot")
    s.add_argument("--ready", default=READY_LINE,
                   help="regex of the line that means the system is up")
    s.add_argument("--timeout", type=float, default=60, help="seconds per boot stage")
    s.add_argument("--no-console", action="store_true", help="exit 0 once ready")
    s.add_argument("--from-flash", action="store_true",
                   help="boot the image in the firmware partition instead of TFTP")
    s.add_argument("--from-sd", action="store_true",
                   help="attach the SD-card image (QEMU) and let U-Boot boot it, no key pressed")
    s.add_argument("--boot", default="tftp", choices=boot_sources,
                   help="how U-Boot boots it (a boot source; default tftp; --from-flash and "
                   "--from-sd name two)")
    s.set_defaults(fn=cmd_boot)
    s = sub.add_parser("write-sd", help="write the board's SD-card image to a card, "
                       "checked before and read back after")
    s.add_argument("board")
    s.add_argument("device", help="the whole card, e.g. /dev/sdX or /dev/mmcblk0 (or a file)")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--max-size", type=_size, default="64G", metavar="SIZE",
                   help="refuse devices larger than this (default 64G): never a system disk")
    s.add_argument("--image", help="write this file instead of the board's built image")
    s.set_defaults(fn=cmd_write_sd)
    s = sub.add_parser("flash", help="write an image to a flash partition through U-Boot, "
                       "checked at every step", parents=[serial, cc])
    s.add_argument("board")
    s.add_argument("--partition", required=True, help="the partition to write (e.g. firmware)")
    s.add_argument("--qemu", action="store_true", help="the board's QEMU model (root)")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP)
    s.add_argument("--image", help="this file instead of the board's built flash image")
    s.add_argument("--dry-run", action="store_true",
                   help="print the U-Boot commands and their checks; touch nothing")
    s.add_argument("--set-bootcmd", action="store_true",
                   help="then saveenv a bootcmd that boots the partition (boards that allow it)")
    s.set_defaults(fn=cmd_flash)
    s = sub.add_parser("console", help="an interactive serial console with logging")
    s.add_argument("--serial", required=True, metavar="DEV",
                   help="device path or rfc2217://HOST:PORT, socket://HOST:PORT")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--log", help="log file")
    s.set_defaults(fn=cmd_console)
    s = sub.add_parser("doctor", help="check this machine (and a board's line) for what "
                       "building and booting need", parents=[serial])
    s.add_argument("board", nargs="?")
    s.add_argument("--serial", metavar="DEV", help="a real board's console to check "
                   "(device path or URL)")
    s.set_defaults(fn=cmd_doctor)
    s = sub.add_parser("tftp", help="serve a build result (or folder) over TFTP, read-only")
    s.add_argument("root", metavar="RESULT_OR_DIR")
    s.add_argument("--listen", default="127.0.0.1:69", metavar="ADDR[:PORT]")
    s.set_defaults(fn=cmd_tftp)
    s = sub.add_parser("test", help="boot a board and run the system tests against it",
                       parents=[serial, cc])
    s.add_argument("board")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP + " (else its QEMU model)")
    s.add_argument("--qemu", action="store_true",
                   help="the board's QEMU model, also with --serial URL (root)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--from-flash", action="store_true", help="boot from the firmware partition")
    how.add_argument("--from-sd", action="store_true",
                     help="QEMU: boot the SD-card image, no key pressed")
    how.add_argument("--boot", default="tftp", choices=boot_sources,
                     help="how U-Boot boots it (a boot source; default tftp)")
    s.set_defaults(pytest_args=[])  # what follows `--` on the command line (see main)
    s.set_defaults(fn=cmd_test)
    s = sub.add_parser("size", help="bytes per component, kernel, total",
                       parents=[system, cc])
    s.add_argument("board")
    s.set_defaults(fn=cmd_size)
    s = sub.add_parser("gc", help="remove store items no result link reaches")
    s.add_argument("--repair", action="store_true",
                   help="first remove the items whose record is unreadable or ill-typed "
                   "(damage: builds remake them)")
    s.set_defaults(fn=cmd_gc)
    s = sub.add_parser("cache", help="share built items: signing keys, pushing to a cache")
    cache = s.add_subparsers(dest="cache_command", required=True)
    s = cache.add_parser("keygen", help="write NAME.secret and NAME.public (ed25519)")
    s.add_argument("name", help="the key's name, e.g. ci.example.org-1")
    s.set_defaults(fn=cmd_cache_keygen)
    s = cache.add_parser("push", help="upload results and all they were built from, signed")
    s.add_argument("dest", help="a folder, or an http(s) URL that takes PUT")
    s.add_argument("results", nargs="*", default=["result"], metavar="RESULT",
                   help="result links or store items (default: result)")
    s.add_argument("--key", required=True, metavar="NAME.secret", help="the signing key")
    s.set_defaults(fn=cmd_cache_push)
    s = sub.add_parser("sources", help="the lock: prefetch locked inputs, move it to new versions")
    srcs = s.add_subparsers(dest="sources_command", required=True)
    s = srcs.add_parser("fetch", help="download every locked file the boards need (then "
                        "builds work offline)")
    s.add_argument("boards", nargs="*", metavar="BOARD", help="default: every board")
    s.add_argument("--offline", action="store_true", help="ask no binary cache for them")
    s.set_defaults(fn=cmd_sources_fetch)
    s = srcs.add_parser("update", help="move the lock to the newest versions Debian offers")
    s.add_argument("names", nargs="*", metavar="NAME",
                   help="sources (or toolchains) of the lock to move; default: all")
    s.add_argument("--check", action="store_true",
                   help="change nothing; exit status 1 when an update exists")
    s.add_argument("--lock", metavar="FILE", help="the lock file (default: the project's "
                   "boards/common/lock.toml)")
    s.set_defaults(fn=cmd_sources_update)
    s = sub.add_parser("verify", help="re-hash the store and report damage")
    s.add_argument("--repair", action="store_true",
                   help="remove damaged items (the next build rebuilds them)")
    s.set_defaults(fn=cmd_verify)
    return p


def report(e: EmbedbuildError) -> None:
    """Print an expected error the way users see it."""
    from rich.markup import escape

    console = _console()
    where = f"{e.where}: " if e.where else ""
    console.print(f"[bold red]error:[/] {escape(where + e.message)}", soft_wrap=True)
    if e.log_tail:
        console.print("[dim]--- last lines of the log ---[/]")
        console.print(e.log_tail, markup=False, soft_wrap=True)
    if e.log_path:
        console.print(f"full log: {e.log_path}", markup=False)
    if e.hint:
        console.print(f"hint: {e.hint}", markup=False, soft_wrap=True)


_stopping = False


def _stop(signum, frame) -> None:
    """The first SIGTERM or Ctrl-C unwinds like Ctrl-C (every context manager cleans up);
    later ones are ignored so they cannot cut that cleanup short (SIGKILL still works)."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` is for pytest (`embedbuild test BOARD --serial X -- -k ssh`).
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    if hasattr(args, "pytest_args"):
        args.pytest_args = extra
    elif extra:
        parser().error("`--` passes arguments to pytest: only `embedbuild test` takes them")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return args.fn(args)
    except EmbedbuildError as e:
        if os.environ.get("EMBEDBUILD_BACKTRACE"):
            traceback.print_exc()
        report(e)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `embedbuild show X | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
