"""The transaction log's on-disk format, pure: bytes in, records and verdicts out.

A log file is a header, then frames, then (usually) a zero-filled preallocated tail. All
integers big-endian. Version 2 (written since issue 15; see "Version 1" below for older files):

    header: magic b"ZKPL", version u32 (2), first zxid u64, salt u32, header crc u32   (24 bytes)
    frame:  length|flags u32, crc u32, zxid u64, salt u32, prev u32, payload[length]   (24 + n)

`salt` is a random non-zero number drawn when the file is created, repeated in every frame.
`prev` chains the batches (the records of one `write_batch` call: one write, one fsync): the
frames of a file's first batch carry the header crc; every later batch carries the crc of the
previous batch's end record. The top bit of the length word marks a batch's last record. A
frame's CRC covers every field but itself (the header crc: the 20 bytes before it). So a frame
is valid only with this file's salt and in its place in the chain, and an all-zero frame header
is never valid: that is how the reader tells the preallocated tail from data.

Recovery is batch-atomic: records count only once their batch's end record is read. A crash
during a write may persist the batch's pages (or sectors) in any order, so damage inside the
last batch is a torn write. Damage counts as corruption when a valid frame of a LATER batch
lies beyond it: `write_batch` never starts a batch before the previous one's fsync returned, so
a later batch on disk proves the damaged one had been acknowledged. (Damage to the last batch
alone cannot be told apart from a torn write; like ZooKeeper, recovery then drops that batch.)

Why the salt and the chain: a client's data can hold bytes that look like a frame (the CRC is
public), and the search for a later batch looks inside the damaged region, where lengths cannot
be trusted. Without the salt, a well-formed frame inside a client's payload, past a torn start
of its record, was taken for a later batch and a torn write for corruption (the server refused
to start). A forger would now need the file's salt, which never leaves the server. The salt is
also what makes the search fast: candidates are found with bytes.find (at C speed), not by
trying a CRC at every byte offset in Python, so a damaged region costs milliseconds per 64 MiB.

Version 1 (files written before; still read, never written): a 16-byte header (magic, version 1,
first zxid) and frames `length|flags u32, crc u32, zxid u64, batch u32` (20 bytes) where `batch`
numbers the batches of the file from 0. Its later-batch search tries every byte offset (slow on
a damaged preallocated file) and can be fooled by frames inside client data, as before.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass

LOG_MAGIC = b"ZKPL"
LOG_VERSION = 2
HEADER = struct.Struct(">4sIQII")  # version 2
FRAME = struct.Struct(">IIQII")  # version 2
HEADER_V1 = struct.Struct(">4sIQ")
FRAME_V1 = struct.Struct(">IIQI")
_MAGIC_VERSION = struct.Struct(">4sI")
_U32 = struct.Struct(">I")
_ZXID_BATCH = struct.Struct(">QI")  # version 1
_ZXID_SALT_PREV = struct.Struct(">QII")  # version 2
_SALT_AT = 16  # offset of the salt in a version 2 frame

BATCH_END = 0x8000_0000
MAX_PAYLOAD = 0x7FFF_FFFF
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)

Buffer = bytes | bytearray | memoryview


@dataclass(slots=True, frozen=True)
class FileHeader:
    """A decoded file header. `chain` is what the first batch's frames carry as `prev`."""

    first_zxid: int
    version: int
    size: int
    salt: int = 0
    chain: int = 0


def new_salt() -> int:
    return int.from_bytes(os.urandom(4), "big") or 1


def encode_header(first_zxid: int, salt: int | None = None) -> bytes:
    """A version 2 header (with a fresh random salt unless one is given)."""
    salt = new_salt() if salt is None else salt
    head = HEADER.pack(LOG_MAGIC, LOG_VERSION, first_zxid, salt, 0)[:-4]
    return head + _U32.pack(zlib.crc32(head))


def read_header(data: Buffer) -> FileHeader | None:
    """The header of a log file of either version, or None if it is missing, damaged or not ours."""
    if len(data) < HEADER_V1.size:
        return None
    magic, version = _MAGIC_VERSION.unpack_from(data, 0)
    if magic != LOG_MAGIC:
        return None
    if version == 1:
        return FileHeader(int(HEADER_V1.unpack_from(data, 0)[2]), 1, HEADER_V1.size)
    if version != 2 or len(data) < HEADER.size:
        return None
    _, _, first_zxid, salt, crc = HEADER.unpack_from(data, 0)
    if zlib.crc32(memoryview(data)[: HEADER.size - 4]) != crc or salt == 0:
        return None
    return FileHeader(int(first_zxid), 2, HEADER.size, int(salt), int(crc))


def decode_header(data: Buffer) -> int | None:
    """The first zxid a file header names, or None if the header is missing or not ours."""
    header = read_header(data)
    return None if header is None else header.first_zxid


def encode_batch(records: Sequence[tuple[int, bytes]], salt: int, prev: int) -> tuple[bytearray, int]:
    """Frame a batch (version 2) into one buffer (one write() call), marking its last record.
    Returns the buffer and the chain value the next batch carries (the end record's crc)."""
    out = bytearray()
    u32, crc32 = _U32.pack, zlib.crc32
    pack_tail = _ZXID_SALT_PREV.pack
    last = len(records) - 1
    crc = prev
    for i, (zxid, payload) in enumerate(records):
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"record of {n} bytes is too large for the log")
        word = u32(n | BATCH_END if i == last else n)
        tail = pack_tail(zxid, salt, prev)
        crc = crc32(payload, crc32(tail, crc32(word)))
        out += word
        out += u32(crc)
        out += tail
        out += payload
    return out, crc


def encode_file(first_zxid: int, records: Sequence[tuple[int, bytes]]) -> bytes:
    """A whole version 2 file holding `records` as one batch."""
    header = encode_header(first_zxid)
    parsed = read_header(header)
    assert parsed is not None
    return header + encode_batch(records, parsed.salt, parsed.chain)[0]


def encode_batch_v1(records: Sequence[tuple[int, bytes]], batch: int) -> bytearray:
    """A version 1 batch: only for tests that check old files still load."""
    out = bytearray()
    u32, crc32 = _U32.pack, zlib.crc32
    batch &= 0xFFFF_FFFF
    last = len(records) - 1
    for i, (zxid, payload) in enumerate(records):
        word = u32(len(payload) | BATCH_END if i == last else len(payload))
        tail = _ZXID_BATCH.pack(zxid, batch)
        out += word + u32(crc32(payload, crc32(tail, crc32(word)))) + tail + payload
    return out


def encode_header_v1(first_zxid: int) -> bytes:
    return HEADER_V1.pack(LOG_MAGIC, 1, first_zxid)


def frame_at(
    data: Buffer, off: int, limit: int, after_zxid: int, header: FileHeader
) -> tuple[int, int, int, bool, int] | None:
    """(zxid, batch tag, end offset, is batch end, crc) of a valid frame at `off`, or None.

    Valid means: fits before `limit`, CRC matches, zxid > `after_zxid` (zxids only grow), and in
    version 2 the file's salt. The batch tag is the batch number (version 1) or `prev` (version 2).
    """
    if header.version == 1:
        if off + FRAME_V1.size > limit:
            return None
        word, crc, zxid, tag = FRAME_V1.unpack_from(data, off)
        size = FRAME_V1.size
    else:
        if off + FRAME.size > limit:
            return None
        word, crc, zxid, salt, tag = FRAME.unpack_from(data, off)
        if salt != header.salt:
            return None
        size = FRAME.size
    end = off + size + (word & MAX_PAYLOAD)
    if end > limit or zxid <= after_zxid:
        return None
    view = memoryview(data)
    if zlib.crc32(view[off + 8 : end], zlib.crc32(view[off : off + 4])) != crc:
        return None
    return zxid, tag, end, bool(word & BATCH_END), crc


def is_zero(data: Buffer, start: int, end: int | None = None) -> bool:
    """Whether data[start:end] is all zero bytes (the preallocated tail)."""
    end = len(data) if end is None else end
    view = memoryview(data)
    for pos in range(start, end, _CHUNK):
        chunk = view[pos : min(pos + _CHUNK, end)].tobytes()  # bytes == bytes is a memcmp
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


def frame_size(header: FileHeader) -> int:
    return FRAME_V1.size if header.version == 1 else FRAME.size


def scan_frames(
    data: Buffer, header: FileHeader, after_zxid: int
) -> Generator[tuple[int, int, int], None, Scan]:
    """Yield (zxid, payload start, payload end) of every record in a complete batch, in order;
    return the Scan verdict. Records of a batch are yielded only once its end record is read."""
    limit = len(data)
    size = frame_size(header)
    off = batch_start = header.size
    last = batch_last = after_zxid
    # What the open batch's frames must carry: its number (v1) or the chain value (v2).
    expect = 0 if header.version == 1 else header.chain
    pending: list[tuple[int, int, int]] = []
    while True:
        found = frame_at(data, off, limit, last, header)
        if found is None or found[1] != expect:
            break
        zxid, _, end, is_end, crc = found
        pending.append((zxid, off + size, end))
        last, off = zxid, end
        if is_end:
            yield from pending
            pending.clear()
            batch_start, batch_last = off, zxid
            expect = (expect + 1) & 0xFFFF_FFFF if header.version == 1 else crc
    if off == batch_start and is_zero(data, off):
        return Scan(batch_start, batch_last, None, False)
    if header.version == 1:
        later = _later_batch_v1(data, off, last, expect, header)
    else:
        later = _later_batch(data, off, last, expect, header)
    return Scan(batch_start, batch_last, off, later)


def scan(data: Buffer, header: FileHeader, after_zxid: int) -> Scan:
    """scan_frames without the records."""
    gen = scan_frames(data, header, after_zxid)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _later_batch(data: Buffer, off: int, after_zxid: int, open_chain: int, header: FileHeader) -> bool:
    """Whether a valid frame of a batch other than the open one lies past `off` (version 2).

    Candidates are the places where the file's salt occurs (found by bytes.find, at C speed);
    only there is a frame decoded and its CRC checked. Frames of the open (damaged) batch itself
    are hopped over; any other valid frame is a later batch.
    """
    limit, size = data_end(data), len(data)
    needle = _U32.pack(header.salt)
    raw = data if isinstance(data, bytes | bytearray) else bytes(data)
    last = after_zxid
    pos = raw.find(needle, off + _SALT_AT)
    while pos != -1 and pos - _SALT_AT + FRAME.size <= limit:
        found = frame_at(data, pos - _SALT_AT, size, last, header)
        if found is None:
            pos = raw.find(needle, pos + 1)
            continue
        last, tag, end, _, _ = found
        if tag != open_chain:
            return True
        pos = raw.find(needle, end + _SALT_AT)
    return False


def _later_batch_v1(data: Buffer, off: int, after_zxid: int, open_batch: int, header: FileHeader) -> bool:
    """Version 1: tries every byte offset up to the end of the non-zero data, hopping over the
    valid frames it finds (slow when damage lies far from the data; kept for old files only)."""
    limit, size = data_end(data), len(data)
    pos = off
    last = after_zxid
    while pos + FRAME_V1.size <= limit:
        found = frame_at(data, pos, size, last, header)
        if found is None:
            pos += 1
            continue
        last, batch, pos, _, _ = found
        if batch != open_batch:
            return True
    return False
