"""addWatch (persistent and persistent-recursive), checkWatches and removeWatches, over a raw connection.

kazoo 2.11 exposes none of these, so a raw client sends them; kazoo makes the changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from zkraw import RawClient

from zkpy.errors import NoWatcherError
from zkpy.jute.ops import (
    ADD_WATCH_PERSISTENT,
    ADD_WATCH_PERSISTENT_RECURSIVE,
    WATCHER_ANY,
    WATCHER_CHILDREN,
    WATCHER_DATA,
    AddWatchRequest,
    OpCode,
    PathWatchRequest,
    WatchesRequest,
)
from zkpy.testing.procs import ServerProcess

CREATED, DELETED, CHANGED, CHILDREN = 1, 2, 3, 4


@pytest.fixture
def raw(server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(server.host, server.port)
    try:
        yield client
    finally:
        client.close()


def kinds(raw: RawClient) -> list[tuple[int, str]]:
    return [(e.type, e.path) for e in raw.take_events()]


def test_persistent_watch_keeps_firing(raw: RawClient, zk: KazooClient, base: str) -> None:
    p = f"{base}/p"
    raw.call(OpCode.ADD_WATCH, AddWatchRequest(p, ADD_WATCH_PERSISTENT))
    zk.create(p)
    zk.set(p, b"1")
    zk.set(p, b"2")
    zk.create(f"{p}/c")
    zk.set(f"{p}/c", b"x")  # below the node: not reported by a non-recursive watch
    zk.delete(f"{p}/c")
    zk.delete(p)
    zk.create(p)
    assert kinds(raw) == [
        (CREATED, p),
        (CHANGED, p),
        (CHANGED, p),
        (CHILDREN, p),
        (CHILDREN, p),
        (DELETED, p),
        (CREATED, p),
    ]
    zk.set(p, b"3")
    assert kinds(raw) == [(CHANGED, p)]


def test_recursive_watch_reports_the_subtree_without_child_events(
    raw: RawClient, zk: KazooClient, base: str
) -> None:
    r = f"{base}/r"
    zk.create(r)
    raw.call(OpCode.ADD_WATCH, AddWatchRequest(r, ADD_WATCH_PERSISTENT_RECURSIVE))
    zk.create(f"{r}/a")
    zk.create(f"{r}/a/b", b"")
    zk.set(f"{r}/a/b", b"1")
    zk.delete(f"{r}/a/b")
    zk.set(r, b"top")
    zk.create(f"{base}/sibling")  # outside the watched subtree
    assert kinds(raw) == [
        (CREATED, f"{r}/a"),
        (CREATED, f"{r}/a/b"),
        (CHANGED, f"{r}/a/b"),
        (DELETED, f"{r}/a/b"),
        (CHANGED, r),
    ]


def test_persistent_and_one_shot_watch_on_one_path_give_one_event(
    raw: RawClient, zk: KazooClient, base: str
) -> None:
    p = f"{base}/both"
    zk.create(p)
    raw.call(OpCode.ADD_WATCH, AddWatchRequest(p, ADD_WATCH_PERSISTENT))
    raw.call(OpCode.GET_DATA, PathWatchRequest(p, True))
    zk.set(p, b"1")
    assert kinds(raw) == [(CHANGED, p)]


def test_check_and_remove_a_data_watch(raw: RawClient, zk: KazooClient, base: str) -> None:
    p = f"{base}/w"
    zk.create(p)
    raw.call(OpCode.GET_DATA, PathWatchRequest(p, True))
    raw.call(OpCode.CHECK_WATCHES, WatchesRequest(p, WATCHER_DATA))
    with pytest.raises(NoWatcherError):
        raw.call(OpCode.CHECK_WATCHES, WatchesRequest(p, WATCHER_CHILDREN))
    with pytest.raises(NoWatcherError):
        raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_CHILDREN))

    raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_DATA))
    with pytest.raises(NoWatcherError):
        raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_DATA))
    with pytest.raises(NoWatcherError):
        raw.call(OpCode.CHECK_WATCHES, WatchesRequest(p, WATCHER_ANY))
    zk.set(p, b"1")
    assert kinds(raw) == []


def test_remove_a_child_watch_keeps_the_data_watch(raw: RawClient, zk: KazooClient, base: str) -> None:
    p = f"{base}/w"
    zk.create(p)
    raw.call(OpCode.GET_DATA, PathWatchRequest(p, True))
    raw.call(OpCode.GET_CHILDREN, PathWatchRequest(p, True))
    raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_CHILDREN))
    zk.create(f"{p}/c")
    zk.set(p, b"1")
    assert kinds(raw) == [(CHANGED, p)]


def test_remove_any_drops_a_persistent_watch(raw: RawClient, zk: KazooClient, base: str) -> None:
    p = f"{base}/w"
    zk.create(p)
    raw.call(OpCode.ADD_WATCH, AddWatchRequest(p, ADD_WATCH_PERSISTENT))
    raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_ANY))
    zk.set(p, b"1")
    zk.create(f"{p}/c")
    assert kinds(raw) == []
    with pytest.raises(NoWatcherError):
        raw.call(OpCode.REMOVE_WATCHES, WatchesRequest(p, WATCHER_ANY))


def test_watches_of_a_closed_session_do_not_leak(server: ServerProcess, zk: KazooClient, base: str) -> None:
    p = f"{base}/w"
    zk.create(p)
    first = RawClient(server.host, server.port)
    first.call(OpCode.ADD_WATCH, AddWatchRequest(p, ADD_WATCH_PERSISTENT_RECURSIVE))
    first.close()
    second = RawClient(server.host, server.port)
    try:
        with pytest.raises(NoWatcherError):
            second.call(OpCode.CHECK_WATCHES, WatchesRequest(p, WATCHER_ANY))
        zk.set(p, b"1")
        assert kinds(second) == []
    finally:
        second.close()
