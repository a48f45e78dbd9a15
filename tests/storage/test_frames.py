"""The log format on its own: framing round trip, and scanning any bytes without crashing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.storage import frames

batches = st.lists(st.lists(st.binary(max_size=60), min_size=1, max_size=4), max_size=6)


def encode(payload_batches: list[list[bytes]]) -> tuple[bytes, list[tuple[int, bytes]]]:
    data = bytearray(frames.encode_header(1))
    records: list[tuple[int, bytes]] = []
    for n, payloads in enumerate(payload_batches):
        batch = [(len(records) + i + 1, p) for i, p in enumerate(payloads)]
        data += frames.encode_batch(batch, n)
        records += batch
    return bytes(data), records


def scan_all(data: bytes) -> tuple[list[tuple[int, bytes]], frames.Scan]:
    out = []
    gen = frames.scan_frames(data, frames.HEADER.size, 0)
    while True:
        try:
            zxid, start, end = next(gen)
        except StopIteration as done:
            return out, done.value
        out.append((zxid, data[start:end]))


@given(payload_batches=batches, tail=st.integers(0, 100))
def test_round_trip_with_a_zero_tail(payload_batches: list[list[bytes]], tail: int) -> None:
    data, records = encode(payload_batches)
    found, verdict = scan_all(data + bytes(tail))
    assert found == records
    assert verdict.clean and verdict.end == len(data)
    assert verdict.last_zxid == (records[-1][0] if records else 0)


@settings(max_examples=300)
@given(payload_batches=batches, junk=st.binary(max_size=200), at=st.floats(0, 1))
def test_scanning_damaged_bytes_never_crashes(
    payload_batches: list[list[bytes]], junk: bytes, at: float
) -> None:
    data, records = encode(payload_batches)
    pos = int(at * len(data))
    damaged = data[:pos] + junk + data[pos + len(junk) :]
    found, verdict = scan_all(damaged)
    assert found == records[: len(found)]
    assert verdict.end <= len(damaged)
