"""The TFTP server on loopback: confinement, read-only, options, robustness, parallel clients."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import tftpy

from embedbuild.rig.tftp import TftpServer


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 * 2**20 + 123))
    (root / "exact.bin").write_bytes(os.urandom(512 * 4))  # ends on a block boundary
    (root / "sub").mkdir()
    (root / "sub" / "inside.txt").write_text("inside\n")
    (root / "link-in").symlink_to("sub/inside.txt")
    (root / "link-out").symlink_to("/etc/passwd")
    with TftpServer(root, "127.0.0.1", 0) as server:
        yield server


def _rrq(name: str, **opts) -> bytes:
    o = b"".join(f"{k}\0{v}\0".encode() for k, v in opts.items())
    return struct.pack("!H", 1) + name.encode() + b"\0octet\0" + o


def _first_reply(server: TftpServer, packet: bytes) -> bytes:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(packet, ("127.0.0.1", server.port))
    data, _ = s.recvfrom(70000)
    s.close()
    return data


def _download(server: TftpServer, name: str, dest: Path, **options) -> None:
    c = tftpy.TftpClient("127.0.0.1", server.port, options=options)
    c.download(name, str(dest), timeout=5)


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "link-out", "sub/../../etc/passwd"]
)
def test_paths_leaving_the_root_are_refused(served: TftpServer, name: str):
    reply = _first_reply(served, _rrq(name))
    assert struct.unpack("!H", reply[:2])[0] == 5  # ERROR
    assert struct.unpack("!H", reply[2:4])[0] == 2  # access violation
    assert not any(t.ok for t in served.transfers)


def test_missing_file(served: TftpServer):
    reply = _first_reply(served, _rrq("nope"))
    assert reply[:4] == struct.pack("!HH", 5, 1) and b"File not found" in reply


def test_write_request_refused(served: TftpServer, tmp_path: Path):
    reply = _first_reply(served, struct.pack("!H", 2) + b"new.bin\0octet\0")
    assert reply[:4] == struct.pack("!HH", 5, 2)
    assert not (served.root / "new.bin").exists()


def test_symlink_inside_root_is_served(served: TftpServer, tmp_path: Path):
    _download(served, "link-in", tmp_path / "x")
    assert (tmp_path / "x").read_text() == "inside\n"


@pytest.mark.parametrize("opts", [{}, {"blksize": 1468}, {"blksize": 8}, {"tsize": 0}])
def test_download_byte_exact(served: TftpServer, tmp_path: Path, opts):
    for name in ("exact.bin", "sub/inside.txt") + (
        ("big.bin",) if opts.get("blksize") != 8 else ()
    ):
        _download(served, name, tmp_path / "got", **opts)
        assert (tmp_path / "got").read_bytes() == (served.root / name).read_bytes()


def test_tsize_and_blksize_acknowledged(served: TftpServer):
    reply = _first_reply(served, _rrq("big.bin", blksize=1468, tsize=0))
    assert reply[:2] == struct.pack("!H", 6)
    opts = reply[2:].split(b"\0")
    assert opts[opts.index(b"tsize") + 1] == str((served.root / "big.bin").stat().st_size).encode()
    assert opts[opts.index(b"blksize") + 1] == b"1468"


def _window_client(server: TftpServer, name: str, window: int, drop_block: int | None) -> bytes:
    """A minimal RFC 7440 client: ACKs every `window` blocks; can lose one block once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(_rrq(name, blksize=1024, windowsize=window), ("127.0.0.1", server.port))
    data, peer = s.recvfrom(70000)
    assert data[:2] == struct.pack("!H", 6) and b"windowsize" in data
    s.sendto(struct.pack("!HH", 4, 0), peer)
    out, expect, dropped = bytearray(), 1, False
    while True:
        data, _ = s.recvfrom(70000)
        op, blk = struct.unpack("!HH", data[:4])
        assert op == 3
        if blk == drop_block and not dropped:
            dropped = True
            continue
        if blk != expect & 0xFFFF:
            s.sendto(struct.pack("!HH", 4, (expect - 1) & 0xFFFF), peer)  # report the gap
            continue
        out += data[4:]
        last = len(data) - 4 < 1024
        if expect % window == 0 or last:
            s.sendto(struct.pack("!HH", 4, expect & 0xFFFF), peer)
        expect += 1
        if last:
            return bytes(out)


@pytest.mark.parametrize("drop", [None, 7])
def test_windowsize(served: TftpServer, drop):
    got = _window_client(served, "big.bin", 16, drop)
    assert got == (served.root / "big.bin").read_bytes()
    # The record says what was negotiated: a boot report shows a client that asked for
    # smaller blocks than its board sets (a U-Boot that caps them).
    deadline = time.monotonic() + 5
    while not served.transfers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(t.blksize, t.window, t.ok) for t in served.transfers] == [(1024, 16, True)]


def test_malformed_packets_do_not_stop_the_server(served: TftpServer, tmp_path: Path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for junk in (
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01noterminator",
        b"\xff\xff\xff",
        b"\x00\x04\x00\x01",
        os.urandom(600),
    ):
        s.sendto(junk, ("127.0.0.1", served.port))
    s.close()
    _download(served, "sub/inside.txt", tmp_path / "ok")
    assert (tmp_path / "ok").read_text() == "inside\n"


def test_eight_parallel_downloads_byte_exact(served: TftpServer, tmp_path: Path):
    want = hashlib.sha256((served.root / "big.bin").read_bytes()).hexdigest()
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            _download(served, "big.bin", tmp_path / f"p{i}", blksize=1468)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert hashlib.sha256((tmp_path / f"p{i}").read_bytes()).hexdigest() == want
    assert sum(t.ok for t in served.transfers) == 8
