"""zkpy.ops.status reads a server's srvr and mntr (as zkpy's four-letter words render them) into a
table row: here a leader with two followers and an observer in sync.

Fails before the in-sync count took observers in: the leader showed 2/3, as if one learner lagged.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from zkpy.ops.status import query, render_table
from zkpy.server import fourletter
from zkpy.server.fourletter import LeaderStats, ServerStatus

LEADER = ServerStatus(
    state="leader",
    last_zxid=0x100000004,
    znode_count=6,
    num_alive_connections=2,
    outstanding_requests=1,
    min_latency_ms=0,
    avg_latency_ms=1.25,
    max_latency_ms=7,
    leader=LeaderStats(learners=3, synced_followers=2, synced_observers=1),
)


@pytest.fixture
def leader_port() -> Iterator[int]:
    """A socket answering srvr and mntr with what a zkpy leader in LEADER's state says."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                word = conn.recv(4).decode()
                conn.sendall(fourletter.respond(word, LEADER, {"srvr", "mntr"}).encode())

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_a_leaders_row(leader_port: int) -> None:
    row = query("127.0.0.1", leader_port)
    assert (row.mode, row.zxid, row.znodes, row.connections, row.outstanding) == (
        "leader",
        "0x100000004",
        6,
        2,
        1,
    )
    assert row.latency == "0/1.2/7"
    assert row.in_sync == "3/3"
    table = render_table([row]).splitlines()
    assert table[1].split() == [
        f"127.0.0.1:{leader_port}",
        "leader",
        "0x100000004",
        "6",
        "2",
        "1",
        "0/1.2/7",
        "3/3",
    ]
