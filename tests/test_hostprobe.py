"""Host facts are remembered only while what they were read from is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedbuild import hostprobe


@pytest.fixture
def memo(tmp_path: Path, monkeypatch) -> Path:
    status = tmp_path / "status"
    status.write_text("Package: gcc\n")
    monkeypatch.setattr(hostprobe, "DPKG_STATUS", status)
    monkeypatch.setenv("EMBEDBUILD_PROBE_CACHE", str(tmp_path / "memo.json"))
    return tmp_path


def counting(value):
    calls = []

    def probe():
        calls.append(1)
        return value
    return probe, calls


def test_a_fact_is_probed_once_while_nothing_changes(memo: Path):
    tool = memo / "gcc"
    tool.write_text("v1")
    probe, calls = counting({"gcc": "12.2.0-14"})
    for _ in range(3):
        assert hostprobe.remembered("host", [str(tool)], probe) == {"gcc": "12.2.0-14"}
    assert len(calls) == 1


@pytest.mark.parametrize("change", ["tool", "dpkg", "tool removed"])
def test_a_changed_tool_or_dpkg_database_probes_again(memo: Path, change: str):
    tool = memo / "gcc"
    tool.write_text("v1")
    probe, calls = counting("gcc 12")
    hostprobe.remembered("version", [str(tool)], probe)
    if change == "tool":
        tool.write_text("v22")
    elif change == "dpkg":
        hostprobe.DPKG_STATUS.write_text("Package: gcc\nVersion: 13\n")
    else:
        tool.unlink()
    hostprobe.remembered("version", [str(tool)], probe)
    assert len(calls) == 2


@pytest.mark.parametrize("content", [b"garbage", b"[1, 2]", b'{"version": {"stamp": 1}}',
                                     b"[" * 100_000, b" " * (hostprobe.MAX_BYTES + 1)])
def test_a_damaged_memo_is_probed_over(memo: Path, content: bytes):
    tool = memo / "gcc"
    tool.write_text("v1")
    probe, calls = counting("gcc 12")
    hostprobe.remembered("version", [str(tool)], probe)
    (memo / "memo.json").write_bytes(content)
    assert hostprobe.remembered("version", [str(tool)], probe) == "gcc 12"
    assert len(calls) == 2


def test_a_stamp_matching_memo_of_the_wrong_type_is_not_used(memo: Path):
    tool = memo / "gcc"
    tool.write_text("v1")
    probe, calls = counting({"gcc": "12"})
    hostprobe.remembered("host", [str(tool)], probe)
    text = (memo / "memo.json").read_text().replace('{"gcc": "12"}', '{"gcc": 12}')
    (memo / "memo.json").write_text(text)
    assert hostprobe.remembered("host", [str(tool)], probe) == {"gcc": "12"}
    assert len(calls) == 2


def test_an_unwritable_memo_costs_only_the_probe(memo: Path, monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_PROBE_CACHE", "/proc/no/such/memo.json")
    probe, calls = counting("x")
    assert hostprobe.remembered("version", [], probe) == "x"
    assert hostprobe.remembered("version", [], probe) == "x"
    assert len(calls) == 2
    assert not os.path.exists("/proc/no")
