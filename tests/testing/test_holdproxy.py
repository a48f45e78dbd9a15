"""zkpy.testing.holdproxy on real sockets: a held link keeps the connection and every byte, a
client that is moved away sees its connection end at once while the request it sent is still
delivered to the server afterwards (the SessionMoved interleaving), in order."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from zkpy.testing.holdproxy import HoldingProxy


class Sink:
    """A server that collects what its (one) connection sends."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.received = bytearray()

    def accept(self) -> socket.socket:
        self.conn, _ = self.listener.accept()
        return self.conn

    def read_until(self, size: int, seconds: float) -> bytes:
        assert self.conn is not None
        deadline = time.monotonic() + seconds
        while len(self.received) < size and time.monotonic() < deadline:
            if select.select([self.conn], [], [], 0.05)[0]:
                data = self.conn.recv(1024)
                if not data:
                    break
                self.received += data
        return bytes(self.received)

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()


def _until(cond: Callable[[], bool], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def link() -> Iterator[tuple[HoldingProxy, Sink, socket.socket]]:
    stopping = threading.Event()
    sink = Sink()
    proxy = HoldingProxy("s1", sink.port, stopping)
    client = socket.create_connection(("127.0.0.1", proxy.port))
    sink.accept()
    try:
        yield proxy, sink, client
    finally:
        stopping.set()
        proxy.close()
        client.close()
        sink.close()


def test_a_held_link_keeps_the_connection_and_delivers_in_order(link: tuple[HoldingProxy, Sink, socket.socket]) -> None:
    proxy, sink, client = link
    client.sendall(b"1")
    assert sink.read_until(1, 2.0) == b"1"
    proxy.hold()
    client.sendall(b"2")
    client.sendall(b"3")
    assert sink.read_until(3, 0.4) == b"1"  # held, not lost
    assert sink.conn is not None
    sink.conn.sendall(b"reply")
    assert not select.select([client], [], [], 0.3)[0]  # held both ways
    proxy.release()
    assert sink.read_until(3, 2.0) == b"123"
    assert select.select([client], [], [], 2.0)[0] and client.recv(16) == b"reply"
    assert proxy.late == 0


def test_a_moved_client_leaves_its_request_to_arrive_late(link: tuple[HoldingProxy, Sink, socket.socket]) -> None:
    proxy, sink, client = link
    proxy.hold()
    client.sendall(b"old")
    assert _until(lambda: proxy.held == 3)
    assert proxy.move_clients() == 1
    assert select.select([client], [], [], 2.0)[0] and client.recv(16) == b""  # cut off at once
    assert sink.read_until(3, 0.3) == b""
    proxy.release()
    assert sink.read_until(3, 2.0) == b"old"  # delivered after its client left
    assert _until(lambda: proxy.late == 1 and proxy.held == 0)
