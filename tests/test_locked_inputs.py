"""Locked inputs: every source is fetched by its exact version and sha256, whatever the
archive offers that day. A Debian repository made by the test (tests/apt_repo.py) holds
two versions of a binary package (the kernel tarball's kind) and of source packages
(busybox's, dropbear's and musl's kind); embedbuild's private apt setup is pointed at it with
EMBEDBUILD_APT_SOURCES, so nothing here asks the real archive (but the slow test at the
end, which fetches the real locked kernel package)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from apt_repo import AptRepo, served, sha256, tarball
from conftest import ROOT, cli, free_port, run_main

from embedbuild.debian_archive import compare_versions
from embedbuild.lockfile import set_table

KERNEL_MEMBER = "usr/src/eb-linux.tar.xz"
# The lock's other sources qemu-arm-virt needs, by lock name: the test repository's package.
OTHERS = {"u-boot-2023.01": "ebuboot", "zlib": "ebzlib", "libyaml": "eblibyaml",
          "libubootenv": "eblibubootenv"}


def _payload(tag: str) -> bytes:
    return tarball({"top/version": tag.encode(), "top/Makefile": b"all:\n"}, "xz")


@pytest.fixture
def repo(tmp_path: Path) -> AptRepo:
    """Two versions of each package; the newer is what the archive offers first."""
    r = AptRepo(tmp_path / "repo")
    r.root.mkdir()
    for v in ("1.0-1", "1.0-2"):
        r.add_deb("eb-linux-source", v, {KERNEL_MEMBER: _payload(f"kernel {v}")})
    # Revisions of one upstream release share its orig tarball (as Debian's do).
    r.add_source("ebbusybox", "1:1.0-1", tarball({"bb/version": b"busybox 1.0"}))
    r.add_source("ebbusybox", "1:1.0-2", tarball({"bb/version": b"busybox 1.0"}))
    r.add_source("ebdropbear", "2.0-1", tarball({"db/version": b"dropbear 2.0"}))
    r.add_source("ebmusl", "1.2-1", tarball({"musl/version": b"musl 1.2"}))
    # The board's other inputs (its U-Boot, the libraries of fw_setenv), one version each.
    for lock_name, pkg in OTHERS.items():
        r.add_source(pkg, "1.0-1", tarball({f"{lock_name}/version": pkg.encode()}))
    return r


def _lock_entries(repo: AptRepo) -> dict[str, dict]:
    """Lock entries at the OLDER versions (while the newer is current)."""
    deb = subprocess.run(["dpkg-deb", "--fsys-tarfile", repo.debs[("eb-linux-source", "1.0-1")]],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(deb)) as tf:
        member = tf.extractfile(f"./{KERNEL_MEMBER}").read()  # type: ignore[union-attr]
    orig = (repo.root / "ebbusybox_1.0.orig.tar.gz").read_bytes()
    dorig = (repo.root / "ebdropbear_2.0.orig.tar.gz").read_bytes()
    morig = (repo.root / "ebmusl_1.2.orig.tar.gz").read_bytes()
    return {
        "linux-6.1": {"deb": "eb-linux-source", "version": "1.0-1", "member": KERNEL_MEMBER,
                      "sha256": sha256(member), "size": len(member), "strip": 1},
        "busybox": {"debian": "ebbusybox", "version": "1:1.0-1",
                    "filename": "ebbusybox_1.0.orig.tar.gz", "sha256": sha256(orig),
                    "size": len(orig)},
        "dropbear": {"debian": "ebdropbear", "version": "2.0-1",
                     "filename": "ebdropbear_2.0.orig.tar.gz", "sha256": sha256(dorig),
                     "size": len(dorig)},
        "musl": {"debian": "ebmusl", "version": "1.2-1", "filename": "ebmusl_1.2.orig.tar.gz",
                 "sha256": sha256(morig), "size": len(morig)},
        **{name: {"debian": pkg, "version": "1.0-1", "filename": f"{pkg}_1.0.orig.tar.gz",
                  "sha256": sha256(data := (repo.root / f"{pkg}_1.0.orig.tar.gz").read_bytes()),
                  "size": len(data)} for name, pkg in OTHERS.items()},
    }


@pytest.fixture
def lab(tmp_path: Path, repo: AptRepo, boards: Path) -> dict:
    """The project's boards with a lock naming the test repository's packages, and the
    environment that points embedbuild at that repository and at empty downloads."""
    lock = boards / "common" / "lock.toml"
    text = lock.read_text()
    for name, values in _lock_entries(repo).items():
        text = set_table(text, ("sources", name), values, replace=True)
    lock.write_text(text)
    env = {"EMBEDBUILD_APT_SOURCES": str(repo.sources_file(tmp_path / "apt.list")),
           "EMBEDBUILD_DOWNLOADS": str(tmp_path / "downloads")}
    return {"boards": boards, "lock": lock, "env": env, "store": tmp_path / "store",
            "board": str(boards / "qemu-arm-virt"), "downloads": tmp_path / "downloads"}


def _fetched(downloads: Path) -> list[Path]:
    """The verified files in a downloads cache (apt's private state left aside)."""
    return sorted(p for p in downloads.glob("*/*") if not p.parent.name.startswith("."))


def _member(path: Path) -> str:
    with tarfile.open(path) as tf:
        return tf.extractfile("top/version").read().decode()  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["folder", "http"])
def test_locked_older_versions_are_fetched_while_newer_are_current(lab, repo, tmp_path, how):
    env = dict(lab["env"])
    with served(repo.root) as url:
        if how == "http":
            env["EMBEDBUILD_APT_SOURCES"] = str(repo.sources_file(tmp_path / "h.list", url))
        r = run_main("sources", "fetch", lab["board"], store=lab["store"], env=env)
    assert r.code == 0, r.err
    assert "linux-6.1: fetched Debian package eb-linux-source=1.0-1" in r.out
    assert "busybox: fetched Debian source package ebbusybox=1:1.0-1" in r.out
    files = {p.name: p for p in _fetched(lab["downloads"])}
    assert _member(files["eb-linux.tar.xz"]) == "kernel 1.0-1"  # not 1.0-2, the current one
    assert set(files) == {"eb-linux.tar.xz", "ebbusybox_1.0.orig.tar.gz",
                          "ebdropbear_2.0.orig.tar.gz", "ebmusl_1.2.orig.tar.gz",
                          *(f"{pkg}_1.0.orig.tar.gz" for pkg in OTHERS.values())}
    # Nothing of apt's work is left beside the verified files.
    assert not list(lab["downloads"].glob("tmp*"))


def test_a_locked_version_that_is_gone_is_one_clear_error(lab, repo):
    deb = repo.debs[("eb-linux-source", "1.0-1")]
    repo.remove("eb-linux-source", "1.0-1")
    deb.unlink()
    r = cli("sources", "fetch", lab["board"], store=lab["store"], env=lab["env"])
    assert r.code == 1 and "Traceback" not in r.err
    err = " ".join(r.err.split())
    assert "does not offer package eb-linux-source=1.0-1 (any more)" in err
    assert "(it offers: 1.0-2)" in err
    assert "embedbuild sources update" in err
    assert not any(p.name == "eb-linux.tar.xz" for p in _fetched(lab["downloads"]))


def test_a_file_whose_hash_differs_is_refused_and_not_kept(lab):
    text = lab["lock"].read_text()
    good = tomllib.loads(text)["sources"]["busybox"]["sha256"]
    lab["lock"].write_text(text.replace(good, "0" * 64))
    r = run_main("build", lab["board"], "--step", "busybox-src", "--out-link",
                 str(lab["store"].parent / "result"), store=lab["store"], env=lab["env"])
    assert r.code == 1 and "Traceback" not in r.err
    assert "sha256 mismatch for Debian source package ebbusybox=1:1.0-1" in r.err
    assert not _fetched(lab["downloads"])
    assert not list(lab["store"].glob("*-src"))


def test_sources_update_moves_the_lock_and_check_reports_it(lab, repo):
    # A new upstream release renames the orig tarball: the lock follows it.
    repo.add_source("ebdropbear", "2.1-1", tarball({"db/version": b"dropbear 2.1"}))
    before = lab["lock"].read_bytes()
    r = run_main("sources", "update", "--check", "--lock", str(lab["lock"]), store=lab["store"],
                 env=lab["env"])
    assert r.code == 1, r.err
    assert "linux-6.1: eb-linux-source 1.0-1 -> 1.0-2" in r.out
    assert "busybox: ebbusybox 1:1.0-1 -> 1:1.0-2" in r.out
    assert "dropbear: ebdropbear 2.0-1 -> 2.1-1" in r.out
    # This archive has no libnl3: said, and the entry kept.
    assert "libnl3: the archive offers no libnl3 at all: kept at" in r.out
    assert lab["lock"].read_bytes() == before  # --check changes nothing
    r = run_main("sources", "update", "--lock", str(lab["lock"]), store=lab["store"],
                 env=lab["env"])
    assert r.code == 0, r.err
    assert "linux-6.1: eb-linux-source 1.0-1 -> 1.0-2" in r.out
    text = lab["lock"].read_text()
    lock = tomllib.loads(text)["sources"]
    assert lock["linux-6.1"]["version"] == "1.0-2"
    assert lock["dropbear"]["filename"] == "ebdropbear_2.1.orig.tar.gz"
    fetched = {p.name: p for p in _fetched(lab["downloads"])}
    new_kernel = next(p for p in _fetched(lab["downloads"])
                      if p.parent.name == lock["linux-6.1"]["sha256"])
    assert _member(new_kernel) == "kernel 1.0-2"
    assert sha256(fetched["ebdropbear_2.1.orig.tar.gz"].read_bytes()) == \
        lock["dropbear"]["sha256"]
    assert "# Linux 6.1 with Debian's patches" in text  # comments kept
    r = run_main("sources", "update", "--check", "--lock", str(lab["lock"]), store=lab["store"],
                 env=lab["env"])
    assert r.code == 0, r.out + r.err
    # The moved lock builds: the new kernel tarball is the one fetched (already here).
    r = run_main("sources", "fetch", lab["board"], store=lab["store"], env=lab["env"])
    assert r.code == 0 and "eb-linux-source=1.0-2" in r.out and "is here" in r.out


def test_a_new_entry_is_locked_by_sources_update(lab, repo):
    repo.add_source("ebiw", "5.19-1", tarball({"iw/version": b"iw 5.19"}))
    with open(lab["lock"], "a") as f:
        f.write('\n# iw, for moving a radio into a namespace\n[sources.ebiw]\ndebian = "ebiw"\n'
                'filename = "ebiw_5.19.orig.tar.gz"\n')
    r = run_main("show", lab["board"], store=lab["store"], env=lab["env"])
    assert r.code == 1 and "sources.ebiw: not locked yet" in r.err and "sources update" in r.err
    r = run_main("sources", "update", "ebiw", "--check", "--lock", str(lab["lock"]),
                 store=lab["store"], env=lab["env"])
    assert r.code == 1 and "ebiw: ebiw (not locked) -> 5.19-1" in r.out, r.out + r.err
    r = run_main("sources", "update", "ebiw", "--lock", str(lab["lock"]), store=lab["store"],
                 env=lab["env"])
    assert r.code == 0, r.err
    entry = tomllib.loads(lab["lock"].read_text())["sources"]["ebiw"]
    orig = (repo.root / "ebiw_5.19.orig.tar.gz").read_bytes()
    assert (entry["version"], entry["sha256"], entry["size"]) == ("5.19-1", sha256(orig),
                                                                  len(orig))
    assert "# iw, for moving a radio into a namespace" in lab["lock"].read_text()
    assert run_main("show", lab["board"], store=lab["store"], env=lab["env"]).code == 0


def test_a_filled_downloads_cache_builds_with_no_network(lab, tmp_path):
    assert run_main("sources", "fetch", lab["board"], store=lab["store"], env=lab["env"]).code == 0
    # The archive is now a closed port on loopback: nothing can be fetched.
    offline = tmp_path / "offline.list"
    offline.write_text(f"deb [trusted=yes] http://127.0.0.1:{free_port()} ./\n")
    env = {**lab["env"], "EMBEDBUILD_APT_SOURCES": str(offline)}
    r = run_main("sources", "fetch", lab["board"], store=lab["store"], env=env)
    assert r.code == 0, r.err
    assert r.out.count("is here") == 4 + len(OTHERS)
    r = run_main("build", lab["board"], "--step", "busybox-src", "--out-link", str(tmp_path / "bb"),
                 store=lab["store"], env=env)
    assert r.code == 0, r.err
    assert (tmp_path / "bb" / "version").read_bytes() == b"busybox 1.0"


def _cache(tmp_path: Path, src: dict, data: bytes) -> dict[str, str]:
    """A folder cache holding (what it claims is) src's file; the environment naming it.
    Downloads need no signature, but a configured cache needs a trusted key."""
    from embedbuild.cache.keys import keygen

    _, public = keygen("cache-key", tmp_path)
    cache = tmp_path / "cache"
    (cache / "sources").mkdir(parents=True)
    (cache / "sources" / src["sha256"]).write_bytes(data)
    return {"EMBEDBUILD_SUBSTITUTERS": str(cache), "EMBEDBUILD_TRUSTED_KEYS": str(public)}


def test_a_download_debian_dropped_comes_from_a_binary_cache(lab, repo, tmp_path):
    entry = _lock_entries(repo)["busybox"]
    orig = (repo.root / entry["filename"]).read_bytes()
    cache = _cache(tmp_path, entry, orig)
    for v in ("1:1.0-1", "1:1.0-2"):
        repo.remove("ebbusybox", v)
    r = run_main("sources", "fetch", lab["board"], store=lab["store"],
                 env={**lab["env"], **cache})
    assert r.code == 0, r.err
    assert "busybox: fetched Debian source package ebbusybox=1:1.0-1" in r.out
    assert sha256((lab["downloads"] / entry["sha256"] / entry["filename"]).read_bytes()) == \
        entry["sha256"]


@pytest.mark.parametrize("hostile", ["wrong bytes", "more bytes than locked"])
def test_a_hostile_cache_is_refused_and_debian_asked(lab, repo, tmp_path, hostile):
    entry = _lock_entries(repo)["busybox"]
    cache = (_cache(tmp_path, entry, b"not busybox") if hostile == "wrong bytes"
             else _cache(tmp_path, entry, b"\0" * (64 << 20)))
    r = run_main("sources", "fetch", lab["board"], store=lab["store"],
                 env={**lab["env"], **cache})
    assert r.code == 0 and "Traceback" not in r.err, r.err
    assert r.err.count(f"source {entry['filename']} refused") == 1
    assert "busybox: fetched Debian source package ebbusybox=1:1.0-1" in r.out
    assert sha256((lab["downloads"] / entry["sha256"] / entry["filename"]).read_bytes()) == \
        entry["sha256"]


def test_cache_push_carries_the_downloads_a_result_was_built_from(lab, tmp_path):
    out = tmp_path / "bb"
    r = run_main("build", lab["board"], "--step", "busybox-src", "--out-link", str(out),
                 store=lab["store"], env=lab["env"])
    assert r.code == 0, r.err
    assert run_main("cache", "keygen", "k", store=lab["store"], cwd=tmp_path).code == 0
    cache = tmp_path / "pushed"
    r = run_main("cache", "push", str(cache), str(out), "--key", str(tmp_path / "k.secret"),
                 store=lab["store"], env=lab["env"])
    assert r.code == 0, r.err
    sha = tomllib.loads(lab["lock"].read_text())["sources"]["busybox"]["sha256"]
    assert "pushed source ebbusybox_1.0.orig.tar.gz" in r.out
    assert sha256((cache / "sources" / sha).read_bytes()) == sha


def test_toolchain_drift_is_one_line_and_doctor_says_what_it_costs(lab, tmp_path):
    text = lab["lock"].read_text()
    locked = tomllib.loads(text)["toolchains"]["arm-linux-gnueabihf"]
    pkg = next(p for p in locked if p.startswith("gcc-"))
    lab["lock"].write_text(text.replace(f'{pkg} = "{locked[pkg]}"', f'{pkg} = "0.1-1"'))
    r = run_main("build", lab["board"], "--step", "busybox-src", "--out-link", str(tmp_path / "bb"),
                 store=lab["store"], env=lab["env"])
    assert r.code == 0, r.err
    lines = [line for line in r.err.splitlines() if "differs from the lock" in line]
    assert len(lines) == 1 and f"{pkg} " in lines[0] and "(lock: 0.1-1)" in lines[0]
    r = run_main("doctor", lab["board"], store=lab["store"], env=lab["env"])
    out = " ".join(r.out.split())
    assert "note toolchain arm-linux-gnueabihf against the lock" in out
    assert "get other store keys" in out and re.search(rf"apt-get install (\S+ )*{pkg}=0\.1-1", out)


def test_toolchain_versions_are_part_of_every_compile_key(lab):
    from embedbuild.load import load_board
    from embedbuild.plan import plan_board

    steps = plan_board(load_board(lab["board"])).result.walk()
    compiles = [s for s in steps if "toolchain" in s.inputs]
    assert compiles
    for s in compiles:
        debian = s.inputs["toolchain"]["debian"]
        assert any(p.startswith("gcc-") for p in debian), s.name


VERSIONS = ["1.0", "1.0-1", "1.0-2", "1:0.9", "1.0~rc1", "1.0+deb12u1", "1.0-1+deb12u1+b1",
            "6.1.192-2", "6.1.192-3", "6.1.20-1", "2023.01+dfsg-2+deb12u3", "2:1.0", "1.0a",
            "1.0.1", "1.0~", "1.0-1~bpo12+1", "0:1.0"]


def test_version_order_is_dpkgs():
    # dpkg is asked once per pair; the reverse order must be the opposite answer.
    for i, a in enumerate(VERSIONS):
        for b in VERSIONS[i:]:
            want = -1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode \
                == 0 else 1 if subprocess.run(["dpkg", "--compare-versions", a, "gt", b]
                                              ).returncode == 0 else 0
            assert compare_versions(a, b) == want, (a, b)
            assert compare_versions(b, a) == -want, (b, a)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="hiding /usr/src needs a mount namespace (root)")
def test_the_real_locked_kernel_is_fetched_whatever_the_machine_installed(tmp_path):
    """The real lock's kernel package, from the real archive, with the machine's
    /usr/src hidden (as on a fresh machine, or one with another linux-source-6.1)."""
    lock = tomllib.loads((ROOT / "boards" / "common" / "lock.toml").read_text())
    want = lock["sources"]["linux-6.1"]
    downloads = tmp_path / "downloads"
    embedbuild = Path(sys.executable).parent / "embedbuild"
    script = ('mount -t tmpfs none /usr/src && test -z "$(ls -A /usr/src)" && '
              f"EMBEDBUILD_DOWNLOADS={downloads} {embedbuild} sources fetch qemu-arm-virt "
              "--offline")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"linux-6.1: fetched Debian package linux-source-6.1={want['version']}" in p.stdout
    got = downloads / want["sha256"] / "linux-source-6.1.tar.xz"
    with open(got, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == want["sha256"]
    assert got.stat().st_size == want["size"]
    assert re.fullmatch(r"[0-9a-f]{64}", want["sha256"])
