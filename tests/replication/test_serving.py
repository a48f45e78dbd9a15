"""The client-facing side of an ensemble member (zkpy.replication.serving), without a network:
what a learner answers and whom a read-only server lets in."""

from __future__ import annotations

from typing import Any

from zkpy.errors import Code
from zkpy.jute.ops import OpCode
from zkpy.jute.records import ConnectRequest
from zkpy.replication.environment import Environment
from zkpy.replication.serving import Forwarder, LearnerPipeline, ReadOnlyServer
from zkpy.server.config import parse_config
from zkpy.tree.apply import Applier, Result
from zkpy.tree.datatree import DataTree
from zkpy.tree.watches import WatchManager


class FakeConnection:
    remote = ("127.0.0.1", 5555)

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.attached: tuple[int, int] | None = None
        self.closing = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closing = True

    def attach(self, session_id: int, timeout: int) -> None:
        self.attached = (session_id, timeout)


def tree_at(zxid: int) -> DataTree:
    tree = DataTree()
    tree.last_zxid = zxid
    return tree


def config() -> Any:
    cfg = parse_config(
        "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=/tmp/unused\nclientPort=2181\nreadonlymode.enabled=true\n"
        "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.1:2889:3889\nserver.3=127.0.0.1:2890:3890\n",
        "/",
        source="t.cfg",
    )
    cfg.server_id = 1
    return cfg


async def test_a_read_only_server_refuses_a_client_that_has_seen_newer_data() -> None:
    """Ensemble safety item 6: a read-only server let in a client whose lastZxidSeen was beyond
    its own tree, which then read older data than it had already seen. Apache's
    ReadOnlyZooKeeperServer refuses it like any server. Fails before this change (it attached)."""
    server = ReadOnlyServer(config(), tree_at(0x100000005), Environment())
    conn = FakeConnection()
    ahead = ConnectRequest(last_zxid_seen=0x100000009, timeout=4000, read_only=True)
    assert server.handle_connect(conn, ahead) is False  # type: ignore[arg-type]
    assert conn.attached is None
    behind = ConnectRequest(last_zxid_seen=0x100000005, timeout=4000, read_only=True)
    assert server.handle_connect(conn, behind) is True  # type: ignore[arg-type]
    assert conn.attached is not None


class NoLeader(Forwarder):
    def forward(self, *args: Any) -> None:
        pass


def test_a_refused_write_carries_this_servers_zxid_not_the_leaders() -> None:
    """Ensemble safety item 8: a write the leader refused was answered with the leader's zxid,
    which moved the client's lastZxidSeen past the server it is connected to (it would then be
    refused at its next connect there). Before this change `refused` took the zxid from the
    leader's message and answered with it."""
    tree = tree_at(0x100000005)
    pipeline = LearnerPipeline(Applier(tree), WatchManager(), NoLeader())
    results: list[Result] = []
    pipeline.submit(7, 1, OpCode.SET_DATA, b"", callback=results.append)
    pipeline.refused(7, 1, int(Code.NO_AUTH))
    assert [(r.zxid, r.err) for r in results] == [(0x100000005, int(Code.NO_AUTH))]
