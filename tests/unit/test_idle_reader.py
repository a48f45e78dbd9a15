"""Idle connections park on the shared reader (zkpy/server/idle.py): their pings are answered
without waking them, and anything else wakes them and is answered as before, in order. A real
server on 127.0.0.1 in this process (the reader needs real sockets and epoll)."""

from __future__ import annotations

import gc
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from zkpy.jute.codec import decode, encode
from zkpy.jute.ops import XID_PING, CreateRequest, GetDataResponse, OpCode, PathWatchRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE, ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader
from zkpy.server.config import parse_config
from zkpy.server.idle import PING_FRAME
from zkpy.server.node import ZooKeeperServer
from zkpy.tree.datatree import DataTree

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="the idle reader needs epoll (Linux)")


def frame(*records: object) -> bytes:
    body = b"".join(encode(r) for r in records)
    return len(body).to_bytes(4, "big") + body


class Client:
    """A raw client: whole frames out, whole frames in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def read(self) -> bytes:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + int.from_bytes(self.buffer[:4], "big"):
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self.buffer += data
        size = int.from_bytes(self.buffer[:4], "big")
        body = bytes(self.buffer[4 : 4 + size])
        del self.buffer[: 4 + size]
        return body

    async def header(self) -> ReplyHeader:
        header, _ = ReplyHeader.read(await self.read(), 0)
        return header

    async def ping(self) -> None:
        await self.stream.send_all(PING_FRAME)
        header = await self.header()
        assert (header.xid, header.err) == (XID_PING, 0)


@asynccontextmanager
async def serving() -> AsyncIterator[ZooKeeperServer]:
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\nmaxClientCnxns=0\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        yield server
        nursery.cancel_scope.cancel()


async def connect(server: ZooKeeperServer) -> Client:
    client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
    await client.stream.send_all(frame(ConnectRequest(0, 0, 30000, 0, b"\x00" * 16, False)))
    response = decode(ConnectResponse, await client.read())
    assert response.session_id
    return client


async def test_an_idle_clients_pings_are_answered_by_the_shared_reader() -> None:
    """After a read of pings alone, the connection parks: the next pings are the reader's, and the
    connection's counters (cons) see them as before."""
    async with serving() as server:
        client = await connect(server)
        for _ in range(6):
            await client.ping()
        assert server.idle.pings_answered == 5  # the first came while the connection was reading
        (conn,) = [c for c in server.connections if c.session_id]
        assert conn.packets_received == 7 and conn.packets_sent == 7  # the handshake and 6 pings
        assert conn.last_op == "PING"
        await client.stream.aclose()


async def test_a_request_after_pings_wakes_the_connection_and_keeps_its_order() -> None:
    """A read that is not pings alone (a request, a ping and a request together, a ping in two
    pieces) is handed to the connection: every answer comes, in the order asked."""
    async with serving() as server:
        client = await connect(server)
        await client.ping()
        await client.ping()  # parked now
        create = frame(RequestHeader(1, OpCode.CREATE), CreateRequest("/a", b"x", OPEN_ACL_UNSAFE, 0))
        await client.stream.send_all(create)
        assert (await client.header()).xid == 1
        await client.ping()
        await client.ping()
        get = frame(RequestHeader(2, OpCode.GET_DATA), PathWatchRequest("/a", False))
        await client.stream.send_all(PING_FRAME + get + PING_FRAME)
        assert (await client.header()).xid == XID_PING
        body = await client.read()
        header, offset = ReplyHeader.read(body, 0)
        assert (header.xid, header.err) == (2, 0)
        data, _ = GetDataResponse.read(body, offset)
        assert data.data == b"x"
        assert (await client.header()).xid == XID_PING
        await client.ping()
        await client.stream.send_all(PING_FRAME[:5])  # parked, and a ping arrives in two pieces
        await trio.sleep(0.05)
        await client.stream.send_all(PING_FRAME[5:])
        assert (await client.header()).xid == XID_PING
        assert server.idle.handed >= 3
        await client.stream.aclose()


async def test_a_parked_client_that_closes_is_noticed_at_once() -> None:
    async with serving() as server:
        client = await connect(server)
        await client.ping()
        await client.ping()
        await client.stream.aclose()
        with trio.fail_after(5):
            while server.connections:
                await trio.sleep(0.01)


async def test_idle_pings_leave_no_objects_behind() -> None:
    """The point of parking: a connection waiting for its client's next bytes held a few fresh
    objects per wait (trio's wait coroutines, the abort closure, the fd's waiter record), replaced
    at every ping; at 15,000 idle sessions the young collections walked 100-200k of them and held
    the server for seconds. Counted here: objects made while idle sessions ping and
    still alive afterwards, 100 idle sessions pinging once each: before the reader, 17-18 per ping
    (882 for 50); now a constant few dozen (this test's own tasks and the reader's wait)."""
    async with serving() as server:
        clients = [await connect(server) for _ in range(100)]
        for client in clients:
            await client.ping()
            await client.ping()
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects(0))
            for client in clients:
                await client.ping()
            await trio.sleep(0.05)
            made = len(gc.get_objects(0)) - before
        finally:
            gc.enable()
        assert made < 100, f"{made} objects alive after 100 idle pings"
        for client in clients:
            await client.stream.aclose()


async def test_a_parked_client_that_pings_keeps_its_connection_and_its_session() -> None:
    """The pings the reader answers count as the client's: they refresh the session (the
    expirer) and the connection's last read (the silence rule, 10974b7, which closes a connection
    whose client sent nothing for longer than its session timeout). A 1 s session pinging every
    0.2 s for 2.4 s, parked all along. A guard: fails with answer_idle_pings not setting last_read
    (the connection closed as silent after 1 s) or not touching the session (it expires).
    Nothing else caught either."""
    config = parse_config(
        "tickTime=200\ndataDir=/tmp\nclientPort=2181\nmaxClientCnxns=0\n", "/", source="t.cfg"
    )
    server = ZooKeeperServer(config, tree=DataTree())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        await client.stream.send_all(frame(ConnectRequest(0, 0, 1000, 0, b"\x00" * 16, False)))
        response = decode(ConnectResponse, await client.read())
        assert response.timeout == 1000
        (conn,) = [c for c in server.connections if c.session_id]
        for _ in range(12):
            await client.ping()
            await trio.sleep(0.2)
        assert server.idle.pings_answered >= 10, server.idle.pings_answered
        assert not conn.closing, "a parked client that pings was closed as silent"
        assert server.sessions.is_alive(response.session_id), "a parked client's session expired"
        await client.stream.aclose()
        nursery.cancel_scope.cancel()
