"""The compiler cache (ccache) with the real ccache and a real cross compiler on one small
C file: compiles in another store hit, the bytes do not depend on the cache, a team's
remote storage is used, and a machine without ccache builds with one warning. A build
against a libc recipe's staging sysroot (``--sysroot``, ``-specs``, ``-I`` into the
store's work folder) hits from another store too, and its specs file counts by content."""

from __future__ import annotations

import dataclasses
import http.server
import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from embedbuild import compiler_cache, doctor
from embedbuild.buildsys.common import cross_env, stage_sysroot
from embedbuild.buildsys.libc import SPECS, specs
from embedbuild.compiler_cache import CompilerCache, as_compiled
from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Arch
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.store import Store
from embedbuild.toolchain import Toolchain

CC = "arm-linux-gnueabihf-gcc"
SOURCE = b"""\
#include "greeting.h"
const char *where = __FILE__;
const char *greeting(void) { return GREETING; }
"""


def steps() -> tuple[Step, Step]:
    """A source step (a C file and a header in the store) and a step compiling it the
    way kbuild does: from a scratch folder, absolute paths, debug info, prefix maps."""

    def write(ctx: Context) -> None:
        tree = ctx.output("tree")
        (tree / "include").mkdir(parents=True)
        (tree / "include" / "greeting.h").write_text('#define GREETING "hello"\n')
        (tree / "greeting.c").write_bytes(SOURCE)

    def compile_(ctx: Context) -> None:
        src, b = ctx.input("src", "tree"), ctx.scratch
        ctx.run.run([CC, "-c", "-g", "-O2", f"-ffile-prefix-map={src}=.",
                     f"-ffile-prefix-map={b}=.", f"-ffile-prefix-map={as_compiled(src, b)}=.",
                     f"-I{src}/include", src / "greeting.c", "-o", b / "greeting.o"], cwd=b)
        shutil.copyfile(b / "greeting.o", ctx.output("object"))

    src = Step("test-src", "greeting-src", 1, {"source": SOURCE.decode()}, write,
               outputs={"tree": "tree"})
    obj = Step("test-cc", "greeting", 1, {"cc": CC}, compile_, deps={"src": src},
               outputs={"object": "greeting.o"}, compilers=(CC,))
    return src, obj


def build_log(store: Store, step: Step) -> str:
    return (store.meta_path(store.item_path(step.key, step.name)) / "build.log").read_text()


def compiled(store_root: Path, cache: CompilerCache | None) -> tuple[bytes, str]:
    """Realise the compile step into a new store: (the object's bytes, its build log)."""
    store = Store(store_root)
    _, obj = steps()
    paths = realise(store, obj, ccache=cache)
    return (paths[obj.key] / "greeting.o").read_bytes(), build_log(store, obj)


def test_a_compile_in_another_store_hits_and_gives_the_same_bytes(tmp_path: Path):
    cache = CompilerCache(shutil.which("ccache"), tmp_path / "ccache")
    first, log1 = compiled(tmp_path / "a" / "store", cache)
    assert "ccache: 0 hits" in log1 and "1 misses" in log1, log1
    # Deeper and with another name: every absolute path differs.
    second, log2 = compiled(tmp_path / "b" / "a-longer-name" / "store", cache)
    assert "ccache: 1 hits (100.0% of cacheable), 0 of them remote, 0 misses" in log2, log2
    # ccache's own account follows ours in the log.
    assert "Cacheable calls:" in log2
    plain, log3 = compiled(tmp_path / "c" / "store", None)
    assert "ccache" not in log3
    assert first == second == plain
    assert b"./greeting.c" in plain and str(tmp_path).encode() not in plain


def test_remote_storage_serves_a_machine_with_an_empty_cache(tmp_path: Path):
    remote = f"file:{tmp_path / 'team'}"
    one = CompilerCache(shutil.which("ccache"), tmp_path / "ccache-one", remote)
    assert one.setting("remote_storage") == remote  # what we configure reaches ccache
    first, log1 = compiled(tmp_path / "one" / "store", one)
    assert "1 misses" in log1
    assert any((tmp_path / "team").rglob("*")), "nothing was written to the remote storage"
    other = CompilerCache(shutil.which("ccache"), tmp_path / "ccache-two", remote)
    second, log2 = compiled(tmp_path / "two" / "store", other)
    assert "ccache: 1 hits (100.0% of cacheable), 1 of them remote" in log2, log2
    assert first == second


class _Objects(http.server.BaseHTTPRequestHandler):
    """A team's HTTP cache in miniature: GET, HEAD and PUT of whole objects, kept in
    ``self.server.objects`` (ccache's http storage needs nothing more)."""

    def do_GET(self) -> None:
        self._get(body=True)

    def do_HEAD(self) -> None:
        self._get(body=False)

    def do_PUT(self) -> None:
        self.server.objects[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _get(self, body: bool) -> None:
        data = self.server.objects.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_an_http_remote_storage_serves_a_machine_with_an_empty_cache(tmp_path: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Objects)
    server.objects = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ccache"
        first, _ = compiled(tmp_path / "one" / "store",
                            CompilerCache(shutil.which("ccache"), tmp_path / "cc1", url))
        assert server.objects, "ccache stored nothing on the HTTP server"
        second, log = compiled(tmp_path / "two" / "store",
                               CompilerCache(shutil.which("ccache"), tmp_path / "cc2", url))
    finally:
        server.shutdown()
        server.server_close()
    assert "ccache: 1 hits (100.0% of cacheable), 1 of them remote" in log, log
    assert first == second


def test_a_remote_storage_that_is_down_costs_nothing_but_its_hits(tmp_path: Path):
    # Nothing listens on the discard port of loopback: refused at once.
    down = CompilerCache(shutil.which("ccache"), tmp_path / "ccache", "http://127.0.0.1:9/c")
    obj, log = compiled(tmp_path / "s", down)
    assert "1 misses" in log
    assert obj == compiled(tmp_path / "plain", None)[0]


def test_a_cache_folder_that_cannot_be_made_is_one_error(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    cache = CompilerCache(shutil.which("ccache"), tmp_path / "file" / "ccache")
    with pytest.raises(EmbedbuildError, match="compiler cache folder cannot be made") as e:
        compiled(tmp_path / "s", cache)
    assert "--no-ccache" in e.value.hint
    src, _ = steps()
    assert [p.name for p in Store(tmp_path / "s").items()] == [f"{src.key[:32]}-greeting-src"]


def test_configured_from_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EMBEDBUILD_CCACHE_DIR", str(tmp_path / "cc"))
    monkeypatch.setenv("EMBEDBUILD_CCACHE_REMOTE", "http://ccache.example:8080/cache")
    monkeypatch.delenv("EMBEDBUILD_NO_CCACHE", raising=False)
    cache = compiler_cache.configured()
    assert cache is not None and cache.dir == tmp_path / "cc"
    assert cache.setting("remote_storage") == "http://ccache.example:8080/cache"
    assert compiler_cache.configured(enabled=False) is None
    monkeypatch.setenv("EMBEDBUILD_NO_CCACHE", "1")
    assert compiler_cache.configured() is None


def test_without_ccache_installed_one_warning_and_a_plain_build(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(shutil.which(CC)).parent.parent / "nonexistent"))
    monkeypatch.delenv("EMBEDBUILD_NO_CCACHE", raising=False)
    warnings: list[str] = []
    assert compiler_cache.configured(warn=warnings.append) is None
    assert warnings == [compiler_cache.MISSING]
    found = {f.what: f for f in doctor.findings(Store(tmp_path / "s"))}["compiler cache"]
    assert not found.ok and "ccache not found" in found.detail and "tools/setup" in found.fix


def test_the_cache_is_no_input_of_a_step():
    _, obj = steps()
    assert dataclasses.replace(obj, compilers=()).key == obj.key


@pytest.mark.parametrize("path, cwd, expected", [
    ("/s/27-linux-src", "/s/.tmp/90-kernel.7/out.scratch", "../../../27-linux-src"),
    ("/s/.tmp/90-kernel.7/out.scratch/include", "/s/.tmp/90-kernel.7/out.scratch", "include"),
])
def test_as_compiled_is_what_ccache_makes_of_a_path(path: str, cwd: str, expected: str):
    assert as_compiled(Path(path), Path(cwd)) == expected


LIBC_SOURCE = b"""\
#include <greeting.h>
const char *greeting(void) { return GREETING; }
"""


def libc_steps() -> tuple[Step, Step]:
    """A libc step staging a header and the real specs file, and a program step compiling
    against it as the make recipes do: the staging sysroot merged into the scratch space,
    the cross environment's CC and CPPFLAGS, from a folder below the scratch space."""
    tc = Toolchain("arm-linux-gnueabihf-", Arch.arm)

    def stage(ctx: Context) -> None:
        root = ctx.output("stage")
        (root / "include").mkdir(parents=True)
        (root / "include" / "greeting.h").write_text('#define GREETING "hello"\n')
        (root / SPECS).parent.mkdir(parents=True)
        (root / SPECS).write_text(specs())

    def write(ctx: Context) -> None:
        ctx.output("tree").mkdir()
        (ctx.output("tree") / "greeting.c").write_bytes(LIBC_SOURCE)

    def compile_(ctx: Context) -> None:
        env = cross_env(tc, stage_sysroot(ctx), libc=True)
        b = ctx.scratch / "build"
        b.mkdir()
        ctx.run.run([*shlex.split(env["CC"]), *shlex.split(env["CPPFLAGS"]), "-Os", "-c",
                     ctx.input("src", "tree") / "greeting.c", "-o", "greeting.o"],
                    cwd=b, env=env)
        shutil.copyfile(b / "greeting.o", ctx.output("object"))

    libc = Step("test-libc", "libc", 1, {"specs": specs()}, stage, outputs={"stage": "stage"})
    src = Step("test-src", "greeting-src", 1, {"source": LIBC_SOURCE.decode()}, write,
               outputs={"tree": "tree"})
    obj = Step("test-cc", "greeting", 1, {"cc": tc.cc}, compile_,
               deps={"src": src, "lib-libc": libc}, outputs={"object": "greeting.o"},
               compilers=tc.compilers)
    return libc, obj


def test_a_build_against_a_staged_libc_hits_from_another_store(tmp_path: Path):
    """Each store makes its own libc item (another specs file time, other absolute paths
    everywhere): the second store's compile still hits, and gives the same bytes."""
    cache = CompilerCache(shutil.which("ccache"), tmp_path / "ccache")
    objects, logs = [], []
    for root, cc in ((tmp_path / "a" / "store", cache),
                     (tmp_path / "b" / "a-longer-name" / "store", cache),
                     (tmp_path / "c" / "store", None)):
        store = Store(root)
        _, obj = libc_steps()
        objects.append((realise(store, obj, ccache=cc)[obj.key] / "greeting.o").read_bytes())
        logs.append(build_log(store, obj))
    assert "ccache: 0 hits" in logs[0] and "1 misses" in logs[0], logs[0]
    assert "ccache: 1 hits (100.0% of cacheable), 0 of them remote, 0 misses" in logs[1], logs[1]
    assert objects[0] == objects[1] == objects[2]
    assert str(tmp_path).encode() not in objects[0]


def test_a_specs_file_counts_by_content_not_by_size_and_time(tmp_path: Path):
    """Two specs files of one size and one modification time (as items fetched from a
    binary cache have) but other contents: the second compile must not get the first's
    object."""
    cache = CompilerCache(shutil.which("ccache"), tmp_path / "ccache")
    objects = []
    for who in ("1", "2"):
        work = tmp_path / f"build{who}"
        sysroot = work / "sysroot"
        (sysroot / SPECS).parent.mkdir(parents=True)
        (sysroot / SPECS).write_text(f"{specs()}*cpp:\n+ -DWHO={who}\n\n")
        os.utime(sysroot / SPECS, ns=(0, 0))
        (work / "who.c").write_text("int who = WHO;\n")
        env = {**os.environ, **cache.prepare(work / "cc", ("arm-linux-gnueabihf-gcc",),
                                             tmp_path)}
        cc = shlex.split(cross_env(Toolchain("arm-linux-gnueabihf-", Arch.arm), sysroot,
                                   libc=True)["CC"])
        subprocess.run([*cc, "-c", "who.c", "-o", "who.o"], cwd=work, env=env, check=True)
        objects.append((work / "who.o").read_bytes())
    assert objects[0] != objects[1]


SHADOWED = b"""\
#include <greeting.h>
const char *greeting(void) { return GREETING; }
"""


def shadowing_steps(libs: dict[str, str]) -> Step:
    """A program step whose staging sysroot merges one library step per entry of
    ``libs`` (the header ``NAME.h`` holding its text), compiling a source that includes
    greeting.h from the sysroot's folder first, then from its own tree."""

    def write(ctx: Context) -> None:
        (ctx.output("tree") / "include").mkdir(parents=True)
        (ctx.output("tree") / "include" / "greeting.h").write_text('#define GREETING "own"\n')
        (ctx.output("tree") / "greeting.c").write_bytes(SHADOWED)

    def stager(name: str, text: str):
        def stage(ctx: Context) -> None:
            (ctx.output("stage") / "include").mkdir(parents=True)
            (ctx.output("stage") / "include" / f"{name}.h").write_text(text)
        return stage

    def compile_(ctx: Context) -> None:
        sysroot, src = stage_sysroot(ctx), ctx.input("src", "tree")
        ctx.run.run([CC, "-c", "-Os", f"-I{sysroot}/include", f"-I{src}/include",
                     src / "greeting.c", "-o", ctx.output("object")], cwd=ctx.scratch)

    src = Step("test-src", "greeting-src", 1, {"source": SHADOWED.decode()}, write,
               outputs={"tree": "tree"})
    deps: dict[str, Step] = {"src": src}
    for name, text in libs.items():
        deps[f"lib-{name}"] = Step("test-lib", f"lib{name}", 1, {"text": text}, stager(name, text),
                                   outputs={"stage": "stage"})
    return Step("test-cc", "greeting", 1, {"libs": sorted(libs)}, compile_, deps=deps,
                outputs={"object": "greeting.o"}, compilers=(CC,))


def test_a_header_staged_before_the_one_a_cached_compile_read_is_seen(tmp_path: Path):
    """ccache's direct mode checks only the headers a cached compile read: a library
    staging a header of that name in the sysroot (searched first) must not get the
    object compiled against the other one."""
    cache = CompilerCache(shutil.which("ccache"), tmp_path / "ccache")
    objects = []
    for root, libs, cc in (
            (tmp_path / "a", {"other": "int other;\n"}, cache),
            (tmp_path / "b", {"other": "int other;\n",
                              "greeting": '#define GREETING "staged"\n'}, cache),
            (tmp_path / "c", {"other": "int other;\n",
                              "greeting": '#define GREETING "staged"\n'}, None)):
        step = shadowing_steps(libs)
        objects.append((realise(Store(root), step, ccache=cc)[step.key] / "greeting.o")
                       .read_bytes())
    assert b"own" in objects[0] and b"staged" in objects[1]
    assert objects[1] == objects[2]
