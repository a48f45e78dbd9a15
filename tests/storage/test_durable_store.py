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
