"""What the system's packages need from the kernel, checked in the board's final kernel
config: a step of its own beside the kernel, so a config change does not touch the
packages, and a package added does not touch the kernel."""

from __future__ import annotations

from pathlib import Path

from embedbuild.errors import ConfigError
from embedbuild.kconfig import read_config
from embedbuild.model.board import Board
from embedbuild.step import Context, Step


def fragment_to_edit(kernel_board: Board) -> Path:
    """The fragment a user adds a kernel symbol to: the last one in the folder of the
    board that builds the kernel (its own), else its last."""
    frags = kernel_board.kernel.fragments
    own = [f for f in frags if f.parent == kernel_board.dir]
    return (own or frags)[-1]


def kernel_needs_step(name: str, kconfig: Step, needs: list[tuple[str, str, str]],
                      kernel_board: Board) -> Step:
    """Every (who, symbol, value) of ``needs`` must hold in the final .config (who: "package
    NAME", or a part of the system such as "the access point"); one error lists each that
    does not, naming who, the symbol and the fragment to edit. Output ``report``: what
    was checked."""
    fragment = fragment_to_edit(kernel_board)

    def build(ctx: Context) -> None:
        final = read_config(ctx.input("kconfig", "config"))
        lines, missing = [], []
        for package, symbol, value in needs:
            got = final.get(symbol, "n")
            lines.append(f"{package}: CONFIG_{symbol}={value} (final: {got})\n")
            if got != value:
                shown = "not set" if got == "n" else f"={got}"
                missing.append((f"{package} needs CONFIG_{symbol}={value}, but the "
                                f"kernel of {kernel_board.name} has it {shown}",
                                f"CONFIG_{symbol}={value}"))
        if missing:
            raise ConfigError(
                "; ".join(m for m, _ in missing),
                where=str(fragment),
                hint=f"add {', '.join(line for _, line in missing)} to {fragment} (the "
                "kernel fragment of the board that builds this kernel), or drop what needs it")
        ctx.output("report").write_text("".join(lines))

    return Step(kind="kernel-needs", name=name, version=2,
                # The fragment named in an error is no input: nothing is written from it.
                inputs={"needs": [list(n) for n in needs]},
                deps={"kconfig": kconfig}, build=build, outputs={"report": "kernel-needs.txt"})
