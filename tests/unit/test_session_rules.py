"""Session rules on one in-process server, on a virtual clock: what happens to sessions while the
disk fails, and the invariant that ties sessions, ephemerals and the expirer together."""

from __future__ import annotations

import trio
import trio.testing

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE, ConnectRequest
from zkpy.server.config import parse_config
from zkpy.server.connection import ClientConnection
from zkpy.server.node import ZooKeeperServer
from zkpy.server.pipeline import Persist
from zkpy.server.sessions import session_problems
from zkpy.tree.apply import Result
from zkpy.tree.datatree import DataTree
from zkpy.tree.txn import Txn, session_body

SESSION = 0x5E55


class Disk:
    """A persist step that fails while `failing` is set, as a full disk does."""

    def __init__(self) -> None:
        self.failing = False

    async def persist(self, txns: list[Txn]) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")


class FakeConnection:
    remote = ("127.0.0.1", 5555)

    def __init__(self) -> None:
        self.attached: tuple[int, int] | None = None
        self.closed = False

    def send(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def closing(self) -> bool:
        return self.closed

    def attach(self, session_id: int, timeout: int) -> None:
        self.attached = (session_id, timeout)


def make_server(disk: Disk | None = None, persist: Persist | None = None) -> ZooKeeperServer:
    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="t.cfg")
    return ZooKeeperServer(config, persist=persist or (disk or Disk()).persist, tree=DataTree())


def frame(*records: object) -> bytes:
    """Length-prefixed jute records, as a client sends them."""
    body = b"".join(encode(r) for r in records)
    return len(body).to_bytes(4, "big") + body


def client_of(server: ZooKeeperServer) -> tuple[trio.abc.Stream, ClientConnection]:
    """An in-memory client stream and the server's connection for it (serve() not started)."""
    client, server_end = trio.testing.memory_stream_pair()
    return client, ClientConnection(server, server_end, ("127.0.0.1", 5555))


async def write(server: ZooKeeperServer, op: int, body: bytes, session: int = SESSION) -> Result:
    results: list[Result] = []
    server.pipeline.submit(session, 1, op, body, callback=results.append)
    await server.pipeline.wait_idle()
    return results[0]


async def test_a_session_that_expires_while_the_disk_fails_expires_again_once_it_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sessions issue item 2a: the expirer marked the session closing, its closeSession was refused
    by the failing disk and never tried again, and the session was in no expiry bucket any more:
    its ephemeral stayed until the next restart. Fails on 7a18865 (/e still there)."""
    disk = Disk()
    server = make_server(disk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        nursery.start_soon(server._expire_sessions)
        assert (await write(server, OpCode.CREATE_SESSION, session_body(4000, b"p" * 16))).err == 0
        create = encode(CreateRequest("/e", b"", OPEN_ACL_UNSAFE, 1))
        assert (await write(server, OpCode.CREATE, create)).err == 0
        disk.failing = True
        await trio.sleep(8)  # expired, and its close refused
        assert "/e" in server.tree.nodes and server.pipeline.write_error is not None
        assert session_problems(server.tree, server.sessions) == []
        disk.failing = False
        server.pipeline.write_error = None  # what run.resume_writes_when_the_disk_works does
        await trio.sleep(8)
        assert "/e" not in server.tree.nodes and SESSION not in server.tree.sessions
        assert session_problems(server.tree, server.sessions) == []
        nursery.cancel_scope.cancel()


async def test_a_session_whose_create_the_disk_refused_is_not_handed_out() -> None:
    """Sessions issue item 2b: a createSession refused by the disk still completed the handshake,
    so the client held a session in neither the tree nor the tracker, whose ephemerals (once the
    disk healed) never expired. Fails on 7a18865 (the connection was attached)."""
    disk = Disk()
    server = make_server(disk)
    disk.failing = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        conn = FakeConnection()
        server.handle_connect(conn, ConnectRequest(timeout=4000))  # type: ignore[arg-type]
        await server.pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert session_problems(server.tree, server.sessions, attached=server.by_session) == []
    assert conn.attached is None and conn.closed
    assert server.tree.sessions == {} and server.sessions.timeouts == {}


async def test_the_session_invariant_names_what_is_wrong() -> None:
    """The check the simulator runs after every seed: it must see an orphan ephemeral and a live
    session that no expiry bucket holds (the two ways items 1 and 2 leaked)."""
    server = make_server(Disk())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        await write(server, OpCode.CREATE_SESSION, session_body(4000, b"p" * 16))
        await write(server, OpCode.CREATE, encode(CreateRequest("/e", b"", OPEN_ACL_UNSAFE, 1)))
        nursery.cancel_scope.cancel()
    assert session_problems(server.tree, server.sessions) == []
    server.sessions._unschedule(SESSION)
    assert session_problems(server.tree, server.sessions) == [
        f"session 0x{SESSION:x} is live but in no expiry bucket"
    ]
    del server.tree.sessions[SESSION]
    assert f"ephemeral /e is owned by 0x{SESSION:x}, which is no session" in session_problems(
        server.tree, server.sessions
    )


async def test_a_read_queued_behind_a_write_of_a_closed_connection_leaves_no_watch() -> None:
    """Sessions issue item 10: a getData with a watch, queued behind the same connection's write,
    ran when the write committed even though the connection had closed meanwhile (after close had
    removed its watches): the watch stayed for ever (a persistent one too). Fails on 7a18865."""
    from zkpy.jute.ops import PathWatchRequest, SetDataRequest
    from zkpy.jute.records import RequestHeader

    release = trio.Event()

    async def slow_persist(txns: list[Txn]) -> None:
        if any(t.op == OpCode.SET_DATA for t in txns):
            await release.wait()

    server = make_server(persist=slow_persist)
    client, conn = client_of(server)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        await write(server, OpCode.CREATE, encode(CreateRequest("/n", b"", OPEN_ACL_UNSAFE, 0)), session=0)
        nursery.start_soon(conn.serve)
        await client.send_all(frame(ConnectRequest(timeout=4000)))
        await trio.testing.wait_all_tasks_blocked()
        assert conn.session_id
        await client.send_all(
            frame(RequestHeader(1, OpCode.SET_DATA), SetDataRequest("/n", b"x", -1))
            + frame(RequestHeader(2, OpCode.GET_DATA), PathWatchRequest("/n", True))
        )
        await trio.testing.wait_all_tasks_blocked()
        assert conn.queued == 2  # the read waits behind the write
        await client.aclose()  # the client goes away
        await trio.testing.wait_all_tasks_blocked()
        assert conn not in server.connections
        release.set()
        await server.pipeline.wait_idle()
        await trio.testing.wait_all_tasks_blocked()
        assert server.tree.nodes["/n"].data == b"x"
        assert server.watches.count() == 0 and server.watches.paths_of(conn) == []
        nursery.cancel_scope.cancel()


async def test_the_session_invariant_holds_after_a_create_pipelined_behind_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sessions issue item 1 through the invariant: closeSession then create(ephemeral) in one
    send. The server's check_session refuses the create (and apply would too); with both reverted
    the create makes /late, owned by no session, and session_problems names it."""
    from zkpy.jute.ops import CreateRequest
    from zkpy.jute.records import RequestHeader

    server = make_server(Disk())
    client, conn = client_of(server)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        nursery.start_soon(server._expire_sessions)
        nursery.start_soon(conn.serve)
        await client.send_all(frame(ConnectRequest(timeout=4000)))
        await trio.testing.wait_all_tasks_blocked()
        assert conn.session_id
        await client.send_all(
            frame(RequestHeader(1, OpCode.CLOSE_SESSION))
            + frame(RequestHeader(2, OpCode.CREATE), CreateRequest("/late", b"", OPEN_ACL_UNSAFE, 1))
        )
        await trio.sleep(1)
        await server.pipeline.wait_idle()
        assert session_problems(server.tree, server.sessions) == []
        assert "/late" not in server.tree.nodes
        nursery.cancel_scope.cancel()
