"""The transaction log's on-disk format, pure: bytes in, records and verdicts out.

A log file is a 16-byte header, then frames, then (usually) a zero-filled preallocated tail:

    header: magic b"ZKPL", version u32 (1), first zxid u64          (big-endian)
    frame:  length|flags u32, crc32 u32, zxid u64, payload[length]

The top bit of the length word marks the last record of a batch (one `write_batch` call, one
fsync). The CRC covers the length word, the zxid and the payload, so no field can rot unseen.
An all-zero frame header is never valid (the CRC of a zero length and zxid is not zero), which
is how the reader tells the preallocated tail from data.

Recovery is batch-atomic: records count only once their batch's end record is read. A crash
during a write may persist the batch's pages in any order, so damage inside the last batch is a
torn write, not corruption. Damage counts as corruption only when a complete batch and then
another valid frame lie beyond it: `write_batch` does not start a batch before the previous
one's fsync returned, so a later batch on disk proves the damaged one had been acknowledged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass

LOG_MAGIC = b"ZKPL"
LOG_VERSION = 1
HEADER = struct.Struct(">4sIQ")
FRAME = struct.Struct(">IIQ")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

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


def encode_batch(records: Iterable[tuple[int, bytes]]) -> bytearray:
    """Frame a batch into one buffer (one write() call), marking its last record."""
    out = bytearray()
    u32, u64, crc32 = _U32.pack, _U64.pack, zlib.crc32
    last_len_at = -1
    for zxid, payload in records:
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"record of {n} bytes is too large for the log")
        last_len_at = len(out)
        zb = u64(zxid)
        out += u32(n)
        out += u32(crc32(payload, crc32(zb, crc32(u32(n)))))
        out += zb
        out += payload
    if last_len_at >= 0:
        # Set the batch-end flag on the last frame and recompute its CRC over the new length word.
        n, _, zxid = FRAME.unpack_from(out, last_len_at)
        start = last_len_at + FRAME.size
        word = u32(n | BATCH_END)
        crc = crc32(memoryview(out)[start : start + n], crc32(u64(zxid), crc32(word)))
        FRAME.pack_into(out, last_len_at, n | BATCH_END, crc, zxid)
    return out


def frame_at(data: Buffer, off: int, limit: int, after_zxid: int) -> tuple[int, int, bool] | None:
    """(zxid, end offset, is batch end) of a valid frame at `off`, or None.

    Valid means: fits before `limit`, CRC matches, and zxid > `after_zxid` (zxids only grow).
    """
    if off + FRAME.size > limit:
        return None
    word, crc, zxid = FRAME.unpack_from(data, off)
    end = off + FRAME.size + (word & MAX_PAYLOAD)
    if end > limit or zxid <= after_zxid:
        return None
    view = memoryview(data)
    if zlib.crc32(view[off + 8 : end], zlib.crc32(view[off : off + 4])) != crc:
        return None
    return zxid, end, bool(word & BATCH_END)


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
    later_batch: a complete batch followed by another valid frame lies beyond `stop` (corruption)
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
    pending: list[tuple[int, int, int]] = []
    while True:
        found = frame_at(data, off, limit, last)
        if found is None:
            break
        zxid, end, is_end = found
        pending.append((zxid, off + FRAME.size, end))
        last, off = zxid, end
        if is_end:
            yield from pending
            pending.clear()
            batch_start, batch_last = off, zxid
    if off == batch_start and is_zero(data, off):
        return Scan(batch_start, batch_last, None, False)
    return Scan(batch_start, batch_last, off, _later_batch(data, off, last))


def scan(data: Buffer, start: int, after_zxid: int) -> Scan:
    """scan_frames without the records."""
    gen = scan_frames(data, start, after_zxid)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _later_batch(data: Buffer, off: int, after_zxid: int) -> bool:
    """Whether, somewhere past `off`, a batch-end frame is followed by another valid frame.

    The damaged region has no trustworthy lengths, so this tries every byte offset up to the
    end of the non-zero data. Torn tails are at most one batch long, so this stays short.
    """
    limit, size = data_end(data), len(data)
    pos = off + 1
    seen_end = False
    last = after_zxid
    while pos + FRAME.size <= limit:
        found = frame_at(data, pos, size, last)
        if found is None:
            pos += 1
            continue
        if seen_end:
            return True
        last, pos, is_end = found
        seen_end = seen_end or is_end
    return False
