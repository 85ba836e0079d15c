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
from typing import TYPE_CHECKING

from embedbuild.errors import EmbedbuildError

if TYPE_CHECKING:
    from embedbuild.durations import Duration

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

    # No emoji codes: "board.toml:100: ..." must not print as "board.toml💯 ...".
    return Console(stderr=True, highlight=False, emoji=False)


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
    """Shows running steps with their elapsed time, and for a step built before with
    this store, how far it is and how long is left (from its last build: durations.py);
    finished steps as one line each."""

    def __init__(self, console) -> None:
        from rich.live import Live

        self.console = console
        self.running: dict[str, float] = {}
        self.last: dict[str, Duration] = {}  # step name -> its last build
        self.done: dict[str, int] = {}  # step name -> units of work done so far
        self.fetching: dict[str, tuple[str, float, int, int]] = {}
        # Live re-renders this object 4 times a second, so the clocks tick.
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def __rich__(self):
        from rich.filesize import decimal
        from rich.text import Text

        now = time.monotonic()
        lines = [f"  building {n} ({self._how_far(n, now - t0)})"
                 for n, t0 in list(self.running.items())]
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

    def _how_far(self, name: str, elapsed: float) -> str:
        """Elapsed seconds; files done (of the last build's) when the step counts them;
        percentage and time left when it was built before."""
        from embedbuild.durations import estimate

        parts = [f"{elapsed:.0f}s"]
        last, done = self.last.get(name), self.done.get(name)
        if done is not None:
            parts.append(f"{done} of {last.units} files" if last and last.units
                         else f"{done} files")
        if last is not None:
            fraction, left = estimate(last, elapsed, done)
            parts.append(f"{fraction:.0%}, about {_seconds(left)} left" if left > 0 else
                         f"longer than last time ({_seconds(last.seconds)})")
        return ", ".join(parts)

    def started(self, step) -> None:
        self.running[step.name] = time.monotonic()

    def expected(self, step, last: Duration) -> None:
        self.last[step.name] = last

    def progress(self, step, done: int) -> None:
        self.done[step.name] = done

    def finished(self, step, seconds: float) -> None:
        self.running.pop(step.name, None)
        self.last.pop(step.name, None)
        self.done.pop(step.name, None)
        self.console.print(f"  built {step.name} in {seconds:.1f}s")

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def _seconds(s: float) -> str:
    """Seconds as a person reads a wait: 40s, 3m10s."""
    s = round(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def build_board(args, store, console, role: str = "result", memo=None, budget: bool = True):
    """Build args.board (with args.system) up to the step of ``role``, showing progress;
    a result over the board's size budget fails unless ``budget`` is False. With ``memo``
    (a noop.Memo), what loading and planning read is recorded in it once the build is
    done, for the next no-op build."""
    import contextlib

    from embedbuild import noop, session
    from embedbuild.store import cache_root

    system = Path(args.system) if getattr(args, "system", None) else None
    def repairing(problem: str) -> None:
        console.print(f"repairing {problem}", markup=False, soft_wrap=True)

    with _Progress(console) as progress:
        warned: list[str] = []

        def warn(line: str) -> None:
            warned.append(line)
            progress.warn(line)

        # The store's items and the caches are checked by key and hash, not as inputs.
        recorder = noop.Recorder([store.root, cache_root()]) if memo is not None else None
        with recorder or contextlib.nullcontext():
            planned = session.plan(args.board, system=system, warn=warn)
        caches = None
        if not getattr(args, "offline", False):
            from embedbuild.cache.config import substituters

            caches = substituters(progress.warn, progress.fetching_bytes)
        built = session.build(planned, store, role=role, events=progress,
                              repair=repairing if getattr(args, "repair", False) else None,
                              substituters=caches,
                              ccache=not getattr(args, "no_ccache", False), warn=progress.warn,
                              budget=budget)
        if recorder is not None:  # made only with a memo
            graph = [store.item_path(s.key, s.name) for s in planned.steps[role].walk()]
            memo.save(recorder, [i for i in graph if store.complete(i)], built.path(role),
                      warned)
        return built


def cmd_build(args) -> int:
    from embedbuild.noop import Memo

    store = _store(args)
    link = Path(args.out_link)
    memo = None if args.repair else Memo(
        store.root, {"command": "build", "board": args.board, "system": args.system,
                     "step": args.step})
    if memo is not None and store.root.is_dir():
        with store.session():  # gc waits: the item stays until the link roots it
            hit = memo.answer()
            if hit is not None:
                store.link_result(hit[0], link)
        if hit is not None:
            for line in hit[1]:
                print(f"warning: {line}", file=sys.stderr)
            print(hit[0])
            return 0
    out = build_board(args, store, _console(), role=args.step, memo=memo).path(args.step)
    store.link_result(out, link)
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

    place = getattr(args, "place", None)
    if not args.serial and not getattr(args, "power_on", None) and not place:
        return BenchOptions()
    lab = dict(place=place, coordinator=args.coordinator,
               place_timeout=args.place_timeout) if place else {}
    try:
        return BenchOptions(serial=args.serial, qemu=getattr(args, "qemu", False),
                            baud=args.baud, server_ip=args.server_ip, device_ip=args.device_ip,
                            netmask=args.netmask, power_timeout=args.power_timeout,
                            power_on=getattr(args, "power_on", None),
                            power_off=getattr(args, "power_off", None), **lab)
    except ValidationError as e:
        err = e.errors()[0]
        raise EmbedbuildError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


def _boot_source(args, board):
    """The boot source the command line asks for (--boot NAME, --from-flash, --from-sd)."""
    from embedbuild.rig.bootsource import TftpBoot
    from embedbuild.rig.signedfit import SignedFitBoot
    from embedbuild.rig.sources import BOOT_SOURCES, default_source

    asked = [name for name, on in (("flash", args.from_flash), ("sd", args.from_sd),
                                   (args.boot, args.boot is not None)) if on]
    if len(set(asked)) > 1:
        raise EmbedbuildError(f"one way to boot at a time, not {' and '.join(asked)}")
    name = asked[0] if asked else default_source(board)
    if name not in BOOT_SOURCES:
        raise EmbedbuildError(f"--boot {name}: no such boot source; choose one of "
                              f"{', '.join(sorted(BOOT_SOURCES))}")
    if args.initrd:
        if name != TftpBoot.name:
            raise EmbedbuildError(f"--initrd goes with a TFTP boot, not --boot {name}: what "
                                  "boots is the board's own image there")
        return TftpBoot(Path(args.initrd).resolve())
    if args.image:
        if name != SignedFitBoot.name:
            raise EmbedbuildError(f"--image goes with --boot {SignedFitBoot.name} (a board "
                                  f"with [signing]), not --boot {name}")
        return SignedFitBoot(Path(args.image).resolve())
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
                               f"on {self.target.serial_port()} "
                               f"({self.options.power_timeout:.0f} s at most)", markup=False)
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


def _with_firmware(args, board, options, result):
    """The build result a target boots with: a QEMU model whose U-Boot the board builds
    ([uboot.build], no [qemu] firmware) runs that U-Boot, so it needs the build even when
    the command was given a file (--image)."""
    if result is None and not options.real and board.qemu is not None \
            and board.qemu.firmware is None:
        return build_board(args, _store(args), _console()).result
    return result


def _target(board, options):
    """The one target of this command (rig/target.py), made before the build (its
    result comes after), its folder run/ in the board's bench folder; a person is told
    when to power on."""
    from embedbuild.rig.bench import bench_folder, flash_file
    from embedbuild.rig.target import Target

    target = Target(board, options.bench(board, flash_file(board)), bench_folder(board) / "run")
    if options.real:
        target.steps.subscribe(_PowerPrompt(_console(), board, options, target))
    target.steps.subscribe(_lab_lines)
    return target


def _lab_lines(event, phase: str) -> None:
    """What holding a lab's place takes: a wait for it, its acquisition."""
    if event.name == "waiting for place" and phase == "start":
        _console().print(event.fields["message"], markup=False)
    elif event.name == "acquire place" and phase == "stop" and not event.error:
        _console().print(f"acquired labgrid place {event.fields['place']} "
                         f"({event.seconds:.1f} s); released when this command ends",
                         markup=False)


def cmd_boot(args) -> int:
    import contextlib

    from embedbuild.load import load_board
    from embedbuild.model.system import READY_LINE
    from embedbuild.rig.bench import bench_dir

    if not (args.qemu or args.serial or args.place):
        raise EmbedbuildError("boot needs --qemu, --serial DEV or --place NAME")
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
    source.check(target)  # again, with what was built (a signed board's image is verified)
    with contextlib.ExitStack() as stack:
        if target.bench.place is not None:
            # Waited for before the bench folder is locked: holding the place is what
            # takes turns between the board's users; released after everything else.
            target.hold_place(stack)
        # Kept after the run (console.log, QEMU's output, the files served, boot.json).
        workdir = stack.enter_context(bench_dir(board))
        stack.enter_context(target)
        try:
            report = target.boot(source, args.ready or READY_LINE, args.timeout)
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
    job = rig_flash.FlashJob.prepare(board, args.partition, image, _keyring(args, board, result))
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
    target.result = _with_firmware(args, board, options, result)
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


def _keyring(args, board, result):
    """What a board with [signing] checks images against before they are flashed: its
    result's keyring (with --image, only the keyring is built); None for other boards."""
    if board.signing is None:
        return None
    from embedbuild.rig.signedfit import result_keyring
    from embedbuild.vboot.verify import keyring_from_dtb

    if result is not None:
        return result_keyring(result)
    built = build_board(args, _store(args), _console(), role="keyring")
    path = built.path("keyring") / built.plan.steps["keyring"].output_path("dtb")
    return keyring_from_dtb(path.read_bytes(), str(path))


def _update_image(args, board):
    """The image an update writes (--image, else the build's flash image) and the build
    result (None with --image)."""
    from embedbuild.rig import flash as rig_flash

    if args.image:
        return Path(args.image), None
    result = build_board(args, _store(args), _console()).result
    return rig_flash.built_image(board, result), result


def _ssh(args, target=None):
    """How the running system is reached over SSH: --ssh HOST, or the QEMU board's address
    inside its bench network."""
    from embedbuild.rig.update import Ssh

    identity = Path(args.identity) if args.identity else None
    if target is not None and target.network is not None:
        return Ssh(args.ssh or target.link.device_ip, identity, target.network.exec_argv)
    return Ssh(args.ssh, identity)


def cmd_update(args) -> int:
    import contextlib

    from embedbuild import bootcmd
    from embedbuild.load import load_board
    from embedbuild.rig import update as rig_update
    from embedbuild.rig.bench import bench_dir, qemu_link
    from embedbuild.rig.bootsource import AbBoot
    from embedbuild.slots import AbState

    board = load_board(args.board)
    ab = rig_update.check_board(board)  # refusals first: before building or powering
    via_ssh = args.ssh is not None
    if args.dry_run:
        if args.slot == "auto":
            raise EmbedbuildError("--dry-run shows the commands for one slot: give --slot A "
                                  "or B (auto reads the device's environment)")
        image, result = _update_image(args, board)
        update = rig_update.Update(board, image, args.slot, _keyring(args, board, result))
        job = update.job(rig_update.slot_partition(board, args.slot))
        options = _options(args)
        link = options.link() if options.real or board.qemu is None else qemu_link(board)
        for cmd in job.sequence(link):
            print(cmd.describe())
        # As after a first install: the other slot keeps its tries, here none.
        for text in bootcmd.ab_commands(board, AbState.of({}).after_update(args.slot, ab)):
            print(text)
        return 0
    if via_ssh and not args.qemu:
        if not args.ssh:
            raise EmbedbuildError("--ssh needs the system's address (or --qemu)")
        image, result = _update_image(args, board)
        update = rig_update.Update(board, image, args.slot, _keyring(args, board, result))
        update.refuse_unfit()
        report = rig_update.update_ssh(_ssh(args), update, rig_update.UpdateReport())
        for line in report.lines():
            print(line)
        return 0
    if not (args.qemu or args.serial):
        raise EmbedbuildError("update needs --qemu, --serial DEV or --ssh HOST")
    options = _options(args)
    options.check(board)
    image, result = _update_image(args, board)
    update = rig_update.Update(board, image, args.slot, _keyring(args, board, result))
    update.refuse_unfit()  # too large, or unsigned for a signed board: before power
    options.check(board, [image])
    target = _target(board, options)
    target.result = _with_firmware(args, board, options, result)
    report = rig_update.UpdateReport()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(bench_dir(board))
        stack.enter_context(target)
        try:
            if via_ssh:  # the QEMU twin: boot the slot U-Boot picks, then over SSH
                target.boot(AbBoot(), r"embedbuild: slot [AB]: marked good", args.timeout)
                rig_update.update_ssh(_ssh(args, target), update, report)
            else:
                uboot = target.prompt([image])
                rig_update.update_uboot(uboot, update, target.link, report)
        except EmbedbuildError as e:
            e.log_path = e.log_path or str(workdir / "console.log")
            raise
        finally:
            for line in report.lines():
                print(line)
    print(f"slot {report.slot} boots next; if it does not come up healthy {ab.tries} times, "
          "U-Boot boots the other again")
    return 0


def cmd_slots(args) -> int:
    import contextlib

    from embedbuild import ubootenv
    from embedbuild.load import load_board
    from embedbuild.manifest import Manifest
    from embedbuild.rig import update as rig_update
    from embedbuild.rig.bench import bench_dir, flash_file
    from embedbuild.slots import describe

    board = load_board(args.board)
    if board.flash is None or board.flash.ab is None:
        raise EmbedbuildError(f"board {board.name} has no A/B slots ([flash.ab])",
                              where=str(board.dir / "board.toml"))
    built = None
    if args.built:
        result = Path(args.built).resolve()
        built = (result / Manifest.read(result).flash_image).read_bytes()
    if args.ssh is not None:
        if not args.ssh:
            raise EmbedbuildError("--ssh needs the system's address")
        ssh = _ssh(args)
        now = rig_update.running(ssh)
        if not now.env_ok:
            print("U-Boot's environment is unreadable from the system (fw_printenv)")
        variables = now.env if now.env_ok else {}
        images = rig_update.ssh_images(ssh, board, now, built)
    elif args.serial or (args.qemu and args.from_device):
        options = _options(args)
        options.check(board)
        target = _target(board, options)
        target.result = _with_firmware(args, board, options, None)
        if built is None and target.result is not None:  # say which slot holds its image
            built = (target.result / Manifest.read(target.result).flash_image).read_bytes()
        with contextlib.ExitStack() as stack:
            stack.enter_context(bench_dir(board))
            stack.enter_context(target)
            uboot = target.prompt()
            variables = rig_update.uboot_env(uboot)
            images = rig_update.uboot_images(uboot, board, built)
    else:
        path = Path(args.flash_file) if args.flash_file else flash_file(board)
        if not path.is_file():
            raise EmbedbuildError(f"no flash file of {board.name} at {path}",
                                  hint="give --flash-file FILE (a dump of the whole flash), "
                                  "or read the device (--serial, --ssh)")
        env = ubootenv.read_flash(board, path)
        if not env.valid:
            what = "erased (never saved)" if env.erased else "damaged (bad crc32)"
            print(f"U-Boot's environment is {what}: U-Boot runs its default environment")
        variables = env.variables
        images = rig_update.file_images(board, path, built)
    for line in describe(board, variables, images):
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
    from embedbuild.rig.bench import Bench, BenchOptions
    from embedbuild.rig.preflight import check_serial
    from embedbuild.rig.resource import ManualPower, SerialLine
    from embedbuild.rig.target import Target

    if not (args.serial or args.place):
        raise EmbedbuildError("console needs --serial DEV or --place NAME")
    place = BenchOptions(serial=args.serial, place=args.place, coordinator=args.coordinator,
                         place_timeout=args.place_timeout).lab_place()
    if args.serial:
        check_serial(args.serial)
    bench = Bench(SerialLine(port=args.serial, baud=args.baud), None, ManualPower(),
                  place=place)
    with Target(None, bench, Path.cwd()) as target:
        target.steps.subscribe(_lab_lines)
        target.console_log = Path(args.log) if args.log else None
        console = target.open_console()
        _console().print(f"{target.serial_port()} at {args.baud} baud; quit with Ctrl-]",
                         markup=False)
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


def _print_fleet(inv) -> None:
    """What each device of an inventory boots (serve --check)."""
    for d in inv.device:
        extra = "".join(f" {k} {v}" for k, v in (("system", d.system), ("append", d.append),
                                                 ("ip", d.ip)) if v)
        print(f"{d.name:16} {d.mac}  {d.board}{extra}")
    u = inv.unknown
    print(f"{'unknown devices':16} " + (f"{u.board}" + (f" system {u.system}" if u.system
                                                      else "") if u else "refused"))


def _fleet_dhcp(args, host: str, root: Path, inv):
    """The DHCP server serve is asked for (None: none), checked before anything starts."""
    import ipaddress

    from embedbuild.rig.dhcp import DhcpServer, FixedAddress

    if not (args.dhcp_interface or args.dhcp_range):
        return None
    if not (args.dhcp_interface and args.dhcp_range):
        raise EmbedbuildError("a DHCP server needs --dhcp-interface IF and --dhcp-range "
                              "FIRST,LAST together")
    try:
        first, last = (ipaddress.IPv4Address(a.strip()) for a in args.dhcp_range.split(","))
        server = ipaddress.IPv4Address(host)
    except ValueError:
        raise EmbedbuildError(f"--dhcp-range {args.dhcp_range!r} with --listen {host}: "
                              "give two IPv4 addresses and listen on an IPv4 address",
                              hint="e.g. --dhcp-range 10.77.0.100,10.77.0.199") from None
    dhcp = DhcpServer(args.dhcp_interface, first, last, server, log=root / "dnsmasq.log")
    dhcp.check()
    dhcp.check_fixed([FixedAddress(d.mac, d.ip, d.name) for d in inv.device if d.ip])
    return dhcp


def cmd_serve(args) -> int:
    import contextlib
    import fcntl
    import logging
    import signal
    import threading

    from embedbuild.fleet.inventory import load_inventory
    from embedbuild.fleet.layout import FleetTree
    from embedbuild.fleet.server import FleetServer, store_builder
    from embedbuild.rig.dhcp import FixedAddress
    from embedbuild.rig.tftp import Limits, TftpServer, parse_listen
    from embedbuild.store import cache_dir

    path = Path(args.inventory)
    inv = load_inventory(path)  # every refusal before anything is built or served
    if args.check:
        _print_fleet(inv)
        return 0
    if not args.listen:
        raise EmbedbuildError("serve needs --listen ADDR[:PORT]: this machine's address on "
                              "the devices' network", hint="e.g. --listen 10.77.0.1")
    host, port = parse_listen(args.listen)
    root = Path(args.root) if args.root else cache_dir("EMBEDBUILD_SERVE", "serve") / path.stem
    dhcp = _fleet_dhcp(args, host, root, inv)
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise EmbedbuildError("another embedbuild serve uses this folder", where=str(root),
                              hint="stop it, or give another --root") from None

    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    # The TFTP server's own refusals, except the names `pxe get` tries in turn (the
    # fleet says once per device what it refused).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("embedbuild.tftp").addFilter(
        lambda r: "pxelinux.cfg/" not in r.getMessage()
        or "File not found" not in r.getMessage())
    if args.no_ccache:  # for the builds, each in a process of its own
        os.environ["EMBEDBUILD_NO_CCACHE"] = "1"
    tree = FleetTree(root / "tftp", keep=args.keep)
    fleet = FleetServer(path, tree, store_builder(_store(args).root, root / "results"), say,
                        dhcp)
    wake = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: wake.set())
    with contextlib.ExitStack() as stack:
        tftp = stack.enter_context(TftpServer(tree.root, host, port,
                                              on_transfer=fleet.on_transfer,
                                              limits=Limits(window=args.tftp_window)))
        say(f"serving {tree.root} on {tftp.address}/udp; the inventory is re-read when it "
            f"changes or on SIGHUP (kill -HUP {os.getpid()}); Ctrl-C stops")
        if dhcp is not None:
            dhcp.start([FixedAddress(d.mac, d.ip, d.name) for d in inv.device if d.ip])
            stack.callback(dhcp.stop)
            say(f"DHCP on {dhcp.interface}: {dhcp.first}-{dhcp.last} (dnsmasq, log "
                f"{dhcp.log})")
        fleet.reload(inv)
        try:
            fleet.run(threading.Event(), wake)
        except KeyboardInterrupt:
            say("stopped")
    return 0


def cmd_labgrid_env(args) -> int:
    from embedbuild.labenv import render
    from embedbuild.load import load_board

    board = load_board(args.board)
    text, notes = render(board, args.place or board.name)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
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
    lab = ((("place", options.place), ("coordinator", options.coordinator),
            ("place-timeout", options.place_timeout)) if options.place else ())
    for option, value in (("serial", options.serial), ("server-ip", options.server_ip),
                          ("device-ip", options.device_ip), ("baud", options.baud),
                          ("power-on", options.power_on), ("power-off", options.power_off),
                          *lab):
        if value is not None:
            argv += [f"--eb-{option}", str(value)]
    if options.real:
        argv += ["--eb-netmask", options.netmask,
                 "--eb-power-timeout", str(options.power_timeout)]
    name = "flash" if args.from_flash else "sd" if args.from_sd else args.boot
    if name is not None:  # else the board's default source
        from embedbuild.rig.sources import BOOT_SOURCES

        if name not in BOOT_SOURCES:
            raise EmbedbuildError(f"--boot {name}: no such boot source; choose one of "
                                  f"{', '.join(sorted(BOOT_SOURCES))}")
        argv += ["--eb-boot", name]
    return subprocess.call([*argv, *args.pytest_args], env=env)


def cmd_size(args) -> int:
    from embedbuild.manifest import Manifest
    from embedbuild.sizereport import size_report

    # Over budget the build is still made: this table is where the user looks then.
    built = build_board(args, _store(args), _console(), budget=False)
    # Each output says what it adds: the initramfs its components, the kernel its parts...
    report = size_report(Manifest.read(built.result))

    def num(n: int | None, width: int) -> str:
        return f"{n:{width},}" if n is not None else " " * width

    print(f"{'component':44} {'raw':>10} {'compressed':>11}")
    for line in report.lines:
        print(f"{line.what:44} {num(line.raw, 10)} {num(line.stored, 11)}".rstrip())
    print(f"{'total loaded':44} {'':10} {report.loaded:11,}")
    part = built.board.firmware_partition()
    if part is not None:
        print(f"share of the {part.name} partition ({part.size:,} bytes): "
              f"{100 * report.loaded / part.size:.1f}%")
    if (line := report.budget_line()) is not None:
        print(line)
    return 1 if (report.left or 0) < 0 else 0


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


def cmd_keys(args) -> int:
    from embedbuild.store import cache_dir, default_root
    from embedbuild.vboot import keycmd
    from embedbuild.vboot.keys import SigningKeyError, default_keydir

    keydir = Path(args.keydir) if args.keydir else default_keydir()
    if args.keys_command == "new":
        # Never where builds are kept, downloaded or shared from.
        shared = [Path(args.store) if args.store else default_root(),
                  cache_dir("EMBEDBUILD_DOWNLOADS", "downloads"),
                  Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "embedbuild")]
        report = keycmd.new(keydir, args.name, args.bits, shared)
    elif args.keys_command == "rotate":
        report = keycmd.rotate(keydir, args.name)
    elif args.keys_command == "check":
        report = keycmd.check(Path(args.fit), args.config,
                              Path(args.dtb) if args.dtb else None, args.key or [], keydir,
                              args.required_mode, strict=not args.as_uboot)
    else:
        report = keycmd.show(keydir, args.name)
    print("\n".join(report.lines))
    if report.problem:
        raise SigningKeyError(report.problem, where=str(keydir),
                              hint="chmod 600 a private key; remake a key whose files differ")
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
    # A board in a shared lab: its labgrid place, whose serial port is the console.
    lab = argparse.ArgumentParser(add_help=False)
    lab.add_argument("--place", metavar="NAME", help="hold this labgrid place while the "
                     "command runs and use its serial port (needs embedbuild[labgrid])")
    lab.add_argument("--coordinator", metavar="HOST[:PORT]",
                     default=os.environ.get("LG_COORDINATOR", "127.0.0.1:20408"),
                     help="the labgrid coordinator (default $LG_COORDINATOR or "
                     "127.0.0.1:20408)")
    lab.add_argument("--place-timeout", type=float, default=600, metavar="SECONDS",
                     help="how long to wait for the place while someone else holds it")
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
                       parents=[system, serial, cc, lab])
    s.add_argument("board")
    s.add_argument("--qemu", action="store_true", help="boot the board's QEMU model (root)")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP)
    s.add_argument("--initrd", help="an extra initramfs file to load and boot")
    s.add_argument("--image", help="a signed FIT to boot instead of the built one "
                   "(--boot signed-fit); refused unless it verifies against the board's keys")
    s.add_argument("--ready", metavar="REGEX",
                   help="the line that means the system is up (default: the init's "
                   "ready line, 'embedbuild: system ready')")
    s.add_argument("--timeout", type=float, default=60, help="seconds per boot stage")
    s.add_argument("--no-console", action="store_true", help="exit 0 once ready")
    s.add_argument("--from-flash", action="store_true",
                   help="boot the image in the firmware partition instead of TFTP")
    s.add_argument("--from-sd", action="store_true",
                   help="attach the SD-card image (QEMU) and let U-Boot boot it, no key pressed")
    # Checked when used (_boot_source): naming the choices here would import every boot
    # source, a third of a no-op build's time.
    s.add_argument("--boot", metavar="SOURCE",
                   help="how U-Boot boots it (a boot source: tftp, flash, sd, pxe, ...; "
                   "default tftp, signed-fit for a board with [signing]; a wrong name "
                   "lists them)")
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
    s = sub.add_parser("update", help="A/B: write the slot not in use and make U-Boot boot "
                       "it next, the other kept to fall back to", parents=[serial, cc])
    s.add_argument("board")
    s.add_argument("--slot", default="auto", choices=["auto", "A", "B"],
                   help="the slot to write (default auto: the one not running)")
    s.add_argument("--qemu", action="store_true", help="the board's QEMU model (root)")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP + " (through U-Boot)")
    s.add_argument("--ssh", nargs="?", const="", metavar="HOST",
                   help="from the running system over SSH (root@HOST; with --qemu: the QEMU "
                   "model booted from its slot)")
    s.add_argument("--identity", metavar="KEY", help="the SSH private key")
    s.add_argument("--image", help="this file instead of the board's built flash image")
    s.add_argument("--timeout", type=float, default=60, help="seconds per boot stage")
    s.add_argument("--dry-run", action="store_true",
                   help="print the U-Boot commands and their checks for --slot; touch nothing")
    s.set_defaults(fn=cmd_update)
    s = sub.add_parser("slots", help="A/B: each slot's image, tries left and the boot order, "
                       "from a flash file or the device", parents=[serial])
    s.add_argument("board")
    s.add_argument("--flash-file", metavar="FILE",
                   help="a file of the whole flash (default: the QEMU model's, in its bench "
                   "folder)")
    s.add_argument("--qemu", action="store_true", help="the board's QEMU model (root)")
    s.add_argument("--from-device", action="store_true",
                   help="with --qemu: power the model on and ask its U-Boot")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP + " (through U-Boot)")
    s.add_argument("--ssh", nargs="?", const="", metavar="HOST",
                   help="ask the running system over SSH (fw_printenv)")
    s.add_argument("--identity", metavar="KEY", help="the SSH private key")
    s.add_argument("--built", metavar="RESULT",
                   help="a build result: say which slot holds its flash image")
    s.set_defaults(fn=cmd_slots)
    s = sub.add_parser("console", help="an interactive serial console with logging",
                       parents=[lab])
    s.add_argument("--serial", metavar="DEV",
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
    s = sub.add_parser("serve", help="network-boot a fleet: build what an inventory names, "
                       "serve each device by MAC over TFTP (PXE), optionally DHCP",
                       parents=[cc])
    s.add_argument("inventory", metavar="INVENTORY", help="the inventory file (TOML)")
    s.add_argument("--listen", metavar="ADDR[:PORT]",
                   help="this machine's address on the devices' network (TFTP, port 69)")
    s.add_argument("--root", metavar="DIR", help="the served folder's parent (default "
                   "$EMBEDBUILD_SERVE/NAME or ~/.cache/embedbuild/serve/NAME)")
    s.add_argument("--dhcp-interface", metavar="IF",
                   help="also run a DHCP server (dnsmasq) on this bench LAN interface")
    s.add_argument("--dhcp-range", metavar="FIRST,LAST",
                   help="addresses for devices without their own ip")
    s.add_argument("--tftp-window", type=int, default=4, metavar="BLOCKS",
                   help="the largest TFTP window granted a device (default 4; see README)")
    s.add_argument("--keep", type=float, default=600, metavar="SECONDS",
                   help="how long a build no device is given any more stays servable")
    s.add_argument("--check", action="store_true",
                   help="check the inventory and print what each device boots; serve nothing")
    s.set_defaults(fn=cmd_serve)
    s = sub.add_parser("test", help="boot a board and run the system tests against it",
                       parents=[serial, cc, lab])
    s.add_argument("board")
    s.add_argument("--serial", metavar="DEV", help=SERIAL_HELP + " (else its QEMU model)")
    s.add_argument("--qemu", action="store_true",
                   help="the board's QEMU model, also with --serial URL (root)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--from-flash", action="store_true", help="boot from the firmware partition")
    how.add_argument("--from-sd", action="store_true",
                     help="QEMU: boot the SD-card image, no key pressed")
    how.add_argument("--boot", metavar="SOURCE",
                     help="how U-Boot boots it (a boot source; default tftp, signed-fit "
                     "for a board with [signing]; a wrong name lists them)")
    s.set_defaults(pytest_args=[])  # what follows `--` on the command line (see main)
    s.set_defaults(fn=cmd_test)
    s = sub.add_parser("labgrid", help="a shared lab through labgrid (needs embedbuild[labgrid])")
    lg = s.add_subparsers(dest="labgrid_command", required=True)
    s = lg.add_parser("env", help="a labgrid environment for the board: the real board "
                      "through its place (RemotePlace), its QEMU twin (QEMUDriver)")
    s.add_argument("board")
    s.add_argument("--place", metavar="NAME", help="the board's place in the lab "
                   "(default: the board's name)")
    s.add_argument("-o", "--output", metavar="FILE", help="write it there (default: stdout)")
    s.set_defaults(fn=cmd_labgrid_env)
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
    s = sub.add_parser("keys", help="verified boot: the keys that sign FIT images (kept "
                       "outside the repository and the store)")
    s.add_argument("--keydir", help="the key folder (default $EMBEDBUILD_KEYS or "
                   "~/.config/embedbuild/keys)")
    keys = s.add_subparsers(dest="keys_command", required=True)
    s = keys.add_parser("new", help="make NAME.key (private, 0600) and NAME.crt (public)")
    s.add_argument("name", help="the key's name (U-Boot's key-name-hint), e.g. dev")
    s.add_argument("--bits", type=int, default=2048, choices=(2048, 3072, 4096))
    s.set_defaults(fn=cmd_keys)
    s = keys.add_parser("show", help="the keys in the folder, or one in detail")
    s.add_argument("name", nargs="?")
    s.set_defaults(fn=cmd_keys)
    s = keys.add_parser("rotate", help="a new key beside NAME (NAME-2, ...), and how "
                        "a board moves to it")
    s.add_argument("name")
    s.set_defaults(fn=cmd_keys)
    s = keys.add_parser("check", help="verify a FIT's configuration signature as U-Boot "
                        "would, with a control DTB's keys or the key folder's")
    s.add_argument("fit")
    s.add_argument("--config", help="the configuration (default: the FIT's default)")
    s.add_argument("--dtb", help="U-Boot's control DTB (its /signature keys and mode)")
    s.add_argument("--key", action="append", metavar="NAME",
                   help="a key of the folder, required (repeatable; default: all keys)")
    s.add_argument("--required-mode", choices=("all", "any"), default="all")
    s.add_argument("--as-uboot", action="store_true",
                   help="only what U-Boot checks (accept a keyless DTB, uncovered images)")
    s.set_defaults(fn=cmd_keys)
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
