"""The U-Boot driver: interrupt autoboot, find the prompt, run commands and know
whether they failed, boot and follow the kernel to the init's ready line."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from embedbuild.bootcmd import REFUSED
from embedbuild.rig.console import ConsoleError
from embedbuild.rig.protocol import BootloaderProtocol, ConsoleProtocol
from embedbuild.rig.step import Steps, step

# What U-Boot prints when something went wrong (net/tftp.c, boot/*.c, cmd/*.c).
UBOOT_ERRORS = [
    r"TFTP error: '[^'\n]*' \(\d+\)",
    r"Not retrying\.\.\.",
    r"Retry count exceeded[^\n]*",
    r"ARP Retry count exceeded[^\n]*",
    r"\*\*\* ERROR: `\w+' not set",
    r"Bad Data CRC",
    r"Bad Header Checksum",
    r"Bad Magic Number",
    r"Wrong Ramdisk Image Format",
    r"Ramdisk image is corrupt or invalid",
    r"zimage: Bad magic!",
    r"Bad Linux ARM64 Image magic!",
    r"[Cc]an't get kernel image!?",
    r"Unknown command '[^'\n]*' - try 'help'",
    r"## Error: [^\n]*",
    r"Must RESET board to recover",
    # Verified boot (boot/image-fit.c, image-fit-sig.c): an image that fails its check.
    r"Bad hash value for '[^'\n]*' hash node in '[^'\n]*' image node",
    r"Failed to verify required signature '[^'\n]*'",
    r"Failed to verify 'any' of the required signature\(s\)",
    r"Bad Data Hash",
    r"Wrong Image Format for bootm command",
    r"Could not find configuration node",
    # The anti-rollback check embedbuild types (bootcmd.rollback_check).
    re.escape(REFUSED) + r": [^\n]*",
]
# What a kernel prints when it will not reach the init's ready line. Services may
# write to the console too, so the oops and BUG patterns match only lines shaped
# like the kernel's: at a line start, after the printk time and caller id when
# those are on, in the kernel's own wording.
_PRINTK = r"^(?:\[ *\d+\.\d+\] )?(?:\[ *[TC]\d+\] )?"
KERNEL_ERRORS = [
    r"Kernel panic - not syncing:[^\n]*",
    # One pattern, not four: each anchored pattern is a scan of every position.
    _PRINTK + r"(?:Internal error: Oops"
    # x86 "Oops: 0002 [#1] SMP", MIPS "Oops[#1]:", RISC-V "Oops [#1]"
    r"|Oops(?:: [0-9a-f]+)? ?\[#\d+\]"
    r"|kernel BUG at "
    r"|BUG: (?:kernel NULL pointer dereference|unable to handle|scheduling while atomic"
    r"|sleeping function called|spinlock|KASAN|KFENCE|soft lockup|workqueue lockup|Bad page"
    r"|(?:TASK )?stack guard page))[^\n]*",
]
_ERR = re.compile("|".join(UBOOT_ERRORS))
# Distro boot tries the network after the disks: this line means the disks had nothing.
NO_BOOTABLE_DISK = r"BOOTP broadcast 1\b"
MARK = "@@@"


class BootError(ConsoleError):
    """U-Boot or the kernel reported a failure."""


@dataclass
class Result:
    """A U-Boot command's exit status and output."""

    status: int
    output: str
    seconds: float


class UBootDriver(BootloaderProtocol):
    """Drives U-Boot over any console.

    Args:
        console: the board's console.
        prompt: the board's prompt string.
        autoboot: regex of the "stop autoboot" line.
        steps: where its actions are reported as steps (None: nowhere).
    """

    def __init__(
        self, console: ConsoleProtocol, prompt: str = "=> ",
        autoboot: str = "Hit any key to stop autoboot", steps: Steps | None = None,
    ) -> None:
        self.console = console
        self.prompt = prompt
        self.autoboot = autoboot
        self.steps = steps

    def interrupt(self, timeout: float = 60) -> float:
        """Stop autoboot and reach a prompt that answers; returns the seconds it took."""
        t0 = time.monotonic()
        m = self.console.expect([self.autoboot, re.escape(self.prompt)], timeout)
        if m.index == 0:
            self.console.write(" ")
        self.sync()
        return time.monotonic() - t0

    def sync(self, timeout: float = 10) -> None:
        """Make sure the prompt answers: the split-quoted echo cannot match its own echo."""
        self.console.write("\n")
        self.console.sendline(f'echo {MARK}""SYNC', echo_timeout=timeout)
        self.console.expect(f"{MARK}SYNC", timeout)
        self.console.expect(re.escape(self.prompt), timeout)

    @step("U-Boot run", args=("command",))
    def run(self, command: str, timeout: float = 30) -> Result:
        """Run a command; its exit status comes from the shell's $?."""
        t0 = time.monotonic()
        self.console.sendline(f'{command}; echo {MARK}""RC=$?')
        m = self.console.expect(rf"{MARK}RC=(\d+)", timeout)
        self.console.expect(re.escape(self.prompt), 10)
        return Result(int(m.match.group(1)), m.before.strip("\n"), time.monotonic() - t0)

    def check(self, command: str, timeout: float = 30) -> Result:
        """Run a command that must succeed: non-zero status or a known error string fails."""
        r = self.run(command, timeout)
        err = _ERR.search(r.output)
        if r.status != 0 or err:
            what = err.group(0) if err else f"exit status {r.status}"
            raise BootError(f"U-Boot: `{command}` failed: {what}", log_tail=self.console.tail())
        return r

    @step("U-Boot boot", args=("command",))
    def boot(self, command: str, timeout: float = 30) -> float:
        """Run a boot command and wait for the kernel to start; U-Boot errors fail at once."""
        t0 = time.monotonic()
        self.console.sendline(command)
        # Not every U-Boot says "Starting kernel" (MIPS bootm does not): the
        # kernel's first line counts too.
        m = self.console.expect(
            [r"Starting kernel|Linux version \d", *UBOOT_ERRORS, re.escape(self.prompt)], timeout
        )
        if m.index != 0:
            what = m.match.group(0) if m.index <= len(UBOOT_ERRORS) else "back at the prompt"
            raise BootError(f"U-Boot: `{command}` failed: {what}", log_tail=self.console.tail())
        return time.monotonic() - t0

    @step("U-Boot autoboot")
    def wait_autoboot(self, timeout: float = 60) -> float:
        """Press no key: let U-Boot's own boot command (distro boot) find and start the
        kernel; its errors, a return to the prompt, or giving up on the card and going to
        the network fail at once. Returns the seconds until the kernel started."""
        t0 = time.monotonic()
        m = self.console.expect([r"Starting kernel|Linux version \d", *UBOOT_ERRORS,
                                 re.escape(self.prompt), NO_BOOTABLE_DISK], timeout)
        if m.index != 0:
            if m.index <= len(UBOOT_ERRORS):
                what = m.match.group(0)
            elif m.index == len(UBOOT_ERRORS) + 1:
                what = "back at the prompt"
            else:
                what = "nothing bootable found on the disks; it went on to the network"
            raise BootError(f"U-Boot autoboot: {what}", log_tail=self.console.tail())
        return time.monotonic() - t0


def wait_ready(console: ConsoleProtocol, ready: str, timeout: float) -> float:
    """Wait for the init's ready line; a kernel panic or oops fails at once."""
    t0 = time.monotonic()
    m = console.expect([ready, *KERNEL_ERRORS], timeout)
    if m.index != 0:
        raise BootError(f"kernel: {m.match.group(0).strip()}", log_tail=console.tail())
    return time.monotonic() - t0
