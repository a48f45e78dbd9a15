"""Hostile clients on the client port: only the offending connection suffers, and the server's memory stays
bounded. Each test starts its own server (its own limits); ZKPY_TEST_SERVER=apache runs the ones whose
behaviour Apache ZooKeeper 3.8 shares against it.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from suite_settings import CLIENT_TIMEOUT, SERVER_KIND
from zkraw import RawClient, connection_closed_by_server
from zkwait import wait_until

from zkpy.jute.codec import encode
from zkpy.jute.ops import AddWatchRequest, CreateRequest, OpCode, PathWatchRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE, ConnectRequest, RequestHeader
from zkpy.testing.procs import ServerProcess, four_letter, running_server

REPO = Path(__file__).resolve().parents[2]
zkpy_only = pytest.mark.skipif(SERVER_KIND != "zkpy", reason="zkpy's own bound (Apache buffers without one)")


@contextlib.contextmanager
def server_with(extra: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    with running_server(SERVER_KIND, {"4lw.commands.whitelist": "*", **(extra or {})}) as srv:
        yield srv


@contextlib.contextmanager
def kazoo(srv: ServerProcess) -> Iterator[KazooClient]:
    client = KazooClient(hosts=srv.hosts, timeout=CLIENT_TIMEOUT)
    client.start(timeout=CLIENT_TIMEOUT)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()


def rss_mb(srv: ServerProcess) -> float:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def listed_in_cons(srv: ServerProcess, local_port: int) -> bool:
    return re.search(rf"127\.0\.0\.1:{local_port}\[", four_letter(srv.host, srv.port, "cons")) is not None


def handshake_frame(timeout_ms: int = 30000) -> bytes:
    body = encode(ConnectRequest(0, 0, timeout_ms, 0, b"\x00" * 16, False))
    return struct.pack(">i", len(body)) + body


class GoodClient(threading.Thread):
    """Round trips (set then get, checked) until stopped; every failure is kept."""

    def __init__(self, client: KazooClient, path: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.path = path
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.round_trips = 0
        self.max_latency = 0.0

    def run(self) -> None:
        self.client.ensure_path(self.path)
        while not self.stop.is_set():
            value = f"v{self.round_trips}".encode()
            started = time.monotonic()
            try:
                self.client.set(self.path, value)
                got = self.client.get(self.path)[0]
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                return
            self.max_latency = max(self.max_latency, time.monotonic() - started)
            if got != value:
                self.errors.append(f"read {got!r} after writing {value!r}")
                return
            self.round_trips += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.errors
        assert self.round_trips > 0


@zkpy_only
def test_a_client_that_never_reads_is_cut_off_while_a_good_client_continues() -> None:
    with server_with() as srv, kazoo(srv) as zk:
        zk.create("/big", b"b" * (512 * 1024))
        good = GoodClient(zk, "/good")
        good.start()
        before = rss_mb(srv)
        sock = socket.create_connection((srv.host, srv.port), timeout=10)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(handshake_frame())
            time.sleep(0.5)  # the handshake's answer is the last thing this client reads: it reads nothing
            local_port = sock.getsockname()[1]
            body = encode(RequestHeader(1, OpCode.GET_DATA)) + encode(PathWatchRequest("/big", True))
            request = struct.pack(">i", len(body)) + body
            # 20,000 getData of 512 KB (10 GB of replies) and not one read: sent until the server stops reading.
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError, OSError):
                sock.sendall(request * 20000)
            assert listed_in_cons(srv, local_port) or "cutting off" in srv.log_since(srv.log_start)
            wait_until(
                lambda: not listed_in_cons(srv, local_port), timeout=30, what="the non-reader to be cut off"
            )
            log = srv.log_since(srv.log_start)
            assert re.search(rf"cutting off client 127\.0\.0\.1:{local_port} .*nothing read for", log), log[
                -2000:
            ]
            assert rss_mb(srv) - before < 100  # bounded: a few MB, not the 10 GB asked for
        finally:
            sock.close()
        good.finish()
        assert good.max_latency < 5
        assert four_letter(srv.host, srv.port, "ruok") == "imok"


@zkpy_only
def test_a_client_flooded_with_watch_events_it_never_reads_is_cut_off() -> None:
    """Events keep coming while the client reads nothing: past the output limit it is dropped."""
    with server_with() as srv, kazoo(srv) as zk:
        zk.create("/w", b"")
        raw = RawClient(srv.host, srv.port)
        try:
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            local_port = raw.sock.getsockname()[1]
            raw.call(
                OpCode.ADD_WATCH, AddWatchRequest("/w", 1)
            )  # persistent recursive; then it reads nothing
            name = "/w/" + "n" * 100_000  # every event carries the path: ~100 KB each
            for i in range(400):
                zk.create(f"{name}{i}", b"")
                zk.delete(f"{name}{i}")
                if i % 20 == 19 and not listed_in_cons(srv, local_port):
                    break
            wait_until(
                lambda: not listed_in_cons(srv, local_port), timeout=20, what="the flooded client cut off"
            )
            log = srv.log_since(srv.log_start)
            assert re.search(rf"cutting off client 127\.0\.0\.1:{local_port} .*unsent output", log), log[
                -2000:
            ]
        finally:
            raw.sock.close()
        assert zk.get("/w")[0] == b""
        assert four_letter(srv.host, srv.port, "ruok") == "imok"


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: cannot hold 2,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_two_thousand_idle_connections_then_a_good_client_works() -> None:
    _raise_fd_limit(4500)  # before the server starts: it inherits the limit
    with server_with({"maxClientCnxns": "0"}) as srv:
        socks: list[socket.socket] = []
        try:
            for _ in range(2000):
                s = socket.create_connection((srv.host, srv.port), timeout=30)
                s.sendall(handshake_frame())
                socks.append(s)
            for s in socks:  # every one got its session
                (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
                reply = s.recv(n, socket.MSG_WAITALL)
                assert struct.unpack_from(">q", reply, 8)[0] != 0
            mntr = four_letter(srv.host, srv.port, "mntr")
            alive = int(re.search(r"zk_num_alive_connections\s+(\d+)", mntr).group(1))  # type: ignore[union-attr]
            assert alive >= 2000
            with kazoo(srv) as zk:
                started = time.monotonic()
                zk.create("/after-2000", b"fine")
                assert zk.get("/after-2000")[0] == b"fine"
                assert time.monotonic() - started < 5
            assert four_letter(srv.host, srv.port, "ruok") == "imok"
        finally:
            for s in socks:
                s.close()


def test_max_client_cnxns_refuses_the_61st_connection_from_one_address() -> None:
    with server_with({"maxClientCnxns": "60"}) as srv:
        clients = [RawClient(srv.host, srv.port) for _ in range(60)]
        try:
            assert all(c.session_id for c in clients)
            # The 61st is accepted by the kernel, then closed by the server before any answer.
            with socket.create_connection((srv.host, srv.port), timeout=10) as extra:
                extra.sendall(handshake_frame())
                assert connection_closed_by_server(extra)
            clients[0].ping()  # the 60 are untouched
            clients[59].ping()
            clients.pop().close()
            # A freed slot is free again.
            wait_until(lambda: _can_connect(srv), timeout=10, what="a connection after one closed")
        finally:
            for c in clients:
                c.sock.close()
        if SERVER_KIND == "zkpy":
            assert "Too many connections from 127.0.0.1 - max is 60" in srv.log_since(srv.log_start)


def _can_connect(srv: ServerProcess) -> bool:
    try:
        RawClient(srv.host, srv.port).close()
        return True
    except Exception:
        return False


def test_global_outstanding_limit_throttles_without_errors() -> None:
    """Four connections pipeline 3,000 creates each against globalOutstandingLimit=20: every create
    succeeds, in order, and the server never holds many more than the limit queued (zkpy)."""
    limit = 20
    with server_with({"globalOutstandingLimit": str(limit)}) as srv:
        raws = [RawClient(srv.host, srv.port, io_timeout=60) for _ in range(4)]
        seen: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    m = re.search(r"zk_outstanding_requests\s+(\d+)", four_letter(srv.host, srv.port, "mntr"))
                    if m:
                        seen.append(int(m.group(1)))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for i, raw in enumerate(raws):
                raw.call(OpCode.CREATE, CreateRequest(f"/c{i}", b"", OPEN_ACL_UNSAFE, 0))

            def flood(i: int, raw: RawClient) -> None:
                frames = bytearray()
                for j in range(3000):
                    body = encode(RequestHeader(100 + j, OpCode.CREATE))
                    body += encode(CreateRequest(f"/c{i}/n{j}", b"x" * 100, OPEN_ACL_UNSAFE, 0))
                    frames += struct.pack(">i", len(body)) + body
                raw.sock.sendall(frames)

            senders = [threading.Thread(target=flood, args=(i, raw)) for i, raw in enumerate(raws)]
            for t in senders:
                t.start()
            for raw in raws:
                for j in range(3000):
                    reply = raw.read_reply(100 + j)
                    assert reply.err == 0, (j, reply.err)
            for t in senders:
                t.join()
        finally:
            stop.set()
            sampler.join()
            for raw in raws:
                raw.sock.close()
        with kazoo(srv) as zk:
            assert sum(len(zk.get_children(f"/c{i}")) for i in range(4)) == 12000
        if SERVER_KIND == "zkpy":
            assert seen and max(seen) <= limit + len(raws), max(seen)


def test_a_short_fuzz_run_leaves_the_good_client_undisturbed() -> None:
    with server_with({"extendedTypesEnabled": "true"}) as srv:
        assert srv.proc is not None
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "fuzz_client_port.py"),
                "--hosts",
                srv.hosts,
                "--pid",
                str(srv.proc.pid),
                "--frames",
                "20000",
                "--connections",
                "4",
                "--json",
                "--max-rss-mb",
                "300" if SERVER_KIND == "zkpy" else "100000",
            ],
            capture_output=True,
            text=True,
            timeout=55,
        )
        result = json.loads(out.stdout)
        assert result["good_errors"] == []
        assert result["server_alive"]
        assert result["frames"] >= 20000
        assert result["good_round_trips"] > 0
        assert out.returncode == 0, out.stdout + out.stderr
        srv.check_running()
