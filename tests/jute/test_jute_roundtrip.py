"""Every record the wire carries decodes back to what was encoded, and consumes exactly its own bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jute_strategies import ALL_RECORDS, WHOLE_FRAME_RECORDS, as_tuple, records_of

from zkpy.jute import records
from zkpy.jute.codec import decode, encode
from zkpy.jute.ops import MultiReadRequest, MultiRequest


def _roundtrip(cls: type, value: Any) -> None:
    data = encode(value)
    back, end = cls.read(data, 0)  # type: ignore[attr-defined]
    assert type(back) is cls
    assert as_tuple(back) == as_tuple(value)
    assert end == len(data)
    # Same answer when the record sits inside a bigger frame, behind a prefix and before trailing bytes
    # (the handshake records own their whole frame: a trailing byte there is the read-only flag).
    trailer = b"" if cls in WHOLE_FRAME_RECORDS else b"\xaa"
    back2, end2 = cls.read(memoryview(b"\x01\x02\x03" + data + trailer), 3)  # type: ignore[attr-defined]
    assert as_tuple(back2) == as_tuple(value)
    assert end2 == 3 + len(data)


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
@given(data=st.data())
def test_record_round_trips(cls: type, data: st.DataObject) -> None:
    _roundtrip(cls, data.draw(records_of(cls)))


@given(records_of(records.ConnectRequest))
def test_connect_request_read_only_byte_is_optional(req: records.ConnectRequest) -> None:
    """Old clients omit the read-only byte; the server must tell 'absent' from 'false'."""
    data = encode(req)
    assert len(data) == 28 + len(req.passwd) + (0 if req.read_only is None else 1)
    assert decode(records.ConnectRequest, data).read_only is req.read_only


def test_connect_request_without_and_with_read_only_byte() -> None:
    base = records.ConnectRequest(0, 5, 30000, 0, b"\x00" * 16, None)
    without = encode(base)
    assert len(without) == 44
    assert decode(records.ConnectRequest, without).read_only is None
    assert decode(records.ConnectRequest, without + b"\x00").read_only is False
    assert decode(records.ConnectRequest, without + b"\x01").read_only is True


def test_connect_response_mirrors_read_only_byte() -> None:
    resp = records.ConnectResponse(0, 30000, 0x1234, b"p" * 16, True)
    data = encode(resp)
    assert len(data) == 4 + 4 + 8 + 4 + 16 + 1
    back = decode(records.ConnectResponse, data)
    assert (back.timeout, back.session_id, back.passwd, back.read_only) == (30000, 0x1234, b"p" * 16, True)


def test_multi_read_request_keeps_its_class_and_rejects_write_ops() -> None:
    """multiRead carries getData/getChildren requests (path and watch flag, as in zookeeper.jute)."""
    from zkpy.jute.codec import JuteError
    from zkpy.jute.ops import OpCode, PathWatchRequest, SetDataRequest

    ops = [
        (OpCode.GET_DATA, PathWatchRequest("/a", False)),
        (OpCode.GET_CHILDREN, PathWatchRequest("/", True)),
    ]
    read = MultiReadRequest(ops)  # type: ignore[arg-type]
    data = encode(read)
    assert data[:9] == bytes.fromhex("00000004 00 ffffffff")  # MultiHeader(getData, done=false, err=-1)
    assert data[9:16] == bytes.fromhex("00000002 2f61 00")  # "/a", watch=false
    assert decode(MultiReadRequest, data) == read
    write = MultiRequest([(OpCode.SET_DATA, SetDataRequest("/a", b"x", -1))])
    with pytest.raises(JuteError):
        decode(MultiReadRequest, encode(write))
