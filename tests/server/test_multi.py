"""multi (kazoo transactions): all ops apply at one zxid, or none does and every result says why."""

from __future__ import annotations

import dataclasses

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.states import ZnodeStat
from zkraw import RawClient

from zkpy.jute.ops import MultiRequest, OpCode, PathWatchRequest
from zkpy.testing.procs import ServerProcess


def test_committed_multi_returns_each_result(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/existing", b"old")
    t = zk.transaction()
    t.create(f"{base}/a", b"1")
    t.create(f"{base}/seq-", sequence=True)
    t.set_data(f"{base}/a", b"2")
    t.check(f"{base}/a", 1)
    t.delete(f"{base}/existing")
    results = t.commit()

    assert results[0] == f"{base}/a"
    assert results[1] == f"{base}/seq-0000000002"
    assert isinstance(results[2], ZnodeStat)
    assert results[2].version == 1
    assert results[3:] == [True, True]
    data, stat = zk.get(f"{base}/a")
    assert (data, stat.version) == (b"2", 1)
    assert zk.exists(f"{base}/existing") is None


def test_all_ops_of_a_multi_share_one_zxid(zk: KazooClient, base: str) -> None:
    t = zk.transaction()
    t.create(f"{base}/x")
    t.create(f"{base}/y")
    t.set_data(f"{base}/x", b"v")
    t.commit()
    x, y = zk.exists(f"{base}/x"), zk.exists(f"{base}/y")
    assert x.czxid == y.czxid == x.mzxid
    assert zk.exists(base).pzxid == x.czxid
    assert zk.exists(base).cversion == 2


def test_failed_multi_applies_nothing_and_reports_rollback(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/v", b"x")
    before = zk.exists(base)
    t = zk.transaction()
    t.create(f"{base}/a")
    t.check(f"{base}/v", 5)
    t.create(f"{base}/b")
    results = t.commit()

    assert [type(r) for r in results] == [RolledBackError, BadVersionError, RuntimeInconsistency]
    assert zk.exists(f"{base}/a") is None
    assert zk.exists(f"{base}/b") is None
    assert zk.exists(base) == before


def test_failure_in_first_op(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/dup")
    t = zk.transaction()
    t.create(f"{base}/dup")
    t.create(f"{base}/new")
    t.delete(f"{base}/dup")
    results = t.commit()
    assert [type(r) for r in results] == [NodeExistsError, RuntimeInconsistency, RuntimeInconsistency]
    assert zk.exists(f"{base}/new") is None
    assert zk.exists(f"{base}/dup") is not None


def test_later_ops_see_earlier_ones(zk: KazooClient, base: str) -> None:
    t = zk.transaction()
    t.create(f"{base}/p", b"1")
    t.create(f"{base}/p/c")
    t.delete(f"{base}/p/c")
    t.set_data(f"{base}/p", b"2", version=0)
    t.check(f"{base}/p", 1)
    assert t.commit() == [f"{base}/p", f"{base}/p/c", True, zk.exists(f"{base}/p"), True]
    stat = zk.exists(f"{base}/p")
    assert (stat.version, stat.cversion, stat.numChildren) == (1, 2, 0)


def test_failure_after_a_delete_rolls_the_delete_back(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/a", b"keep")
    t = zk.transaction()
    t.set_data(f"{base}/a", b"changed")
    t.delete(f"{base}/a")
    t.create(f"{base}/a/child")
    results = t.commit()
    assert [type(r) for r in results] == [RolledBackError, RolledBackError, NoNodeError]
    data, stat = zk.get(f"{base}/a")
    assert (data, stat.version) == (b"keep", 0)


def test_multi_read_answers_each_op_on_its_own(server: ServerProcess, zk: KazooClient, base: str) -> None:
    """multiRead (22): each getData/getChildren op (path + watch flag, as Apache's client sends them)
    gets its own result; a failing op is an error result and does not fail the others."""
    zk.create(f"{base}/a", b"A")
    raw = RawClient(server.host, server.port)
    try:
        request = MultiRequest(
            [
                (OpCode.GET_DATA, PathWatchRequest(f"{base}/a", False)),
                (OpCode.GET_CHILDREN, PathWatchRequest(base, False)),
                (OpCode.GET_DATA, PathWatchRequest(f"{base}/missing", False)),
                (OpCode.GET_CHILDREN, PathWatchRequest(f"{base}/a", False)),
            ]
        )
        results = raw.call(OpCode.MULTI_READ, request).results
        assert [(kind, err) for kind, err, _ in results] == [(4, 0), (8, 0), (-1, -101), (8, 0)]
        assert results[0][2].data == b"A"
        assert dataclasses.astuple(results[0][2].stat) == tuple(zk.exists(f"{base}/a"))
        assert results[1][2].children == ["a"]
        assert results[2][2].err == -101
        assert results[3][2].children == []
        raw.ping()
    finally:
        raw.close()


def test_a_multi_with_a_null_path_changes_nothing_and_fires_nothing(server: ServerProcess, base: str) -> None:
    """Sessions issue item 4, diffed with Apache 3.8 (this runs against both): a create without a
    path after a good create fails the whole multi with MarshallingError; the good create is not
    applied and a watch on its parent does not fire. On 7a18865 zkpy left /first applied and fired
    the watch while answering MarshallingError."""
    from zkpy.jute.ops import CreateRequest
    from zkpy.jute.records import OPEN_ACL_UNSAFE

    watcher = RawClient(server.host, server.port)
    writer = RawClient(server.host, server.port)
    try:
        watcher.call(OpCode.GET_CHILDREN, PathWatchRequest(base, True))
        ops = [
            (OpCode.CREATE, CreateRequest(f"{base}/first", b"", OPEN_ACL_UNSAFE, 0)),
            (OpCode.CREATE, CreateRequest(None, b"", OPEN_ACL_UNSAFE, 0)),
        ]
        assert writer.error_of(OpCode.MULTI, MultiRequest(ops)) == -5  # MarshallingError
        assert writer.error_of(OpCode.EXISTS, PathWatchRequest(f"{base}/first", False)) == -101  # NoNode
        assert watcher.take_events() == []
    finally:
        watcher.close()
        writer.close()
