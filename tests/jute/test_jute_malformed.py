"""Hostile or broken bytes from a peer raise JuteError, never another exception, never a hang.

The server turns JuteError into "close this connection"; any other exception type would
escape that handler and take down more than one connection.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jute_strategies import ALL_RECORDS, WHOLE_FRAME_RECORDS, records_of

from zkpy.jute.codec import JuteError, decode, encode
from zkpy.jute.ops import (
    REQUEST_RECORDS,
    RESPONSE_RECORDS,
    CheckVersionRequest,
    CreateRequest,
    GetChildrenResponse,
    MultiRequest,
    MultiResponse,
    OpCode,
    PathRequest,
    SetACLRequest,
    SetDataRequest,
)
from zkpy.jute.records import ConnectRequest, ConnectResponse, Stat

READERS = sorted(
    set(REQUEST_RECORDS.values()) | set(RESPONSE_RECORDS.values()) | {ConnectRequest, ConnectResponse},
    key=lambda c: c.__name__,
)
NONEMPTY_RECORDS = [c for c in ALL_RECORDS if c.__name__ != "EmptyRecord"]


def i32(n: int) -> bytes:
    return struct.pack(">i", n)


# Pieces that look like jute (small lengths and counts, -1, short runs of bytes), so that random
# input gets past the first length field more often than uniformly random bytes do.
TOKENS = st.one_of(
    st.integers(-3, 12).map(i32),
    st.sampled_from([i32(2**31 - 1), i32(-(2**31)), b"\x00", b"\x01", b"\xff"]),
    st.binary(min_size=1, max_size=12),
)


def decode_or_jute_error(cls: type, data: bytes) -> Any:
    """Decode, allowing only success or JuteError through (anything else fails the test)."""
    try:
        return decode(cls, data)
    except JuteError:
        return None


@pytest.mark.parametrize("cls", NONEMPTY_RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_every_truncation_raises_jute_error(cls: type, data: st.DataObject) -> None:
    """No strict prefix of a record's encoding is itself a complete record."""
    value = data.draw(records_of(cls))
    if cls in WHOLE_FRAME_RECORDS and value.read_only is not None:
        value.read_only = None  # without the optional last byte, so that dropping any byte truncates
    encoded = encode(value)
    for cut in range(len(encoded)):
        with pytest.raises(JuteError):
            decode(cls, encoded[:cut])


@pytest.mark.parametrize("cls", READERS, ids=lambda c: c.__name__)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200) | st.lists(TOKENS, max_size=30).map(b"".join))
def test_random_bytes_raise_only_jute_error(cls: type, raw: bytes) -> None:
    decode_or_jute_error(cls, raw)


@pytest.mark.parametrize("cls", READERS, ids=lambda c: c.__name__)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_corrupted_valid_records_raise_only_jute_error(cls: type, data: st.DataObject) -> None:
    """Random bytes rarely get past the first length; flipping bytes in a valid record reaches deeper."""
    encoded = bytearray(encode(data.draw(records_of(cls))))
    for _ in range(data.draw(st.integers(1, 4))):
        if not encoded:
            break
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, encoded[pos] ^ 0x01]))
    decode_or_jute_error(cls, bytes(encoded))


def test_buffer_length_past_end_of_frame() -> None:
    with pytest.raises(JuteError, match="past the end"):
        decode(SetDataRequest, i32(2) + b"/a" + i32(100) + b"short")


@pytest.mark.parametrize("length", [-2, -100, -(2**31)])
def test_negative_buffer_and_string_lengths(length: int) -> None:
    with pytest.raises(JuteError):
        decode(PathRequest, i32(length) + b"/abc")
    with pytest.raises(JuteError):
        decode(SetDataRequest, i32(2) + b"/a" + i32(length) + i32(0))


def test_huge_string_length() -> None:
    with pytest.raises(JuteError):
        decode(PathRequest, i32(2**31 - 1) + b"/abc")


@pytest.mark.parametrize("raw", [b"\xc3\x28", b"\xff", b"/\xed\xa0\x80", b"\xe2\x82"])
def test_bad_utf8_in_a_path(raw: bytes) -> None:
    with pytest.raises(JuteError, match="UTF-8"):
        decode(PathRequest, i32(len(raw)) + raw)


@pytest.mark.parametrize("count", [3, 1000, 2**31 - 1])
def test_vector_count_larger_than_the_frame(count: int) -> None:
    with pytest.raises(JuteError):
        decode(GetChildrenResponse, i32(count) + i32(1) + b"a")
    acl_body = i32(2) + b"/a" + i32(count) + i32(31) + i32(5) + b"world" + i32(6) + b"anyone" + i32(-1)
    with pytest.raises(JuteError):
        decode(SetACLRequest, acl_body)


@pytest.mark.parametrize("count", [-2, -1000, -(2**31)])
def test_negative_vector_count_other_than_null(count: int) -> None:
    """-1 is a null vector; any other negative count is garbage, as for buffers."""
    assert decode(GetChildrenResponse, i32(-1)).children is None
    with pytest.raises(JuteError):
        decode(GetChildrenResponse, i32(count))
    with pytest.raises(JuteError):
        decode(CreateRequest, i32(2) + b"/a" + i32(-1) + i32(count) + i32(0))


def test_truncated_fixed_fields() -> None:
    with pytest.raises(JuteError):
        decode(Stat, bytes(67))
    with pytest.raises(JuteError):
        decode(ConnectRequest, bytes(20))
    with pytest.raises(JuteError):
        decode(ConnectResponse, bytes(10))


def test_multi_without_end_marker() -> None:
    body = encode(MultiRequest([(OpCode.CHECK, CheckVersionRequest("/a", 1))]))
    with pytest.raises(JuteError):
        decode(MultiRequest, body[:-9])


def test_multi_with_an_op_not_allowed_in_multi() -> None:
    header = i32(OpCode.GET_ACL) + b"\x00" + i32(-1)
    with pytest.raises(JuteError):
        decode(MultiRequest, header + i32(2) + b"/a")
    with pytest.raises(JuteError):
        decode(MultiResponse, i32(OpCode.SYNC) + b"\x00" + i32(0) + i32(2) + b"/a")


def test_endless_multi_headers_stop_at_the_frame_end() -> None:
    """A multi of many check ops and no end marker must end in JuteError quickly, not loop."""
    op = i32(OpCode.CHECK) + b"\x00" + i32(-1) + i32(2) + b"/a" + i32(0)
    with pytest.raises(JuteError):
        decode(MultiRequest, op * 20_000)
