"""The jute records shared by every operation: ids, ACLs, Stat, headers, events, handshake."""

from __future__ import annotations

import struct

from zkpy.jute.codec import Bool, Buffer, Int, JuteError, Long, Record, UString, Vector, record, write_buffer

# Permission bits of an ACL entry.
PERM_READ = 1
PERM_WRITE = 2
PERM_CREATE = 4
PERM_DELETE = 8
PERM_ADMIN = 16
PERM_ALL = 31


@record
class Id(Record):
    scheme: UString
    id: UString


@record
class ACL(Record):
    perms: Int
    id: Id


OPEN_ACL_UNSAFE = [ACL(PERM_ALL, Id("world", "anyone"))]
READ_ACL_UNSAFE = [ACL(PERM_READ, Id("world", "anyone"))]
CREATOR_ALL_ACL = [ACL(PERM_ALL, Id("auth", ""))]


@record
class Stat(Record):
    czxid: Long
    mzxid: Long
    ctime: Long
    mtime: Long
    version: Int
    cversion: Int
    aversion: Int
    ephemeralOwner: Long
    dataLength: Int
    numChildren: Int
    pzxid: Long


STAT_STRUCT = struct.Struct(">qqqqiiiqiiq")


@record
class RequestHeader(Record):
    xid: Int
    type: Int


@record
class ReplyHeader(Record):
    xid: Int
    zxid: Long
    err: Int


REPLY_HEADER_STRUCT = struct.Struct(">iqi")
REQUEST_HEADER_STRUCT = struct.Struct(">ii")


@record
class MultiHeader(Record):
    type: Int
    done: Bool
    err: Int


@record
class WatcherEvent(Record):
    type: Int
    state: Int
    path: UString


@record
class AuthPacket(Record):
    type: Int
    scheme: UString
    auth: Buffer


_CONNECT_FIXED = struct.Struct(">iqiq")
_CONNECT_RESP_FIXED = struct.Struct(">iiq")


class ConnectRequest:
    """The handshake a client opens with; `read_only` is None when the client omitted the byte."""

    __slots__ = ("last_zxid_seen", "passwd", "protocol_version", "read_only", "session_id", "timeout")

    def __init__(
        self,
        protocol_version: int = 0,
        last_zxid_seen: int = 0,
        timeout: int = 10000,
        session_id: int = 0,
        passwd: bytes = b"\x00" * 16,
        read_only: bool | None = False,
    ) -> None:
        self.protocol_version = protocol_version
        self.last_zxid_seen = last_zxid_seen
        self.timeout = timeout
        self.session_id = session_id
        self.passwd = passwd
        self.read_only = read_only

    def write(self, out: bytearray) -> None:
        out += _CONNECT_FIXED.pack(self.protocol_version, self.last_zxid_seen, self.timeout, self.session_id)
        write_buffer(out, self.passwd)
        if self.read_only is not None:
            out += b"\x01" if self.read_only else b"\x00"

    @classmethod
    def read(cls, data: bytes | memoryview, off: int = 0) -> tuple[ConnectRequest, int]:
        from zkpy.jute.codec import read_buffer

        try:
            pv, zxid, timeout, sid = _CONNECT_FIXED.unpack_from(data, off)
        except struct.error:
            raise JuteError("truncated ConnectRequest") from None
        passwd, off = read_buffer(data, off + _CONNECT_FIXED.size)
        read_only = None
        if off < len(data):
            read_only = data[off] != 0
            off += 1
        return cls(pv, zxid, timeout, sid, passwd or b"", read_only), off


class ConnectResponse:
    """The server's handshake answer; the read-only byte is sent only when the client sent one."""

    __slots__ = ("passwd", "protocol_version", "read_only", "session_id", "timeout")

    def __init__(
        self,
        protocol_version: int,
        timeout: int,
        session_id: int,
        passwd: bytes,
        read_only: bool | None = None,
    ) -> None:
        self.protocol_version = protocol_version
        self.timeout = timeout
        self.session_id = session_id
        self.passwd = passwd
        self.read_only = read_only

    def write(self, out: bytearray) -> None:
        out += _CONNECT_RESP_FIXED.pack(self.protocol_version, self.timeout, self.session_id)
        write_buffer(out, self.passwd)
        if self.read_only is not None:
            out += b"\x01" if self.read_only else b"\x00"

    @classmethod
    def read(cls, data: bytes | memoryview, off: int = 0) -> tuple[ConnectResponse, int]:
        from zkpy.jute.codec import read_buffer

        try:
            pv, timeout, sid = _CONNECT_RESP_FIXED.unpack_from(data, off)
        except struct.error:
            raise JuteError("truncated ConnectResponse") from None
        passwd, off = read_buffer(data, off + _CONNECT_RESP_FIXED.size)
        read_only = None
        if off < len(data):
            read_only = data[off] != 0
            off += 1
        return cls(pv, timeout, sid, passwd or b"", read_only), off


__all__ = [
    "ACL",
    "CREATOR_ALL_ACL",
    "OPEN_ACL_UNSAFE",
    "READ_ACL_UNSAFE",
    "AuthPacket",
    "ConnectRequest",
    "ConnectResponse",
    "Id",
    "MultiHeader",
    "ReplyHeader",
    "RequestHeader",
    "Stat",
    "Vector",
    "WatcherEvent",
]
