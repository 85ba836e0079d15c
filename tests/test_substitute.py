"""Substitution inside realise, with small synthetic steps and a folder cache: what is
fetched, what is built, and in which order the graph is walked; and every way a hostile
cache (HTTP on loopback, or a folder) could make a build hang, fill the disk or take
what it should not, bounded and refused with the item built locally."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cache_server import tree_bytes
from hostile import HostileServer, Member, resign, small_disk, with_archive, zeros_sha256

from embedbuild.cache.keys import keygen, load_public, load_secret
from embedbuild.cache.push import push
from embedbuild.cache.remote import Remote
from embedbuild.cache.substitute import Substituters
from embedbuild.scheduler import Events, realise
from embedbuild.step import Context, Step
from embedbuild.store import Store


def _graph(calls: list[str]) -> Step:
    def build(ctx: Context) -> None:
        calls.append(ctx.step.name)
        (ctx.out / "out.txt").write_text(
            ctx.step.name + "".join((d / "out.txt").read_text() for d in ctx.deps.values()))

    leaf = Step("t", "leaf", 1, {}, build)
    mid = Step("t", "mid", 1, {}, build, deps={"leaf": leaf})
    return Step("t", "top", 1, {}, build, deps={"mid": mid})


class _Seen(Events):
    def __init__(self) -> None:
        self.built: list[str] = []
        self.fetched: list[str] = []

    def started(self, step: Step) -> None:
        self.built.append(step.name)

    def substituted(self, step: Step, seconds: float, cache: str) -> None:
        self.fetched.append(step.name)


def _cache(tmp_path: Path) -> tuple[Substituters, list[str]]:
    """A folder cache holding a fresh build of the graph (pushing the top pushes its
    closure), its substituters and the warnings they give."""
    secret, public = keygen("t", tmp_path)
    a = Store(tmp_path / "a")
    top = _graph([])
    paths = realise(a, top)
    folder = Remote(str(tmp_path / "cache"))
    assert push(a, folder, [paths[top.key]], load_secret(secret), lambda line: None) == (3, 0)
    warnings: list[str] = []
    return Substituters([folder], {"t": load_public(public)}, warnings.append), warnings


def test_a_fetched_top_needs_nothing_below_it(tmp_path: Path):
    subs, warnings = _cache(tmp_path)
    calls: list[str] = []
    seen = _Seen()
    paths = realise(Store(tmp_path / "b"), _graph(calls), seen, substituters=subs)
    assert calls == [] and seen.fetched == ["top"] and warnings == []
    assert [(p / "out.txt").read_text() for p in paths.values()] == ["topmidleaf"]


def test_a_refused_top_is_built_from_fetched_dependencies(tmp_path: Path):
    subs, warnings = _cache(tmp_path)
    # The top's description is replaced by an unsigned one.
    top_key = _graph([]).key
    (tmp_path / "cache" / "items" / f"{top_key}.json").write_text("{}")
    calls: list[str] = []
    seen = _Seen()
    realise(Store(tmp_path / "b"), _graph(calls), seen, substituters=subs)
    assert calls == ["top"] and seen.fetched == ["mid"]
    assert warnings == ["cache " + str(tmp_path / "cache") + ": top refused: its description "
                        "is not signed; building it locally"]


# -- hostile caches: every byte bounded, every description validated first ----------
#
# Each test gets one warning line, the item built locally with the reference's bytes,
# nothing of the refused copy in the store; each has its own watchdog (hostile.py).


@dataclass
class _Signed:
    """A folder cache holding the graph pushed from store A, signed by a trusted key."""

    folder: Path
    secret: Path
    trusted: dict
    reference: Path  # store A's top item

    def desc(self, name: str = "top") -> Path:
        step = {s.name: s for s in _graph([]).walk()}[name]
        return self.folder / "items" / f"{step.key}.json"

    def archive(self, name: str = "top") -> str:
        return json.loads(self.desc(name).read_text())["archive"]["path"]


@pytest.fixture
def signed(tmp_path: Path) -> _Signed:
    secret, public = keygen("t", tmp_path)
    a = Store(tmp_path / "a")
    top = _graph([])
    top_item = realise(a, top)[top.key]
    folder = tmp_path / "cache"
    push(a, Remote(str(folder)), [top_item], load_secret(secret), lambda line: None)
    return _Signed(folder, secret, {"t": load_public(public)}, top_item)


def _build_b(store: Path, signed: _Signed, location: str, **kw) -> tuple[list[str], list[str],
                                                                          float]:
    """Realise the graph into store b from one cache: (warnings, steps built, seconds)."""
    warnings: list[str] = []
    calls: list[str] = []
    subs = Substituters([Remote(location, timeout=kw.pop("timeout", 5))], signed.trusted,
                        warnings.append, **kw)
    t0 = time.monotonic()
    top = _graph(calls)
    paths = realise(Store(store), top, substituters=subs)
    seconds = time.monotonic() - t0
    assert tree_bytes(paths[top.key]) == tree_bytes(signed.reference)
    return warnings, calls, seconds


def _clean(store: Path) -> None:
    """Nothing of a refused copy is left: no work folder, every item intact."""
    s = Store(store)
    assert list((store / ".tmp").iterdir()) == []
    assert s.verify() == []


HTTP_ATTACKS = {
    # (which file, how it is served): what the warning says
    ("archive", "endless"): "its archive is larger than the {size:,} bytes its description says",
    ("archive", "huge-length"): "its archive is larger than the {size:,} bytes its description",
    ("description", "endless"): "its description is larger than the largest description taken",
    ("description", "slow"): "its description is too slow: not complete within the deadline "
                             "for one item (0.5 s)",
    ("description", "slow-headers"): "its description is too slow: no complete answer: not "
                                     "complete within the deadline for one item (0.5 s)",
    ("archive", "slow"): "its archive is too slow: not complete within the deadline for one "
                         "item (0.5 s)",
}


@pytest.mark.parametrize("attack", HTTP_ATTACKS, ids="-".join)
def test_hostile_http_cache_is_bounded(signed: _Signed, tmp_path: Path, attack):
    what, how = attack
    rel = (str(signed.desc().relative_to(signed.folder)) if what == "description"
           else signed.archive())
    size = (signed.folder / signed.archive()).stat().st_size
    # The size bounds must trip on their own, however slowly a busy machine reads: their
    # attacks get a deadline the server's watchdog (15 s) would see overrun first.
    deadline = 0.5 if "slow" in how else 14
    with HostileServer(signed.folder, {rel: how}, max_seconds=15) as server:
        warnings, _, _ = _build_b(tmp_path / "b", signed, server.url, deadline=deadline)
    assert server.overrun == [], "the client did not stop: the server's watchdog did"
    [line] = warnings
    assert line.startswith(f"cache {server.url}: top refused: ")
    assert HTTP_ATTACKS[attack].format(size=size) in line, line
    assert line.endswith("; building it locally")
    _clean(tmp_path / "b")


def test_the_build_deadline_bounds_all_fetches(signed: _Signed, tmp_path: Path):
    with HostileServer(signed.folder, {signed.archive(): "slow"}, max_seconds=15) as server:
        warnings, calls, _ = _build_b(tmp_path / "b", signed, server.url, deadline=60,
                                      build_deadline=0.5)
    assert server.overrun == []
    [line] = warnings
    assert ("its archive is too slow: not complete within the time for all cache fetches of "
            "this build (0.5 s)") in line
    assert calls == ["leaf", "mid", "top"]  # nothing more is asked once the time is spent
    _clean(tmp_path / "b")


@pytest.mark.parametrize("what", ["description", "archive"])
def test_a_trickle_is_cut_off_by_the_rate_it_keeps(signed: _Signed, tmp_path: Path, what: str):
    """The deadline itself is far (60 s), but 10 bytes a second is far below the rate an
    item must keep after its grace (three timeouts: 1.5 s): cut off then."""
    rel = (str(signed.desc().relative_to(signed.folder)) if what == "description"
           else signed.archive())
    with HostileServer(signed.folder, {rel: "slow"}, interval=0.1, max_seconds=15) as server:
        warnings, _, _ = _build_b(tmp_path / "b", signed, server.url, deadline=60,
                                  timeout=0.5)
    # Cut off by the rate, not by the far deadline: the server's watchdog (15 s) says.
    assert server.overrun == []
    [line] = warnings
    assert (f"its {what} is too slow: slower than 64 KiB/s after the first 1.5 s: ") in line, line
    _clean(tmp_path / "b")


def _set(path: str, value) -> Callable[[dict], None]:
    def change(desc: dict) -> None:
        *parents, last = path.split("/")
        node = desc
        for p in parents:
            node = node[p]
        node[last] = value(node.get(last)) if callable(value) else value
    return change


ILL_TYPED = {
    "deps not a list": (_set("info/deps", "leaf"), "info.deps: Input should be a valid list"),
    "references not a list": (_set("references", {"a": 1}), "references: Input should be "
                              "a valid list"),
    "files entry a string": (_set("files/out.txt", "file"), "files.out.txt: Input should be "
                             "a valid dictionary"),
    "unknown entry type": (_set("files/out.txt/type", "fifo"), "files.out.txt: Input tag "
                           "'fifo' found using 'type' does not match"),
    "file size as text": (_set("files/out.txt/size", str), "files.out.txt.file.size: Input "
                          "should be a valid integer"),
    "total size as text": (_set("size", str), "size: Input should be a valid integer"),
    "archive size as text": (_set("archive/size", str), "archive.size: Input should be a "
                             "valid integer"),
    "mode as a bool": (_set("files/out.txt/mode", True), "files.out.txt.file.mode: Input "
                       "should be a valid integer"),
    "setuid mode": (_set("files/out.txt/mode", 0o4755), "files.out.txt.file.mode: Input "
                    "should be less than or equal to 511"),
    "negative size": (_set("files/out.txt/size", -1), "Input should be greater than or "
                      "equal to 0"),
    "info not an object": (_set("info", []), "info: Input should be a valid dictionary"),
    "unknown field": (_set("extra", 1), "extra: Extra inputs are not permitted"),
    "archive elsewhere": (_set("archive/path", "../../../etc/passwd"),
                          "archive path '../../../etc/passwd' is not 'archives/"),
    "archive absolute": (_set("archive/path", "/etc/passwd"), "archive path '/etc/passwd' "
                         "is not 'archives/"),
    "archive another name": (_set("archive/path", "items/x.json"), "is not 'archives/"),
    "absolute file": (lambda d: d["files"].update({"/etc/x": d["files"]["out.txt"]}),
                      "'/etc/x' is not a relative path inside the item"),
    "file outside": (lambda d: d["files"].update({"../x": d["files"]["out.txt"]}),
                     "'../x' is not a relative path inside the item"),
    "file behind a symlink": (lambda d: d["files"].update(
        {"l": {"type": "symlink", "link": "/etc"}, "l/x": d["files"]["out.txt"]}),
        "the parent of 'l/x' is not a described folder"),
    "another step's record": (_set("info/kind", "other"), "its description is for another "
                              "step"),
}


@pytest.mark.parametrize("case", ILL_TYPED)
def test_ill_typed_description_is_refused_before_its_archive(signed: _Signed, tmp_path: Path,
                                                             case: str):
    change, why = ILL_TYPED[case]
    archive = signed.archive()
    resign(signed.desc(), signed.secret, change)
    with HostileServer(signed.folder) as server:
        warnings, _, _ = _build_b(tmp_path / "b", signed, server.url)
    assert archive not in server.requests  # not a byte of the archive was read
    [line] = warnings
    assert line.startswith(f"cache {server.url}: top refused: ") and why in line, line
    _clean(tmp_path / "b")


def test_deeply_nested_description_is_refused_unparsed(signed: _Signed, tmp_path: Path):
    signed.desc().write_text("[" * 100_000 + "]" * 100_000)
    warnings, _, _ = _build_b(tmp_path / "b", signed, str(signed.folder))
    assert warnings == [f"cache {signed.folder}: top refused: unreadable description (JSON "
                        "nested deeper than 64 levels); building it locally"]
    _clean(tmp_path / "b")


def test_deep_nesting_inside_a_signed_description_is_refused(signed: _Signed, tmp_path: Path):
    # Deep, but not so deep that signing it (json.dumps) would fail.
    resign(signed.desc(), signed.secret, _set("info/inputs", {"x": json.loads("[" * 200
                                                                             + "]" * 200)}))
    warnings, _, _ = _build_b(tmp_path / "b", signed, str(signed.folder))
    [line] = warnings
    assert "JSON nested deeper than 64 levels" in line
    _clean(tmp_path / "b")


BOMB = 128 << 20  # more than the small disk holds: a regression fails there, not on ours


def _files(out: dict | None = None) -> dict[str, dict]:
    return {".": {"type": "dir", "mode": 0o555},
            "out.txt": out or {"type": "file", "mode": 0o444, "size": 10,
                               "sha256": hashlib.sha256(b"topmidleaf").hexdigest()}}


BOMBS = {
    # name: (archive members, files described, trailing zeros), what the warning says
    "honest": ([Member("./", "dir", 0o555), Member("./out.txt", data=BOMB)],
               _files({"type": "file", "mode": 0o444, "size": BOMB,
                       "sha256": "zeros"}), 0,
               f"it would unpack to {BOMB:,} bytes from a"),
    "size lie": ([Member("./", "dir", 0o555), Member("./out.txt", data=BOMB)], _files(), 0,
                 f"out.txt has {BOMB:,} bytes, its description 10"),
    "undescribed entry": ([Member("./", "dir", 0o555), Member("./junk", data=BOMB)],
                          _files(), 0, "junk is in the archive but not in its description"),
    "long name": ([Member("./", "dir", 0o555),
                   Member("././@LongLink", flag=tarfile.GNUTYPE_LONGNAME, data=BOMB)],
                  _files(), 0, f"a long name of {BOMB:,} bytes"),
    "pax header": ([Member("./", "dir", 0o555),
                    Member("././@PaxHeader", flag=tarfile.XHDTYPE, data=BOMB)], _files(), 0,
                   "an entry of tar type b'x', which pack never writes"),
    "after the end": ([Member("./", "dir", 0o555), Member("./out.txt", data=b"topmidleaf")],
                      _files(), BOMB, "it unpacks to more than the"),
}


@pytest.mark.parametrize("bomb", BOMBS)
def test_zstd_bombs_stop_at_the_described_sizes(signed: _Signed, tmp_path: Path, bomb: str):
    members, files, trailing, why = BOMBS[bomb]
    for e in files.values():  # honest: the true sha256 of its zeros
        if e.get("sha256") == "zeros":
            e["sha256"] = zeros_sha256(e["size"])
    resign(signed.desc(), signed.secret,
           lambda d: with_archive(signed.folder, d, members, files, trailing))
    with small_disk(tmp_path / "small", mib=96) as disk:
        warnings, _, _ = _build_b(disk / "b", signed, str(signed.folder))
        [line] = warnings
        assert line.startswith(f"cache {signed.folder}: top refused: ") and why in line, line
        _clean(disk / "b")


def test_an_item_larger_than_the_free_space_is_refused_before_download(signed: _Signed,
                                                                        tmp_path: Path):
    size = 40 << 20  # honest, within the expansion taken, but not on this disk
    resign(signed.desc(), signed.secret, lambda d: with_archive(
        signed.folder, d, [Member("./", "dir", 0o555), Member("./out.txt", data=size)],
        _files({"type": "file", "mode": 0o444, "size": size, "sha256": zeros_sha256(size)})))
    with small_disk(tmp_path / "small", mib=96) as disk, \
            HostileServer(signed.folder) as server:
        warnings, _, _ = _build_b(disk / "b", signed, server.url)
        [line] = warnings
        assert "not enough free space in the store for it" in line, line
        assert signed.archive() not in server.requests
        _clean(disk / "b")


def test_refusals_are_typed_results(signed: _Signed, tmp_path: Path):
    """Whether a cache is asked again follows from the kind of refusal, not its words."""
    from embedbuild.cache.substitute import Refused

    store = Store(tmp_path / "b")
    store.lookup("0" * 64, "x")  # makes the store
    top = _graph([])
    subs = Substituters([Remote(str(signed.folder))], {}, lambda line: None)
    got = subs.attempt(store, top, subs.remotes[0])
    assert isinstance(got, Refused) and got.drop and not got.down
    assert got.reason == "signed by 't', a key not trusted here"
    subs = Substituters([Remote(str(tmp_path / "nowhere"))], signed.trusted, lambda line: None)
    got = subs.attempt(store, top, subs.remotes[0])
    assert isinstance(got, Refused) and got.down
    signed.desc().write_text("{}")
    subs = Substituters([Remote(str(signed.folder))], signed.trusted, lambda line: None)
    got = subs.attempt(store, top, subs.remotes[0])
    assert isinstance(got, Refused) and not got.drop and "not signed" in got.reason


@pytest.mark.parametrize("url", ["http://[::1:8080/eb", "http://127.0.0.1:99999/eb",
                                 "ftp://127.0.0.1/eb"])
def test_a_cache_url_that_does_not_parse_is_one_warning(signed: _Signed, tmp_path: Path,
                                                         url: str):
    warnings, calls, _ = _build_b(tmp_path / "b", signed, url)
    [line] = warnings
    assert line.startswith(f"cache {url}: ") and line.endswith("; not using it in this build")
    assert calls == ["leaf", "mid", "top"]
    _clean(tmp_path / "b")
