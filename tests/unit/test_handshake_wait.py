"""A connection whose handshake waits (a learner asking its leader about the session, a new
session waiting for its commit) still reads: a client that gives up is noticed at once, and what
a client sends ahead of the answer is taken after it, in order. On a virtual clock, in memory."""

from __future__ import annotations

import trio
import trio.testing

from zkpy.jute.codec import decode, encode
from zkpy.jute.ops import OpCode, PathRequest
from zkpy.jute.records import ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader
from zkpy.server.config import parse_config
from zkpy.server.connection import SESSIONLESS_TIMEOUT, ClientConnection
from zkpy.server.node import ZooKeeperServer
from zkpy.tree.datatree import DataTree


class HeldHandshakes(ZooKeeperServer):
    """Answers no ConnectRequest until the test says so (as a learner waits for its leader)."""

    def __init__(self) -> None:
        config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
        super().__init__(config, tree=DataTree())
        self.held: list[tuple[ClientConnection, ConnectRequest]] = []
        self.closed = trio.Event()

    def handle_connect(self, conn: ClientConnection, request: ConnectRequest) -> bool:
        self.held.append((conn, request))
        return True

    def answer(self) -> None:
        conn, request = self.held.pop()
        super().handle_connect(conn, request)

    def connection_closed(self, conn: ClientConnection) -> None:
        super().connection_closed(conn)
        self.closed.set()


def frame(*records: object) -> bytes:
    body = b"".join(encode(r) for r in records)
    return len(body).to_bytes(4, "big") + body


CONNECT = frame(ConnectRequest(0, 0, 4000, 0, b"\x00" * 16, False))


async def read_frame(stream: trio.abc.Stream, buffer: bytearray) -> bytes:
    while len(buffer) < 4 or len(buffer) < 4 + int.from_bytes(buffer[:4], "big"):
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        buffer += data
    size = int.from_bytes(buffer[:4], "big")
    body = bytes(buffer[4 : 4 + size])
    del buffer[: 4 + size]
    return body


async def test_a_client_that_gives_up_while_its_handshake_waits_is_noticed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Owners.py: a learner withdraws the claim its question made as soon as the connection it
    asked for closes, so that the relinquish follows the question on the link. The connection
    read nothing while its handshake waited, so it saw the client's close only when the answer
    came or at the sessionless timeout. Fails before this change: still open after 1 s."""
    server = HeldHandshakes()
    client, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        await client.send_all(CONNECT)
        await trio.testing.wait_all_tasks_blocked()
        assert server.held, "the ConnectRequest was read"
        started = trio.current_time()
        await client.aclose()
        with trio.move_on_after(1.0):
            await server.closed.wait()
        assert server.closed.is_set(), "the connection is still open"
        assert conn.closing and trio.current_time() - started < SESSIONLESS_TIMEOUT


async def test_requests_sent_ahead_of_the_answer_are_taken_after_it_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the read during the wait takes is the receiver's next read: nothing is lost or run
    before the session exists (a guard for that read, not a regression test)."""
    server = HeldHandshakes()
    client, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        nursery.start_soon(conn.serve)
        await client.send_all(CONNECT)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(frame(RequestHeader(5, OpCode.EXISTS), PathRequest("/")))
        await client.send_all(frame(RequestHeader(6, OpCode.EXISTS), PathRequest("/zookeeper")))
        await trio.testing.wait_all_tasks_blocked()
        server.answer()
        buffer = bytearray()
        response = decode(ConnectResponse, await read_frame(client, buffer))
        assert response.session_id and response.timeout == 4000
        xids = [decode(ReplyHeader, await read_frame(client, buffer)).xid for _ in range(2)]
        assert xids == [5, 6]
        nursery.cancel_scope.cancel()


async def test_a_new_session_committed_after_its_client_left_is_not_attached_to_the_dead_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A new session's handshake waits for its createSession commit; the client gives up
    meanwhile, which the read during the wait notices at once, so the connection is closed and
    forgotten (connection_closed) before the commit. The commit's callback then attached the
    session to that dead connection: by_session kept it, and nothing removes it (only
    connection_closed does), one dead connection per abandoned handshake for as long as the
    server runs. Fails on main at e8388aa: by_session holds the closed connection."""
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    server = ZooKeeperServer(config, tree=DataTree())
    client, server_end = trio.testing.memory_stream_pair()
    conn = ClientConnection(server, server_end, ("127.0.0.1", 5555))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        await client.send_all(CONNECT)  # its createSession waits: the pipeline is not running yet
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert conn.closing and conn not in server.connections, "the close was noticed"
        nursery.start_soon(server.pipeline.run)  # the commit comes
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.tree.sessions) == 1, "the session was created (it expires unused)"
        assert conn not in server.by_session.values(), "by_session holds a closed connection"
        nursery.cancel_scope.cancel()
