"""A labgrid environment for a board (`embedbuild labgrid env BOARD`): what labgrid's own
tools (labgrid-client, its pytest plugin) need to reach the board in a shared lab, and
its QEMU twin on a desk.

- target ``main``: the real board in the lab, reached through its place (``RemotePlace``:
  the coordinator hands out the place's resources, e.g. the exporter's serial port), with
  labgrid's SerialDriver and UBootDriver set to the board's prompt and autoboot line;
- target ``qemu``: the board's QEMU model through labgrid's ``QEMUDriver`` (the same
  machine, CPU, memory and firmware `embedbuild boot --qemu` uses), with a UBootDriver.

Written as data only (a dict for YAML); labgrid itself reads and checks it.
"""

from __future__ import annotations

from typing import Any

from embedbuild.model.board import Board


def _uboot(board: Board) -> dict[str, Any]:
    return {"prompt": board.uboot.prompt, "autoboot": board.uboot.autoboot,
            "interrupt": " ", "boot_timeout": 60}


def environment(board: Board, place: str) -> tuple[dict[str, Any], list[str]]:
    """The environment for ``board`` whose lab place is ``place``, and notes on what was
    left out (a twin labgrid cannot start as embedbuild does)."""
    targets: dict[str, Any] = {"main": {
        "resources": {"RemotePlace": {"name": place}},
        "drivers": {"SerialDriver": {}, "UBootDriver": _uboot(board)},
    }}
    env: dict[str, Any] = {"targets": targets}
    notes = []
    q = board.qemu
    if q is None:
        notes.append(f"{board.name} has no [qemu]: no QEMU twin target")
    elif q.firmware is None:
        notes.append(f"{board.name}'s QEMU firmware is a U-Boot embedbuild builds (in the "
                     "result): no QEMU twin target; boot it with `embedbuild boot --qemu`")
    elif q.cpu is None:
        notes.append(f"{board.name}'s [qemu] names no cpu, which labgrid's QEMUDriver needs: "
                     "no QEMU twin target")
    else:
        # A NIC of the board's model on QEMU's user networking (-nic takes only PCI and
        # on-board models), not embedbuild's bench LAN, which `embedbuild boot --qemu` makes.
        extra = [*(["-nodefaults"] if q.nodefaults else []), "-netdev", "user,id=lgnet0",
                 "-device", f"{q.nic},netdev=lgnet0", *q.extra]
        driver = {"qemu_bin": "qemu", "machine": q.machine, "cpu": q.cpu,
                  "memory": q.memory, "bios": "firmware", "display": "none",
                  "extra_args": " ".join(extra)}
        targets["qemu"] = {"drivers": {"QEMUDriver": driver, "UBootDriver": _uboot(board)}}
        env["tools"] = {"qemu": q.system if "/" in q.system else f"/usr/bin/{q.system}"}
        env["images"] = {"firmware": str(q.firmware)}
    return env, notes


def render(board: Board, place: str) -> tuple[str, list[str]]:
    """The environment as YAML text, and the notes."""
    from embedbuild.rig.lab import require_labgrid

    require_labgrid()
    import yaml  # labgrid's own dependency

    env, notes = environment(board, place)
    twin = "; qemu: its QEMU twin" if "qemu" in env["targets"] else ""
    head = (f"# labgrid environment for {board.name}, written by `embedbuild labgrid env`.\n"
            f"# main: the board in the lab (place {place}){twin}.\n")
    return head + yaml.safe_dump(env, sort_keys=False), notes
