"""One client's slow reading or flooding never stalls another client."""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooClient
from zkraw import RawClient

from zkpy.jute.ops import OpCode, PathWatchRequest
from zkpy.testing.procs import ServerProcess


def test_a_client_that_never_reads_its_replies_does_not_stall_others(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    zk.create(f"{base}/big", b"x" * 500_000)
    hog = RawClient(server.host, server.port)
    try:
        hog.sock.setblocking(False)
        request = PathWatchRequest(f"{base}/big", False)
        sent = 0
        # Ask for ~1 GB of replies and read none of them; stop when the server stops reading us.
        for _ in range(2000):
            try:
                hog.send(OpCode.GET_DATA, request)
                sent += 1
            except BlockingIOError:
                break
        started = time.monotonic()
        for i in range(200):
            zk.set(f"{base}/big", str(i).encode())
            assert zk.get(f"{base}/big")[0] == str(i).encode()
        assert time.monotonic() - started < 10
        assert sent > 10
    finally:
        hog.sock.close()


def test_a_flood_of_pipelined_requests_from_one_client_does_not_stall_others(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    zk.create(f"{base}/n", b"v")
    flood = RawClient(server.host, server.port)
    try:
        request = PathWatchRequest(f"{base}/n", False)
        for _ in range(20_000):
            flood.send(OpCode.EXISTS, request)
        started = time.monotonic()
        for i in range(50):
            zk.create(f"{base}/n/c{i}")
        assert time.monotonic() - started < 10
    finally:
        flood.sock.close()


def test_a_connection_that_never_says_hello_is_dropped(server: ServerProcess) -> None:
    import socket

    from zkraw import connection_closed_by_server

    if server.kind != "zkpy":
        pytest.skip("checks zkpy's own 10 s sessionless-connection timeout")
    with socket.create_connection((server.host, server.port)) as idle:
        started = time.monotonic()
        assert connection_closed_by_server(idle, within=20)
        assert 5 < time.monotonic() - started < 20
