"""Create, read, update and delete: versions, errors and every Stat field."""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from zkraw import RawClient, connection_closed_by_server

from zkpy.jute.codec import decode
from zkpy.jute.ops import (
    CreateRequest,
    DeleteRequest,
    GetDataResponse,
    OpCode,
    PathWatchRequest,
    SetDataRequest,
)
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import ServerProcess


def now_ms() -> int:
    return int(time.time() * 1000)


def test_create_then_get_reports_a_fresh_stat(zk: KazooClient, base: str) -> None:
    before = now_ms()
    path, created = zk.create(f"{base}/n", b"hello", include_data=True)
    after = now_ms()
    data, stat = zk.get(path)

    assert path == f"{base}/n"
    assert data == b"hello"
    assert stat == created
    assert stat.czxid == stat.mzxid == stat.pzxid
    assert stat.czxid == zk.last_zxid
    assert (stat.version, stat.cversion, stat.aversion) == (0, 0, 0)
    assert stat.ephemeralOwner == 0
    assert stat.dataLength == 5
    assert stat.numChildren == 0
    assert stat.ctime == stat.mtime
    assert before - 5000 <= stat.ctime <= after + 5000


def test_empty_and_binary_values_round_trip(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/empty")
    zk.create(f"{base}/bin", bytes(range(256)))
    assert zk.get(f"{base}/empty")[0] == b""
    assert zk.get(f"{base}/empty")[1].dataLength == 0
    assert zk.get(f"{base}/bin")[0] == bytes(range(256))


def test_set_with_versions(zk: KazooClient, base: str) -> None:
    path = f"{base}/v"
    created = zk.create(path, b"a", include_data=True)[1]

    stat = zk.set(path, b"bb", version=0)
    assert stat.version == 1
    assert stat.dataLength == 2
    assert stat.czxid == created.czxid
    assert stat.mzxid > created.mzxid
    assert stat.mzxid == zk.last_zxid
    assert stat.pzxid == created.pzxid
    assert stat.ctime == created.ctime
    assert stat.mtime >= created.mtime

    with pytest.raises(BadVersionError):
        zk.set(path, b"c", version=0)
    with pytest.raises(BadVersionError):
        zk.set(path, b"c", version=7)
    assert zk.get(path)[0] == b"bb"

    assert zk.set(path, b"ccc", version=-1).version == 2
    data, stat = zk.get(path)
    assert (data, stat.version, stat.dataLength) == (b"ccc", 2, 3)


def test_delete_with_versions(zk: KazooClient, base: str) -> None:
    path = f"{base}/d"
    zk.create(path, b"x")
    zk.set(path, b"y")
    with pytest.raises(BadVersionError):
        zk.delete(path, version=0)
    assert zk.exists(path) is not None
    zk.delete(path, version=1)
    assert zk.exists(path) is None
    with pytest.raises(NoNodeError):
        zk.get(path)
    with pytest.raises(NoNodeError):
        zk.delete(path)


def test_errors_a_user_meets(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/a")
    with pytest.raises(NodeExistsError):
        zk.create(f"{base}/a")
    with pytest.raises(NoNodeError):
        zk.create(f"{base}/missing/child")
    with pytest.raises(NoNodeError):
        zk.set(f"{base}/missing", b"x")
    with pytest.raises(NoNodeError):
        zk.get_children(f"{base}/missing")
    with pytest.raises(NoNodeError):
        zk.delete(f"{base}/missing")

    zk.create(f"{base}/a/child")
    with pytest.raises(NotEmptyError):
        zk.delete(f"{base}/a")
    assert zk.exists(f"{base}/a/child") is not None

    zk.create(f"{base}/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create(f"{base}/eph/child")
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create(f"{base}/eph/seq-", sequence=True)


def test_exists_on_missing_node_is_none(zk: KazooClient, base: str) -> None:
    assert zk.exists(f"{base}/nothing") is None


def test_ephemeral_owner_is_the_session(zk: KazooClient, base: str) -> None:
    stat = zk.create(f"{base}/e", ephemeral=True, include_data=True)[1]
    assert stat.ephemeralOwner == zk.client_id[0]
    assert zk.exists(f"{base}/e").ephemeralOwner == zk.client_id[0]


def test_child_create_and_delete_move_cversion_and_pzxid(zk: KazooClient, base: str) -> None:
    parent = f"{base}/p"
    p0 = zk.create(parent, b"data", include_data=True)[1]

    c1 = zk.create(f"{parent}/c1", include_data=True)[1]
    p1 = zk.exists(parent)
    assert p1.cversion == 1
    assert p1.numChildren == 1
    assert p1.pzxid == c1.czxid
    assert (p1.version, p1.mzxid, p1.mtime) == (p0.version, p0.mzxid, p0.mtime)

    zk.create(f"{parent}/c2")
    zk.set(f"{parent}/c1", b"changed")  # a child's data change is not a child-list change
    p2 = zk.exists(parent)
    assert (p2.cversion, p2.numChildren) == (2, 2)

    zk.delete(f"{parent}/c1")
    delete_zxid = zk.last_zxid
    p3 = zk.exists(parent)
    assert p3.cversion == 3
    assert p3.numChildren == 1
    assert p3.pzxid == delete_zxid
    assert p3.pzxid > p2.pzxid
    assert p3.mzxid == p0.mzxid


def test_children_listing(zk: KazooClient, base: str) -> None:
    for name in ("b", "a", "c"):
        zk.create(f"{base}/{name}")
    assert sorted(zk.get_children(base)) == ["a", "b", "c"]
    assert zk.get_children(f"{base}/a") == []
    children, stat = zk.get_children(base, include_data=True)
    assert sorted(children) == ["a", "b", "c"]
    assert stat.numChildren == 3
    assert stat.cversion == 3


def test_zxids_grow_with_every_write(zk: KazooClient, base: str) -> None:
    zxids = [zk.create(f"{base}/z", include_data=True)[1].mzxid]
    for i in range(5):
        zxids.append(zk.set(f"{base}/z", str(i).encode()).mzxid)
    assert zxids == sorted(zxids)
    assert len(set(zxids)) == len(zxids)


@pytest.mark.parametrize("version", [-2, -100])
def test_negative_versions_other_than_minus_one_never_match(zk: KazooClient, base: str, version: int) -> None:
    zk.create(f"{base}/n", b"v")
    with pytest.raises(BadVersionError):
        zk.set(f"{base}/n", b"w", version=version)
    with pytest.raises(BadVersionError):
        zk.delete(f"{base}/n", version=version)


def test_pipelined_requests_are_answered_in_order_and_see_earlier_writes(
    server: ServerProcess, base: str
) -> None:
    """Requests sent back to back on one connection are answered in order, each seeing the ones before."""
    raw = RawClient(server.host, server.port)
    path = f"{base}/p"
    try:
        xids = [
            raw.send(OpCode.CREATE, CreateRequest(path, b"1", OPEN_ACL_UNSAFE, 0)),
            raw.send(OpCode.GET_DATA, PathWatchRequest(path, False)),
            raw.send(OpCode.SET_DATA, SetDataRequest(path, b"2", 0)),
            raw.send(OpCode.GET_DATA, PathWatchRequest(path, False)),
            raw.send(OpCode.SET_DATA, SetDataRequest(path, b"3", 0)),  # BadVersion: now at 1
            raw.send(OpCode.DELETE, DeleteRequest(path, 1)),
            raw.send(OpCode.EXISTS, PathWatchRequest(path, False)),
        ]
        replies = [raw.read_reply(xid) for xid in xids]  # read_reply fails on any out-of-order reply
        assert [r.err for r in replies] == [0, 0, 0, 0, -103, 0, -101]
        assert decode(GetDataResponse, replies[1].body).data == b"1"
        second = decode(GetDataResponse, replies[3].body)
        assert (second.data, second.stat.version) == (b"2", 1)
        zxids = [r.zxid for r in replies]
        assert zxids == sorted(zxids)
    finally:
        raw.close()


def test_close_session_is_answered_then_the_connection_closes(server: ServerProcess) -> None:
    raw = RawClient(server.host, server.port)
    try:
        assert raw.read_reply(raw.send(OpCode.CLOSE_SESSION)).err == 0
        assert connection_closed_by_server(raw.sock, 5)
    finally:
        raw.sock.close()
