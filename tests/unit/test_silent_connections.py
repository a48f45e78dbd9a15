"""A connection whose client sent nothing for longer than its session timeout is closed
(ZooKeeperServer._close_silent_connections). On a virtual clock, in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from test_handshake_wait import frame, read_frame

from zkpy.jute.codec import decode
from zkpy.jute.ops import XID_PING, OpCode
from zkpy.jute.records import ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader
from zkpy.server.config import parse_config
from zkpy.server.connection import ClientConnection
from zkpy.server.node import ZooKeeperServer
from zkpy.tree.datatree import DataTree


@asynccontextmanager
async def connected(
    server: ZooKeeperServer,
) -> AsyncIterator[tuple[trio.abc.Stream, bytearray, ClientConnection]]:
    """A client in memory with a 4 s session on `server`, whose pipeline and watch loop run."""
    client, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    server.connections[conn] = None  # as the listener's handler does
    buffer = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        nursery.start_soon(server._watch_loop)
        nursery.start_soon(conn.serve)
        await client.send_all(frame(ConnectRequest(0, 0, 4000, 0, b"\x00" * 16, False)))
        response = decode(ConnectResponse, await read_frame(client, buffer))
        assert response.timeout == 4000 and conn.session_id
        yield client, buffer, conn
        nursery.cancel_scope.cancel()


async def test_a_connection_silent_past_its_session_timeout_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 14's known limit: a client that moved to another server while this end stayed
    half-open kept its connection here, and with it the claim a learner holds at the leader for it
    (owners.py), until the kernel gave up on the socket, hours later; its writes through the server
    it moved to were refused with SessionMoved meanwhile. Now the connection closes once nothing
    came for longer than the session timeout (which withdraws an unused claim). A client that pings
    as clients do (every third of the timeout) is never closed. Fails before this change: still
    open after 10 s of silence."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    async with connected(server) as (client, buffer, conn):
        for _ in range(15):  # 20 s of pings every 1.3 s
            await trio.sleep(1.3)
            await client.send_all(frame(RequestHeader(XID_PING, OpCode.PING)))
            header, _ = ReplyHeader.read(await read_frame(client, buffer), 0)
            assert header.xid == XID_PING
        assert not conn.closing
        silent_since = trio.current_time()
        with trio.fail_after(10):
            while not conn.closing:
                await trio.sleep(0.1)
        silent = trio.current_time() - silent_since
        assert 4.0 < silent <= 4.0 + 1.1, silent  # checked every half tick


async def test_a_connection_that_stopped_reading_is_not_judged_silent() -> None:
    """A connection that stopped reading (its unsent output above the high-water mark, or the
    server over its outstanding limit) leaves its client's pings queued in the socket: it is not
    the client that is silent. Fails with the rule judging every connection by its last read."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    _, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    server.connections[conn] = None
    conn.attach(0x1234, 4000)
    now = conn.last_read + 60.0
    conn.awaiting_client = False  # in _throttle, say
    server._close_silent_connections(now)
    assert not conn.closing
    conn.awaiting_client = True
    server._close_silent_connections(now)
    assert conn.closing


async def test_a_client_whose_handshake_was_slow_is_not_closed_before_its_first_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client's ping schedule starts when its handshake is answered (kazoo: a third of the
    timeout after the ConnectResponse, less 0.01-0.4 s of jitter), and the session's expiry is
    pushed out then too (_attach touches it). The silence rule counted from the ConnectRequest's
    read, so a handshake that took more than two thirds of the timeout (a new session's commit
    on a slow disk; on a learner, the catch-up sync and the leader's answer) could have its
    connection closed before the client's first ping was due, though nothing was wrong with it:
    here a 3.8 s commit of a 4 s session, closed at the half-tick beat 1.2 s after the answer.
    Fails before the fix (attach resets last_read): closed before the first ping."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")

    async def slow_disk(txns: object) -> None:
        await trio.sleep(3.8)

    server = ZooKeeperServer(config, persist=slow_disk, tree=DataTree())
    async with connected(server) as (client, buffer, conn):
        for _ in range(4):  # pings as kazoo sends them: every 4000 * 2/3 / 2 ms, less 0.01 s of jitter
            await trio.sleep(4.0 / 3 - 0.01)
            assert not conn.closing, "a live client's connection was closed as silent"
            await client.send_all(frame(RequestHeader(XID_PING, OpCode.PING)))
            header, _ = ReplyHeader.read(await read_frame(client, buffer), 0)
            assert header.xid == XID_PING
