"""zkpy.testing.nftdrop on real loopback sockets: a one-way silent drop loses one direction's
packets without resetting anything (the other direction still arrives), undoing it lets TCP's
retransmission deliver what was held, and the table is gone afterwards. Skipped where nft is
missing or we are not root."""

from __future__ import annotations

import os
import select
import socket
import subprocess
from collections.abc import Iterator

import pytest

from zkpy.testing.nftdrop import LoopbackDrops, unavailable

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"silent drops need nftables: {REASON}")


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def _readable(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    listener.close()
    try:
        yield client, server, port
    finally:
        client.close()
        server.close()


def test_a_one_way_drop_is_silent_and_heals_by_retransmission(pair: tuple[socket.socket, socket.socket, int]) -> None:
    client, server, port = pair
    name = f"zkpy_test_{os.getpid()}"
    with LoopbackDrops(name) as drops:
        assert f"table inet {name}" in _tables()
        token = drops.drop(dports=[port])  # client -> server lost
        client.sendall(b"held")
        assert not _readable(server, 0.5)  # nothing arrives ...
        server.sendall(b"back")  # ... while the other direction still works
        assert _readable(client, 2.0) and client.recv(16) == b"back"
        assert drops.dropped_packets() > 0
        drops.undrop(token)
        assert _readable(server, 15.0), "the retransmission never arrived"
        assert server.recv(16) == b"held"  # the connection survived: no reset, nothing lost
    assert f"table inet {name}" not in _tables()


def test_close_removes_the_table_with_drops_still_active(pair: tuple[socket.socket, socket.socket, int]) -> None:
    client, server, port = pair
    drops = LoopbackDrops(f"zkpy_test_{os.getpid()}_b").open()
    try:
        drops.drop(dports=[port], sports=[port])
        drops.drop(dports=[port])  # counted: one undo does not let it through
    finally:
        drops.close()
    assert drops.table not in _tables()
    client.sendall(b"free")
    assert _readable(server, 2.0) and server.recv(16) == b"free"
