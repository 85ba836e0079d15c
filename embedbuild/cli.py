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
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self):
        from rich.text import Text

        now = time.monotonic()
        lines = [f"  building {n} ({now - t0:.0f}s)" for n, t0 in self.running.items()]
        return Text("\n".join(lines))

    def started(self, step) -> None:
        self.running[step.name] = time.monotonic()
        self.live.update(self._render())

    def finished(self, step, seconds: float) -> None:
        self.running.pop(step.name, None)
        self.console.print(f"  built {step.name} in {seconds:.1f}s")
        self.live.update(self._render())

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def build_board(board_name: str, store, console, role: str = "result"):
    """Load and plan a board, realise the step of the given role; returns (plan, paths)."""
    from embedbuild.graph import plan_board
    from embedbuild.load import load_board
    from embedbuild.plan import realise

    plan = plan_board(load_board(board_name))
    with _Progress(console) as progress:
        paths = realise(store, plan.steps[role], progress)
    return plan, paths


def cmd_build(args) -> int:
    store = _store(args)
    console = _console()
    plan, paths = build_board(args.board, store, console)
    result = paths[plan.result.key]
    store.link_result(result, Path(args.out_link))
    print(result)
    return 0


def cmd_config(args) -> int:
    from embedbuild.kconfig import read_config

    store = _store(args)
    plan, paths = build_board(args.board, store, _console(), role="kconfig")
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


def cmd_gc(args) -> int:
    items, freed = _store(args).gc()
    print(f"removed {items} item(s), {freed / 2**20:.1f} MiB")
    return 0


def cmd_verify(args) -> int:
    store = _store(args)
    problems = store.verify()
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
    s.add_argument("--out-link", default="result", help="result link to create (default: result)")
    s.set_defaults(fn=cmd_build)
    s = sub.add_parser(
        "config", help="print the merged Kconfig request and what the final config added"
    )
    s.add_argument("board")
    s.set_defaults(fn=cmd_config)
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
