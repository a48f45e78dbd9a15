"""The append-only transaction log: group-commit writes, crash recovery, truncation for ZAB.

Files are `log.<first zxid in hex>` in one directory; the frame format is in `frames.py`. Each
writer instance starts a new file at its first write (as ZooKeeper does after a restart or a
snapshot), so a file that suffered a crash is never appended to again. Files are preallocated
in `prealloc_size` blocks so a commit's fdatasync need not update the file size.

Durability contract: when `write_batch` returns, every record in it is on disk (unless
force_sync is off). When it raises, none of it may be acknowledged, and the log refuses all
further writes: after a failed fsync the kernel may have dropped the dirty pages, so the only
safe continuation is a restart that recovers from what the disk really holds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from zkpy.storage import frames
from zkpy.storage.errors import CorruptLogError, StorageError
from zkpy.storage.files import LOG_PREFIX, TMP_SUFFIX, fsync_dir, list_zxid_files, sync_data, zxid_name

log = logging.getLogger(__name__)

DEFAULT_PREALLOC = 64 * 1024 * 1024
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


class TxnLog:
    """The writer. Not for concurrent use: the server calls one method at a time (a lock makes a
    mistake there harmless rather than corrupting)."""

    def __init__(self, log_dir: Path, prealloc_size: int = DEFAULT_PREALLOC, force_sync: bool = True) -> None:
        if prealloc_size <= 0:
            raise ValueError("prealloc_size must be positive")
        self._dir = Path(log_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._prealloc = prealloc_size
        self._force_sync = force_sync
        self._lock = threading.Lock()
        self._last_zxid = repair_tail(self._dir)
        self._fd: int | None = None
        self._path: Path | None = None
        self._pos = 0
        self._allocated = 0
        self._salt = 0
        self._chain = 0
        self._failure: str | None = None
        self._closed = False

    @property
    def last_zxid(self) -> int:
        """The zxid of the last durable record, or -1 if the log is empty."""
        return self._last_zxid

    @property
    def current_file(self) -> Path | None:
        return self._path

    def write_batch(self, records: list[tuple[int, bytes]]) -> None:
        """Append (zxid, payload) records, zxids increasing, and make them durable with one sync."""
        with self._lock:
            self._check_usable()
            if not records:
                return
            prev = self._last_zxid
            for zxid, payload in records:
                if len(payload) > frames.MAX_PAYLOAD:
                    raise ValueError(f"record of {len(payload)} bytes is too large for the log")
                if zxid <= prev:
                    raise ValueError(f"zxid {zxid:#x} does not follow {prev:#x}")
                prev = zxid
            buf = bytearray()
            try:
                if self._fd is None:
                    self._create(records[0][0])
                assert self._fd is not None
                buf, chain = frames.encode_batch(records, self._salt, self._chain)
                self._reserve(self._pos + len(buf))
                _pwrite_all(self._fd, buf, self._pos)
                if self._force_sync:
                    sync_data(self._fd)
            except OSError as e:
                where = f"{self._path} at offset {self._pos}"
                self._fail(f"writing {len(records)} records to {where}: {e}", self._pos, len(buf))
                raise StorageError(self._failure) from e
            self._pos += len(buf)
            self._chain = chain
            self._last_zxid = records[-1][0]

    def roll(self) -> None:
        """End the current file; the next write starts `log.<its first zxid>` (call after a snapshot)."""
        with self._lock:
            self._check_usable()
            path = self._path
            try:
                self._finish_file()
            except OSError as e:
                self._fail(f"closing {path}: {e}", 0, 0)
                raise StorageError(self._failure) from e

    def truncate_after(self, zxid: int) -> None:
        """Drop every record above `zxid`, durably (ZAB's TRUNC: a follower discards proposals
        the new leader never committed). The next write starts a new file."""
        with self._lock:
            self._check_usable()
            try:
                self._finish_file()
                self._last_zxid = _truncate_files(self._dir, zxid)
            except OSError as e:
                self._fail(f"truncating {self._dir} after {zxid:#x}: {e}", 0, 0)
                raise StorageError(self._failure) from e

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is None:
                return
            if self._failure is not None:
                os.close(self._fd)
                self._fd = None
                return
            path = self._path
            try:
                self._finish_file()
            except OSError as e:
                raise StorageError(f"closing {path}: {e}") from e

    def __enter__(self) -> TxnLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise StorageError(f"transaction log is unusable after an earlier failure ({self._failure})")
        if self._closed:
            raise StorageError("transaction log is closed")

    def _create(self, first_zxid: int) -> None:
        path = self._dir / zxid_name(LOG_PREFIX, first_zxid)
        self._path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._pos = self._allocated = 0
        header = frames.encode_header(first_zxid)
        parsed = frames.read_header(header)
        assert parsed is not None
        self._salt, self._chain = parsed.salt, parsed.chain
        self._reserve(len(header))
        _pwrite_all(self._fd, header, 0)
        self._pos = len(header)
        if self._force_sync:
            # The header is durable before any record is written after it, so a file whose
            # header is damaged but holds data cannot be a crash artefact; recovery refuses it.
            sync_data(self._fd)
            fsync_dir(self._dir)

    def _reserve(self, size: int) -> None:
        """Grow the file in whole preallocation blocks: a full disk shows up here, not mid-record."""
        if size <= self._allocated:
            return
        assert self._fd is not None
        new_size = -(-size // self._prealloc) * self._prealloc
        try:
            os.posix_fallocate(self._fd, self._allocated, new_size - self._allocated)
        except OSError as e:
            if e.errno not in _NO_FALLOCATE:
                raise
            os.ftruncate(self._fd, new_size)
        self._allocated = new_size

    def _finish_file(self) -> None:
        """Cut the preallocated tail and close the file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, self._pos)
            if self._force_sync:
                sync_data(fd)
        finally:
            os.close(fd)
            self._path = None

    def _fail(self, reason: str, start: int, length: int) -> None:
        """Refuse all further writes, and zero what this batch wrote (best effort) so that a recovery
        in this boot does not find records the server never acknowledged."""
        self._failure = reason
        log.error("transaction log failed: %s", reason)
        if self._fd is not None and length:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, bytes(length), start)


def recover(
    log_dir: Path, after_zxid: int = -1, *, repair: bool = True, tail_after_gap: bool = False
) -> Iterator[tuple[int, bytes]]:
    """Every valid (zxid, payload) with zxid > after_zxid, in zxid order across files.

    Checks everything before returning, so a CorruptLogError comes before any record is yielded.
    A torn tail in the newest file is cut off on disk (with a warning); damage anywhere else is a
    CorruptLogError naming the file and offset. So is a gap: every file whose records are needed
    must start right after the records before it (or after `after_zxid`, which the caller's
    snapshot covers), or a log file is missing. The log is then ready for a TxnLog to append.

    repair=False reads without changing anything, for a log a TxnLog is writing right now (a
    leader reading its history for a follower): the newest file is read up to its last complete
    batch, and an unfinished batch there is left alone.

    tail_after_gap=True: instead of raising at a gap, yield only the records after the last one
    (for a reader that wants the newest unbroken history, and can do without the older part).
    """
    log_dir = Path(log_dir)
    if repair:
        repair_tail(log_dir)
    needed = _files_after(list_zxid_files(log_dir, LOG_PREFIX), after_zxid)
    prev = -1
    reached = after_zxid  # records up to here are covered (by the caller's snapshot, then by files)
    start = 0
    for i, (first, path) in enumerate(needed):
        last = _check_file(path, first, prev, live=not repair and i == len(needed) - 1)
        if last > after_zxid:  # this file's records will be yielded
            if reached >= 0 and first > reached and not follows(reached, first):
                if not tail_after_gap:
                    raise CorruptLogError(
                        f"{path}: the log starts again at {first:#x} but the records before it end at "
                        f"{reached:#x}; the transactions between are missing (a log file is missing)"
                    )
                start = i
            reached = max(reached, last)
        prev = last
    return _replay(needed[start:], after_zxid, live=not repair)


def newest_records(log_dir: Path, upto: int, limit: int, *, live: bool = True) -> list[tuple[int, bytes]]:
    """The newest `limit` valid records at or below `upto`, oldest first, reading files from the
    newest backwards and only as many as that takes (a restart rebuilds its history window from
    the log's tail, not by rescanning every file). Stops at a gap or at damage in an older file:
    the history before it cannot be synced from anyway. live: the newest file may be being
    written (an unfinished batch at its end is not damage)."""
    files = list_zxid_files(Path(log_dir), LOG_PREFIX)
    parts: list[list[tuple[int, bytes]]] = []  # per file, oldest file first
    count = 0
    for index in range(len(files) - 1, -1, -1):
        first, path = files[index]
        if first > upto:
            continue
        try:
            records = [r for r in _replay([(first, path)], first - 1, live and index == len(files) - 1) if r[0] <= upto]
        except CorruptLogError:
            break
        if not records:
            continue
        if parts and not follows(records[-1][0], parts[0][0][0]):
            break  # a gap: what lies before it is not this history's unbroken past
        parts.insert(0, records)
        count += len(records)
        if count >= limit:
            break
    flat = [record for part in parts for record in part]
    return flat[-limit:] if limit > 0 else []


def follows(zxid: int, next_zxid: int) -> bool:
    """Can `next_zxid` be the transaction logged right after `zxid`? Either the next in the same
    epoch, or the first of a later epoch (a new leader's counter starts at 1); anything else
    means records are missing, e.g. a newer snapshot was damaged and the log was purged behind it.
    (A whole missing epoch between two epochs' first records cannot be told from zxids alone.)"""
    if next_zxid == zxid + 1:
        return True
    return next_zxid >> 32 > zxid >> 32 and next_zxid & 0xFFFFFFFF == 1


def repair_tail(log_dir: Path) -> int:
    """Cut a torn tail (and the unused preallocated space) off the newest log file, and delete
    newest files left with no records. Returns the last zxid left in the log, or -1."""
    files = list_zxid_files(log_dir, LOG_PREFIX)
    while files:
        first, path = files.pop()
        data = path.read_bytes()
        header = frames.read_header(data)
        if header is None:
            if frames.data_end(data) > frames.HEADER.size:
                raise CorruptLogError(f"{path}: not a zkpy transaction log (bad header at offset 0)")
            log.warning("%s: removing log file with a torn header (crash while it was created)", path)
            _remove(path)
            continue
        if header.first_zxid != first:
            raise CorruptLogError(
                f"{path}: header names first zxid {header.first_zxid:#x}, the file name {first:#x}"
            )
        verdict = frames.scan(data, header, first - 1)
        if not verdict.clean:
            if verdict.later_batch:
                raise CorruptLogError(
                    f"{path}: corrupt record at offset {verdict.stop}, followed by valid transactions"
                )
            log.warning(
                "%s: torn tail at offset %d (crash during a write); truncating the file to %d bytes",
                path,
                verdict.stop,
                verdict.end,
            )
            _truncate(path, verdict.end)
        elif len(data) > verdict.end:
            # The preallocated tail of a file left by a crash: no writer appends to it again.
            _truncate(path, verdict.end)
        if verdict.end > header.size:
            return verdict.last_zxid
        _remove(path)
    return -1


def _files_after(files: list[tuple[int, Path]], after_zxid: int) -> list[tuple[int, Path]]:
    """The files that can hold zxids above after_zxid: the last one starting at or below it, and
    every later one."""
    start = 0
    for i, (first, _) in enumerate(files):
        if first <= after_zxid:
            start = i
    return files[start:]


def _check_file(path: Path, first: int, prev: int, live: bool = False) -> int:
    """Validate one whole file strictly; return its last zxid (or prev if it has no records).

    live: the file may be being written: an unfinished batch (or header) at its end is no error.
    """
    data = path.read_bytes()
    header = frames.read_header(data)
    if header is None or header.first_zxid != first:
        if live and frames.data_end(data) <= frames.HEADER.size:
            return prev
        raise CorruptLogError(f"{path}: bad header (offset 0)")
    verdict = frames.scan(data, header, max(prev, first - 1))
    if not verdict.clean and (verdict.later_batch or not live):
        raise CorruptLogError(f"{path}: corrupt or out-of-order record at offset {verdict.stop}")
    return verdict.last_zxid


def _replay(files: list[tuple[int, Path]], after_zxid: int, live: bool) -> Iterator[tuple[int, bytes]]:
    for i, (first, path) in enumerate(files):
        data = path.read_bytes()
        header = frames.read_header(data)
        if header is None:
            if live and i == len(files) - 1:
                return  # being created
            raise CorruptLogError(f"{path}: changed during recovery (bad header)")
        view = memoryview(data)
        gen = frames.scan_frames(data, header, first - 1)
        while True:
            try:
                zxid, start, end = next(gen)
            except StopIteration as done:
                if not done.value.clean and not (live and i == len(files) - 1):
                    raise CorruptLogError(
                        f"{path}: changed during recovery (offset {done.value.stop})"
                    ) from None
                break
            if zxid > after_zxid:
                yield zxid, bytes(view[start:end])


def _truncate_files(log_dir: Path, zxid: int) -> int:
    """Remove records above zxid from the files; return the last zxid that remains, or -1."""
    for first, path in reversed(list_zxid_files(log_dir, LOG_PREFIX)):
        if first > zxid:
            _remove(path)
            continue
        data = path.read_bytes()
        view = memoryview(data)
        records = [(z, bytes(view[a:b])) for z, a, b in _iter_records(path, data, first)]
        kept = [r for r in records if r[0] <= zxid]
        if len(kept) < len(records):
            if not kept:
                _remove(path)
                continue
            tmp = path.with_name(path.name + TMP_SUFFIX)
            body = frames.encode_file(first, kept)  # rewritten in the current format
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _pwrite_all(fd, body, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(log_dir)
        if kept:
            return kept[-1][0]
    return -1


def _iter_records(path: Path, data: bytes, first: int) -> Iterator[tuple[int, int, int]]:
    header = frames.read_header(data)
    if header is None:
        raise CorruptLogError(f"{path}: bad header (offset 0)")
    verdict = yield from frames.scan_frames(data, header, first - 1)
    if not verdict.clean:
        raise CorruptLogError(f"{path}: corrupt record at offset {verdict.stop}")


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]
        offset += written


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    path.unlink()
    fsync_dir(path.parent)
