"""Power drivers, one per kind of power switch (rig/resource.py): a person, QEMU's QMP,
or a command such as a USB relay's CLI. Each implements PowerProtocol."""

from __future__ import annotations

import subprocess

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.protocol import PowerProtocol
from embedbuild.rig.qemu import QemuBoard
from embedbuild.rig.resource import CommandPower, ManualPower, PowerSwitch
from embedbuild.rig.step import Steps, step


class PowerError(EmbedbuildError):
    """The power could not be switched."""


class ManualPowerDriver(PowerProtocol):
    """A person powers the board: on() announces it (a step the command line shows) and
    the strategy waits up to the resource's timeout for the bootloader."""

    def __init__(self, resource: ManualPower, steps: Steps | None = None) -> None:
        self.resource = resource
        self.patience = resource.timeout
        self.steps = steps

    @step("power on by hand")
    def on(self) -> None:
        pass  # the step's start is the request; the bootloader's first words end the wait

    def off(self) -> None:
        pass  # the board stays as the person left it


class QemuPowerDriver(PowerProtocol):
    """The QEMU model's power: its CPU started (QMP ``cont``) and, off, stopped and reset
    so that the next on() boots it afresh."""

    def __init__(self, qemu: QemuBoard, steps: Steps | None = None) -> None:
        self.qemu = qemu
        self.steps = steps
        self._ran = False

    @step("QEMU cont")
    def on(self) -> None:
        self.qemu.release()
        self._ran = True

    def cycle(self) -> None:
        # QEMU starts with its CPU stopped, as if off: the first cycle is an on().
        if self._ran:
            self.off()
        self.on()

    @step("QEMU stop and reset")
    def off(self) -> None:
        if self.qemu.proc is not None and self.qemu.proc.poll() is None:
            self.qemu.qmp("stop")
            self.qemu.qmp("system_reset")


class CommandPowerDriver(PowerProtocol):
    """Runs the resource's shell commands; a command that fails or takes longer than its
    timeout is an error naming it and what it said."""

    def __init__(self, resource: CommandPower, steps: Steps | None = None) -> None:
        self.resource = resource
        self.steps = steps

    def _run(self, command: str) -> None:
        try:
            p = subprocess.run(command, shell=True, capture_output=True, text=True,
                               timeout=self.resource.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PowerError(f"power command `{command}` did not finish within "
                             f"{self.resource.timeout:.0f} s",
                             hint="check the relay and its connection") from None
        if p.returncode != 0:
            said = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PowerError(f"power command `{command}` failed with status {p.returncode}: "
                             f"{said[0]}", hint="check the relay and its connection")

    @step("power command on")
    def on(self) -> None:
        self._run(self.resource.on)

    @step("power command off")
    def off(self) -> None:
        if self.resource.off is not None:
            self._run(self.resource.off)


def power_driver(resource: PowerSwitch, qemu: QemuBoard | None,
                 steps: Steps | None = None) -> PowerProtocol:
    """The driver for a power switch (QEMU's needs its running QemuBoard)."""
    if isinstance(resource, ManualPower):
        return ManualPowerDriver(resource, steps)
    if isinstance(resource, CommandPower):
        return CommandPowerDriver(resource, steps)
    if qemu is None:
        raise PowerError("QEMU power without a QEMU machine on the bench")
    return QemuPowerDriver(qemu, steps)
