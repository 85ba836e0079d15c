"""The U-Boot driver against a fake U-Boot on a pty: autoboot, prompt sync, exit
status, error strings, boot failures found at once, late output, kernel errors."""

from __future__ import annotations

import time

import pytest
from fakes import FakeDevice, FakeUBoot

from embedbuild.rig.console import ConsoleError
from embedbuild.rig.uboot import BootError, UBootDriver, wait_ready


def test_interrupt_stops_autoboot():
    with FakeUBoot(autoboot=3, tick=0.2) as dev, dev.console() as c:
        UBootDriver(c).interrupt(timeout=10)
        assert dev.interrupted and not dev.booted
        assert UBootDriver(c).run("echo hello").output.endswith("hello")


def test_interrupt_at_a_prompt_without_autoboot():
    with FakeUBoot(prompt="ath> ") as dev, dev.console() as c:
        UBootDriver(c, prompt="ath> ").interrupt(timeout=10)
        assert not dev.booted


def test_sync_needs_the_command_run_not_its_echo():
    # This U-Boot echoes but runs nothing: the echo holds @@@""SYNC, never @@@SYNC.
    with FakeUBoot(executes=False) as dev, dev.console() as c:
        c.expect("=> ", 5)
        with pytest.raises(ConsoleError, match="SYNC"):
            UBootDriver(c).sync(timeout=0.5)
        assert b'echo @@@""SYNC' in dev.received


def test_run_returns_status_and_output():
    with FakeUBoot() as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        r = u.run("setenv serverip 10.77.0.1; echo server ${serverip}")
        assert (r.status, r.output.splitlines()[-1]) == (0, "server 10.77.0.1")
        assert u.run("false").status == 1
        assert u.run("true").status == 0
        bad = u.run("frobnicate")
        assert bad.status == 1 and "Unknown command 'frobnicate'" in bad.output


def test_run_waits_for_late_output():
    with FakeUBoot() as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        r = u.run("sleep 0.5; echo late", timeout=30)
        assert r.status == 0 and r.output.endswith("late")


def test_check_fails_on_status_and_names_the_error():
    with FakeUBoot(files={"zImage": 2_300_000}) as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        u.check("setenv ipaddr 10.77.0.2; setenv serverip 10.77.0.1")
        assert "Bytes transferred = 2300000" in u.check("tftpboot 0x40400000 zImage").output
        with pytest.raises(BootError) as e:
            u.check("tftpboot 0x44000000 missing.cpio")
        assert "TFTP error: 'File not found' (1)" in str(e.value)
        assert "missing.cpio" in str(e.value)
        # an error string fails the check even with status 0
        with pytest.raises(BootError, match="## Error: "):
            u.check("echo '## Error: \"bootargs\" not defined'")


def test_boot_fails_at_once_on_a_uboot_error():
    with FakeUBoot(boot_error="Bad Data CRC") as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        t0 = time.monotonic()
        with pytest.raises(BootError, match="Bad Data CRC"):
            u.boot("bootz 0x40400000 0x44000000 0x40000000", timeout=120)
        assert time.monotonic() - t0 < 60  # found by its message, not the 120 s timeout


def test_boot_follows_late_kernel_output_to_ready():
    kernel = [(0.2, "Linux version 6.1.0 (fake)\n"), (0.2, "[    0.5] Run /init as init proc"),
              (0.2, "ess\n"), (0.2, "embedbuild: system ready\n")]
    with FakeUBoot(kernel=kernel) as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        u.boot("bootz 0x40400000 - 0x40000000", timeout=30)
        c.expect("Run /init as init process", 30)
        wait_ready(c, "embedbuild: system ready", 30)
        assert dev.booted


def test_kernel_panic_fails_wait_ready_at_once():
    kernel = [(0, "Linux version 6.1.0\n"),
              (0.2, "[    1.2] Kernel panic - not syncing: No working init found.\n")]
    with FakeUBoot(kernel=kernel) as dev, dev.console() as c:
        u = UBootDriver(c)
        u.interrupt(10)
        u.boot("bootz 0x40400000 - 0x40000000")
        with pytest.raises(BootError, match="Kernel panic - not syncing: No working init"):
            wait_ready(c, "embedbuild: system ready", 120)


class Printer(FakeDevice):
    """Prints lines, one at a time."""

    def __init__(self, *lines: str) -> None:
        super().__init__()
        self.lines = lines

    def run(self) -> None:
        for line in self.lines:
            self.send(line.replace("\n", "\r\n"))
            self.sleep(0.02)
        super().run()


@pytest.mark.parametrize("line", [
    "[   3.141592] Internal error: Oops: 5 [#1] ARM\n",
    "Unable to handle kernel NULL pointer dereference\nInternal error: Oops: 817 [#1] SMP ARM\n",
    "[    7.000000] BUG: kernel NULL pointer dereference, address: 00000000\n",
    "BUG: scheduling while atomic: swapper/0/1/0x00000002\n",
    "[    2.000000] [    T1] kernel BUG at mm/slub.c:123!\n",
    "CPU 0 Unable to handle kernel paging request\nOops[#1]:\n",
    "Oops: 0002 [#1] PREEMPT SMP NOPTI\n",
])
def test_kernel_oops_and_bug_lines_fail(line: str):
    with Printer(line, "embedbuild: system ready\n") as dev, dev.console() as c, \
            pytest.raises(BootError, match=r"kernel: .*(Oops|BUG)"):
        wait_ready(c, "embedbuild: system ready", 10)


@pytest.mark.parametrize("line", [
    "myservice: BUG: 3 items left in the queue\n",
    "test-runner: Oops, retrying\n",
    "BUG: the frobnicator is not frobbing\n",
    "Oops: no such file\n",
])
def test_userspace_bug_and_oops_lines_do_not_fail(line: str):
    with Printer(line, "embedbuild: system ready\n") as dev, dev.console() as c:
        wait_ready(c, "embedbuild: system ready", 10)
