"""The signed binary cache against a real nginx on 127.0.0.1: push, substitute, and
every refusal (changed byte, untrusted key, truncated archive, missing archive, a
cache that never answers, one that is down) building locally with one warning line.

Most tests share one cheap step, qemu-arm-virt's base initramfs segment (no
dependencies, built in a second), so that they exercise the real code paths without
building a kernel; the slow test substitutes a whole qemu-arm-virt build."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from cache_server import closed_port_url, nginx, silent_server, tree_bytes
from conftest import cli, run_main
from hostile import (
    HostileServer,
    Member,
    resign,
    run_watched,
    small_disk,
    with_archive,
    zeros_sha256,
)

from embedbuild.store import Store

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
    r = run_main("build", BOARD, "--step", STEP, "--out-link", str(d / "seg"), store=d / "store")
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
    r = run_main("build", BOARD, "--step", step, "--out-link", str(tmp / link), *extra,
                 store=tmp / "store-b", env=env)
    return r, time.monotonic() - t0


def warnings(r) -> list[str]:
    return [line for line in r.own_err.splitlines() if line.startswith("warning:")]


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
    assert run_main("verify", store=tmp_path / "store-b").code == 0
    log = (tmp_path / "store-b" / ".meta" / got.name / "build.log").read_text()
    assert f"substituted from {url}" in log and "signed by ci" in log
    # A second push finds everything there.
    again = run_main("cache", "push", url, str(store_a[1]), "--key", str(keys / "ci.secret"),
                     store=store_a[0])
    assert again.code == 0 and "0 item(s) pushed, 1 already" in again.out
    # Archives are reproducible: the substituted copy packs to the very same bytes.
    b = run_main("cache", "push", str(tmp_path / "from-b"), str(got), "--key",
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
        desc["size"] += 1
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
        r, _ = build_b(tmp_path, f"{silent} {cache[0]}", keys)
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {silent}: no answer (timed out); not using it "
                           "in this build"], r.err
    assert f"fetched {NAME} from {cache[0]}" in r.err


def test_cache_that_is_down_is_skipped(keys, store_a, tmp_path: Path):
    down = closed_port_url()
    r, _ = build_b(tmp_path, down, keys)
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {down}: connection refused (is it down?); not "
                           "using it in this build"]
    assert f"built {NAME}" in r.err and "Traceback" not in r.err


def test_folder_cache_round_trip(keys, store_a, tmp_path: Path):
    folder = tmp_path / "shared-cache"
    r = run_main("cache", "push", str(folder), str(store_a[1]), "--key",
                 str(keys / "ci.secret"), store=store_a[0])
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
    r = run_main("build", BOARD, "--step", STEP, "--out-link", str(tmp_path / "x"),
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
    r = run_main("build", BOARD, "--step", STEP, "--out-link", str(tmp_path / "seg"),
                 store=store)
    assert r.code == 0, r.err
    item = (tmp_path / "seg").resolve()
    (store / ".meta" / item.name / "damage").write_text("modified segment.cpio.z\n")
    r = run_main("cache", "push", str(tmp_path / "c"), str(item), "--key",
                 str(keys / "ci.secret"), store=store)
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
        r, _ = build_b(tmp_path, url, keys)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
    assert r.code == 0, r.err
    assert warnings(r) == [f"warning: cache {url}: no answer (timed out); not using it in "
                           "this build"], r.err
    assert f"built {NAME}" in r.err
    assert not list((tmp_path / "store-b" / ".tmp").iterdir())


# -- hostile caches through the CLI: one warning, a local build identical to the
# reference, nothing left in the store, no traceback; a watchdog kills the build if
# it writes more than 64 MiB or runs a minute (hostile.run_watched) ----------------


def build_watched(tmp: Path, caches: str, keys: Path, config: str = "", store: Path | None = None):
    """build_b under a watchdog: (the run, why the watchdog killed it or None)."""
    store = store or tmp / "store-b"
    if config:
        path = tmp / "config" / "embedbuild" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config)
    env = {"EMBEDBUILD_SUBSTITUTERS": caches,
           "EMBEDBUILD_TRUSTED_KEYS": str(keys / "ci.public"),
           "XDG_CONFIG_HOME": str(tmp / "config")}
    return run_watched("build", BOARD, "--step", STEP, "--out-link", str(tmp / "seg-b"),
                       store=store, env=env, max_bytes=64 << 20, seconds=60)


def built_locally(r, killed: str | None, tmp: Path, store_a, why: str,
                  store: Path | None = None) -> str:
    """The checks every hostile case shares; returns the warning line."""
    store = store or tmp / "store-b"
    assert killed is None, f"watchdog: {killed}"
    assert r.code == 0 and "Traceback" not in r.err, r.err
    [line] = warnings(r)
    assert line.endswith("; building it locally") and why in line, line
    assert f"built {NAME}" in r.err
    assert tree_bytes((tmp / "seg-b").resolve()) == tree_bytes(store_a[1])
    assert not list((store / ".tmp").iterdir())
    assert Store(store).verify() == []
    return line


@pytest.fixture(scope="module")
def pushed(keys, store_a, tmp_path_factory) -> Path:
    """A folder cache holding the cheap item, pushed once; tests break copies of it."""
    folder = tmp_path_factory.mktemp("pushed") / "cache"
    r = run_main("cache", "push", str(folder), str(store_a[1]), "--key",
                 str(keys / "ci.secret"), store=store_a[0])
    assert r.code == 0, r.err
    return folder


def _push_folder(pushed: Path, folder: Path) -> None:
    shutil.copytree(pushed, folder)


SPECIAL = {
    "archive symlink to /dev/zero": ("archive", lambda p: p.symlink_to("/dev/zero"),
                                     "its archive is a symlink, not a regular file"),
    "description symlink to /dev/zero": ("description", lambda p: p.symlink_to("/dev/zero"),
                                         "unreadable description"),
    "archive a FIFO": ("archive", lambda p: os.mkfifo(p), "its archive is a FIFO, not a "
                       "regular file"),
}


@pytest.mark.parametrize("case", SPECIAL)
def test_folder_cache_reads_regular_files_only(keys, store_a, pushed, tmp_path: Path, case: str):
    folder = tmp_path / "shared-cache"
    _push_folder(pushed, folder)
    which, make, why = SPECIAL[case]
    target = _archive(folder) if which == "archive" else _description(folder)
    target.unlink()
    make(target)
    r, killed = build_watched(tmp_path, str(folder), keys)
    line = built_locally(r, killed, tmp_path, store_a, why if which == "archive" else "")
    if which == "description":  # not followed: the cache's own file is what is missing
        assert "a symlink, not a regular file" in line, line


def test_endless_http_archive_stops_at_its_signed_size(keys, store_a, pushed, tmp_path: Path):
    folder = tmp_path / "www"
    _push_folder(pushed, folder)
    rel = str(_archive(folder).relative_to(folder))
    with HostileServer(folder, {rel: "endless"}) as server:
        r, killed = build_watched(tmp_path, server.url, keys)
    assert server.overrun == []
    built_locally(r, killed, tmp_path, store_a, "its archive is larger than the "
                  f"{_archive(folder).stat().st_size:,} bytes its description says")


def test_slow_http_description_is_cut_off(keys, store_a, pushed, tmp_path: Path):
    """Four bytes a second, with the defaults but a timeout of 1 s: no single read waits
    out the timeout (a byte comes every 0.25 s, so a busy machine does not turn this into
    a plain timeout), but the description must keep up 64 KiB/s after three timeouts, so
    it is cut off after 3 s, not after the item's whole deadline (600 s) or never."""
    folder = tmp_path / "www"
    _push_folder(pushed, folder)
    rel = str(_description(folder).relative_to(folder))
    with HostileServer(folder, {rel: "slow"}, interval=0.25, max_seconds=30) as server:
        r, killed = build_watched(tmp_path, server.url, keys, "[cache]\ntimeout = 1\n")
    # The server's own watchdog (30 s) never had to stop it; the reason is in the line.
    assert server.overrun == []
    built_locally(r, killed, tmp_path, store_a, "its description is too slow: slower than "
                  "64 KiB/s after the first 3 s: ")


def test_slow_http_archive_costs_the_configured_deadline(keys, store_a, pushed, tmp_path: Path):
    folder = tmp_path / "www"
    _push_folder(pushed, folder)
    rel = str(_archive(folder).relative_to(folder))
    with HostileServer(folder, {rel: "slow"}, max_seconds=30) as server:
        r, killed = build_watched(tmp_path, server.url, keys, "[cache]\ndeadline = 1\n")
    assert server.overrun == []
    built_locally(r, killed, tmp_path, store_a, "its archive is too slow: not complete "
                  "within the deadline for one item (1 s)")


def test_deeply_nested_description_is_refused(keys, store_a, pushed, tmp_path: Path):
    folder = tmp_path / "shared-cache"
    _push_folder(pushed, folder)
    _description(folder).write_text("[" * 100_000 + "]" * 100_000)
    r, killed = build_watched(tmp_path, str(folder), keys)
    built_locally(r, killed, tmp_path, store_a, "JSON nested deeper than 64 levels")


def test_ill_typed_signed_description_is_refused(keys, store_a, pushed, tmp_path: Path):
    """Signed by the trusted key, yet deps is no list: refused, so no later gc trips."""
    folder = tmp_path / "shared-cache"
    _push_folder(pushed, folder)
    resign(_description(folder), keys / "ci.secret",
           lambda d: (d["info"].update(deps="x"), d.update(references="x")))
    r, killed = build_watched(tmp_path, str(folder), keys)
    built_locally(r, killed, tmp_path, store_a, "ill-formed description: info.deps: Input "
                  "should be a valid list")
    assert run_main("gc", store=tmp_path / "store-b").code == 0


def test_zstd_bomb_honestly_described_is_refused_before_download(keys, store_a, pushed,
                                                                  tmp_path: Path):
    """256 MiB of zeros in a few KB, described as what it is: refused by the expansion
    limit before a byte is fetched (the store is a small tmpfs: a regression fills that)."""
    folder = tmp_path / "shared-cache"
    _push_folder(pushed, folder)
    size = 256 << 20
    desc = json.loads(_description(folder).read_text())
    files = {**desc["files"], "segment.cpio.z": {"type": "file", "mode": 0o444, "size": size,
                                                 "sha256": zeros_sha256(size)}}
    listing = (store_a[1] / "paths.json").read_bytes()
    members = [Member("./", "dir", 0o555), Member("./paths.json", data=listing),
               Member("./segment.cpio.z", data=size)]
    resign(_description(folder), keys / "ci.secret",
           lambda d: with_archive(folder, d, members, files))
    with small_disk(tmp_path / "small", mib=96) as disk:
        r, killed = build_watched(tmp_path, str(folder), keys, store=disk / "store-b")
        # The segment and the listing of what it holds (whatever the system generates).
        built_locally(r, killed, tmp_path, store_a,
                      f"it would unpack to {size + len(listing):,} bytes",
                      store=disk / "store-b")
