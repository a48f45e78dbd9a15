"""One request and one response record per ZooKeeper operation, and the opcode table.

Like kazoo's per-op records, but declared once for both sides: the server reads
requests and writes responses, the client does the reverse, from the same classes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from zkpy.jute.codec import Bool, Buffer, Int, JuteError, Long, Record, UString, Vector, record
from zkpy.jute.records import ACL, AuthPacket, MultiHeader, Stat


class OpCode(IntEnum):
    NOTIFICATION = 0
    CREATE = 1
    DELETE = 2
    EXISTS = 3
    GET_DATA = 4
    SET_DATA = 5
    GET_ACL = 6
    SET_ACL = 7
    GET_CHILDREN = 8
    SYNC = 9
    PING = 11
    GET_CHILDREN2 = 12
    CHECK = 13
    MULTI = 14
    CREATE2 = 15
    RECONFIG = 16
    CHECK_WATCHES = 17
    REMOVE_WATCHES = 18
    CREATE_CONTAINER = 19
    DELETE_CONTAINER = 20
    CREATE_TTL = 21
    MULTI_READ = 22
    AUTH = 100
    SET_WATCHES = 101
    SASL = 102
    GET_EPHEMERALS = 103
    GET_ALL_CHILDREN_NUMBER = 104
    SET_WATCHES2 = 105
    ADD_WATCH = 106
    WHO_AM_I = 107
    CREATE_SESSION = -10
    CLOSE_SESSION = -11
    ERROR = -1


# Special xids.
XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4
XID_SET_WATCHES = -8

# Create flags (CreateMode).
PERSISTENT = 0
EPHEMERAL = 1
PERSISTENT_SEQUENTIAL = 2
EPHEMERAL_SEQUENTIAL = 3
CONTAINER = 4
PERSISTENT_WITH_TTL = 5
PERSISTENT_SEQUENTIAL_WITH_TTL = 6

# addWatch modes.
ADD_WATCH_PERSISTENT = 0
ADD_WATCH_PERSISTENT_RECURSIVE = 1

# WatcherType, as removeWatches/checkWatches name it.
WATCHER_CHILDREN = 1
WATCHER_DATA = 2
WATCHER_ANY = 3
WATCHER_PERSISTENT = 4
WATCHER_PERSISTENT_RECURSIVE = 5


@record
class CreateRequest(Record):
    path: UString
    data: Buffer
    acl: Vector(ACL)  # type: ignore[valid-type]
    flags: Int


@record
class CreateTTLRequest(Record):
    path: UString
    data: Buffer
    acl: Vector(ACL)  # type: ignore[valid-type]
    flags: Int
    ttl: Long


@record
class DeleteRequest(Record):
    path: UString
    version: Int


@record
class PathWatchRequest(Record):
    """exists, getData, getChildren and getChildren2 share this shape."""

    path: UString
    watch: Bool


@record
class SetDataRequest(Record):
    path: UString
    data: Buffer
    version: Int


@record
class PathRequest(Record):
    """getACL, sync, getAllChildrenNumber and getEphemerals send a single path."""

    path: UString


@record
class SetACLRequest(Record):
    path: UString
    acl: Vector(ACL)  # type: ignore[valid-type]
    version: Int


@record
class CheckVersionRequest(Record):
    path: UString
    version: Int


@record
class WatchesRequest(Record):
    """checkWatches and removeWatches: a path and a WatcherType."""

    path: UString
    type: Int


@record
class AddWatchRequest(Record):
    path: UString
    mode: Int


@record
class SetWatchesRequest(Record):
    relativeZxid: Long
    dataWatches: Vector("ustring")  # type: ignore[valid-type]
    existWatches: Vector("ustring")  # type: ignore[valid-type]
    childWatches: Vector("ustring")  # type: ignore[valid-type]


@record
class SetWatches2Request(Record):
    relativeZxid: Long
    dataWatches: Vector("ustring")  # type: ignore[valid-type]
    existWatches: Vector("ustring")  # type: ignore[valid-type]
    childWatches: Vector("ustring")  # type: ignore[valid-type]
    persistentWatches: Vector("ustring")  # type: ignore[valid-type]
    persistentRecursiveWatches: Vector("ustring")  # type: ignore[valid-type]


@record
class EmptyRecord(Record):
    """Requests and responses without a body: ping, closeSession, whoAmI request, delete response."""


@record
class CreateResponse(Record):
    path: UString


@record
class Create2Response(Record):
    path: UString
    stat: Stat


@record
class StatResponse(Record):
    """exists, setData and the stat-only answers."""

    stat: Stat


@record
class GetDataResponse(Record):
    data: Buffer
    stat: Stat


@record
class GetACLResponse(Record):
    acl: Vector(ACL)  # type: ignore[valid-type]
    stat: Stat


@record
class GetChildrenResponse(Record):
    children: Vector("ustring")  # type: ignore[valid-type]


@record
class GetChildren2Response(Record):
    children: Vector("ustring")  # type: ignore[valid-type]
    stat: Stat


@record
class CountResponse(Record):
    """getAllChildrenNumber."""

    totalNumber: Int


@record
class PathListResponse(Record):
    """getEphemerals."""

    paths: Vector("ustring")  # type: ignore[valid-type]


@record
class ClientInfo(Record):
    authScheme: UString
    user: UString


@record
class WhoAmIResponse(Record):
    clientInfo: Vector(ClientInfo)  # type: ignore[valid-type]


@record
class ErrorResponse(Record):
    err: Int


# Multi: a sequence of (MultiHeader, op record) ended by {-1, done=True, -1}.

MULTI_WRITE_OPS: dict[int, Any] = {
    OpCode.CREATE: CreateRequest,
    OpCode.CREATE2: CreateRequest,
    OpCode.CREATE_CONTAINER: CreateRequest,
    OpCode.CREATE_TTL: CreateTTLRequest,
    OpCode.DELETE: DeleteRequest,
    OpCode.SET_DATA: SetDataRequest,
    OpCode.CHECK: CheckVersionRequest,
}
# multiRead ops carry (path, watch) as the single getData/getChildren requests do.
MULTI_READ_OPS: dict[int, Any] = {OpCode.GET_CHILDREN: PathWatchRequest, OpCode.GET_DATA: PathWatchRequest}

# Each op record's fields, to step over them (MultiRequest.more_ops_than): "b" a buffer or ustring, "a" a
# vector of ACL, an int the bytes of a fixed-size field.
_CREATE_LAYOUT: tuple[str | int, ...] = ("b", "b", "a", 4)
_MULTI_WRITE_LAYOUTS: dict[int, tuple[str | int, ...]] = {
    OpCode.CREATE: _CREATE_LAYOUT,
    OpCode.CREATE2: _CREATE_LAYOUT,
    OpCode.CREATE_CONTAINER: _CREATE_LAYOUT,
    OpCode.CREATE_TTL: (*_CREATE_LAYOUT, 8),
    OpCode.DELETE: ("b", 4),
    OpCode.SET_DATA: ("b", "b", 4),
    OpCode.CHECK: ("b", 4),
}
_MULTI_READ_LAYOUTS: dict[int, tuple[str | int, ...]] = {
    OpCode.GET_CHILDREN: ("b", 1),
    OpCode.GET_DATA: ("b", 1),
}
_MULTI_HEADER = struct.Struct(">i?")  # a MultiHeader's type and done (its err follows)
_INT = struct.Struct(">i")


@dataclass(slots=True)
class MultiRequest:
    ops: list[tuple[int, Any]]

    def write(self, out: bytearray) -> None:
        for op_type, rec in self.ops:
            MultiHeader(op_type, False, -1).write(out)
            rec.write(out)
        MultiHeader(-1, True, -1).write(out)

    @classmethod
    def read_ops(cls, data: bytes | memoryview, off: int, table: dict[int, Any]) -> tuple[MultiRequest, int]:
        ops: list[tuple[int, Any]] = []
        while True:
            header, off = MultiHeader.read(data, off)  # type: ignore[attr-defined]
            if header.done:
                return cls(ops), off
            rec_cls = table.get(header.type)
            if rec_cls is None:
                raise JuteError(f"operation {header.type} not allowed in this multi")
            rec, off = rec_cls.read(data, off)
            ops.append((header.type, rec))

    @classmethod
    def read(cls, data: bytes | memoryview, off: int) -> tuple[MultiRequest, int]:
        return cls.read_ops(data, off, MULTI_WRITE_OPS)

    @staticmethod
    def more_ops_than(data: bytes | memoryview, limit: int, read: bool = False) -> bool:
        """Whether a multi (or, with `read`, a multiRead) holds more than `limit` ops, stepping over at most
        limit + 1 of them without decoding them (a few struct reads each); False for one that does not
        parse that far (the full decode answers it)."""
        layouts = _MULTI_READ_LAYOUTS if read else _MULTI_WRITE_LAYOUTS
        off = 0
        end = len(data)
        try:
            for _ in range(limit + 1):
                op, done = _MULTI_HEADER.unpack_from(data, off)
                off += 9
                if done:
                    return False
                layout = layouts.get(op)
                if layout is None:
                    return False
                for kind in layout:
                    if kind == "b":  # a buffer or ustring: its length, then its bytes (-1: null)
                        (n,) = _INT.unpack_from(data, off)
                        off += 4 + max(n, 0)
                    elif kind == "a":  # a vector of ACL: perms, scheme, id
                        (count,) = _INT.unpack_from(data, off)
                        off += 4
                        for _ in range(max(count, 0)):
                            off += 4
                            for _ in range(2):
                                (n,) = _INT.unpack_from(data, off)
                                off += 4 + max(n, 0)
                            if off > end:
                                return False
                    else:
                        off += kind  # type: ignore[operator]
                if off > end:
                    return False
        except struct.error:
            return False
        return True  # limit + 1 ops stepped over

    @classmethod
    def read_multi_read(cls, data: bytes | memoryview, off: int) -> tuple[MultiRequest, int]:
        return cls.read_ops(data, off, MULTI_READ_OPS)


_DECODED: dict[int, tuple[bytes, list[tuple[int, Any]]]] = {}  # id(body) -> (body, ops), the last few
_DECODED_KEPT = 4


def decode_multi(body: bytes) -> list[tuple[int, Any]]:
    """A multi's (op, request) pairs, as MultiRequest.read decodes them (and raising what it raises),
    remembered for the last few bodies by identity: a server looks at a multi it orders several times
    (the checks before ordering, its transaction's auth ids, what it changes, then apply), and decoding
    a 1,000-op multi costs ~10 ms each time. The list and its requests are shared: never change them."""
    kept = _DECODED.get(id(body))
    if kept is not None and kept[0] is body:
        return kept[1]
    ops = MultiRequest.read(body, 0)[0].ops
    if len(_DECODED) >= _DECODED_KEPT:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[id(body)] = (body, ops)
    return ops


# The response record a multi result carries, by the result's type.
MULTI_RESULT_RECORDS: dict[int, Any] = {
    OpCode.CREATE: CreateResponse,
    OpCode.CREATE2: Create2Response,
    OpCode.DELETE: EmptyRecord,
    OpCode.SET_DATA: StatResponse,
    OpCode.CHECK: EmptyRecord,
    OpCode.GET_DATA: GetDataResponse,
    OpCode.GET_CHILDREN: GetChildrenResponse,
    OpCode.ERROR: ErrorResponse,
}


@dataclass(slots=True)
class MultiResponse:
    """Per-op results: (type, err, record); an error result is (-1, code, ErrorResponse)."""

    results: list[tuple[int, int, Any]]

    def write(self, out: bytearray) -> None:
        for op_type, err, rec in self.results:
            MultiHeader(op_type, False, err).write(out)
            rec.write(out)
        MultiHeader(-1, True, -1).write(out)

    @classmethod
    def read(cls, data: bytes | memoryview, off: int) -> tuple[MultiResponse, int]:
        results: list[tuple[int, int, Any]] = []
        while True:
            header, off = MultiHeader.read(data, off)  # type: ignore[attr-defined]
            if header.done:
                return cls(results), off
            rec_cls = MULTI_RESULT_RECORDS.get(header.type)
            if rec_cls is None:
                raise JuteError(f"unknown multi result type {header.type}")
            rec, off = rec_cls.read(data, off)
            results.append((header.type, header.err, rec))


class MultiReadRequest(MultiRequest):
    """multiRead (22): getChildren and getData ops, each carrying just a path."""

    __slots__ = ()

    @classmethod
    def read(cls, data: bytes | memoryview, off: int) -> tuple[MultiRequest, int]:
        return cls.read_ops(data, off, MULTI_READ_OPS)


# What each opcode's request and (successful) response bodies are.
REQUEST_RECORDS: dict[int, Any] = {
    OpCode.CREATE: CreateRequest,
    OpCode.CREATE2: CreateRequest,
    OpCode.CREATE_CONTAINER: CreateRequest,
    OpCode.CREATE_TTL: CreateTTLRequest,
    OpCode.DELETE: DeleteRequest,
    OpCode.DELETE_CONTAINER: DeleteRequest,  # server-issued only
    OpCode.EXISTS: PathWatchRequest,
    OpCode.GET_DATA: PathWatchRequest,
    OpCode.SET_DATA: SetDataRequest,
    OpCode.GET_ACL: PathRequest,
    OpCode.SET_ACL: SetACLRequest,
    OpCode.GET_CHILDREN: PathWatchRequest,
    OpCode.GET_CHILDREN2: PathWatchRequest,
    OpCode.SYNC: PathRequest,
    OpCode.PING: EmptyRecord,
    OpCode.CHECK: CheckVersionRequest,
    OpCode.MULTI: MultiRequest,
    OpCode.MULTI_READ: MultiReadRequest,
    OpCode.CHECK_WATCHES: WatchesRequest,
    OpCode.REMOVE_WATCHES: WatchesRequest,
    OpCode.AUTH: AuthPacket,
    OpCode.SET_WATCHES: SetWatchesRequest,
    OpCode.SET_WATCHES2: SetWatches2Request,
    OpCode.GET_EPHEMERALS: PathRequest,
    OpCode.GET_ALL_CHILDREN_NUMBER: PathRequest,
    OpCode.ADD_WATCH: AddWatchRequest,
    OpCode.WHO_AM_I: EmptyRecord,
    OpCode.CLOSE_SESSION: EmptyRecord,
}

RESPONSE_RECORDS: dict[int, Any] = {
    OpCode.CREATE: CreateResponse,
    OpCode.CREATE2: Create2Response,
    OpCode.CREATE_CONTAINER: Create2Response,
    OpCode.CREATE_TTL: Create2Response,
    OpCode.DELETE: EmptyRecord,
    OpCode.EXISTS: StatResponse,
    OpCode.GET_DATA: GetDataResponse,
    OpCode.SET_DATA: StatResponse,
    OpCode.GET_ACL: GetACLResponse,
    OpCode.SET_ACL: StatResponse,
    OpCode.GET_CHILDREN: GetChildrenResponse,
    OpCode.GET_CHILDREN2: GetChildren2Response,
    OpCode.SYNC: CreateResponse,  # SyncResponse has the same single ustring
    OpCode.PING: EmptyRecord,
    OpCode.CHECK: EmptyRecord,
    OpCode.MULTI: MultiResponse,
    OpCode.MULTI_READ: MultiResponse,
    OpCode.CHECK_WATCHES: EmptyRecord,
    OpCode.REMOVE_WATCHES: EmptyRecord,
    OpCode.AUTH: EmptyRecord,
    OpCode.SET_WATCHES: EmptyRecord,
    OpCode.SET_WATCHES2: EmptyRecord,
    OpCode.GET_EPHEMERALS: PathListResponse,
    OpCode.GET_ALL_CHILDREN_NUMBER: CountResponse,
    OpCode.ADD_WATCH: ErrorResponse,  # ZooKeeper answers addWatch with ErrorResponse(0)
    OpCode.WHO_AM_I: WhoAmIResponse,
    OpCode.CLOSE_SESSION: EmptyRecord,
}

# Operations that change state: they go through the commit pipeline (and, later, the leader).
WRITE_OPS = frozenset(
    {
        OpCode.CREATE,
        OpCode.CREATE2,
        OpCode.CREATE_CONTAINER,
        OpCode.CREATE_TTL,
        OpCode.DELETE,
        OpCode.SET_DATA,
        OpCode.SET_ACL,
        OpCode.CHECK,
        OpCode.MULTI,
        OpCode.CLOSE_SESSION,
        OpCode.CREATE_SESSION,
        OpCode.DELETE_CONTAINER,
    }
)
