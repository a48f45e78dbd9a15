"""Purge: keep the newest N snapshots and every log file needed to replay from each of them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.storage.logtools import recovered
from zkpy.storage import TxnLog, load_latest_snapshot, purge, write_snapshot
from zkpy.storage.txnlog import _files_after

PREALLOC = 1024

# A server's life: write batches of n records; snapshot (and roll the log, or not).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.integers(1, 4)),
        st.tuples(st.just("snapshot"), st.booleans()),
    ),
    max_size=25,
)


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def live(snap_dir: Path, log_dir: Path, plan: list[tuple[str, object]]) -> list[tuple[int, bytes]]:
    """Play the plan; return every record written. An initial snapshot at zxid 0, as a new server has."""
    records: list[tuple[int, bytes]] = []
    write_snapshot(snap_dir, 0, [])
    with TxnLog(log_dir, prealloc_size=PREALLOC, force_sync=False) as log:
        for kind, arg in plan:
            if kind == "batch":
                assert isinstance(arg, int)
                batch = [(len(records) + i + 1, b"r%d" % (len(records) + i + 1)) for i in range(arg)]
                log.write_batch(batch)
                records += batch
            else:
                write_snapshot(snap_dir, len(records), [len(records)])
                if arg:
                    log.roll()
    return records


@settings(max_examples=100, deadline=None)
@given(plan=steps, retain=st.integers(3, 5))
def test_every_kept_snapshot_can_still_be_replayed(plan: list[tuple[str, object]], retain: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, mock.patch("os.fsync"):  # content, not durability
        snap_dir, log_dir = Path(tmp) / "snap", Path(tmp) / "log"
        records = live(snap_dir, log_dir, plan)
        snaps_before = sorted(int(n.split(".")[1], 16) for n in names(snap_dir))
        logs_before = sorted((int(n.split(".")[1], 16), log_dir / n) for n in names(log_dir))

        deleted = purge(snap_dir, log_dir, retain)

        kept_snaps = sorted(int(n.split(".")[1], 16) for n in names(snap_dir))
        assert kept_snaps == snaps_before[-retain:]
        for zxid in kept_snaps:
            assert recovered(log_dir, zxid) == [r for r in records if r[0] > zxid]
        # And it does purge: only the files the oldest kept snapshot needs are left.
        needed = _files_after(logs_before, kept_snaps[0])
        assert names(log_dir) == {p.name for _, p in needed}
        assert {p.name for p in deleted} == (
            {f"snapshot.{z:x}" for z in snaps_before[:-retain]}
            | {p.name for _, p in logs_before} - names(log_dir)
        )
        found = load_latest_snapshot(snap_dir)
        assert found is not None and found[0] == snaps_before[-1]


def test_retain_count_below_three_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        purge(tmp_path, tmp_path, 2)


def test_incomplete_snapshots_do_not_count(tmp_path: Path) -> None:
    snap_dir, log_dir = tmp_path / "snap", tmp_path / "log"
    for zxid in (1, 2, 3, 4):
        write_snapshot(snap_dir, zxid, [zxid])
    newest = write_snapshot(snap_dir, 5, [5])
    newest.write_bytes(newest.read_bytes()[:-4])  # no footer: as a crashed copy would be
    (snap_dir / "snapshot.1.tmp").write_bytes(b"leftover")
    (snap_dir / "snapshot.6.tmp").write_bytes(b"being written right now")
    purge(snap_dir, log_dir, 3)
    assert names(snap_dir) == {"snapshot.2", "snapshot.3", "snapshot.4", "snapshot.5", "snapshot.6.tmp"}


def test_nothing_to_purge_without_snapshots(tmp_path: Path) -> None:
    with TxnLog(tmp_path / "log", prealloc_size=PREALLOC) as log:
        log.write_batch([(1, b"a")])
    assert purge(tmp_path / "snap", tmp_path / "log", 3) == []
    assert names(tmp_path / "log") == {"log.1"}
