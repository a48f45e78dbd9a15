"""Writes pipelined behind a closeSession on one connection (sessions issue item 1): they must not
run at all, ephemeral or not. Runs against Apache 3.8 too (ZKPY_TEST_SERVER=apache)."""

from __future__ import annotations

from kazoo.client import KazooClient
from zkraw import ConnectionClosed, RawClient

from zkpy.jute.ops import CreateRequest, OpCode, PathWatchRequest, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import ServerProcess


def test_persistent_writes_after_close_session_are_not_applied(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    """A create and a setData of plain (persistent) nodes pipelined behind closeSession: Apache's
    checkSession refuses them (the session is closing) and they change nothing. The existing
    regression pipelines an ephemeral create, which the apply step's own check (no ephemeral
    for a session the tree no longer has) refuses as well, so it passes with
    ZooKeeperServer.check_session's closing test removed; a persistent write does not: with that
    mutant /late is created and /kept set to b"after close" by a session already closed. Fails on
    7a18865 too (all four requests answered, 0 each). Passes against Apache 3.8."""
    zk.create(f"{base}/kept", b"before")
    raw = RawClient(server.host, server.port)
    close = raw.send(OpCode.CLOSE_SESSION)
    create = raw.send(OpCode.CREATE, CreateRequest(f"{base}/late", b"", OPEN_ACL_UNSAFE, 0))
    update = raw.send(OpCode.SET_DATA, SetDataRequest(f"{base}/kept", b"after close", -1))
    read = raw.send(OpCode.EXISTS, PathWatchRequest(base, False))
    answers = []
    try:
        for xid in (close, create, update, read):
            answers.append(raw.read_reply(xid).err)
    except ConnectionClosed:
        pass  # the connection ends with the close's reply
    raw.sock.close()
    assert answers == [0]
    zk.sync(base)
    assert zk.exists(f"{base}/late") is None
    assert zk.get(f"{base}/kept")[0] == b"before"
