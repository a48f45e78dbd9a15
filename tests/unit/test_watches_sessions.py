"""Watch triggering rules and session expiry buckets, without sockets or sleeping."""

from __future__ import annotations

from zkpy.jute.codec import encode
from zkpy.jute.records import ConnectRequest
from zkpy.server.protocol import (
    ConnectRequested,
    FourLetterWord,
    ProtocolError,
    RequestReceived,
    ServerProtocol,
)
from zkpy.server.sessions import SessionTracker
from zkpy.tree.watches import (
    NODE_CHILDREN_CHANGED,
    NODE_CREATED,
    NODE_DATA_CHANGED,
    NODE_DELETED,
    WatchManager,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []

    def notify(self, event_type: int, path: str) -> None:
        self.events.append((event_type, path))


def test_one_shot_watches_fire_once():
    w, r = WatchManager(), Recorder()
    w.add_data_watch("/a", r)
    w.trigger(NODE_DATA_CHANGED, "/a")
    w.trigger(NODE_DATA_CHANGED, "/a")
    assert r.events == [(NODE_DATA_CHANGED, "/a")]


def test_delete_fires_data_and_child_watches_once_per_watcher():
    w, r = WatchManager(), Recorder()
    w.add_data_watch("/a", r)
    w.add_child_watch("/a", r)
    w.trigger(NODE_DELETED, "/a")
    assert r.events == [(NODE_DELETED, "/a")]
    assert w.count() == 0


def test_persistent_watch_stays_and_sees_children_changes_but_recursive_does_not():
    w, p, rec = WatchManager(), Recorder(), Recorder()
    w.add_persistent_watch("/a", p, recursive=False)
    w.add_persistent_watch("/a", rec, recursive=True)
    w.trigger(NODE_CREATED, "/a/b")
    w.trigger(NODE_CHILDREN_CHANGED, "/a")
    w.trigger(NODE_DATA_CHANGED, "/a")
    w.trigger(NODE_DATA_CHANGED, "/a")
    assert p.events == [(NODE_CHILDREN_CHANGED, "/a"), (NODE_DATA_CHANGED, "/a"), (NODE_DATA_CHANGED, "/a")]
    assert rec.events == [(NODE_CREATED, "/a/b"), (NODE_DATA_CHANGED, "/a"), (NODE_DATA_CHANGED, "/a")]
    assert w.remove_watches("/a", 5, rec) and not w.remove_watches("/a", 5, rec)


def test_sessions_expire_in_tick_buckets_and_touch_extends():
    now = [0.0]
    s = SessionTracker(tick_ms=1000, clock=lambda: now[0])
    s.add(1, 4000)
    s.add(2, 4000)
    now[0] = 3.0
    s.touch(1)
    now[0] = 5.5
    assert s.expired() == [2]
    assert s.is_alive(1) and not s.is_alive(2)
    now[0] = 8.0
    assert s.expired() == [1]
    assert s.next_deadline() is None


def test_protocol_sniffs_four_letter_words_and_frames_requests():
    p = ServerProtocol()
    assert p.receive(b"ru") == []
    assert p.receive(b"ok") == [FourLetterWord("ruok")]
    p = ServerProtocol()
    body = encode(ConnectRequest(0, 0, 10000, 0, b"\0" * 16, False))
    data = (
        len(body).to_bytes(4, "big")
        + body
        + (8).to_bytes(4, "big")
        + (7).to_bytes(4, "big")
        + (11).to_bytes(4, "big")
    )
    events = []
    for i in range(len(data)):  # byte by byte: framing must reassemble
        events += p.receive(data[i : i + 1])
    assert isinstance(events[0], ConnectRequested) and events[0].request.timeout == 10000
    assert events[1] == RequestReceived(7, 11, b"")


def test_protocol_rejects_oversize_frames():
    p = ServerProtocol(max_buffer=100)
    try:
        p.receive((10_000).to_bytes(4, "big") + b"x" * 10)
    except ProtocolError as e:
        assert "10000" in str(e)
    else:
        raise AssertionError("oversize frame accepted")


def test_closing_a_watcher_forgets_exactly_its_watches():
    w, a, b = WatchManager(), Recorder(), Recorder()
    for i in range(100):
        w.add_data_watch(f"/n{i}", a)
        w.add_child_watch(f"/n{i}", b)
    w.add_persistent_watch("/n1", a, recursive=True)
    w.trigger(NODE_DATA_CHANGED, "/n0")  # a's one-shot on /n0 is spent
    assert w.paths_of(a)[:3] == ["/n1", "/n10", "/n11"] and "/n0" not in w.paths_of(a)
    w.remove_watcher(a)
    assert w.paths_of(a) == [] and w.count() == 100
    w.trigger(NODE_DATA_CHANGED, "/n1")
    assert a.events == [(NODE_DATA_CHANGED, "/n0")]


def test_the_last_add_watch_mode_wins_for_one_watcher_and_path():
    w, r = WatchManager(), Recorder()
    w.add_persistent_watch("/r", r, recursive=False)
    w.add_persistent_watch("/r", r, recursive=True)
    w.trigger(NODE_CHILDREN_CHANGED, "/r")  # recursive watches never see child-list events
    w.trigger(NODE_CREATED, "/r/a")
    assert r.events == [(NODE_CREATED, "/r/a")]


def test_a_persistent_watch_is_a_data_half_and_a_child_half():
    w, r = WatchManager(), Recorder()
    w.add_persistent_watch("/p", r, recursive=False)
    assert w.remove_watches("/p", 2, r)  # removeWatches(Data): the child half stays
    assert not w.remove_watches("/p", 2, r, dry_run=True) and w.remove_watches("/p", 1, r, dry_run=True)
    w.trigger(NODE_DATA_CHANGED, "/p")
    w.trigger(NODE_CHILDREN_CHANGED, "/p")
    w.trigger(NODE_DELETED, "/p")
    w.trigger(NODE_CREATED, "/p")
    assert r.events == [(NODE_CHILDREN_CHANGED, "/p"), (NODE_DELETED, "/p")]
    assert w.remove_watches("/p", 1, r) and w.count() == 0


def test_a_recursive_watch_with_its_data_half_removed_still_hears_deletions_below():
    w, r = WatchManager(), Recorder()
    w.add_persistent_watch("/r", r, recursive=True)
    assert w.remove_watches("/r", 2, r)
    w.trigger(NODE_CREATED, "/r/a")
    w.trigger(NODE_DATA_CHANGED, "/r/a")
    w.trigger(NODE_DELETED, "/r/a")
    assert r.events == [(NODE_DELETED, "/r/a")]
    assert w.remove_watches("/r", 1, r, dry_run=True) and not w.remove_watches("/r/a", 1, r, dry_run=True)


def test_a_one_shot_watch_on_a_persistently_watched_path_makes_that_half_one_shot():
    w, r = WatchManager(), Recorder()
    w.add_persistent_watch("/q", r, recursive=False)
    w.add_data_watch("/q", r)  # ZooKeeper keeps one mode per watcher and path in each half
    w.trigger(NODE_DATA_CHANGED, "/q")
    w.trigger(NODE_DATA_CHANGED, "/q")
    w.trigger(NODE_CHILDREN_CHANGED, "/q")
    assert r.events == [(NODE_DATA_CHANGED, "/q"), (NODE_CHILDREN_CHANGED, "/q")]


def test_check_watches_answers_as_zookeeper_3_8_does():
    import pytest

    from zkpy.errors import MarshallingError

    w, a, b = WatchManager(), Recorder(), Recorder()
    w.add_data_watch("/x", a)
    assert w.remove_watches("/x", 2, b, dry_run=True)  # 3.8 finds anyone's watch on the path itself
    assert not w.remove_watches("/x", 2, b)  # but removes only the caller's
    assert not w.remove_watches("", 3, b, dry_run=True)
    with pytest.raises(MarshallingError):
        w.remove_watches("noslash", 1, b, dry_run=True)
