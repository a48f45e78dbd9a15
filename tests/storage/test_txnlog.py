"""The transaction log: what is written comes back, in order, durably, and failures are loud."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from tests.storage.logtools import flatten, recovered, write_batches
from zkpy.storage import CorruptLogError, StorageError, TxnLog, recover
from zkpy.storage.frames import FRAME, HEADER_V1

PREALLOC = 4096


def log_files(log_dir: Path) -> list[str]:
    return sorted((p.name for p in log_dir.iterdir()), key=lambda n: int(n.split(".")[1], 16))


def test_records_come_back_in_order_across_rolls_and_restarts(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        first = write_batches(log, [[b"a", b"bb"], [b""], [b"c" * 5000]])
        log.roll()
        second = write_batches(log, [[b"d"], [b"e", b"f"]], first_zxid=5)
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        assert log.last_zxid == 7
        third = write_batches(log, [[b"g"]], first_zxid=0x100000001)
    assert recovered(tmp_path) == flatten(first + second + third)
    assert log_files(tmp_path) == ["log.1", "log.5", "log.100000001"]


def test_recover_after_a_zxid_yields_only_later_records(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"a", b"b"], [b"c"]])
        log.roll()
        batches += write_batches(log, [[b"d"], [b"e"]], first_zxid=4)
    records = flatten(batches)
    for after in range(0, 7):
        assert recovered(tmp_path, after) == [r for r in records if r[0] > after]


def test_recover_does_not_need_files_before_the_snapshot(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a"], [b"b"]])
        log.roll()
        later = write_batches(log, [[b"c"], [b"d"]], first_zxid=3)
    (tmp_path / "log.1").unlink()  # purged: the snapshot at zxid 2 covers it
    assert recovered(tmp_path, 2) == flatten(later)


def test_missing_log_file_is_reported_not_skipped(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a"], [b"b"]])
        log.roll()
        write_batches(log, [[b"c"]], first_zxid=3)
    (tmp_path / "log.1").unlink()
    with pytest.raises(CorruptLogError, match="missing"):
        recovered(tmp_path, 0)


def test_a_hole_across_epochs_is_reported(tmp_path: Path) -> None:
    """An older snapshot (epoch 1) with a log that starts mid-way through epoch 2: the records
    between were purged behind a newer snapshot (now damaged), so loading would leave a hole."""
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"c"], [b"d"]], first_zxid=0x200000011)
    with pytest.raises(CorruptLogError, match="missing"):
        recovered(tmp_path, 0x100000005)


def test_a_new_epoch_may_follow_any_zxid(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        later = write_batches(log, [[b"c"], [b"d"]], first_zxid=0x200000001)
    assert recovered(tmp_path, 0x100000005) == flatten(later)


def test_preallocated_tail_is_not_data(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"\0" * 10], [b"x\0"]])
        path = log.current_file
        assert path is not None
        assert path.stat().st_size == PREALLOC
        assert recovered(tmp_path) == flatten(batches)
        # A batch bigger than the space left grows the file by whole blocks.
        batches += write_batches(log, [[b"y" * 10_000]], first_zxid=3, prior=batches)
        assert path.stat().st_size == 3 * PREALLOC
        assert recovered(tmp_path) == flatten(batches)
    assert path.stat().st_size == batches[-1].end  # closing gives the unused tail back


def test_recovery_gives_back_the_preallocated_space_of_a_crashed_writer(tmp_path: Path) -> None:
    log = TxnLog(tmp_path, prealloc_size=PREALLOC)
    batches = write_batches(log, [[b"a"], [b"b"]])
    assert batches[-1].path.stat().st_size == PREALLOC
    assert recovered(tmp_path) == flatten(batches)  # as after kill -9: the writer never closed
    assert batches[-1].path.stat().st_size == batches[-1].end
    log.close()


def test_zxids_must_increase(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        log.write_batch([(5, b"a")])
        with pytest.raises(ValueError):
            log.write_batch([(5, b"b")])
        with pytest.raises(ValueError):
            log.write_batch([(7, b"b"), (6, b"c")])
        log.write_batch([(6, b"b")])  # a rejected call does not spoil the log
    assert recovered(tmp_path) == [(5, b"a"), (6, b"b")]


def test_one_sync_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        log.write_batch([(1, b"first")])  # creating the file syncs the directory too
        calls: list[int] = []
        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
        log.write_batch([(z, b"p" * 100) for z in range(2, 130)])
        assert len(calls) == 1


def test_force_sync_off_skips_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sync(fd: int) -> None:
        raise AssertionError("synced although forceSync=no")

    monkeypatch.setattr(os, "fdatasync", no_sync)
    monkeypatch.setattr(os, "fsync", no_sync)
    with TxnLog(tmp_path, prealloc_size=PREALLOC, force_sync=False) as log:
        log.write_batch([(1, b"a")])
        log.roll()
        log.write_batch([(2, b"b")])
    monkeypatch.undo()
    assert recovered(tmp_path) == [(1, b"a"), (2, b"b")]


def failing(err: int) -> object:
    def fail(*args: object) -> None:
        raise OSError(err, os.strerror(err))

    return fail


@pytest.mark.parametrize(
    ("call", "err"),
    [("fdatasync", errno.EIO), ("pwrite", errno.ENOSPC), ("posix_fallocate", errno.ENOSPC)],
)
def test_failed_write_or_sync_is_an_error_and_never_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, err: int
) -> None:
    log = TxnLog(tmp_path, prealloc_size=PREALLOC)
    log.write_batch([(1, b"acknowledged")])
    monkeypatch.setattr(os, call, failing(err))
    if call == "fdatasync":
        monkeypatch.setattr(os, "fsync", failing(err))
    big = b"x" * PREALLOC  # needs more space, so the preallocation is exercised too
    with pytest.raises(StorageError, match=os.strerror(err)):
        log.write_batch([(2, big), (3, b"lost")])
    monkeypatch.undo()
    # The log refuses further writes: the server must restart and recover from the disk.
    with pytest.raises(StorageError, match="earlier failure"):
        log.write_batch([(4, b"later")])
    log.close()
    assert recovered(tmp_path) == [(1, b"acknowledged")]


def test_failure_creating_a_file_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = TxnLog(tmp_path, prealloc_size=PREALLOC)
    monkeypatch.setattr(os, "posix_fallocate", failing(errno.ENOSPC))
    with pytest.raises(StorageError):
        log.write_batch([(1, b"a")])
    monkeypatch.undo()
    log.close()
    assert recovered(tmp_path) == []


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = TxnLog(tmp_path, prealloc_size=PREALLOC)
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.write_batch([(1, b"a")])


def test_truncate_after_drops_later_records_durably(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a", b"b", b"c"], [b"d"]])
        log.roll()
        write_batches(log, [[b"e"], [b"f"]], first_zxid=5)
        log.truncate_after(2)  # mid-batch, in an older file; the newer file goes entirely
        assert log.last_zxid == 2
        log.write_batch([(0x100000001, b"new epoch")])
    assert recovered(tmp_path) == [(1, b"a"), (2, b"b"), (0x100000001, b"new epoch")]
    assert log_files(tmp_path) == ["log.1", "log.100000001"]


def test_truncate_after_everything(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a"], [b"b"]], first_zxid=3)
        log.truncate_after(1)
        assert log.last_zxid == -1
        log.write_batch([(2, b"z")])
    assert recovered(tmp_path) == [(2, b"z")]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_torn_tail_is_cut_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"a"], [b"b", b"c"]])
    torn = batches[-1]
    flip(torn.path, torn.end - 1)
    with caplog.at_level(logging.WARNING):
        assert recovered(tmp_path) == flatten(batches[:-1])
    damaged_frame = torn.start + FRAME.size + 1  # the second record of the batch ("c")
    assert f"{torn.path}: torn tail at offset {damaged_frame}" in caplog.text
    assert f"truncating the file to {torn.start} bytes" in caplog.text
    assert torn.path.stat().st_size == torn.start
    # The log carries on from there.
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        assert log.last_zxid == 1
        log.write_batch([(2, b"again")])
    assert recovered(tmp_path) == [(1, b"a"), (2, b"again")]


def test_damage_before_a_later_batch_is_corruption(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"a"], [b"bbbb"], [b"c"]])
    flip(batches[1].path, batches[1].end - 2)
    with pytest.raises(CorruptLogError, match=rf"log\.1: corrupt record at offset {batches[1].start}"):
        recovered(tmp_path)
    with pytest.raises(CorruptLogError):  # the writer refuses to start on it too
        TxnLog(tmp_path)
    assert batches[-1].path.read_bytes()[batches[-1].start :]  # nothing was truncated


def test_damage_in_an_older_file_is_corruption(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        old = write_batches(log, [[b"a"], [b"b"]])
        log.roll()
        write_batches(log, [[b"c"]], first_zxid=3)
    flip(old[-1].path, old[-1].end - 1)  # the last batch of a file that is not the newest
    with pytest.raises(CorruptLogError, match=rf"log\.1: .*offset {old[-1].start}"):
        recovered(tmp_path)


def test_newest_file_with_torn_header_is_removed(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"a"]])
    (tmp_path / "log.2").write_bytes(b"ZK")  # crash while creating the next file
    assert recovered(tmp_path) == flatten(batches)
    assert log_files(tmp_path) == ["log.1"]


def test_foreign_file_is_not_mistaken_for_a_log(tmp_path: Path) -> None:
    (tmp_path / "log.1").write_bytes(b"this is not a transaction log at all")
    with pytest.raises(CorruptLogError, match="not a zkpy transaction log"):
        recovered(tmp_path)


def test_empty_and_missing_directories(tmp_path: Path) -> None:
    assert recovered(tmp_path / "nothing-here") == []
    with TxnLog(tmp_path / "new", prealloc_size=PREALLOC) as log:
        assert log.last_zxid == -1
        log.write_batch([])
    assert recovered(tmp_path / "new") == []
    assert (tmp_path / "new").is_dir()


def test_header_only_file_after_crash_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "log.7").write_bytes(HEADER_V1.pack(b"ZKPL", 1, 7) + bytes(100))  # an old-format file
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        assert log.last_zxid == -1
        log.write_batch([(7, b"a")])
    assert recovered(tmp_path) == [(7, b"a")]


def test_reading_a_live_log_changes_nothing(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        batches = write_batches(log, [[b"a"], [b"b", b"c"]])
        path = batches[-1].path
        # A batch being written right now: only part of it has reached the file.
        with open(path, "r+b") as f:
            f.seek(batches[-1].end)
            f.write(b"\x80\x00\x00\x05 half a frame")
        before = path.read_bytes()
        assert list(recover(tmp_path, 1, repair=False)) == [(2, b"b"), (3, b"c")]
        assert path.read_bytes() == before  # nothing truncated under the writer
        log.write_batch([(4, b"d")])  # its 21-byte frame covers the half-written one
        assert list(recover(tmp_path, repair=False)) == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]


def test_a_missing_file_in_the_middle_is_reported(tmp_path: Path) -> None:
    """Issue 15 item 9. Fails before this change: continuity was checked only between the
    snapshot's zxid and the first file, so with log.3 gone recovery yielded 1, 2, 4, 5 without a
    word. Now every file whose records are needed must follow the records before it."""
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a"], [b"b"]])
        log.roll()
        write_batches(log, [[b"c"]], first_zxid=3)
        log.roll()
        later = write_batches(log, [[b"d", b"e"]], first_zxid=4)
    (tmp_path / "log.3").unlink()
    for after in (-1, 0, 1, 2):
        with pytest.raises(CorruptLogError, match=r"log\.4: .* 0x4 .* end at 0x2.*missing"):
            recovered(tmp_path, after)
    assert recovered(tmp_path, 3) == flatten(later)  # a snapshot at 3 covers the missing file
    # A reader that wants the newest unbroken history (a leader's DIFF window) gets it.
    assert list(recover(tmp_path, -1, repair=False, tail_after_gap=True)) == flatten(later)


def test_the_newest_records_are_read_from_the_tail_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (restart speed): a restart rebuilds its history window (the newest `limit`
    records at or below its snapshot) from the log's newest files backwards, reading only the
    files it needs, not every file of the log; the answer is the full scan's tail."""
    from zkpy.storage import txnlog

    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        zxid = 1
        for _ in range(10):  # ten files of ten records
            write_batches(log, [[b"x" * 10] * 10], first_zxid=zxid)
            zxid += 10
            log.roll()
    everything = recovered(tmp_path)
    read: list[Path] = []
    replay = txnlog._replay

    def counting(files: list[tuple[int, Path]], after: int, live: bool):  # type: ignore[no-untyped-def]
        read.extend(path for _, path in files)
        return replay(files, after, live)

    monkeypatch.setattr(txnlog, "_replay", counting)
    assert txnlog.newest_records(tmp_path, upto=95, limit=15) == [r for r in everything if r[0] <= 95][-15:]
    assert [p.name for p in read] == ["log.5b", "log.51"]  # 91-95, then 81-90: two of ten files
    assert txnlog.newest_records(tmp_path, upto=100, limit=1000) == everything
    assert txnlog.newest_records(tmp_path, upto=0, limit=5) == []


def test_the_newest_records_stop_at_a_gap(tmp_path: Path) -> None:
    with TxnLog(tmp_path, prealloc_size=PREALLOC) as log:
        write_batches(log, [[b"a"] * 5], first_zxid=1)
        log.roll()
        write_batches(log, [[b"b"] * 5], first_zxid=20)  # 6-19 are missing
    from zkpy.storage.txnlog import newest_records

    assert [z for z, _ in newest_records(tmp_path, upto=30, limit=100)] == list(range(20, 25))
