"""The command line: parse, call one function per command, render errors.

Expected failures are EmbedbuildError: one short message, exit status 1, no
traceback (set EMBEDBUILD_BACKTRACE=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from embedbuild.errors import EmbedbuildError


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

    board = load_board(args.board)
    print(json.dumps(board.model_dump(mode="json"), indent=2))
    return 0


class _Progress:
    """Shows running steps with their elapsed time; finished steps as one line each."""

    def __init__(self, console) -> None:
        from rich.live import Live

        self.console = console
        self.running: dict[str, float] = {}
        # Live re-renders this object 4 times a second, so the clocks tick.
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def __rich__(self):
        from rich.text import Text

        now = time.monotonic()
        lines = [f"  building {n} ({now - t0:.0f}s)" for n, t0 in list(self.running.items())]
        return Text("\n".join(lines))

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
    """Load and plan args.board (with args.system), realise the step of the given role;
    returns (plan, paths)."""
    from embedbuild.graph import plan_board
    from embedbuild.load import load_board
    from embedbuild.plan import realise

    system = Path(args.system) if getattr(args, "system", None) else None
    plan = plan_board(load_board(args.board, system))
    if role not in plan.steps:
        raise EmbedbuildError(f"board {plan.board.name} has no step {role!r}",
                              hint=f"its steps: {', '.join(plan.steps)}")
    with _Progress(console) as progress:
        paths = realise(store, plan.steps[role], progress)
    return plan, paths


def cmd_build(args) -> int:
    store = _store(args)
    console = _console()
    plan, paths = build_board(args, store, console, role=args.step)
    out = paths[plan.steps[args.step].key]
    store.link_result(out, Path(args.out_link))
    print(out)
    return 0


def cmd_config(args) -> int:
    from embedbuild.kconfig import read_config

    store = _store(args)
    plan, paths = build_board(args, store, _console(), role="kconfig")
    cfg = paths[plan.steps["kconfig"].key]
    request = read_config(cfg / "request.config")
    final = read_config(cfg / "kernel.config")
    print(f"# requested by the fragments of {plan.board.name} ({len(request)} symbols)")
    print((cfg / "request.config").read_text(), end="")
    added = {s: v for s, v in final.items() if s not in request and v != "n"}
    print(
        f"\n# added by {plan.board.kernel.base} and olddefconfig beyond the request "
        f"({len(added)} symbols)"
    )
    for s, v in added.items():
        print(f"CONFIG_{s}={v}")
    return 0


def cmd_boot(args) -> int:
    import shutil

    from embedbuild.rig.boot import qemu_target, serial_target
    from embedbuild.rig.netns import require_root

    console = _console()
    if args.qemu:
        require_root("embedbuild boot --qemu")  # before building: never fail half-way
    elif not (args.server_ip and args.device_ip):
        raise EmbedbuildError(
            "--serial needs --server-ip and --device-ip",
            hint="the board gets --device-ip; this machine serves at --server-ip",
        )
    store = _store(args)
    plan, paths = build_board(args, store, console)
    board = plan.board
    result = paths[plan.result.key]
    initrd = Path(args.initrd).resolve() if args.initrd else None
    # Kept after the run (console.log, QEMU's output, the files served); replaced by the next.
    workdir = store.root.parent / "boot" / board.name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if args.qemu:
        if board.qemu is None:
            raise EmbedbuildError(f"board {board.name} has no [qemu] section",
                                  hint="boot it on real hardware with --serial")
        target_cm = qemu_target(board, result, workdir, initrd=initrd, ready=args.ready,
                                timeout=args.timeout)
    else:
        console.print(f"power on (or reset) {board.name} now; waiting for U-Boot on "
                      f"{args.serial}", markup=False)
        target_cm = serial_target(board, result, workdir, port=args.serial,
                                  baud=args.baud or board.serial.baud,
                                  server_ip=args.server_ip, device_ip=args.device_ip,
                                  netmask=args.netmask, initrd=initrd, ready=args.ready,
                                  timeout=args.timeout)
    try:
        with target_cm as target:
            for line in target.report.lines():
                console.print(line, markup=False)
            console.print(f"console log: {workdir / 'console.log'}", markup=False)
            if args.no_console:
                return 0
            console.print("console attached; quit with Ctrl-]", markup=False)
            target.console.interact()
    except EmbedbuildError as e:
        e.log_path = e.log_path or str(workdir / "console.log")
        raise
    return 0


def cmd_console(args) -> int:
    from embedbuild.rig.console import Console

    with Console(args.serial, args.baud, Path(args.log) if args.log else None) as c:
        _console().print(f"{args.serial} at {args.baud} baud; quit with Ctrl-]", markup=False)
        c.interact()
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

    # The store is passed on explicitly, so the tests boot what this command would build.
    argv = [sys.executable, "-m", "pytest", str(PROJECT_BOARDS.parent / "tests" / "system"),
            "--eb-board", args.board, "--eb-store", str(_store(args).root)]
    if args.serial:
        argv += ["--eb-serial", args.serial, "--eb-server-ip", args.server_ip or "",
                 "--eb-device-ip", args.device_ip or ""]
        if args.baud:
            argv += ["--eb-baud", str(args.baud)]
    return subprocess.call(argv + [a for a in args.pytest_args if a != "--"])


def cmd_size(args) -> int:
    store = _store(args)
    plan, paths = build_board(args, store, _console())
    result = paths[plan.result.key]
    manifest = json.loads((result / "manifest.json").read_text())
    rows = []
    sizes = result / "sizes.json"
    if sizes.exists():
        rows = [(c["component"], c["raw"], c["compressed"]) for c in json.loads(sizes.read_text())]
    kernel = manifest["kernel"]["file"]
    kbytes = manifest["files"][kernel]["size"]
    separate = any(f["role"] == "initramfs" for f in manifest["files"].values())
    total = kbytes + (sum(r[2] for r in rows) if separate else 0)
    print(f"{'component':40} {'raw':>10} {'compressed':>11}")
    for name, raw, comp in rows:
        print(f"{name:40} {raw:10,} {comp:11,}")
    if rows:
        where = "initramfs" if separate else "initramfs (built into the kernel)"
        print(f"{where:40} {sum(r[1] for r in rows):10,} {sum(r[2] for r in rows):11,}")
    print(f"{'kernel (' + kernel + ')':40} {'':10} {kbytes:11,}")
    print(f"{'total loaded':40} {'':10} {total:11,}")
    part = plan.board.firmware_partition()
    if part is not None:
        print(f"share of the {part.name} partition ({part.size:,} bytes): "
              f"{100 * total / part.size:.1f}%")
    return 0


def cmd_gc(args) -> int:
    items, freed = _store(args).gc()
    print(f"removed {items} item(s), {freed / 2**20:.1f} MiB")
    return 0


def cmd_verify(args) -> int:
    from embedbuild.steps.source import archive_manifest

    store = _store(args)
    problems = store.verify(archive_manifest)
    for p in problems:
        print(p)
    n = len(store.items())
    if problems:
        raise EmbedbuildError(
            f"{len(problems)} problem(s) in {n} item(s) of {store.root}",
            hint="run `embedbuild gc` after removing the damaged items, then build again",
        )
    print(f"{n} item(s) verified, no damage")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedbuild", description=__doc__.split("\n")[0])
    p.add_argument(
        "--store", help="store folder (default $EMBEDBUILD_STORE or ~/.cache/embedbuild/store)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("boards", help="list boards").set_defaults(fn=cmd_boards)
    s = sub.add_parser("show", help="print a board's resolved definition as JSON")
    s.add_argument("board")
    s.set_defaults(fn=cmd_show)
    s = sub.add_parser("build", help="build a board")
    s.add_argument("board")
    s.add_argument("--system", metavar="FILE", help="a system file instead of the board's [system]")
    s.add_argument("--out-link", default="result", help="result link to create (default: result)")
    s.add_argument("--step", default="result",
                   help="build only up to this step (e.g. kernel, kconfig, initramfs)")
    s.set_defaults(fn=cmd_build)
    s = sub.add_parser(
        "config", help="print the merged Kconfig request and what the final config added"
    )
    s.add_argument("board")
    s.set_defaults(fn=cmd_config)
    s = sub.add_parser("boot", help="build, TFTP-boot through U-Boot, wait for the ready line")
    s.add_argument("board")
    s.add_argument("--system", metavar="FILE", help="a system file instead of the board's [system]")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--qemu", action="store_true", help="boot the board's QEMU model (root)")
    how.add_argument("--serial", metavar="DEV", help="a real board's console (or pyserial URL)")
    s.add_argument("--baud", type=int, help="line speed (default: the board's)")
    s.add_argument("--server-ip", help="this machine's address on the board's network")
    s.add_argument("--device-ip", help="address to give the board")
    s.add_argument("--netmask", default="255.255.255.0")
    s.add_argument("--initrd", help="an extra initramfs file to load and boot")
    s.add_argument(
        "--ready",
        default=r"embedbuild: system ready",
        help="regex of the line that means the system is up",
    )
    s.add_argument("--timeout", type=float, default=60, help="seconds per boot stage")
    s.add_argument("--no-console", action="store_true", help="exit 0 once ready")
    s.set_defaults(fn=cmd_boot)
    s = sub.add_parser("console", help="an interactive serial console with logging")
    s.add_argument("--serial", required=True, metavar="DEV")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--log", help="log file")
    s.set_defaults(fn=cmd_console)
    s = sub.add_parser("tftp", help="serve a build result (or folder) over TFTP, read-only")
    s.add_argument("root", metavar="RESULT_OR_DIR")
    s.add_argument("--listen", default="127.0.0.1:69", metavar="ADDR[:PORT]")
    s.set_defaults(fn=cmd_tftp)
    s = sub.add_parser("test", help="boot a board and run the system tests against it")
    s.add_argument("board")
    s.add_argument("--serial", metavar="DEV", help="a real board (else its QEMU model)")
    s.add_argument("--baud", type=int)
    s.add_argument("--server-ip")
    s.add_argument("--device-ip")
    s.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments")
    s.set_defaults(fn=cmd_test)
    s = sub.add_parser("size", help="bytes per component, kernel, total")
    s.add_argument("board")
    s.add_argument("--system", metavar="FILE", help="a system file instead of the board's [system]")
    s.set_defaults(fn=cmd_size)
    sub.add_parser("gc", help="remove store items no result link reaches").set_defaults(fn=cmd_gc)
    sub.add_parser("verify", help="re-hash the store and report damage").set_defaults(fn=cmd_verify)
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


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C: every context manager cleans up


def main(argv: list[str] | None = None) -> int:
    import signal

    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
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
