"""Hypothesis strategies that build any jute record from its declared field markers.

Deriving the strategy from the record's own type hints means a field added to a record
is covered by the round-trip tests without anyone touching them.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from hypothesis import strategies as st

from zkpy.jute import ops
from zkpy.jute.codec import Vector
from zkpy.jute.ops import (
    MULTI_READ_OPS,
    MULTI_RESULT_RECORDS,
    MULTI_WRITE_OPS,
    REQUEST_RECORDS,
    RESPONSE_RECORDS,
    MultiReadRequest,
    MultiRequest,
    MultiResponse,
    OpCode,
)
from zkpy.jute.records import (
    ACL,
    AuthPacket,
    ConnectRequest,
    ConnectResponse,
    Id,
    MultiHeader,
    ReplyHeader,
    RequestHeader,
    Stat,
    WatcherEvent,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
# Short collections keep examples fast; the codec has no size-dependent branches below the frame limit.
BYTES = st.binary(max_size=64)
TEXT = st.text(max_size=24)

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "int": INT32,
    "long": INT64,
    "bool": st.booleans(),
    "buffer": st.none() | BYTES,
    "ustring": st.none() | TEXT,
}


def _kind(hint: Any) -> Any:
    return get_args(hint)[1] if get_origin(hint) is Annotated else hint


def _for_kind(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, Vector):
        return st.none() | st.lists(_for_kind(kind.item), max_size=4)
    if isinstance(kind, str):
        return _PRIMITIVES[kind]
    return records_of(kind)


@functools.cache
def _field_record(cls: type) -> st.SearchStrategy[Any]:
    hints = get_type_hints(cls, include_extras=True)
    fields = {name: _for_kind(_kind(hints[name])) for name in cls.FIELDS}  # type: ignore[attr-defined]
    return st.builds(cls, **fields)


def _multi_ops(table: dict[int, Any]) -> st.SearchStrategy[list[tuple[int, Any]]]:
    op = st.sampled_from(sorted(table)).flatmap(lambda t: st.tuples(st.just(t), records_of(table[t])))
    return st.lists(op, max_size=4)


def _multi_results() -> st.SearchStrategy[list[tuple[int, int, Any]]]:
    def result(t: int) -> st.SearchStrategy[tuple[int, int, Any]]:
        return st.tuples(st.just(t), INT32, records_of(MULTI_RESULT_RECORDS[t]))

    return st.lists(st.sampled_from(sorted(MULTI_RESULT_RECORDS)).flatmap(result), max_size=4)


def records_of(cls: type) -> st.SearchStrategy[Any]:
    """Any value of the record class `cls`, including the hand-written ones."""
    if cls is MultiReadRequest:
        return st.builds(MultiReadRequest, _multi_ops(MULTI_READ_OPS))
    if cls is MultiRequest:
        return st.builds(MultiRequest, _multi_ops(MULTI_WRITE_OPS))
    if cls is MultiResponse:
        return st.builds(MultiResponse, _multi_results())
    if cls is ConnectRequest:
        return st.builds(ConnectRequest, INT32, INT64, INT32, INT64, BYTES, st.none() | st.booleans())
    if cls is ConnectResponse:
        return st.builds(ConnectResponse, INT32, INT32, INT64, BYTES, st.none() | st.booleans())
    return _field_record(cls)


def as_tuple(value: Any) -> Any:
    """A comparable form of any record (ConnectRequest/Response are plain slotted classes without __eq__)."""
    if isinstance(value, list):
        return [as_tuple(v) for v in value]
    if isinstance(value, tuple):
        return tuple(as_tuple(v) for v in value)
    if isinstance(value, OpCode):
        return int(value)
    slots = getattr(type(value), "__slots__", None)
    if slots is not None and not isinstance(value, (bytes, str)):
        names = getattr(type(value), "FIELDS", None) or sorted(
            n for c in type(value).__mro__ for n in getattr(c, "__slots__", ())
        )
        return (type(value).__name__, *(as_tuple(getattr(value, n)) for n in names))
    return value


SHARED_RECORDS = [
    Id,
    ACL,
    Stat,
    RequestHeader,
    ReplyHeader,
    MultiHeader,
    WatcherEvent,
    AuthPacket,
    ConnectRequest,
    ConnectResponse,
]
# Every record class ops.py defines (not only those in the opcode tables: ErrorResponse, ClientInfo...).
OP_RECORDS = sorted(
    set(REQUEST_RECORDS.values())
    | set(RESPONSE_RECORDS.values())
    | {MultiRequest, MultiReadRequest, MultiResponse}
    | {
        c
        for c in vars(ops).values()
        if isinstance(c, type) and hasattr(c, "FIELDS") and c.__module__ == ops.__name__
    },
    key=lambda c: c.__name__,
)
ALL_RECORDS = SHARED_RECORDS + [c for c in OP_RECORDS if c not in SHARED_RECORDS]
WHOLE_FRAME_RECORDS = (ConnectRequest, ConnectResponse)
