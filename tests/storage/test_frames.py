"""The log format on its own: framing round trip, and scanning any bytes without crashing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.storage import frames

batches = st.lists(st.lists(st.binary(max_size=60), min_size=1, max_size=4), max_size=6)


def encode(payload_batches: list[list[bytes]], version: int = 2) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A file of either format version holding the batches, and its records."""
    data = bytearray(frames.encode_header(1) if version == 2 else frames.encode_header_v1(1))
    header = frames.read_header(data)
    assert header is not None
    chain = header.chain
    records: list[tuple[int, bytes]] = []
    for n, payloads in enumerate(payload_batches):
        batch = [(len(records) + i + 1, p) for i, p in enumerate(payloads)]
        if version == 2:
            buf, chain = frames.encode_batch(batch, header.salt, chain)
        else:
            buf = frames.encode_batch_v1(batch, n)
        data += buf
        records += batch
    return bytes(data), records


def scan_all(
    data: bytes, header: frames.FileHeader | None = None
) -> tuple[list[tuple[int, bytes]], frames.Scan]:
    """Scan with the file's own header, or `header` (of the undamaged file) if given."""
    out = []
    header = header or frames.read_header(data)
    assert header is not None
    gen = frames.scan_frames(data, header, 0)
    while True:
        try:
            zxid, start, end = next(gen)
        except StopIteration as done:
            return out, done.value
        out.append((zxid, data[start:end]))


@given(payload_batches=batches, tail=st.integers(0, 100), version=st.sampled_from([1, 2]))
def test_round_trip_with_a_zero_tail(payload_batches: list[list[bytes]], tail: int, version: int) -> None:
    """Both format versions read back (version 1: the files written before the chain)."""
    data, records = encode(payload_batches, version)
    found, verdict = scan_all(data + bytes(tail))
    assert found == records
    assert verdict.clean and verdict.end == len(data)
    assert verdict.last_zxid == (records[-1][0] if records else 0)


@settings(max_examples=300)
@given(
    payload_batches=batches, junk=st.binary(max_size=200), at=st.floats(0, 1), version=st.sampled_from([1, 2])
)
def test_scanning_damaged_bytes_never_crashes(
    payload_batches: list[list[bytes]], junk: bytes, at: float, version: int
) -> None:
    data, records = encode(payload_batches, version)
    pos = int(at * len(data))
    damaged = data[:pos] + junk + data[pos + len(junk) :]
    found, verdict = scan_all(damaged, frames.read_header(data))
    assert found == records[: len(found)]
    assert verdict.end <= len(damaged)
