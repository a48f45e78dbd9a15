#!/usr/bin/env python3
"""Hostile input on the client port, beside one well-behaved client that must notice nothing.

    python scripts/fuzz_client_port.py [--server zkpy|apache | --hosts H:P [--pid PID]]
        [--frames 1000000] [--connections 8] [--max-rss-mb 300] [--seed N] [--json]

Fuzzing connections (threads in a child process) send bursts of frames pre-generated from a
corpus of valid requests of every opcode, mutated: wrong frame lengths (larger, smaller,
negative, above jute.maxbuffer), truncated bodies, flipped bytes, wrong opcodes, negative and
huge (10^6 claimed) vector counts, 1 MB paths, deep paths /a/a/a..., setWatches with 10^5 real
paths, floods of setWatches/addWatch, mutated handshakes, and a connection that floods getData of
a 512 KB node and never reads. Each burst ends with a ping (its reply says everything before it
was answered); a frame that breaks the framing goes after the ping, and the connection is then
dropped. Sessions are resumed across reconnects, so reconnecting costs no transaction.

Meanwhile one well-behaved client (its own process, its own session) does create, getData,
setData, getData, delete round trips the whole time and checks every reply.

Reported: frames sent and frames/s, connections closed by the server, the good client's round
trips, errors and max latency, the server's peak RSS (VmHWM; for Apache the JVM's), whether the
server is alive at the end. Exit status 1 when the server died or stopped answering, the good
client saw an error, or (zkpy only) the peak RSS passed --max-rss-mb.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from zkpy.jute.codec import encode
from zkpy.jute.ops import (
    AddWatchRequest,
    CheckVersionRequest,
    CreateRequest,
    CreateTTLRequest,
    DeleteRequest,
    MultiReadRequest,
    MultiRequest,
    OpCode,
    PathRequest,
    PathWatchRequest,
    SetACLRequest,
    SetDataRequest,
    SetWatches2Request,
    SetWatchesRequest,
    WatchesRequest,
)
from zkpy.jute.records import ACL, CREATOR_ALL_ACL, OPEN_ACL_UNSAFE, AuthPacket, ConnectRequest, Id
from zkpy.testing.procs import status_kb

_LEN = struct.Struct(">i")
_HDR = struct.Struct(">ii")
XID_PING = -2
PING = _LEN.pack(8) + _HDR.pack(XID_PING, OpCode.PING)
BIG_NODE = "/fuzz-big"
BIG_VALUE = 512 * 1024
MB = 1024 * 1024


def framed(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def request(xid: int, op: int, rec: Any = None) -> bytes:
    return _HDR.pack(xid, int(op)) + (encode(rec) if rec is not None else b"")


def handshake(session_id: int = 0, passwd: bytes = b"\x00" * 16, timeout: int = 30000) -> bytes:
    return framed(encode(ConnectRequest(0, 0, timeout, session_id, passwd, False)))


# -- the corpus: one or more valid request bodies for every opcode ----------------------------------
def corpus(rng: random.Random) -> list[bytes]:
    names = [f"/fuzz/n{i}" for i in range(32)]

    def p() -> str:
        return rng.choice(names)

    def data() -> bytes:
        return rng.randbytes(rng.choice([0, 1, 10, 100, 1000]))

    acl = [ACL(31, Id("world", "anyone")), ACL(1, Id("ip", "127.0.0.1")), ACL(31, Id("digest", "u:x"))]
    out: list[bytes] = []
    for _ in range(8):
        xid = rng.randrange(1, 1 << 30)
        flags = rng.choice([0, 1, 3, 4])  # persistent, ephemeral, ephemeral sequential, container
        out += [
            request(xid, OpCode.CREATE, CreateRequest(p(), data(), OPEN_ACL_UNSAFE, flags)),
            request(xid, OpCode.CREATE2, CreateRequest(p(), data(), rng.choice([OPEN_ACL_UNSAFE, acl]), 0)),
            request(xid, OpCode.CREATE_CONTAINER, CreateRequest(p(), data(), OPEN_ACL_UNSAFE, 4)),
            request(xid, OpCode.CREATE_TTL, CreateTTLRequest(p(), data(), OPEN_ACL_UNSAFE, 5, 1000)),
            request(xid, OpCode.DELETE, DeleteRequest(p(), -1)),
            request(xid, OpCode.EXISTS, PathWatchRequest(p(), rng.random() < 0.5)),
            request(xid, OpCode.GET_DATA, PathWatchRequest(p(), rng.random() < 0.5)),
            request(xid, OpCode.SET_DATA, SetDataRequest(p(), data(), rng.choice([-1, 0, 3]))),
            request(xid, OpCode.GET_ACL, PathRequest(p())),
            request(xid, OpCode.SET_ACL, SetACLRequest(p(), rng.choice([OPEN_ACL_UNSAFE, acl]), -1)),
            request(xid, OpCode.GET_CHILDREN, PathWatchRequest("/fuzz", rng.random() < 0.5)),
            request(xid, OpCode.GET_CHILDREN2, PathWatchRequest(p(), False)),
            request(xid, OpCode.SYNC, PathRequest(p())),
            request(xid, OpCode.CHECK, CheckVersionRequest(p(), 0)),
            request(
                xid,
                OpCode.MULTI,
                MultiRequest(
                    [
                        (OpCode.CREATE, CreateRequest(p(), data(), OPEN_ACL_UNSAFE, 0)),
                        (OpCode.SET_DATA, SetDataRequest(p(), data(), -1)),
                        (OpCode.CHECK, CheckVersionRequest(p(), -1)),
                        (OpCode.DELETE, DeleteRequest(p(), -1)),
                    ]
                ),
            ),
            request(
                xid,
                OpCode.MULTI_READ,
                MultiReadRequest([(OpCode.GET_DATA, PathWatchRequest(p(), False))] * rng.randint(1, 4)),
            ),
            request(xid, OpCode.CHECK_WATCHES, WatchesRequest(p(), rng.choice([1, 2, 3]))),
            request(xid, OpCode.REMOVE_WATCHES, WatchesRequest(p(), rng.choice([1, 2, 3]))),
            request(xid, OpCode.GET_EPHEMERALS, PathRequest("/fuzz")),
            request(xid, OpCode.GET_ALL_CHILDREN_NUMBER, PathRequest("/fuzz")),
            request(xid, OpCode.ADD_WATCH, AddWatchRequest(p(), rng.choice([0, 1]))),
            request(xid, OpCode.WHO_AM_I),
            request(-4, OpCode.AUTH, AuthPacket(0, "digest", b"u:p")),
            request(-8, OpCode.SET_WATCHES, SetWatchesRequest(0, [p(), p()], [p()], [p()])),
            request(-8, OpCode.SET_WATCHES2, SetWatches2Request(0, [p()], [p()], [p()], [p()], ["/fuzz"])),
            request(xid, OpCode.RECONFIG),
            request(xid, OpCode.SASL, AuthPacket(0, "sasl", b"x")),
            request(xid, OpCode.GET_DATA, PathWatchRequest(BIG_NODE, False)),
        ]
    out.append(request(1, OpCode.CLOSE_SESSION))  # rare: ends the session (a new one follows)
    return out


def _vector_count_offsets(body: bytes) -> list[int]:
    """Offsets of int fields in `body` that could be vector counts or lengths: every 4-aligned-ish
    position holding a small non-negative int (good enough to aim the mutation)."""
    found = []
    for off in range(8, len(body) - 3):
        (n,) = _LEN.unpack_from(body, off)
        if 0 <= n <= 64:
            found.append(off)
    return found


class Mutator:
    """Turns corpus bodies into (wire bytes, breaks_framing) pairs."""

    def __init__(self, rng: random.Random, bodies: list[bytes]) -> None:
        self.rng = rng
        self.bodies = bodies

    def valid(self) -> bytes:
        return framed(self.rng.choice(self.bodies))

    def mutate(self) -> tuple[bytes, bool]:
        rng = self.rng
        body = bytearray(rng.choice(self.bodies))
        kind = rng.random()
        if kind < 0.30:  # flip bytes in the body (the framing stays right)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(body))
                body[i] = rng.randrange(256)
            return framed(bytes(body)), False
        if kind < 0.45:  # truncate the body, length matching what is sent
            return framed(bytes(body[: rng.randrange(0, len(body))])), False
        if kind < 0.55:  # wrong opcode
            op = rng.choice([0, 10, 12, 15, 20, 23, 99, 105, 108, 999, -1, -3, -10, -11, 1 << 30, -(1 << 31)])
            return framed(body[:4] + _HDR.pack(0, op)[4:] + body[8:]), False
        if kind < 0.68:  # a count or length field made negative or huge
            offsets = _vector_count_offsets(bytes(body))
            if offsets:
                off = rng.choice(offsets)
                body[off : off + 4] = _LEN.pack(
                    rng.choice([-1, -2, -(1 << 31), 1_000_000, 0x7FFFFFFF, 65536])
                )
            return framed(bytes(body)), False
        if kind < 0.75:  # random garbage of a valid length
            return framed(
                _HDR.pack(rng.randrange(-10, 100), rng.randrange(-12, 110)) + rng.randbytes(40)
            ), False
        if kind < 0.80:  # bytes appended after the record
            return framed(bytes(body) + rng.randbytes(rng.randint(1, 32))), False
        # the frame length itself is wrong: the stream is out of step from here on
        wrong = rng.choice(
            [
                len(body) + rng.randint(1, 100),
                max(0, len(body) - rng.randint(1, 8)),
                -1,
                -(1 << 31),
                0,
                1,
                4,
                0xFFFFF + 1,
                0x7FFFFFFF,
            ]
        )
        return _LEN.pack(wrong) + bytes(body), True


def huge_frames() -> list[bytes]:
    """Large and deep inputs, built once (sent rarely: each is up to 1 MB)."""
    long_path = "/" + "x" * (MB - 200)
    deep = "/a" * ((MB - 200) // 2)
    many = [f"/fuzz/w{i}" for i in range(100_000)]
    claimed = _HDR.pack(-8, OpCode.SET_WATCHES) + struct.pack(">q", 0) + _LEN.pack(1_000_000) + framed(b"/x")
    claimed_acl = _HDR.pack(7, OpCode.SET_ACL) + framed(b"/fuzz/n1") + _LEN.pack(1_000_000) + b"\x00" * 16
    claimed_multi = request(
        7, OpCode.MULTI, MultiRequest([(OpCode.CHECK, CheckVersionRequest("/fuzz", -1))] * 40_000)
    )
    return [
        framed(request(9, OpCode.GET_DATA, PathWatchRequest(long_path, True))),
        framed(request(9, OpCode.CREATE, CreateRequest(long_path, b"", OPEN_ACL_UNSAFE, 0))),
        framed(request(9, OpCode.EXISTS, PathWatchRequest(deep, True))),
        framed(request(9, OpCode.CREATE, CreateRequest(deep, b"", OPEN_ACL_UNSAFE, 0))),
        framed(request(9, OpCode.ADD_WATCH, AddWatchRequest(deep, 1))),
        framed(request(-8, OpCode.SET_WATCHES, SetWatchesRequest(0, many, many[:50_000], many[50_000:]))),
        framed(claimed),
        framed(claimed_acl),
        framed(claimed_multi),
        framed(request(9, OpCode.SET_DATA, SetDataRequest("/fuzz/n0", b"v" * (MB - 200), -1))),
    ]


@dataclass
class Burst:
    data: bytes
    frames: int
    ends_connection: bool  # a framing-breaking frame follows the ping: drop the connection after


def make_bursts(seed: int, count: int) -> list[Burst]:
    rng = random.Random(seed)
    mut = Mutator(rng, corpus(rng))
    bursts = []
    for _ in range(count):
        kind = rng.random()
        parts: list[bytes] = []
        tail = b""
        if kind < 0.08:  # watch flood: valid setWatches / addWatch only
            for _ in range(rng.randint(20, 200)):
                paths = [f"/fuzz/f{rng.randrange(10_000)}" for _ in range(rng.randint(1, 50))]
                if rng.random() < 0.5:
                    parts.append(
                        framed(request(-8, OpCode.SET_WATCHES, SetWatchesRequest(0, paths, paths, paths)))
                    )
                else:
                    parts.append(
                        framed(request(1, OpCode.ADD_WATCH, AddWatchRequest(paths[0], rng.choice([0, 1]))))
                    )
        else:
            for _ in range(rng.randint(5, 120)):
                if rng.random() < 0.5:
                    parts.append(mut.valid())
                    continue
                data, breaks = mut.mutate()
                if breaks:
                    tail = data
                    break
                parts.append(data)
        n = len(parts) + 1 + (1 if tail else 0)
        bursts.append(Burst(b"".join(parts) + PING + tail, n, bool(tail)))
    return bursts


# -- fuzzing connections (a child process of threads) -------------------------------------------------
@dataclass
class FuzzStats:
    frames: int = 0
    bytes: int = 0
    bursts: int = 0
    connections: int = 0
    closed_by_server: int = 0
    dropped_by_fuzzer: int = 0  # framing broken on purpose, or no ping reply in time
    new_sessions: int = 0
    bad_handshakes: int = 0
    non_reader_cut_off: int = 0
    non_reader_stalled: int = 0  # the server stopped reading it (kept it, buffer bounded)
    non_reader_mb: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, other: FuzzStats) -> None:
        for name, value in asdict(other).items():
            if name == "errors":
                self.errors += value[: 20 - len(self.errors)]
            else:
                setattr(self, name, getattr(self, name) + value)


class Closed(Exception):
    pass


def recv_frame(sock: socket.socket, buf: bytearray) -> bytes:
    while True:
        if len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf, 0)
            if len(buf) >= 4 + n:
                frame = bytes(buf[4 : 4 + n])
                del buf[: 4 + n]
                return frame
        try:
            chunk = sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed() from e
        if not chunk:
            raise Closed()
        buf += chunk


class FuzzWorker:
    def __init__(self, host: str, port: int, seed: int, bursts: list[Burst], big: list[bytes],
                 quota: int, shared: list[int], lock: threading.Lock) -> None:  # fmt: skip
        self.addr = (host, port)
        self.rng = random.Random(seed)
        self.bursts = bursts
        self.big = big
        self.quota = quota
        self.shared = shared  # [frames sent by all workers]
        self.lock = lock
        self.stats = FuzzStats()
        self.session = (0, b"\x00" * 16)
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        st = self.stats
        sock = socket.create_connection(self.addr, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st.connections += 1
        sid, passwd = self.session
        sock.sendall(handshake(sid, passwd))
        st.frames += 1
        reply = recv_frame(sock, bytearray())
        _, timeout, new_sid = struct.unpack_from(">iiq", reply, 0)
        if timeout <= 0 or new_sid == 0:  # the session is gone (closeSession, expiry): a new one
            sock.close()
            sock = socket.create_connection(self.addr, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            st.connections += 1
            sock.sendall(handshake())
            st.frames += 1
            reply = recv_frame(sock, bytearray())
            _, timeout, new_sid = struct.unpack_from(">iiq", reply, 0)
            st.new_sessions += 1
        (plen,) = _LEN.unpack_from(reply, 16)
        self.session = (new_sid, bytes(reply[20 : 20 + plen]))
        return sock

    def _count(self, frames: int, nbytes: int) -> bool:
        self.stats.frames += frames
        self.stats.bytes += nbytes
        with self.lock:
            self.shared[0] += frames
            return self.shared[0] < self.quota

    def _bad_handshake(self) -> bool:
        """A mutated ConnectRequest (or garbage) as a connection's first frame."""
        rng = self.rng
        body = bytearray(encode(ConnectRequest(0, 0, 30000, 0, b"\x00" * 16, False)))
        choice = rng.random()
        if choice < 0.3:
            data = framed(bytes(body[: rng.randrange(len(body))]))
        elif choice < 0.6:
            for _ in range(3):
                body[rng.randrange(len(body))] = rng.randrange(256)
            data = framed(bytes(body))
        elif choice < 0.8:
            data = _LEN.pack(rng.choice([-1, 0x7FFFFFFF, 0xFFFFF + 1, 3])) + bytes(body)
        else:
            data = rng.randbytes(rng.randint(1, 64))
        self.stats.bad_handshakes += 1
        self.stats.connections += 1
        try:
            with socket.create_connection(self.addr, timeout=10) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2)
                while sock.recv(65536):
                    pass
        except (OSError, TimeoutError):
            pass
        return self._count(1, len(data))

    def _burst(self, burst: Burst) -> bool:
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        st = self.stats
        more = self._count(burst.frames, len(burst.data))
        st.bursts += 1
        try:
            sock.settimeout(10)
            sock.sendall(burst.data)
            sock.settimeout(3)
            buf = bytearray()
            while True:
                frame = recv_frame(sock, buf)
                if _HDR.unpack_from(frame, 0)[0] == XID_PING:
                    break
            if burst.ends_connection:
                st.dropped_by_fuzzer += 1
                self._drop()
        except Closed:
            st.closed_by_server += 1
            self._drop()
        except (TimeoutError, OSError):
            st.dropped_by_fuzzer += 1
            self._drop()
        return more

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def run(self) -> FuzzStats:
        rng = self.rng
        try:
            more = True
            while more:
                r = rng.random()
                if r < 0.01:
                    more = self._bad_handshake()
                elif r < 0.013:
                    burst = rng.choice(self.big)
                    more = self._burst(Burst(burst + PING, 2, False))
                else:
                    more = self._burst(rng.choice(self.bursts))
        except Exception as e:  # a fuzzer bug, or the server refusing connections (it died?)
            self.stats.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self._drop()
        return self.stats


def non_reader(host: str, port: int, stop: threading.Event, stats: FuzzStats) -> None:
    """Floods getData of the 512 KB node (with watches) and never reads: the server must stop
    reading it and cut it off, not buffer without bound."""
    req = framed(request(5, OpCode.GET_DATA, PathWatchRequest(BIG_NODE, True)))
    flood = req * 2000
    while not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                sock.sendall(handshake())
                recv_frame(sock, bytearray())
                stats.connections += 1
                stats.new_sessions += 1
                sock.settimeout(2)
                try:
                    while not stop.is_set():  # until the server stops reading us
                        sock.sendall(flood)
                        stats.non_reader_mb += len(flood) * BIG_VALUE / MB / len(req)
                except TimeoutError:
                    pass
                except OSError:
                    stats.non_reader_cut_off += 1
                    continue
                # Reading nothing: the server should cut us off (zkpy: 10 s stalled). `cons` lists us until then.
                me = f"127.0.0.1:{sock.getsockname()[1]}["
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not stop.wait(1):
                    with contextlib.suppress(OSError):
                        if me not in four_letter(host, port, "cons"):
                            stats.non_reader_cut_off += 1
                            break
                else:
                    stats.non_reader_stalled += 1  # still connected after 30 s (or the run ended first)
        except OSError as e:
            if not stop.is_set():
                stats.errors.append(f"non-reader: {type(e).__name__}: {e}")
                time.sleep(1)


def fuzz_process(host: str, port: int, frames: int, connections: int, seed: int, non_readers: int,
                 out: Any) -> None:  # fmt: skip
    t0 = time.monotonic()
    bursts = make_bursts(seed, 3000)
    big = huge_frames()
    gen = time.monotonic() - t0
    shared = [0]
    lock = threading.Lock()
    workers = [
        FuzzWorker(host, port, seed * 1000 + i, bursts, big, frames, shared, lock) for i in range(connections)
    ]
    results: list[FuzzStats] = []
    stop = threading.Event()
    nr_stats = FuzzStats()
    nr_threads = [threading.Thread(target=non_reader, args=(host, port, stop, nr_stats), daemon=True)
                  for _ in range(non_readers)]  # fmt: skip
    threads = [threading.Thread(target=lambda w=w: results.append(w.run())) for w in workers]
    t1 = time.monotonic()
    for t in threads + nr_threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t1
    stop.set()
    for t in nr_threads:
        t.join(15)
    total = FuzzStats()
    for r in results:
        total.add(r)
    total.add(nr_stats)
    out.put({"stats": asdict(total), "elapsed": elapsed, "generate_s": gen})


# -- the well-behaved client --------------------------------------------------------------------------
def good_client(host: str, port: int, stop: Any, out: Any) -> None:
    """create / getData / setData / getData / delete on its own nodes, every reply checked."""
    errors: list[str] = []
    ops = 0
    max_latency = 0.0
    latencies: list[float] = []
    root = f"/good-{os.getpid()}"
    try:
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(handshake(timeout=30000))
        buf = bytearray()
        recv_frame(sock, buf)
        xid = 0

        def call(op: int, rec: Any = None) -> tuple[int, bytes]:
            nonlocal xid, ops, max_latency
            xid += 1
            t = time.monotonic()
            sock.sendall(framed(request(xid, op, rec)))
            while True:
                frame = recv_frame(sock, buf)
                rxid, _zxid_hi = _HDR.unpack_from(frame, 0)
                if rxid == -1:  # a watch event: this client sets no watches
                    raise AssertionError("unexpected watch event")
                if rxid == XID_PING:
                    continue
                break
            latency = time.monotonic() - t
            max_latency = max(max_latency, latency)
            latencies.append(latency)
            ops += 1
            if rxid != xid:
                raise AssertionError(f"reply xid {rxid}, expected {xid}")
            (err,) = struct.unpack_from(">i", frame, 12)
            return err, frame[16:]

        xid_auth = framed(request(-4, OpCode.AUTH, AuthPacket(0, "digest", f"good:{os.getpid()}".encode())))
        sock.sendall(xid_auth)
        frame = recv_frame(sock, buf)
        assert struct.unpack_from(">i", frame, 12)[0] == 0, "auth refused"
        err, _ = call(OpCode.CREATE, CreateRequest(root, b"", CREATOR_ALL_ACL, 0))
        assert err == 0, f"create {root}: err {err}"
        i = 0
        last_ping = time.monotonic()
        while not stop.is_set():
            i += 1
            path = f"{root}/n{i % 50}"
            value = f"value-{i}".encode() * (1 + i % 7)
            err, _ = call(OpCode.CREATE, CreateRequest(path, value, CREATOR_ALL_ACL, 0))
            if err:
                raise AssertionError(f"create {path}: err {err}")
            err, body = call(OpCode.GET_DATA, PathWatchRequest(path, False))
            (n,) = _LEN.unpack_from(body, 0)
            if err or body[4 : 4 + n] != value:
                raise AssertionError(f"getData {path}: err {err}, data {body[4 : 4 + n][:40]!r}")
            value2 = value[::-1] + b"!"
            err, body = call(OpCode.SET_DATA, SetDataRequest(path, value2, 0))
            if err:
                raise AssertionError(f"setData {path}: err {err}")
            version = struct.unpack_from(">i", body, 32)[0]  # Stat: czxid mzxid ctime mtime, then version
            if version != 1:
                raise AssertionError(f"setData {path}: version {version}")
            err, body = call(OpCode.GET_DATA, PathWatchRequest(path, False))
            (n,) = _LEN.unpack_from(body, 0)
            if err or body[4 : 4 + n] != value2:
                raise AssertionError(f"getData {path} after set: err {err}")
            err, _ = call(OpCode.DELETE, DeleteRequest(path, 1))
            if err:
                raise AssertionError(f"delete {path}: err {err}")
            if time.monotonic() - last_ping > 1:
                call(OpCode.EXISTS, PathWatchRequest(root, False))
                last_ping = time.monotonic()
        call(OpCode.DELETE, DeleteRequest(root, -1))
        sock.sendall(framed(request(xid + 1, OpCode.CLOSE_SESSION)))
        sock.close()
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    out.put({"ops": ops, "errors": errors, "max_latency_ms": max_latency * 1000, "p99_ms": p99 * 1000})


# -- the server's memory -------------------------------------------------------------------------------
def server_pids(leader: int) -> list[int]:
    """The processes in the server's process group (Apache: bash, then the JVM)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == leader:  # pgrp
                    pids.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return pids or [leader]


class MemoryWatch(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        for pid in self.pids:
            self.peak_kb = max(self.peak_kb, status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS"))


def four_letter(host: str, port: int, word: str) -> str:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(word.encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode(errors="replace")


def setup(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(handshake())
        buf = bytearray()
        recv_frame(sock, buf)
        for xid, path, value in ((1, "/fuzz", b""), (2, BIG_NODE, b"b" * BIG_VALUE)):
            sock.sendall(framed(request(xid, OpCode.CREATE, CreateRequest(path, value, OPEN_ACL_UNSAFE, 0))))
            recv_frame(sock, buf)
        sock.sendall(framed(request(3, OpCode.CLOSE_SESSION)))
        recv_frame(sock, buf)


def run(args: argparse.Namespace, host: str, port: int, pid: int | None, proc: Any = None) -> dict[str, Any]:
    setup(host, port)
    mem = MemoryWatch(server_pids(pid) if pid else [])
    mem.sample()
    baseline_kb = mem.peak_kb
    mem.start()
    ctx = multiprocessing.get_context("spawn")
    q_fuzz, q_good = ctx.Queue(), ctx.Queue()
    stop_good = ctx.Event()
    good = ctx.Process(target=good_client, args=(host, port, stop_good, q_good))
    fuzz = ctx.Process(target=fuzz_process,
                       args=(host, port, args.frames, args.connections, args.seed, args.non_readers, q_fuzz))  # fmt: skip
    good.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    fuzz.start()
    fuzz_result = q_fuzz.get()
    fuzz.join()
    elapsed = time.monotonic() - t0
    time.sleep(1)  # the good client keeps going a moment after the fuzzing stops
    stop_good.set()
    good_result = q_good.get(timeout=120)
    good.join()
    mem.stop.set()
    mem.join()
    mem.sample()
    alive = proc is None or proc.poll() is None
    try:
        answers = alive and four_letter(host, port, "ruok") == "imok"
    except OSError:
        answers = False
    stats = fuzz_result["stats"]
    return {
        "server": args.server if not args.hosts else args.hosts,
        "frames": stats["frames"],
        "frames_per_s": round(stats["frames"] / fuzz_result["elapsed"]),
        "mb_sent": round(stats["bytes"] / MB, 1),
        "fuzz_seconds": round(fuzz_result["elapsed"], 1),
        "total_seconds": round(elapsed, 1),
        "connections": stats["connections"],
        "closed_by_server": stats["closed_by_server"],
        "dropped_by_fuzzer": stats["dropped_by_fuzzer"],
        "new_sessions": stats["new_sessions"],
        "bad_handshakes": stats["bad_handshakes"],
        "non_reader_cut_off": stats["non_reader_cut_off"],
        "non_reader_stalled": stats["non_reader_stalled"],
        "fuzzer_errors": stats["errors"],
        "good_round_trips": good_result["ops"],
        "good_errors": good_result["errors"],
        "good_max_latency_ms": round(good_result["max_latency_ms"], 1),
        "good_p99_ms": round(good_result["p99_ms"], 1),
        "rss_before_mb": round(baseline_kb / 1024, 1),
        "peak_rss_mb": round(mem.peak_kb / 1024, 1) if pid else None,
        "server_alive": bool(alive and answers),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["zkpy", "apache"], default="zkpy")
    ap.add_argument("--hosts", help="fuzz a running server at HOST:PORT instead of starting one")
    ap.add_argument("--pid", type=int, help="with --hosts: the server's pid (for its memory)")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=8, help="concurrent fuzzing connections")
    ap.add_argument("--non-readers", type=int, default=1, help="connections that flood and never read")
    ap.add_argument("--max-rss-mb", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="zoo.cfg extras")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.hosts:
        host, _, port = args.hosts.rpartition(":")
        result = run(args, host, int(port), args.pid)
    else:
        from zkpy.testing.procs import running_server

        extra = {"extendedTypesEnabled": "true", "forceSync": "no"}
        extra.update(kv.split("=", 1) for kv in args.config)
        with running_server(args.server, extra) as srv:
            assert srv.proc is not None
            result = run(args, srv.host, srv.port, srv.proc.pid, srv.proc)
            log_text = srv.log_since(0)
            result["server_log_errors"] = sum(
                1 for line in log_text.splitlines() if "Traceback" in line or " ERROR " in line
            )
            result["server_cut_off_clients"] = log_text.count("cutting off client")
            exceptions: dict[str, int] = {}
            for line in log_text.splitlines():
                if re.match(r"\s*\|?\s*\w+(Error|Exception): ", line):
                    key = re.sub(r"0x[0-9a-f]+|\d+", "N", line.strip(" |"))[:160]  # one entry per kind
                    exceptions[key] = exceptions.get(key, 0) + 1
            result["server_exceptions"] = exceptions
            if not result["server_alive"] or result["server_log_errors"]:
                result["server_log_tail"] = log_text.splitlines()[-80:]
    enforce_rss = args.server == "zkpy" and result["peak_rss_mb"] is not None
    failures = []
    if not result["server_alive"]:
        failures.append("the server died or stopped answering")
    if result["good_errors"]:
        failures.append(f"the good client was disturbed: {result['good_errors']}")
    if enforce_rss and result["peak_rss_mb"] > args.max_rss_mb:
        failures.append(f"peak RSS {result['peak_rss_mb']} MB over {args.max_rss_mb} MB")
    result["failures"] = failures
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
        print("FAIL: " + "; ".join(failures) if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
