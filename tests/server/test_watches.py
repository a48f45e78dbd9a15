"""One-shot watches: which operation arms which watch, the event each change fires, and ordering."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kazoo.client import KazooClient
from zkraw import RawClient, Reply
from zkwait import Events, settle

from zkpy.jute.ops import GetDataResponse, OpCode, PathWatchRequest
from zkpy.jute.records import WatcherEvent
from zkpy.testing.procs import ServerProcess

NODE_CREATED, NODE_DELETED, NODE_DATA_CHANGED, NODE_CHILDREN_CHANGED = 1, 2, 3, 4
SYNC_CONNECTED = 3


def test_data_watch_fires_once(zk: KazooClient, make_client: Callable[..., KazooClient], base: str) -> None:
    path = f"{base}/x"
    zk.create(path, b"0")
    events = Events()
    zk.get(path, watch=events)
    writer = make_client()
    writer.set(path, b"1")
    writer.set(path, b"2")

    event = events.next()
    assert (event.type, event.state, event.path) == ("CHANGED", "CONNECTED", path)
    settle(zk, f"{base}/marker")
    assert events.pending() == []


def test_exists_watch_on_missing_node_fires_created(zk: KazooClient, base: str) -> None:
    events = Events()
    assert zk.exists(f"{base}/new", watch=events) is None
    zk.create(f"{base}/new")
    zk.delete(f"{base}/new")
    event = events.next()
    assert (event.type, event.path) == ("CREATED", f"{base}/new")
    settle(zk, f"{base}/marker")
    assert events.pending() == []


def test_exists_and_get_watches_fire_deleted(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/a")
    zk.create(f"{base}/b")
    on_exists, on_get = Events(), Events()
    zk.exists(f"{base}/a", watch=on_exists)
    zk.get(f"{base}/b", watch=on_get)
    zk.delete(f"{base}/a")
    zk.delete(f"{base}/b")
    assert (on_exists.next().type, on_get.next().type) == ("DELETED", "DELETED")


def test_child_watch_fires_on_create_and_delete_but_not_on_child_data(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/kid")
    events = Events()
    zk.get_children(base, watch=events)
    zk.set(f"{base}/kid", b"data")  # not a child-list change
    zk.create(f"{base}/kid2")
    event = events.next()
    assert (event.type, event.path) == ("CHILD", base)

    zk.get_children(base, watch=events)
    zk.delete(f"{base}/kid")
    event = events.next()
    assert (event.type, event.path) == ("CHILD", base)
    settle(zk, f"{base}/marker")
    assert events.pending() == []


def test_child_watch_on_deleted_parent_fires_deleted(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/p")
    events = Events()
    zk.get_children(f"{base}/p", watch=events)
    zk.delete(f"{base}/p")
    event = events.next()
    assert (event.type, event.path) == ("DELETED", f"{base}/p")


def test_set_without_change_still_fires(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/same", b"v")
    events = Events()
    zk.get(f"{base}/same", watch=events)
    zk.set(f"{base}/same", b"v")
    assert events.next().type == "CHANGED"


def test_raw_events_carry_exact_types_and_state(server: ServerProcess, zk: KazooClient, base: str) -> None:
    raw = RawClient(server.host, server.port)
    try:
        assert raw.error_of(OpCode.EXISTS, PathWatchRequest(f"{base}/n", True)) == -101  # NoNode arms it
        raw.call(OpCode.GET_CHILDREN, PathWatchRequest(base, True))
        zk.create(f"{base}/n")
        got = raw.wait_events(2)
        assert sorted((e.type, e.state, e.path) for e in got) == [
            (NODE_CREATED, SYNC_CONNECTED, f"{base}/n"),
            (NODE_CHILDREN_CHANGED, SYNC_CONNECTED, base),
        ]
        raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/n", True))
        zk.set(f"{base}/n", b"x")
        zk.delete(f"{base}/n")
        assert [(e.type, e.path) for e in raw.wait_events(1)] == [(NODE_DATA_CHANGED, f"{base}/n")]
        assert raw.take_events() == []
    finally:
        raw.close()


def test_same_watch_set_twice_fires_once(server: ServerProcess, zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/n")
    raw = RawClient(server.host, server.port)
    try:
        raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/n", True))
        raw.call(OpCode.EXISTS, PathWatchRequest(f"{base}/n", True))
        raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/n", True))
        zk.set(f"{base}/n", b"1")
        assert [(e.type, e.path) for e in raw.take_events()] == [(NODE_DATA_CHANGED, f"{base}/n")]
    finally:
        raw.close()


def test_watch_event_arrives_before_any_reply_showing_the_change(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    """Reader A watches /x and reads it in a tight pipelined loop while writer B changes it.

    On A's connection the NodeDataChanged event must come before the first reply that shows the new value.
    """
    path = f"{base}/x"
    zk.create(path, b"0")
    reader = RawClient(server.host, server.port)
    try:
        for round_no in range(1, 21):
            new_value = str(round_no).encode()
            reader.call(OpCode.GET_DATA, PathWatchRequest(path, True))
            writer_done = threading.Event()
            writer = threading.Thread(
                target=lambda v=new_value, done=writer_done: (zk.set(path, v), done.set())
            )
            writer.start()
            seen_event = False
            while True:
                xid = reader.send(OpCode.GET_DATA, PathWatchRequest(path, False))
                pkt = reader.next_packet()
                while not (isinstance(pkt, Reply) and pkt.xid == xid):
                    if isinstance(pkt, WatcherEvent):
                        assert (pkt.type, pkt.path) == (NODE_DATA_CHANGED, path)
                        assert not seen_event, "one-shot watch fired twice"
                        seen_event = True
                    pkt = reader.next_packet()
                assert pkt.err == 0
                value = GetDataResponse.read(pkt.body, 0)[0].data  # type: ignore[attr-defined]
                if value == new_value:
                    assert seen_event, f"round {round_no}: read shows the new value before its watch event"
                    break
                assert value == str(round_no - 1).encode()
            writer.join(10)
            assert writer_done.is_set()
    finally:
        reader.close()


def test_events_arrive_in_the_order_of_the_changes(server: ServerProcess, zk: KazooClient, base: str) -> None:
    names = ["a", "b", "c", "d"]
    for name in names:
        zk.create(f"{base}/{name}")
    raw = RawClient(server.host, server.port)
    try:
        for name in names:
            raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/{name}", True))
        order = ["c", "a", "d", "b"]
        for name in order:
            zk.set(f"{base}/{name}", b"x")
        assert [e.path for e in raw.wait_events(4)] == [f"{base}/{name}" for name in order]
    finally:
        raw.close()


def test_multi_fires_the_watches_of_each_op_in_op_order(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    zk.create(f"{base}/old", b"0")
    zk.create(f"{base}/gone")
    raw = RawClient(server.host, server.port)
    try:
        raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/old", True))
        raw.call(OpCode.GET_DATA, PathWatchRequest(f"{base}/gone", True))
        assert raw.error_of(OpCode.EXISTS, PathWatchRequest(f"{base}/new", True)) == -101

        failed = zk.transaction()
        failed.set_data(f"{base}/old", b"1")
        failed.create(f"{base}/new")
        failed.check(f"{base}/gone", 99)
        failed.commit()
        assert raw.take_events() == []  # nothing applied, nothing fired

        raw.call(OpCode.GET_CHILDREN, PathWatchRequest(base, True))
        t = zk.transaction()
        t.set_data(f"{base}/old", b"1")
        t.create(f"{base}/new")
        t.delete(f"{base}/gone")
        t.commit()
        got = [(e.type, e.path) for e in raw.take_events()]
        assert got == [
            (NODE_DATA_CHANGED, f"{base}/old"),
            (NODE_CREATED, f"{base}/new"),
            (NODE_CHILDREN_CHANGED, base),
            (NODE_DELETED, f"{base}/gone"),
        ]
    finally:
        raw.close()


def test_child_watch_on_the_root(zk: KazooClient, base: str) -> None:
    events = Events()
    assert base[1:] in zk.get_children("/", watch=events)
    top = f"{base}-sibling"
    zk.create(top)
    try:
        event = events.next()
        assert (event.type, event.path) == ("CHILD", "/")
    finally:
        zk.delete(top)
