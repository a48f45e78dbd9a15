"""Byte-exact encodings, computed by hand from zookeeper.jute, so both sides agree with real ZooKeeper."""

from __future__ import annotations

from zkpy.jute.codec import decode, encode
from zkpy.jute.ops import (
    CreateRequest,
    DeleteRequest,
    GetChildrenResponse,
    MultiRequest,
    OpCode,
    PathWatchRequest,
    SetDataRequest,
)
from zkpy.jute.records import (
    ACL,
    OPEN_ACL_UNSAFE,
    ConnectRequest,
    ConnectResponse,
    Id,
    MultiHeader,
    ReplyHeader,
    RequestHeader,
    Stat,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def test_stat_is_68_bytes_in_field_order() -> None:
    stat = Stat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    expected = h(
        "0000000000000001 0000000000000002 0000000000000003 0000000000000004"
        "00000005 00000006 00000007 0000000000000008 00000009 0000000a 000000000000000b"
    )
    assert len(expected) == 68
    assert encode(stat) == expected
    assert decode(Stat, expected) == stat


def test_negative_fields_are_twos_complement_big_endian() -> None:
    assert encode(ReplyHeader(-1, -1, -101)) == h("ffffffff ffffffffffffffff ffffff9b")
    assert encode(RequestHeader(0x01020304, OpCode.GET_DATA)) == h("01020304 00000004")


def test_null_buffer_and_null_string_are_minus_one() -> None:
    assert encode(SetDataRequest("/a", None, -1)) == h("00000002 2f61 ffffffff ffffffff")
    assert encode(PathWatchRequest(None, False)) == h("ffffffff 00")
    assert decode(SetDataRequest, h("00000002 2f61 ffffffff ffffffff")).data is None


def test_empty_buffer_is_not_null() -> None:
    assert encode(SetDataRequest("/a", b"", 3)) == h("00000002 2f61 00000000 00000003")
    assert decode(SetDataRequest, h("00000002 2f61 00000000 00000003")).data == b""


def test_bool_is_one_byte() -> None:
    assert encode(PathWatchRequest("/", True)) == h("00000001 2f 01")
    assert encode(PathWatchRequest("/", False)) == h("00000001 2f 00")
    assert encode(MultiHeader(-1, True, -1)) == h("ffffffff 01 ffffffff")


def test_ustring_length_counts_utf8_bytes_not_characters() -> None:
    assert encode(PathWatchRequest("/é", False)) == h("00000003 2f c3a9 00")


def test_create_request_with_open_acl() -> None:
    req = CreateRequest("/n", b"v", OPEN_ACL_UNSAFE, 0)
    expected = h(
        "00000002 2f6e"  # path
        "00000001 76"  # data
        "00000001"  # one ACL
        "0000001f 00000005 776f726c64 00000006 616e796f6e65"  # perms=31, world:anyone
        "00000000"  # flags
    )
    assert encode(req) == expected
    assert decode(CreateRequest, expected) == req
    assert decode(CreateRequest, expected).acl == [ACL(31, Id("world", "anyone"))]


def test_null_and_empty_vectors() -> None:
    assert encode(GetChildrenResponse(None)) == h("ffffffff")
    assert encode(GetChildrenResponse([])) == h("00000000")
    assert encode(GetChildrenResponse(["a", "bc"])) == h("00000002 00000001 61 00000002 6263")


def test_multi_request_framing() -> None:
    req = MultiRequest([(OpCode.DELETE, DeleteRequest("/x", 7))])
    expected = h(
        "00000002 00 ffffffff"  # MultiHeader(type=delete, done=false, err=-1)
        "00000002 2f78 00000007"  # DeleteRequest
        "ffffffff 01 ffffffff"  # end marker
    )
    assert encode(req) == expected


def test_connect_request_as_kazoo_sends_it() -> None:
    req = ConnectRequest(0, 0x10, 10000, 0, b"\x00" * 16, False)
    expected = h("00000000 0000000000000010 00002710 0000000000000000 00000010" + "00" * 16 + "00")
    assert encode(req) == expected
    assert len(expected) == 45


def test_connect_response_without_read_only_byte() -> None:
    data = h("00000000 00007530 0000000000abcdef 00000010" + "11" * 16)
    resp = decode(ConnectResponse, data)
    assert (resp.protocol_version, resp.timeout, resp.session_id) == (0, 30000, 0xABCDEF)
    assert resp.passwd == b"\x11" * 16
    assert resp.read_only is None
    assert encode(resp) == data
