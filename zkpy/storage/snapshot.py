"""Snapshots: a stream of msgpack items (whatever the server chooses to save) under checksums.

File `snapshot.<zxid hex>`:

    header: magic b"ZKPS", version u32 (1), zxid u64                    (big-endian)
    chunk*: length u32 (> 0), crc32 u32, data[length]   (packed items, split anywhere)
    footer: length u32 (0), crc32 u32 of all chunk data then the count, item count u64, magic b"ZKPE"

A snapshot is written to `.tmp`, fsynced, renamed into place and the directory fsynced, so a
crash leaves either the whole file or none. The same bytes are what a leader streams to a learner
for a SNAP (write_stream into a pipe from a forked child; the learner's SnapshotReceiver writes
them to its own `.tmp` and installs the file once every checksum holds). Rot is caught by the CRCs; the loader then falls
back to the previous snapshot, as ZooKeeper does (the purge keeps the logs that makes possible).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from zkpy.storage.errors import CorruptSnapshotError
from zkpy.storage.files import SNAP_PREFIX, TMP_SUFFIX, fsync_dir, list_zxid_files, zxid_name

log = logging.getLogger(__name__)

SNAP_MAGIC = b"ZKPS"
SNAP_END_MAGIC = b"ZKPE"
SNAP_VERSION = 1
HEADER = struct.Struct(">4sIQ")
CHUNK = struct.Struct(">II")
FOOTER = struct.Struct(">IIQ4s")
_COUNT = struct.Struct(">Q")
CHUNK_SIZE = 1 << 20


def write_snapshot(snap_dir: Path, zxid: int, items: Iterable[Any]) -> Path:
    """Write items durably as the snapshot for `zxid`; return its path."""
    snap_dir = Path(snap_dir)
    snap_dir.mkdir(parents=True, exist_ok=True)
    final = snap_dir / zxid_name(SNAP_PREFIX, zxid)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            write_stream(f, zxid, items)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(snap_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def write_stream(f: BinaryIO, zxid: int, items: Iterable[Any]) -> None:
    """A whole snapshot, header to footer, into `f` (a file or a pipe)."""
    f.write(HEADER.pack(SNAP_MAGIC, SNAP_VERSION, zxid))
    total_crc, count = _write_chunks(f, items)
    f.write(FOOTER.pack(0, _footer_crc(total_crc, count), count, SNAP_END_MAGIC))


class SnapshotReceiver:
    """A snapshot arriving in pieces (a streamed SNAP): appended to a temp file as it comes,
    installed by finish() only once the file is whole and every checksum holds."""

    INCOMING = "snapshot.incoming" + TMP_SUFFIX

    def __init__(self, snap_dir: Path) -> None:
        self.snap_dir = Path(snap_dir)
        self.snap_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.snap_dir / self.INCOMING
        self._f: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115 (closed by finish/abort)
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self._f is not None
        self._f.write(data)
        self.size += len(data)

    def finish(self, zxid: int) -> Path:
        """Durable under its final name, or CorruptSnapshotError (and nothing installed)."""
        assert self._f is not None
        f, self._f = self._f, None
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            verify_snapshot(self.tmp, zxid)
            final = self.snap_dir / zxid_name(SNAP_PREFIX, zxid)
            os.replace(self.tmp, final)
            fsync_dir(self.snap_dir)
        except BaseException:
            f.close()
            self.tmp.unlink(missing_ok=True)
            raise
        return final

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.tmp.unlink(missing_ok=True)


def _write_chunks(f: BinaryIO, items: Iterable[Any]) -> tuple[int, int]:
    packer = msgpack.Packer(use_bin_type=True)
    buf = bytearray()
    total_crc = count = 0

    def flush() -> None:
        nonlocal total_crc
        crc = zlib.crc32(buf)
        total_crc = zlib.crc32(buf, total_crc)
        f.write(CHUNK.pack(len(buf), crc))
        f.write(buf)
        buf.clear()

    for item in items:
        buf += packer.pack(item)
        count += 1
        if len(buf) >= CHUNK_SIZE:
            flush()
    if buf:
        flush()
    return total_crc, count


def load_latest_snapshot(snap_dir: Path) -> tuple[int, Iterator[Any]] | None:
    """(zxid, items) of the newest snapshot whose checksums hold, or None if there is no snapshot.

    A corrupt snapshot is skipped with a warning. If snapshots exist but none is valid, this
    raises CorruptSnapshotError rather than let the server start empty and replay a log whose
    beginning may have been purged.
    """
    snaps = list_zxid_files(Path(snap_dir), SNAP_PREFIX)
    for zxid, path in reversed(snaps):
        try:
            verify_snapshot(path, zxid)
        except CorruptSnapshotError as e:
            log.warning("skipping corrupt snapshot: %s", e)
            continue
        return zxid, _items(path)
    if snaps:
        raise CorruptSnapshotError(f"{snap_dir}: no valid snapshot among {len(snaps)}")
    return None


def verify_snapshot(path: Path, zxid: int | None = None) -> int:
    """Check every checksum of a snapshot file; return its item count or raise CorruptSnapshotError."""
    with open(path, "rb") as f:
        file_zxid = _read_header(f, path)
        if zxid is not None and file_zxid != zxid:
            raise CorruptSnapshotError(f"{path}: header names zxid {file_zxid:#x}")
        total_crc = 0
        for data in _chunks(f, path):
            total_crc = zlib.crc32(data, total_crc)
        return _check_footer(f, path, total_crc)


def looks_complete(path: Path) -> bool:
    """Cheap validity check (header and footer only), for purge: as ZooKeeper's isValidSnapshot."""
    try:
        size = path.stat().st_size
        if size < HEADER.size + FOOTER.size:
            return False
        with open(path, "rb") as f:
            magic, version, _ = HEADER.unpack(f.read(HEADER.size))
            f.seek(size - FOOTER.size)
            zero, _, _, end_magic = FOOTER.unpack(f.read(FOOTER.size))
    except OSError:
        return False
    return magic == SNAP_MAGIC and version == SNAP_VERSION and zero == 0 and end_magic == SNAP_END_MAGIC


def snapshot_zxid(path: Path) -> int:
    with open(path, "rb") as f:
        return _read_header(f, path)


def iter_items(path: Path) -> Iterator[Any]:
    """The items of one snapshot file, checking chunk CRCs as it goes (for tools; the loader
    verifies the whole file first)."""
    return _items(path)


def read_stream(f: BinaryIO, name: str) -> tuple[int, list[Any]]:
    """(zxid, items) of one whole snapshot read from `f` (a seekable stream), every checksum
    checked (CorruptSnapshotError otherwise)."""
    where = Path(name)
    zxid = _read_header(f, where)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    items: list[Any] = []
    total_crc = 0
    for data in _chunks(f, where):
        total_crc = zlib.crc32(data, total_crc)
        unpacker.feed(data)
        items.extend(unpacker)
    if _check_footer(f, where, total_crc) != len(items):
        raise CorruptSnapshotError(f"{name}: item count does not match")
    return zxid, items


def _items(path: Path) -> Iterator[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    with open(path, "rb") as f:
        _read_header(f, path)
        for data in _chunks(f, path):
            unpacker.feed(data)
            yield from unpacker


def _read_header(f: BinaryIO, path: Path) -> int:
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise CorruptSnapshotError(f"{path}: truncated header")
    magic, version, zxid = HEADER.unpack(raw)
    if magic != SNAP_MAGIC or version != SNAP_VERSION:
        raise CorruptSnapshotError(f"{path}: not a zkpy snapshot (offset 0)")
    return int(zxid)


def _chunks(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """Chunk data up to (not including) the footer, each CRC-checked. Leaves f at the footer."""
    while True:
        offset = f.tell()
        raw = f.read(CHUNK.size)
        if len(raw) < CHUNK.size:
            raise CorruptSnapshotError(f"{path}: truncated at offset {offset}")
        length, crc = CHUNK.unpack(raw)
        if length == 0:
            f.seek(offset)
            return
        data = f.read(length)
        if len(data) < length or zlib.crc32(data) != crc:
            raise CorruptSnapshotError(f"{path}: bad chunk at offset {offset}")
        yield data


def _footer_crc(total_crc: int, count: int) -> int:
    return zlib.crc32(_COUNT.pack(count), total_crc)


def _check_footer(f: BinaryIO, path: Path, total_crc: int) -> int:
    offset = f.tell()
    raw = f.read(FOOTER.size)
    if len(raw) < FOOTER.size:
        raise CorruptSnapshotError(f"{path}: truncated footer at offset {offset}")
    _, crc, count, magic = FOOTER.unpack(raw)
    if magic != SNAP_END_MAGIC or crc != _footer_crc(total_crc, count) or f.read(1):
        raise CorruptSnapshotError(f"{path}: bad footer at offset {offset}")
    return int(count)
