"""The inventory `embedbuild serve` reads (embedbuild/fleet/inventory.py): a good one
loads, and every case under tests/data/inventory-broken/ is refused by `serve --check`
with exit status 1, no traceback, one message naming the file and line, and nothing
built or served.

A case folder holds ``case.toml``::

    about = "what is broken"
    inventory = '''...'''              # the inventory file's text (fleet.toml)
    encoding = "latin-1"               # optional: how it is written (default UTF-8)
    system = '''...'''                 # optional: kiosk.toml beside it
    expect = ["...", "..."]            # strings the error must contain
    where = "kiosk.toml"               # optional: the file the error is at (default fleet.toml)
    line = 'text'                      # optional: ... at the first line holding this text
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, cli, run_main

from embedbuild.fleet.inventory import load_inventory

CORPUS = ROOT / "tests" / "data" / "inventory-broken"
CASES = sorted(d.name for d in CORPUS.iterdir() if (d / "case.toml").is_file())
KEYS = {"about", "inventory", "encoding", "system", "expect", "where", "line"}
IN_A_PROCESS = 10  # every 10th case also as a process of its own: exit status, stderr


def test_a_good_inventory_loads(tmp_path):
    (tmp_path / "kiosk.toml").write_text('hostname = "kiosk"\n')
    inv = tmp_path / "fleet.toml"
    inv.write_text('[unknown]\nboard = "qemu-arm-virt"\n\n'
                   '[[device]]\nname = "dev01"\nmac = "52-54-00-AB-34-01"\n'
                   'board = "qemu-arm-virt"\nsystem = "kiosk.toml"\nappend = "quiet"\n'
                   'ip = "10.77.0.11"\n\n'
                   '[[device]]\nname = "dev02"\nmac = "52:54:00:12:34:02"\n'
                   'board = "qemu-arm-virt"\n')
    loaded = load_inventory(inv)
    assert [d.mac for d in loaded.device] == ["52:54:00:ab:34:01", "52:54:00:12:34:02"]
    assert loaded.device[0].system == tmp_path.resolve() / "kiosk.toml"
    assert loaded.builds() == [("qemu-arm-virt", tmp_path.resolve() / "kiosk.toml"),
                               ("qemu-arm-virt", None)]
    assert loaded.watched() == [inv, tmp_path.resolve() / "kiosk.toml"]
    assert set(loaded.by_mac()) == {"52:54:00:ab:34:01", "52:54:00:12:34:02"}
    assert load_inventory(_empty(tmp_path)).device == []  # nothing to serve is no error


def _empty(folder: Path) -> Path:
    path = folder / "empty.toml"
    path.write_text("")
    return path


@pytest.mark.parametrize("name", CASES)
def test_a_broken_inventory_is_refused_at_its_line(name, tmp_path):
    case = tomllib.loads((CORPUS / name / "case.toml").read_text())
    assert set(case) <= KEYS, f"unknown keys in {name}/case.toml"
    inv = tmp_path / "fleet.toml"
    inv.write_bytes(case["inventory"].encode(case.get("encoding", "utf-8")))
    if "system" in case:
        (tmp_path / "kiosk.toml").write_text(case["system"])
    run = cli if CASES.index(name) % IN_A_PROCESS == 0 else run_main
    r = run("serve", str(inv), "--check", store=tmp_path / "store")
    assert r.code == 1, r.out + r.err
    assert "Traceback" not in r.err and r.err.count("error:") == 1, r.err
    first = r.own_err.splitlines()[0]
    for needle in case["expect"]:
        assert needle in r.err, (needle, r.err)
    where = tmp_path / case.get("where", "fleet.toml")
    text = where.read_bytes().decode(errors="replace")
    if "line" in case:
        n = next(i for i, line in enumerate(text.splitlines(), 1) if case["line"] in line)
        assert f"error: {where}:{n}: " in first, (n, r.err)
    else:
        assert f"error: {where}" in first, r.err
    assert not (tmp_path / "store").exists()
    assert r.out == ""
