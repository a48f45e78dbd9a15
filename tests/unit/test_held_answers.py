"""A batch's answers leave a connection together (connection.HeldAnswers), in order, one send each."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.server.config import parse_config
from zkpy.server.connection import ClientConnection
from zkpy.server.node import ZooKeeperServer
from zkpy.server.protocol import reply
from zkpy.tree.apply import Result
from zkpy.tree.datatree import DataTree


class RecordingSocket:
    """Stands for the connection's plain TCP socket: takes everything, remembers each send()."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def send(self, data: bytes | bytearray) -> int:
        self.sends.append(bytes(data))
        return len(data)


def connection_of(server: ZooKeeperServer) -> tuple[ClientConnection, RecordingSocket]:
    _, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    sock = RecordingSocket()
    conn._sock = sock  # type: ignore[assignment]  # as plain_socket finds under a trio.SocketStream
    return conn, sock


async def test_a_batchs_answers_on_one_connection_leave_in_one_send_in_order() -> None:
    """Fails before HeldAnswers: each answer of the batch was a send() of its own (three sends), a
    system call on the server and a segment the client woke up for, per write. An answer outside a
    batch (a read) still goes at once."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    a, sock_a = connection_of(server)
    b, sock_b = connection_of(server)

    def answer(conn: ClientConnection, xid: int) -> Callable[[Result], None]:
        return lambda result: conn.send(reply(xid, result.zxid, result.err))

    async with trio.open_nursery() as nursery:
        for xid, conn in enumerate([a, b, a, a, b], 1):
            body = encode(CreateRequest(f"/n{xid}", b"", OPEN_ACL_UNSAFE, 0))
            server.pipeline.submit(1, xid, OpCode.CREATE, body, callback=answer(conn, xid))
        nursery.start_soon(server.pipeline.run)
        await server.pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert server.pipeline.batches == 1
    assert sock_a.sends == [reply(1, 1, 0) + reply(3, 3, 0) + reply(4, 4, 0)]
    assert sock_b.sends == [reply(2, 2, 0) + reply(5, 5, 0)]
    a.send(reply(6, 5, 0))  # no batch being answered: straight out
    assert sock_a.sends[1:] == [reply(6, 5, 0)]


async def test_answers_held_behind_a_busy_sender_go_through_it_after_what_it_holds() -> None:
    """While the sender task is writing a chunk (the socket was full), a batch's answers queue behind
    it and are left to it: written directly they would overtake what it holds."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    conn, sock = connection_of(server)
    conn._sending = True  # the sender holds a chunk it has not written yet
    with server.held_answers:
        conn.send(b"one")
        conn.send(b"two")
    assert sock.sends == [] and bytes(conn._out) == b"onetwo"
    conn._sending = False
    conn._out = bytearray()  # the sender wrote it
    with server.held_answers:
        conn.send(b"three")
    assert sock.sends == [b"three"]
