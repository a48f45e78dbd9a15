"""The server's cycle-collector settings (zkpy.server.run._freeze_startup_heap)."""

from __future__ import annotations

import gc

from zkpy.server import run


def test_the_server_collects_the_young_generation_rarely() -> None:
    """Fails before the threshold was raised: with Python's default (700) and 10,000 idle sessions pinging,
    young collections walked ~60k live objects each and full collections of the whole heap followed every
    few seconds (pings unanswered for 1.5-6.6 s; one run lost every session). scripts/bench_idle_sessions.py
    measures it; this checks the setting the server starts with."""
    before = gc.get_threshold()
    try:
        run._freeze_startup_heap()
        assert gc.get_threshold() == (run.GC_YOUNG_THRESHOLD, *before[1:])
        assert run.GC_YOUNG_THRESHOLD >= 50_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_znodes_made_by_writes_are_not_walked_by_the_collector() -> None:
    """Fails before znodes were untracked (datatree._gc_untracker): every created znode was one more
    object each full collection walks (0.5 s per million znodes grown by writes, measured on this
    machine; 0.2 s after), and 25% more of them brought the next full collection. Now creating
    10,000 leaves adds no tracked object, and the tree survives a full collection intact."""
    from zkpy.tree.datatree import OPEN_ACL, DataTree

    tree = DataTree()
    tree.create_node("/p", b"", OPEN_ACL, 0, 0, 1, 0)
    tree.create_node("/p/first", b"x", OPEN_ACL, 0, 0, 2, 0)  # /p's children set exists from here
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        tree.create_node(f"/p/n{i}", b"x" * 10, OPEN_ACL, 0, 0, 3 + i, 0)
    assert len(gc.get_objects()) - before < 100
    assert not gc.is_tracked(tree.nodes["/p/n5"])
    assert gc.is_tracked(tree.nodes["/p"].children)  # a set can be in a cycle: left to the collector
    gc.collect()
    assert tree.nodes["/p/n9999"].data == b"x" * 10 and len(tree.nodes["/p"].children) == 10_001
    for i in range(0, 10_000, 2):
        tree.delete_node(f"/p/n{i}", 20_000)
    gc.collect()
    assert tree.node_count() == 4 + 2 + 5_000 and tree.get("/p/n1") is not None
