"""Sessions: ephemerals die with their session (close, expiry, timeout) and survive a dropped socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from zkraw import ConnectionClosed, RawClient, connection_closed_by_server
from zkwait import Events, wait_until

from zkpy.jute.codec import encode
from zkpy.jute.ops import (
    EPHEMERAL,
    XID_SET_WATCHES,
    CreateRequest,
    OpCode,
    PathRequest,
    PathWatchRequest,
    SetWatches2Request,
)
from zkpy.jute.records import OPEN_ACL_UNSAFE, ConnectRequest
from zkpy.testing.procs import ServerProcess


def test_ephemeral_gone_when_session_closes(
    zk: KazooClient, make_client: Callable[..., KazooClient], base: str
) -> None:
    owner = make_client()
    owner.create(f"{base}/e", ephemeral=True)
    owner.create(f"{base}/keep")
    assert zk.exists(base).numChildren == 2
    owner.stop()
    # closeSession is a write: once it is answered, the ephemeral is gone for everybody.
    assert zk.exists(f"{base}/e") is None
    assert zk.exists(f"{base}/keep") is not None
    assert zk.get_children(base) == ["keep"]


def test_ephemeral_gone_when_session_expires(
    zk: KazooClient, make_client: Callable[..., KazooClient], server: ServerProcess, base: str
) -> None:
    owner = make_client()
    states: list[str] = []
    owner.add_listener(states.append)
    owner.create(f"{base}/e", ephemeral=True)
    deleted = Events()
    zk.exists(f"{base}/e", watch=deleted)
    old_session = owner.client_id[0]

    # Expire it as kazoo's own tests do: a second connection on the same session closes it.
    twin = KazooClient(hosts=server.hosts, client_id=owner.client_id, timeout=10)
    twin.start(timeout=10)
    assert twin.client_id[0] == old_session
    twin.stop()
    twin.close()

    event = deleted.next()
    assert (event.type, event.path) == ("DELETED", f"{base}/e")
    assert zk.exists(f"{base}/e") is None
    wait_until(lambda: KazooState.LOST in states, what="the owner to see its session lost")
    # kazoo then opens a new session: the old ephemeral does not come back.
    wait_until(lambda: owner.connected, what="the owner to reconnect")
    assert owner.client_id[0] != old_session
    assert owner.exists(f"{base}/e") is None


def test_session_times_out_without_pings(zk: KazooClient, server: ServerProcess, base: str) -> None:
    raw = RawClient(server.host, server.port, timeout_ms=4000)
    try:
        assert raw.handshake.timeout == 4000
        raw.call(OpCode.CREATE, CreateRequest(f"{base}/e", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        gone = threading.Event()
        assert zk.exists(f"{base}/e", watch=lambda _e: gone.set()) is not None
        # The raw client now stays silent: no pings, so the server must expire the session.
        assert gone.wait(15), "ephemeral of a silent session still present after 15s"
        assert zk.exists(f"{base}/e") is None
        assert connection_closed_by_server(raw.sock, 5)
    finally:
        raw.sock.close()

    again = RawClient(server.host, server.port, session_id=raw.session_id, passwd=raw.handshake.passwd)
    try:
        # An expired session is refused: timeout 0 and session id 0, then the server closes.
        assert (again.handshake.timeout, again.handshake.session_id) == (0, 0)
        assert connection_closed_by_server(again.sock, 5)
    finally:
        again.sock.close()


def test_session_timeout_is_clamped_to_2_and_20_ticks(server: ServerProcess) -> None:
    short = RawClient(server.host, server.port, timeout_ms=100)
    long = RawClient(server.host, server.port, timeout_ms=10_000_000)
    try:
        assert short.handshake.timeout == 4000  # tickTime 2000
        assert long.handshake.timeout == 40000
        assert short.session_id != 0
        assert long.session_id not in (0, short.session_id)
        assert len(short.handshake.passwd) == 16
        assert short.handshake.read_only is False  # echoed because the client sent the byte
    finally:
        short.close()
        long.close()


def test_wrong_password_is_refused(server: ServerProcess, zk: KazooClient, base: str) -> None:
    first = RawClient(server.host, server.port)
    try:
        first.call(OpCode.CREATE, CreateRequest(f"{base}/e", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        bad = bytes(b ^ 0xFF for b in first.handshake.passwd)
        other = RawClient(server.host, server.port, session_id=first.session_id, passwd=bad)
        try:
            assert (other.handshake.timeout, other.handshake.session_id) == (0, 0)
            assert connection_closed_by_server(other.sock, 5)
        finally:
            other.sock.close()
        # The session itself lives on: the right password still resumes it, ephemeral and all.
        first.sock.close()
        again = RawClient(
            server.host, server.port, session_id=first.session_id, passwd=first.handshake.passwd
        )
        try:
            assert again.session_id == first.session_id
            assert zk.exists(f"{base}/e").ephemeralOwner == first.session_id
        finally:
            again.close()
    finally:
        first.sock.close()


def test_client_that_has_seen_a_newer_zxid_is_refused(server: ServerProcess, zk: KazooClient) -> None:
    """A server never hands a session to a client that has seen more history than it has."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        body = encode(ConnectRequest(0, zk.last_zxid + 1_000_000, 10000, 0, b"\x00" * 16, False))
        sock.sendall(len(body).to_bytes(4, "big") + body)
        assert connection_closed_by_server(sock)


def test_dropped_socket_resumes_the_same_session(
    make_client: Callable[..., KazooClient], zk: KazooClient, base: str
) -> None:
    client = make_client()
    states: list[str] = []
    client.add_listener(states.append)
    client.create(f"{base}/e", b"v0", ephemeral=True)
    session = client.client_id

    client._connection._socket.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: KazooState.SUSPENDED in states, what="the client to notice the dropped socket")
    wait_until(lambda: client.connected, what="the client to reconnect")

    assert client.client_id == session
    assert KazooState.LOST not in states
    assert zk.exists(f"{base}/e").ephemeralOwner == session[0]
    client.set(f"{base}/e", b"v1")
    assert zk.get(f"{base}/e")[0] == b"v1"


def test_set_watches_on_reconnect_fires_what_was_missed(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    """setWatches2 after a reconnect fires at once for changes after relativeZxid and re-arms the rest."""
    for name in ("changed", "untouched", "deleted"):
        zk.create(f"{base}/{name}")
    first = RawClient(server.host, server.port)
    first.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/changed", True))
    first.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/untouched", True))
    first.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/deleted", True))
    assert first.error_of(OpCode.EXISTS, PathWatchRequest(f"{base}/new", True)) == -101
    first.call(OpCode.GET_CHILDREN, PathWatchRequest(base, True))
    seen_zxid = first.last_zxid
    first.sock.close()  # no closeSession: the session stays

    zk.set(f"{base}/changed", b"1")
    zk.create(f"{base}/new")
    zk.delete(f"{base}/deleted")
    resumed = RawClient(server.host, server.port, session_id=first.session_id, passwd=first.handshake.passwd)
    try:
        assert resumed.session_id == first.session_id
        watches = SetWatches2Request(
            seen_zxid,
            [f"{base}/changed", f"{base}/untouched", f"{base}/deleted"],
            [f"{base}/new"],
            [base],
            [],
            [],
        )
        resumed.send(OpCode.SET_WATCHES2, watches, xid=XID_SET_WATCHES)
        assert resumed.read_reply(XID_SET_WATCHES).err == 0
        fired = sorted((e.type, e.path) for e in resumed.take_events())
        assert fired == [(1, f"{base}/new"), (2, f"{base}/deleted"), (3, f"{base}/changed"), (4, base)]
        zk.set(f"{base}/untouched", b"1")
        assert [(e.type, e.path) for e in resumed.take_events()] == [(3, f"{base}/untouched")]
    finally:
        resumed.close()


def test_get_ephemerals_lists_this_sessions_ephemerals_by_prefix(server: ServerProcess, base: str) -> None:
    raw = RawClient(server.host, server.port)
    other = RawClient(server.host, server.port)
    try:
        for path in (f"{base}/a", f"{base}/b"):
            raw.call(OpCode.CREATE, CreateRequest(path, b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        other.call(OpCode.CREATE, CreateRequest(f"{base}/theirs", b"", OPEN_ACL_UNSAFE, EPHEMERAL))

        mine = raw.call(OpCode.GET_EPHEMERALS, PathRequest(base)).paths
        assert sorted(mine) == [f"{base}/a", f"{base}/b"]
        assert f"{base}/a" in raw.call(OpCode.GET_EPHEMERALS, PathRequest("/")).paths
        # The argument is a string prefix, not a node.
        assert sorted(raw.call(OpCode.GET_EPHEMERALS, PathRequest(base[:-2])).paths) == sorted(mine)
        assert raw.call(OpCode.GET_EPHEMERALS, PathRequest(f"{base}/zzz")).paths == []
        assert other.call(OpCode.GET_EPHEMERALS, PathRequest(base)).paths == [f"{base}/theirs"]
    finally:
        raw.close()
        other.close()


def test_pings_keep_a_short_session_alive(server: ServerProcess, zk: KazooClient, base: str) -> None:
    raw = RawClient(server.host, server.port, timeout_ms=4000)
    try:
        raw.call(OpCode.CREATE, CreateRequest(f"{base}/e", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        for _ in range(6):  # 6 s, well past the 4 s timeout
            time.sleep(1.0)
            raw.ping()
        assert zk.exists(f"{base}/e") is not None
    finally:
        raw.close()


def test_session_close_fires_watches_on_its_ephemerals_and_their_parent(
    make_client: Callable[..., KazooClient], zk: KazooClient, base: str
) -> None:
    owner = make_client()
    owner.create(f"{base}/e1", ephemeral=True)
    owner.create(f"{base}/e2", ephemeral=True)
    on_node, on_parent = Events(), Events()
    zk.get(f"{base}/e1", watch=on_node)
    zk.get_children(base, watch=on_parent)
    before = zk.exists(base)
    owner.stop()
    assert (on_node.next().type, on_parent.next().type) == ("DELETED", "CHILD")
    after = zk.exists(base)
    assert after.numChildren == 0
    assert after.cversion == before.cversion + 2
    assert after.pzxid > before.pzxid


def test_closing_a_session_only_removes_ephemerals_it_still_owns(
    make_client: Callable[..., KazooClient], zk: KazooClient, server: ServerProcess, base: str
) -> None:
    """Another session may delete an ephemeral and put a persistent node at its path: it must survive."""
    owner = RawClient(server.host, server.port)
    try:
        owner.call(OpCode.CREATE, CreateRequest(f"{base}/e", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        owner.call(OpCode.CREATE, CreateRequest(f"{base}/f", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        zk.delete(f"{base}/e")
        zk.create(f"{base}/e", b"persistent now")
        assert owner.call(OpCode.GET_EPHEMERALS, PathRequest(base)).paths == [f"{base}/f"]
    finally:
        owner.close()
    assert zk.get(f"{base}/e")[0] == b"persistent now"
    assert zk.exists(f"{base}/e").ephemeralOwner == 0
    assert zk.exists(f"{base}/f") is None


def test_requests_after_close_session_are_refused_and_leave_no_ephemeral(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    """Sessions issue item 1: requests pipelined behind a closeSession on the same connection were
    still applied; a create(ephemeral) made a node owned by a session that no longer existed,
    which nothing ever removed (not even a restart). As Apache's: what follows the close is never
    run (its checkSession refuses it) nor answered (the connection ends with the close's reply).
    Fails on 7a18865 (the create returned /late, and /late stayed)."""
    raw = RawClient(server.host, server.port)
    close = raw.send(OpCode.CLOSE_SESSION)
    create = raw.send(OpCode.CREATE, CreateRequest(f"{base}/late", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
    read = raw.send(OpCode.EXISTS, PathWatchRequest(base, False))
    answers = []
    try:
        for xid in (close, create, read):
            answers.append(raw.read_reply(xid).err)
    except ConnectionClosed:
        pass  # the connection ends after the close's reply; what was not answered was not run
    raw.sock.close()
    assert answers == [0]  # as Apache: the connection ends with the close's reply
    assert zk.exists(f"{base}/late") is None
    assert zk.get_children(base) == []
