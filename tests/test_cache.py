"""The signed binary cache against a real nginx on 127.0.0.1: push, substitute, and
every refusal (changed byte, untrusted key, truncated archive, missing archive, a
cache that never answers, one that is down) building locally with one warning line.

Most tests share one cheap step, qemu-arm-virt's base initramfs segment (no
dependencies, built in a second), so that they exercise the real code paths without
building a kernel; the slow test substitutes a whole qemu-arm-virt build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cache_server import closed_port_url, nginx, silent_server, tree_bytes
from conftest import cli, run_main

BOARD = "qemu-arm-virt"
STEP = "segment0"
NAME = "qemu-arm-virt-seg-base"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    """nginx serving a fresh folder: (base URL, folder)."""
    d = tmp_path_factory.mktemp("nginx")
    with nginx(d / "www", d / "work") as url:
        yield url, d / "www"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """A folder with two key pairs: ci (trusted by the tests) and stranger."""
    d = tmp_path_factory.mktemp("keys")
    for name in ("ci", "stranger"):
        r = run_main("cache", "keygen", name, store=d / "unused", cwd=d)
        assert r.code == 0, r.err
    return d


@pytest.fixture(scope="module")
def store_a(tmp_path_factory) -> tuple[Path, Path]:
    """Store A with the cheap step built: (store, its item)."""
    d = tmp_path_factory.mktemp("a")
    r = cli("build", BOARD, "--step", STEP, "--out-link", str(d / "seg"), store=d / "store")
    assert r.code == 0, r.err
    return d / "store", (d / "seg").resolve()


@pytest.fixture
def cache(request, server, keys, store_a) -> tuple[str, Path]:
    """A cache of this test's own on the server holding the cheap item pushed from store
    A and signed by ci: (URL, its folder on the server)."""
    url, www = server
    name = request.node.name.replace("[", "-").replace("]", "")
    r = run_main("cache", "push", f"{url}/{name}", str(store_a[1]), "--key",
                 str(keys / "ci.secret"), store=store_a[0])
    assert r.code == 0, r.err
    assert "1 item(s) pushed" in r.out
    return f"{url}/{name}", www / name


def build_b(tmp: Path, caches: str, keys: Path, *extra: str, trust: str = "ci",
            step: str = STEP, link: str = "seg-b"):
    """Build the step into store B (in tmp) with these substituters and trusted key:
    (the run, its seconds)."""
    env = {"EMBEDBUILD_SUBSTITUTERS": caches,
           "EMBEDBUILD_TRUSTED_KEYS": str(keys / f"{trust}.public"),
           "XDG_CONFIG_HOME": str(tmp / "config")}
    t0 = time.monotonic()
    r = cli("build", BOARD, "--step", step, "--out-link", str(tmp / link), *extra,
            store=tmp / "store-b", env=env)
    return r, time.monotonic() - t0


def warnings(r) -> list[str]:
    return [line for line in r.err.splitlines() if line.startswith("warning:")]


def test_push_then_substitute_builds_nothing(cache, keys, store_a, tmp_path: Path):
    url, folder = cache
    r, _ = build_b(tmp_path, url, keys)
    assert r.code == 0, r.err
    assert f"fetched {NAME} from {url}" in r.err
    assert "built " not in r.err and not warnings(r)
    got = (tmp_path / "seg-b").resolve()
    assert got.name == store_a[1].name
    assert tree_bytes(got) == tree_bytes(store_a[1])
    # It entered the store like a local build: sealed, recorded, verifiable.
    assert not got.stat().st_mode & 0o222
    assert cli("verify", store=tmp_path / "store-b").code == 0
    log = (tmp_path / "store-b" / ".meta" / got.name / "build.log").read_text()
    assert f"substituted from {url}" in log and "signed by ci" in log
    # A second push finds everything there.
    again = cli("cache", "push", url, str(store_a[1]), "--key", str(keys / "ci.secret"),
                store=store_a[0])
    assert again.code == 0 and "0 item(s) pushed, 1 already" in again.out
    # Archives are reproducible: the substituted copy packs to the very same bytes.
    b = cli("cache", "push", str(tmp_path / "from-b"), str(got), "--key",
            str(keys / "ci.secret"), store=tmp_path / "store-b")
    assert b.code == 0, b.err
    assert [p.name for p in (tmp_path / "from-b" / "archives").iterdir()] == [
        p.name for p in (folder / "archives").iterdir()]


def test_offline_asks_no_cache(cache, keys, tmp_path: Path):
    r, _ = build_b(tmp_path, cache[0], keys, "--offline")
    assert r.code == 0, r.err
    assert f"built {NAME}" in r.err and "fetched" not in r.err


def _archive(folder: Path) -> Path:
    return next((folder / "archives").iterdir())


def _description(folder: Path) -> Path:
    return next((folder / "items").iterdir())


def _flip_byte(folder: Path) -> None:
    a = _archive(folder)
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0x01
    a.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    a = _archive(folder)
    a.write_bytes(a.read_bytes()[:-100])


def _remove_archive(folder: Path) -> None:
    _archive(folder).unlink()


def _edit_description(folder: Path) -> None:
    d = _description(folder)
    desc = json.loads(d.read_text())
    f = desc["files"]["segment.cpio.z"]
    f["sha256"] = "0" * 64
    d.write_text(json.dumps(desc))


def _resign(folder: Path, key: Path, extra_file: bool = False) -> None:
    from embedbuild.cache.keys import load_secret

    d = _description(folder)
    desc = json.loads(d.read_text())
    if extra_file:
        desc["files"]["extra.bin"] = {"type": "file", "mode": 0o444, "size": 1,
                                      "sha256": "0" * 64}
    d.write_text(json.dumps(load_secret(key).sign(desc)))


DAMAGE = {
    "byte": "its archive differs from its description (sha256)",
    "truncated": "truncated or changed",
    "missing": "its archive is missing",
    "description": "the signature by 'ci' does not match its description",
    "stranger": "signed by 'stranger', a key not trusted here",
    # Signed by the trusted key, yet naming a file its archive lacks (a faulty pusher).
    "missing-file": "1 described entries are missing, e.g. extra.bin",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_cache_item_is_built_locally(cache, keys, store_a, tmp_path: Path,
                                             damage):
    url, folder = cache
    {"byte": _flip_byte, "truncated": _truncate, "missing": _remove_archive,
     "description": _edit_description,
     "stranger": lambda f: _resign(f, keys / "stranger.secret"),
     "missing-file": lambda f: _resign(f, keys / "ci.secret", extra_file=True),
     }[damage](folder)
    r, _ = build_b(tmp_path, url, keys)
    assert r.code == 0, r.err
    [line] = warnings(r)
    assert line.startswith(f"warning: cache {url}: {NAME} refused: ")
    assert line.endswith("; building it locally") and DAMAGE[damage] in line, line
    assert f"built {NAME}" in r.err and "Traceback" not in r.err
    assert tree_bytes((tmp_path / "seg-b").resolve()) == tree_bytes(store_a[1])
    # Nothing of the refused copy is left in the store.
    assert not list((tmp_path / "store-b" / ".tmp").iterdir())


def test_untrusted_signer_is_refused_even_when_intact(cache, keys, tmp_path: Path):
    r, _ = build_b(tmp_path, cache[0], keys, trust="stranger")
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {cache[0]}: {NAME} refused: signed by 'ci', "
                           "a key not trusted here; building it locally"]
    assert f"built {NAME}" in r.err


def test_cache_that_never_answers_times_out(cache, keys, tmp_path: Path):
    """A server that accepts and stays silent costs the configured timeout once, then the
    next cache is asked (here the good one)."""
    config = tmp_path / "config" / "embedbuild" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[cache]\ntimeout = 1.5\n")
    with silent_server() as silent:
        r, seconds = build_b(tmp_path, f"{silent} {cache[0]}", keys)
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {silent}: no answer (timed out); not using it "
                           "in this build"], r.err
    assert f"fetched {NAME} from {cache[0]}" in r.err
    assert seconds < 15


def test_cache_that_is_down_is_skipped(keys, store_a, tmp_path: Path):
    down = closed_port_url()
    r, _ = build_b(tmp_path, down, keys)
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {down}: connection refused (is it down?); not "
                           "using it in this build"]
    assert f"built {NAME}" in r.err and "Traceback" not in r.err


def test_folder_cache_round_trip(keys, store_a, tmp_path: Path):
    folder = tmp_path / "shared-cache"
    r = cli("cache", "push", str(folder), str(store_a[1]), "--key", str(keys / "ci.secret"),
            store=store_a[0])
    assert r.code == 0, r.err
    r, _ = build_b(tmp_path, str(folder), keys)
    assert r.code == 0 and f"fetched {NAME}" in r.err and "built " not in r.err, r.err


def test_config_file_errors_name_file_and_line(keys, tmp_path: Path):
    config = tmp_path / "config" / "embedbuild" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[cache]\nsubstituters = ["http://127.0.0.1:1"]\ntrusted_key = []\n')
    r = cli("build", BOARD, "--step", STEP, "--out-link", str(tmp_path / "x"),
            store=tmp_path / "store", env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert r.code == 1
    assert f"{config}:3: cache.trusted_key: unknown key" in r.err
    assert "Traceback" not in r.err


def test_substituters_without_trusted_keys_is_an_error(tmp_path: Path):
    r = cli("build", BOARD, "--step", STEP, "--out-link", str(tmp_path / "x"),
            store=tmp_path / "store", env={"EMBEDBUILD_SUBSTITUTERS": "http://127.0.0.1:1",
                                           "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert r.code == 1 and "no key is trusted" in r.err and "Traceback" not in r.err


def test_bad_key_files_are_refused(keys, store_a, tmp_path: Path):
    bad = tmp_path / "bad.secret"
    bad.write_text("ci:not-base64!\n")
    r = cli("cache", "push", str(tmp_path / "c"), str(store_a[1]), "--key", str(bad),
            store=store_a[0])
    assert r.code == 1 and f"{bad}: not a secret key file" in r.err
    again = cli("cache", "keygen", "ci", store=tmp_path, cwd=keys)
    assert again.code == 1 and "never overwritten" in again.err


@pytest.mark.slow
def test_whole_board_comes_from_the_cache(arm_result: Path, session_store: Path, server, keys,
                                          tmp_path: Path):
    """qemu-arm-virt built into store A (the session's), its whole closure pushed to
    nginx, then built into an empty store B: nothing is built, the result is the same
    bytes, and the kernel alone can be fetched too (the closure was pushed)."""
    from embedbuild.load import load_board
    from embedbuild.plan import plan_board

    url = f"{server[0]}/board"
    r = cli("cache", "push", url, str(arm_result), "--key", str(keys / "ci.secret"),
            store=session_store)
    assert r.code == 0, r.err
    graph = {s.key for s in plan_board(load_board(BOARD)).result.walk()}
    assert f"{len(graph)} item(s) pushed, 0 already" in r.out, r.out

    r, _ = build_b(tmp_path, url, keys, step="result", link="result")
    assert r.code == 0, r.err
    assert "built " not in r.err and not warnings(r), r.err
    assert f"fetched {BOARD}-result from {url}" in r.err
    got = (tmp_path / "result").resolve()
    assert got.name == arm_result.name
    assert tree_bytes(got) == tree_bytes(arm_result)

    r, _ = build_b(tmp_path, url, keys, step="kernel", link="kernel")
    assert r.code == 0 and "built " not in r.err and f"fetched {BOARD}-kernel" in r.err, r.err
    kernel = (tmp_path / "kernel").resolve()
    assert tree_bytes(kernel) == tree_bytes(session_store / kernel.name)
    assert cli("verify", store=tmp_path / "store-b").code == 0


def test_damaged_item_is_not_pushed(keys, tmp_path: Path):
    store = tmp_path / "store"
    r = cli("build", BOARD, "--step", STEP, "--out-link", str(tmp_path / "seg"), store=store)
    assert r.code == 0, r.err
    item = (tmp_path / "seg").resolve()
    (store / ".meta" / item.name / "damage").write_text("modified segment.cpio.z\n")
    r = cli("cache", "push", str(tmp_path / "c"), str(item), "--key", str(keys / "ci.secret"),
            store=store)
    assert r.code == 1 and "found damage" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "c" / "items").exists()


def test_cache_that_stalls_mid_download_times_out(cache, keys, tmp_path: Path):
    """The description arrives, the archive's first bytes too, then nothing: the download
    gives up after the timeout and the item is built, nothing half-fetched kept."""
    import http.server
    import threading

    folder = cache[1]
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            f = folder / self.path.lstrip("/")
            if not f.is_file():
                self.send_error(404)
                return
            data = f.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if "/archives/" in self.path:
                self.wfile.write(data[:100])
                self.wfile.flush()
                release.wait(30)
                return
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = tmp_path / "config" / "embedbuild" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[cache]\ntimeout = 1.5\n")
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        r, seconds = build_b(tmp_path, url, keys)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {url}: no answer (timed out); not using it in "
                           "this build"], r.err
    assert f"built {NAME}" in r.err and seconds < 15
    assert not list((tmp_path / "store-b" / ".tmp").iterdir())
