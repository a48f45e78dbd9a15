"""Read-only mode: connected to a server without a quorum, the client reads, its writes raise
NotReadOnlyError, and it looks for a read-write server (Apache's `isro` probe) and moves there.

Two setups: a scripted read-only server beside the suite's real (read-write) server, which shows the
probe alone moves the client (the scripted server never drops it); and a real 3-server zkpy ensemble
with readonlymode.enabled, where two members die and come back.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable

import pytest
import trio

import zkpy.client
from zkpy.client import State
from zkpy.client.connection import probe_read_write
from zkpy.errors import Code, ConnectionLossError, NotReadOnlyError
from zkpy.jute.ops import XID_PING, OpCode
from zkpy.jute.records import ConnectRequest, ConnectResponse
from zkpy.server.protocol import connect_response, reply
from zkpy.testing.procs import (
    ServerProcess,
    free_port,
    java_properties,
    running_ensemble,
)

from .conftest import SERVER_KIND

RO_SESSION = 0x5EED


class ScriptedReadOnlyServer:
    """Just enough of a server cut off from its quorum: it takes read-only handshakes (a fixed local
    session) and hangs up on read-write ones, answers pings, refuses every other request with
    NotReadOnly, says "ro" to `isro`, and never drops a read-only connection itself."""

    def __init__(self) -> None:
        self.port = 0
        self.handshakes = 0
        self.refused = 0
        self.probes = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            try:
                while len(buffer) < 4:
                    buffer += await stream.receive_some(4096) or b"\0" * 4
                if buffer[:4] == b"isro":
                    self.probes += 1
                    await stream.send_all(b"ro")
                    return
                handshake = True
                while True:
                    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">i", buffer[:4])[0]:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        buffer += data
                    size = struct.unpack(">i", buffer[:4])[0]
                    body, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    if handshake:
                        request, _ = ConnectRequest.read(body)
                        if not request.read_only:  # as a real one: a read-write client looks elsewhere
                            self.refused += 1
                            return
                        self.handshakes += 1
                        response = ConnectResponse(0, request.timeout, RO_SESSION, b"\x01" * 16, True)
                        await stream.send_all(connect_response(response))
                        handshake = False
                        continue
                    xid, op = struct.unpack_from(">ii", body)
                    if op == OpCode.PING:
                        await stream.send_all(reply(XID_PING, 0, 0))
                    else:
                        await stream.send_all(reply(xid, 0, int(Code.NOT_READ_ONLY)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


@pytest.fixture
async def read_only_server() -> AsyncIterator[ScriptedReadOnlyServer]:
    scripted = ScriptedReadOnlyServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(scripted.run)
        yield scripted
        nursery.cancel_scope.cancel()


async def wait_state(client: zkpy.client.Client, condition: Callable[[], bool], limit: float) -> None:
    with trio.fail_after(limit):
        while not condition():
            await trio.sleep(0.05)


async def test_probe_tells_read_write_from_read_only(
    server: ServerProcess, read_only_server: ScriptedReadOnlyServer
) -> None:
    assert await probe_read_write((server.host, server.port))
    assert not await probe_read_write(("127.0.0.1", read_only_server.port))
    assert not await probe_read_write(("127.0.0.1", free_port()))  # nobody listening


async def test_read_only_connection_moves_to_a_read_write_server(
    server: ServerProcess, read_only_server: ScriptedReadOnlyServer, chroot: str
) -> None:
    if SERVER_KIND == "apache":
        pytest.skip("needs isro allowed on the read-write server (Apache allows it only in read-only mode)")
    hosts = f"127.0.0.1:{read_only_server.port},{server.hosts}{chroot}"
    states: list[State] = []
    async with zkpy.client.connect(hosts, timeout=4, read_only=True, randomize_hosts=False) as zk:
        zk.add_listener(states.append)
        assert zk.state is State.CONNECTED_RO and zk.read_only_connection and zk.connected
        assert zk.session_id == RO_SESSION
        with pytest.raises(NotReadOnlyError, match="read-only"):
            await zk.create("/x", b"1")
        # The scripted server keeps the connection: only the isro probe (0.5 s, then 1 s...) moves it.
        await wait_state(zk, lambda: zk.state is State.CONNECTED, 15)
        assert not zk.read_only_connection
        assert zk.server == (server.host, server.port)
        # The read-only session was local to that server: a new one, not an expired one.
        assert zk.session_id not in (RO_SESSION, 0)
        assert await zk.create("/x", b"1") == "/x"
        assert (await zk.get("/x"))[0] == b"1"
    assert State.EXPIRED not in states
    assert states[:2] == [State.SUSPENDED, State.CONNECTED]
    assert read_only_server.handshakes == 1


async def test_without_read_only_the_flag_is_not_sent(read_only_server: ScriptedReadOnlyServer) -> None:
    """A client that did not allow read-only says so in its handshake, so a read-only server turns it
    away and it never sees CONNECTED_RO."""
    hosts = f"127.0.0.1:{read_only_server.port}"
    with pytest.raises(ConnectionLossError):
        async with zkpy.client.connect(hosts, timeout=2, start_timeout=1.5):
            pass
    assert read_only_server.refused >= 1 and read_only_server.handshakes == 0


# -- a real ensemble -----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_ensemble_losing_and_regaining_its_quorum() -> None:
    if SERVER_KIND == "apache":
        pytest.skip("a zkpy ensemble")

    def respawn(server: ServerProcess) -> None:
        server.start(wait=None)

    with running_ensemble("zkpy", 3, {"tickTime": "200", "readonlymode.enabled": "true"}) as ensemble:
        await lose_and_regain_quorum(ensemble.hosts, ensemble.servers, respawn)


@pytest.mark.apache
@pytest.mark.timeout(300)
@pytest.mark.xfail(
    reason="not yet investigated: against Apache's ensemble the client never reaches CONNECTED_RO within 60 s"
    " (is readonlymode.enabled reaching the JVMs? does Apache's read-only server take a global session?)",
    strict=False,
)
async def test_apache_ensemble_losing_and_regaining_its_quorum() -> None:
    """The same against Apache ZooKeeper 3.8 (readonlymode.enabled is a Java system property there)."""

    def respawn(server: ServerProcess) -> None:
        with java_properties({"readonlymode.enabled": "true"}):
            server.start(wait=None)

    with (
        java_properties({"readonlymode.enabled": "true"}),
        running_ensemble("apache", 3, {"tickTime": "200"}) as ensemble,
    ):
        await lose_and_regain_quorum(ensemble.hosts, ensemble.servers, respawn)


async def lose_and_regain_quorum(
    hosts: str, servers: list[ServerProcess], respawn: Callable[[ServerProcess], None]
) -> None:
    """Connect read-only-capable, kill the two servers the client is not on: it sees CONNECTED_RO on the
    survivor (reads work, writes raise NotReadOnlyError); bring them back: it ends up read-write with the
    same session, and writes work again."""
    states: list[State] = []
    async with zkpy.client.connect(hosts, timeout=4, read_only=True) as zk:
        zk.add_listener(states.append)
        assert zk.state is State.CONNECTED
        await zk.create("/kept", b"before")
        session = zk.session_id
        survivor = next(s for s in servers if (s.host, s.port) == zk.server)
        killed = [s for s in servers if s is not survivor]
        for server in killed:
            server.kill()
        await wait_state(zk, lambda: zk.state is State.CONNECTED_RO, 60)
        assert zk.read_only_connection and zk.server == (survivor.host, survivor.port)
        assert zk.session_id == session  # the survivor knew the session: it keeps it
        assert (await zk.get("/kept"))[0] == b"before"
        with pytest.raises(NotReadOnlyError):
            await zk.set("/kept", b"during")
        with pytest.raises(NotReadOnlyError):
            await zk.create("/new")

        for server in killed:
            respawn(server)
        await wait_state(zk, lambda: zk.state in (State.CONNECTED, State.RECONNECTED), 120)
        assert not zk.read_only_connection
        assert await zk.set("/kept", b"after")
        assert (await zk.get("/kept"))[0] == b"after"
        assert zk.session_id == session and State.EXPIRED not in states
    assert State.CONNECTED_RO in states
