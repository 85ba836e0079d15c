"""Shared fixtures: a session store holding one real build of qemu-arm-virt, and a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMBEDBUILD = str(Path(sys.executable).parent / "embedbuild")


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(
    *args: str, store: Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 3600
) -> Run:
    """Run the installed embedbuild command like a user does."""
    full_env = {**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200", **(env or {})}
    p = subprocess.run(
        [EMBEDBUILD, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    return Run(p.returncode, p.stdout, p.stderr)


def snapshot(store: Path) -> dict[str, float]:
    """Every path in a store with its mtime: to show a failed build left it untouched."""
    if not store.exists():
        return {}
    return {
        str(p.relative_to(store)): p.lstat().st_mtime
        for p in store.rglob("*")
        if ".locks" not in p.parts and ".logs" not in p.parts
    }


@pytest.fixture
def boards(tmp_path: Path) -> Path:
    """A private copy of the project's boards/ to break on purpose."""
    dst = tmp_path / "boards"
    shutil.copytree(ROOT / "boards", dst)
    return dst


@pytest.fixture(scope="session")
def session_store(tmp_path_factory) -> Path:
    """One store for the whole session: the real build happens once."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def arm_result(session_store: Path, tmp_path_factory) -> Path:
    """qemu-arm-virt built for real into the session store; returns the result folder."""
    out = tmp_path_factory.mktemp("out")
    r = cli("build", "qemu-arm-virt", "--out-link", str(out / "result"), store=session_store)
    assert r.code == 0, r.err
    return (out / "result").resolve()


def manifest(result: Path) -> dict:
    return json.loads((result / "manifest.json").read_text())
