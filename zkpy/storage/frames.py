"""The transaction log's on-disk format, pure: bytes in, records and verdicts out.

A log file is a 16-byte header, then frames, then (usually) a zero-filled preallocated tail:

    header: magic b"ZKPL", version u32 (1), first zxid u64                  (big-endian)
    frame:  length|flags u32, crc32 u32, zxid u64, batch u32, payload[length]

`batch` numbers the `write_batch` calls (one write, one fsync each) within the file, from 0;
the top bit of the length word marks the last record of a batch. The CRC covers every field
but itself, so nothing can rot unseen. An all-zero frame header is never valid (the CRC of
zero fields is not zero): that is how the reader tells the preallocated tail from data.

Recovery is batch-atomic: records count only once their batch's end record is read. A crash
during a write may persist the batch's pages (or sectors) in any order, so damage inside the
last batch is a torn write. Damage counts as corruption when a valid frame of a LATER batch
lies beyond it: `write_batch` never starts a batch before the previous one's fsync returned, so
a later batch on disk proves the damaged one had been acknowledged. (Damage to the last batch
alone cannot be told apart from a torn write; like ZooKeeper, recovery then drops that batch.)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass

LOG_MAGIC = b"ZKPL"
LOG_VERSION = 1
HEADER = struct.Struct(">4sIQ")
FRAME = struct.Struct(">IIQI")
_U32 = struct.Struct(">I")
_ZXID_BATCH = struct.Struct(">QI")

BATCH_END = 0x8000_0000
MAX_PAYLOAD = 0x7FFF_FFFF
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)

Buffer = bytes | bytearray | memoryview


def encode_header(first_zxid: int) -> bytes:
    return HEADER.pack(LOG_MAGIC, LOG_VERSION, first_zxid)


def decode_header(data: Buffer) -> int | None:
    """The first zxid a file header names, or None if the header is missing or not ours."""
    if len(data) < HEADER.size:
        return None
    magic, version, first_zxid = HEADER.unpack_from(data, 0)
    if magic != LOG_MAGIC or version != LOG_VERSION:
        return None
    return int(first_zxid)


def encode_batch(records: Sequence[tuple[int, bytes]], batch: int) -> bytearray:
    """Frame a batch into one buffer (one write() call), marking its last record."""
    out = bytearray()
    u32, crc32 = _U32.pack, zlib.crc32
    pack_tail = _ZXID_BATCH.pack
    batch &= 0xFFFF_FFFF
    last = len(records) - 1
    for i, (zxid, payload) in enumerate(records):
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"record of {n} bytes is too large for the log")
        word = u32(n | BATCH_END if i == last else n)
        tail = pack_tail(zxid, batch)
        out += word
        out += u32(crc32(payload, crc32(tail, crc32(word))))
        out += tail
        out += payload
    return out


def frame_at(data: Buffer, off: int, limit: int, after_zxid: int) -> tuple[int, int, int, bool] | None:
    """(zxid, batch, end offset, is batch end) of a valid frame at `off`, or None.

    Valid means: fits before `limit`, CRC matches, and zxid > `after_zxid` (zxids only grow).
    """
    if off + FRAME.size > limit:
        return None
    word, crc, zxid, batch = FRAME.unpack_from(data, off)
    end = off + FRAME.size + (word & MAX_PAYLOAD)
    if end > limit or zxid <= after_zxid:
        return None
    view = memoryview(data)
    if zlib.crc32(view[off + 8 : end], zlib.crc32(view[off : off + 4])) != crc:
        return None
    return zxid, batch, end, bool(word & BATCH_END)


def is_zero(data: Buffer, start: int, end: int | None = None) -> bool:
    """Whether data[start:end] is all zero bytes (the preallocated tail)."""
    end = len(data) if end is None else end
    view = memoryview(data)
    for pos in range(start, end, _CHUNK):
        chunk = view[pos : min(pos + _CHUNK, end)]
        if chunk != _ZEROS[: len(chunk)]:
            return False
    return True


def data_end(data: Buffer) -> int:
    """One past the last non-zero byte: where the preallocated tail begins."""
    view = memoryview(data)
    pos = len(data)
    while pos > 0:
        start = max(0, pos - _CHUNK)
        stripped = bytes(view[start:pos]).rstrip(b"\0")
        if stripped:
            return start + len(stripped)
        pos = start
    return 0


@dataclass(slots=True, frozen=True)
class Scan:
    """Where the valid data of one file ends, and what lies beyond.

    end:         offset just past the last complete batch (where a torn tail is cut)
    last_zxid:   zxid of the last record of that batch (the `after_zxid` given if there is none)
    stop:        None if the file ends cleanly; else the offset where valid frames stop while the
                 file does not (damage, or a batch without its end record)
    later_batch: a valid frame of a later batch lies beyond `stop` (so the damage is corruption)
    """

    end: int
    last_zxid: int
    stop: int | None
    later_batch: bool

    @property
    def clean(self) -> bool:
        return self.stop is None


def scan_frames(data: Buffer, start: int, after_zxid: int) -> Generator[tuple[int, int, int], None, Scan]:
    """Yield (zxid, payload start, payload end) of every record in a complete batch, in order;
    return the Scan verdict. Records of a batch are yielded only once its end record is read."""
    limit = len(data)
    off = batch_start = start
    last = batch_last = after_zxid
    open_batch = 0
    pending: list[tuple[int, int, int]] = []
    while True:
        found = frame_at(data, off, limit, last)
        if found is None or found[1] != open_batch:
            break
        zxid, _, end, is_end = found
        pending.append((zxid, off + FRAME.size, end))
        last, off = zxid, end
        if is_end:
            yield from pending
            pending.clear()
            batch_start, batch_last = off, zxid
            open_batch = (open_batch + 1) & 0xFFFF_FFFF
    if off == batch_start and is_zero(data, off):
        return Scan(batch_start, batch_last, None, False)
    return Scan(batch_start, batch_last, off, _later_batch(data, off, last, open_batch))


def scan(data: Buffer, start: int, after_zxid: int) -> Scan:
    """scan_frames without the records."""
    gen = scan_frames(data, start, after_zxid)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _later_batch(data: Buffer, off: int, after_zxid: int, open_batch: int) -> bool:
    """Whether a valid frame of a batch other than `open_batch` lies past `off`.

    The damaged region has no trustworthy lengths, so this tries every byte offset up to the
    end of the non-zero data, hopping over the valid frames it finds. Torn tails are at most
    one batch long, so this stays short.
    """
    limit, size = data_end(data), len(data)
    pos = off
    last = after_zxid
    while pos + FRAME.size <= limit:
        found = frame_at(data, pos, size, last)
        if found is None:
            pos += 1
            continue
        last, batch, pos, _ = found
        if batch != open_batch:
            return True
    return False
