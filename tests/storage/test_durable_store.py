"""DurableStore's recovery: a damaged newest snapshot that the log does not reach is an error,
never a silent step back (an ensemble member then re-syncs; a standalone server refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.server.config import parse_config
from zkpy.server.durable import SUBDIR, DurableStore
from zkpy.storage import TxnLog, write_snapshot
from zkpy.storage.errors import CorruptSnapshotError
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn


def _txn(zxid: int) -> Txn:
    return Txn(
        zxid,
        1_700_000_000_000,
        1,
        zxid,
        OpCode.CREATE,
        encode(CreateRequest(f"/n{zxid}", b"", OPEN_ACL_UNSAFE, 0)),
    )


def _store(tmp_path: Path, logged: int, snapshots: list[int], damaged: int | None) -> DurableStore:
    """Snapshots at the given zxids (the tree of txns 1..zxid) and a log of txns 1..logged."""
    config = parse_config(f"tickTime=2000\ndataDir={tmp_path}\nclientPort=2181\n", "/", source="t.cfg")
    directory = tmp_path / SUBDIR
    directory.mkdir()
    for zxid in snapshots:
        tree = DataTree()
        for z in range(1, zxid + 1):
            Applier(tree).apply(_txn(z))
        path = write_snapshot(directory, zxid, tree_items(tree))
        if zxid == damaged:
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
    with TxnLog(directory, prealloc_size=4096) as log:
        log.write_batch([(z, _txn(z).pack()) for z in range(1, logged + 1)])
    return DurableStore(config)


def test_a_damaged_newest_snapshot_the_log_reaches_is_skipped(tmp_path: Path) -> None:
    store = _store(tmp_path, logged=5, snapshots=[2, 5], damaged=5)
    try:
        assert store.recover().last_zxid == 5
    finally:
        store.close()


def test_a_damaged_newest_snapshot_beyond_the_log_is_an_error(tmp_path: Path) -> None:
    """E.g. a SNAP from the leader was written and the old log dropped: the log then ends before
    the snapshot. If that snapshot is damaged, falling back to an older one would quietly go back
    to before what this server had (and acknowledged)."""
    store = _store(tmp_path, logged=3, snapshots=[2, 5], damaged=5)
    try:
        with pytest.raises(CorruptSnapshotError, match="reaches only 0x3"):
            store.recover()
    finally:
        store.close()


def _tree_of(zxids: range, mark: bytes = b"") -> DataTree:
    tree = DataTree()
    for z in zxids:
        txn = _txn(z)
        if mark:
            txn = Txn(z, txn.time, txn.session_id, txn.cxid, OpCode.CREATE,
                      encode(CreateRequest(f"/leader{z}", mark, OPEN_ACL_UNSAFE, 0)))  # fmt: skip
        Applier(tree).apply(txn)
    return tree


async def test_an_installed_snap_below_a_snapshot_on_disk_is_what_recovery_loads(tmp_path: Path) -> None:
    """Ensemble safety item 1: a SNAP at zxid Z left this server's own snapshots above Z on disk,
    and recovery loads the highest: the learner came back with a history the ensemble had cut,
    with the new epoch replayed on top. Fails before this change (recover() gave zxid 5)."""
    store = _store(tmp_path, logged=5, snapshots=[2, 5], damaged=None)
    try:
        store.recover()
        sent = _tree_of(range(1, 4), mark=b"leader's")
        await store.install_snapshot(3, list(tree_items(sent)))
        assert store.last_snapshot_zxid == 3
        store.close_log()
        tree = store.recover()
        assert tree.last_zxid == 3
        assert "/leader3" in tree.nodes and "/n5" not in tree.nodes
    finally:
        store.close()


async def test_a_snapshot_writer_of_an_earlier_role_does_not_outlive_a_snap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ensemble safety item 2: a forked snapshot writer still running when a SNAP is installed
    finished afterwards: its file (above the SNAP) came back at recovery, and its zxid overwrote
    last_snapshot_zxid with an older value. Fails before this change."""
    import time as _time

    import trio

    from zkpy.server import durable

    real_write = durable.write_snapshot

    def slow_write(snap_dir: Path, zxid: int, items: object) -> Path:
        if zxid == 5:  # the forked writer: slower than the SNAP
            _time.sleep(1.0)
        return real_write(snap_dir, zxid, items)  # type: ignore[arg-type]

    monkeypatch.setattr(durable, "write_snapshot", slow_write)
    store = _store(tmp_path, logged=5, snapshots=[], damaged=None)
    try:
        tree = store.recover()
        store._since_snap = store._next_snap_after  # due now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.reap_snapshots)
            store.maybe_snapshot(tree)
            assert store._snapshot_pid is not None
            await store.install_snapshot(3, list(tree_items(_tree_of(range(1, 4), mark=b"x"))))
            await trio.sleep(1.5)  # the writer would have finished by now
            nursery.cancel_scope.cancel()
        assert store.last_snapshot_zxid == 3
        assert sorted(p.name for p in (tmp_path / SUBDIR).glob("snapshot.*")) == ["snapshot.3"]
    finally:
        store.close()


def test_ephemerals_of_sessions_that_are_gone_are_deleted_at_start_up(tmp_path: Path) -> None:
    """Sessions issue item 1: data written before requests were checked against their session can
    hold an ephemeral whose session is gone; zkpy re-armed only the sessions in its table, so the
    node stayed for ever. As Apache's loadData, recovery deletes it. Fails on 7a18865."""
    from zkpy.tree.txn import session_body

    tree = DataTree()
    applier = Applier(tree)
    applier.apply(Txn(1, 0, 0x51, 0, OpCode.CREATE_SESSION, session_body(4000, b"p" * 16)))
    applier.apply(Txn(2, 0, 0x51, 1, OpCode.CREATE, encode(CreateRequest("/lock", b"", OPEN_ACL_UNSAFE, 1))))
    applier.apply(Txn(3, 0, 0x52, 0, OpCode.CREATE_SESSION, session_body(4000, b"q" * 16)))
    applier.apply(Txn(4, 0, 0x52, 1, OpCode.CREATE, encode(CreateRequest("/alive", b"", OPEN_ACL_UNSAFE, 1))))
    del tree.sessions[0x51]  # as a closeSession that ran before the create it should have stopped
    config = parse_config(f"tickTime=2000\ndataDir={tmp_path}\nclientPort=2181\n", "/", source="t.cfg")
    (tmp_path / SUBDIR).mkdir()
    write_snapshot(tmp_path / SUBDIR, 4, tree_items(tree))
    store = DurableStore(config)
    try:
        recovered = store.recover()
    finally:
        store.close()
    assert "/lock" not in recovered.nodes and "/alive" in recovered.nodes
    assert 0x51 not in recovered.ephemerals


def test_a_damaged_snap_snapshot_is_not_replaced_by_an_older_one_and_a_new_epoch(tmp_path: Path) -> None:
    """After a SNAP at 5 the log starts after it; here with a new epoch's first transactions, as when
    a lagging learner joins a new leader before its first write. With the snapshot at 5 damaged,
    recovery fell back to the one at 2 and replayed the new epoch on top: follows(2, (1, 1)) holds
    (a new epoch's counter starts at 1), so no hole was seen and /n3../n5 were silently missing.
    The log must hold the skipped snapshot's own transaction. Fails on 9819316 (recover() returned
    a tree at 0x100000002)."""
    store = _store(tmp_path, logged=0, snapshots=[2, 5], damaged=5)
    store.close()
    new_epoch = [(1 << 32 | c, _txn(1 << 32 | c).pack()) for c in (1, 2)]
    with TxnLog(tmp_path / SUBDIR, prealloc_size=4096) as log:
        log.write_batch(new_epoch)
    store = DurableStore(store.config)
    try:
        with pytest.raises(CorruptSnapshotError, match="snapshot 0x5 is damaged"):
            store.recover()
    finally:
        store.close()
