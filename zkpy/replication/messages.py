"""The messages of ZAB between a leader and its learners, as typed records.

On the wire (wire.py) a message is a msgpack array: its tag, then its fields in the order
declared here. The cores see only these records: `decode` turns an array from the other side
into one, checking every field's type and range first, so a malformed or hostile frame costs
its link (ValueError) and never reaches a core's state; `to_wire` is the way back.

Learner -> leader: Info, AckEpoch, AckNewLeader, Ack, LearnerPing, ForwardedRequest,
ForwardedSync, RevalidateSession, Relinquish. Leader -> learner: LeaderInfo, SnapshotChunk,
SyncTxns, SyncData, NewLeader, UpToDate, Proposal, Commit, LeaderPing, Refused, SyncReply,
Revalidated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from zkpy.jute.ops import OpCode
from zkpy.replication.wire import brief

Check = Callable[[Any], bool]


def _int_in(low: int, high: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v < high


EPOCH = _int_in(0, 2**31 - 1)  # an epoch is a zxid's high half, and the next one must fit too
ZXID = _int_in(-1, 2**63)
INT64 = _int_in(-(2**63), 2**63)
INT32 = _int_in(-(2**31), 2**31)
ACK_EPOCH = _int_in(-1, 2**31 - 1)  # -1: not counted (learner_core.NOT_COUNTED)


def _is(kind: type) -> Check:
    return lambda v: isinstance(v, kind)


def _list_of(check: Check) -> Check:
    return lambda v: isinstance(v, list) and all(map(check, v))


def _auth(v: Any) -> bool:
    # A plain loop: every forwarded write carries one (nested generators cost ~1 us a request).
    if not isinstance(v, list):
        return False
    for a in v:
        if not (isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], str)):
            return False
    return True


class Message:
    """A record with a wire tag; its dataclass fields, in order, are the array's elements."""

    TAG: ClassVar[str]
    SHAPE: ClassVar[tuple[Check, ...]]

    def to_wire(self) -> list[Any]:
        return [self.TAG, *[getattr(self, name) for name in _field_names(type(self))]]

    def check(self) -> None:
        """Rules across fields, after each field's type is known good (ValueError)."""


# -- learner -> leader ---------------------------------------------------------------------


@dataclass(frozen=True)
class Info(Message):
    TAG = "info"
    SHAPE = (INT64, EPOCH, _is(str))
    sid: int
    accepted_epoch: int
    role: str


@dataclass(frozen=True)
class AckEpoch(Message):
    TAG = "ackepoch"
    SHAPE = (ACK_EPOCH, ZXID, ZXID)
    current_epoch: int  # NOT_COUNTED when the learner had accepted the offered epoch already
    last_zxid: int
    snapshot_zxid: int


@dataclass(frozen=True)
class AckNewLeader(Message):
    TAG = "acknl"
    SHAPE = (ZXID,)
    zxid: int


@dataclass(frozen=True)
class Ack(Message):
    TAG = "ack"
    SHAPE = (ZXID,)
    zxid: int


@dataclass(frozen=True)
class LearnerPing(Message):
    TAG = "ping"
    SHAPE = (_list_of(INT64),)
    sessions: list[int]  # heard from since the last ping: the leader touches them


@dataclass(frozen=True)
class ForwardedRequest(Message):
    TAG = "request"
    SHAPE = (INT64, INT32, INT32, _is(bytes), _auth)
    session_id: int
    cxid: int
    op: int
    body: bytes
    auth: list[list[str]]

    def check(self) -> None:
        if self.op == OpCode.CREATE_SESSION and len(self.body) < 4:
            # The body holds the session's timeout; one without it could not be applied.
            raise ValueError("a createSession without a timeout")


@dataclass(frozen=True)
class ForwardedSync(Message):
    TAG = "sync"
    SHAPE = (INT64, INT32)
    session_id: int
    cxid: int


@dataclass(frozen=True)
class RevalidateSession(Message):
    """A client resumes its session here: does it live? (It makes this server the owner.) The
    questions on a link are numbered 1, 2, ... in the order sent, by both sides (the leader
    answers them in that order): the number is not on the wire, which stays as before."""

    TAG = "revalidate"
    SHAPE = (INT64, INT32)
    session_id: int
    timeout: int


@dataclass(frozen=True)
class Relinquish(Message):
    """The connection question number `question` (on this link) was asked for closed without
    forwarding anything: withdraw the claim it made (owners.py)."""

    TAG = "relinquish"
    SHAPE = (INT64, _int_in(1, 2**63))
    session_id: int
    question: int


# -- leader -> learner ---------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderInfo(Message):
    TAG = "leaderinfo"
    SHAPE = (EPOCH,)
    epoch: int


@dataclass(frozen=True)
class SnapshotChunk(Message):
    """A piece of a streamed SNAP, in the snapshot file's own format (storage/snapshot.py: header,
    CRC'd chunks, footer): the learner writes the pieces to a new snapshot file as they come,
    and the SyncData("snap") that follows them says the stream is complete."""

    TAG = "snapchunk"
    SHAPE = (_is(bytes),)
    data: bytes


@dataclass(frozen=True)
class SyncTxns(Message):
    """Transactions of a sync sent ahead of its SyncData in pieces (a large DIFF, or what follows
    a streamed SNAP), in zxid order: they come before the SyncData's own `txns`."""

    TAG = "synctxns"
    SHAPE = (_list_of(_is(bytes)),)
    txns: list[bytes]


@dataclass(frozen=True)
class SyncData(Message):
    TAG = "syncdata"
    SHAPE = (_is(str), ZXID, lambda v: v is None or isinstance(v, list), _list_of(_is(bytes)))
    mode: str  # history.DIFF, TRUNC or SNAP
    zxid: int
    items: list[Any] | None  # a SNAP's tree in the frame; None: streamed before (SnapshotChunk)
    txns: list[bytes]  # packed transactions to log after that point

    def check(self) -> None:
        if self.mode not in ("diff", "trunc", "snap") or (self.mode != "snap" and self.items is not None):
            raise ValueError(f"syncdata {brief(self.mode)} with{'out' if self.items is None else ''} a tree")


@dataclass(frozen=True)
class NewLeader(Message):
    TAG = "newleader"
    SHAPE = (EPOCH,)
    epoch: int


@dataclass(frozen=True)
class UpToDate(Message):
    TAG = "uptodate"
    SHAPE = (ZXID,)
    committed: int


@dataclass(frozen=True)
class Proposal(Message):
    TAG = "proposal"
    SHAPE = (_list_of(_is(bytes)),)
    txns: list[bytes]  # packed, in zxid order


@dataclass(frozen=True)
class Commit(Message):
    TAG = "commit"
    SHAPE = (ZXID,)
    zxid: int  # everything up to here is committed


@dataclass(frozen=True)
class LeaderPing(Message):
    TAG = "ping"
    SHAPE = ()


@dataclass(frozen=True)
class Refused(Message):
    TAG = "refused"
    SHAPE = (INT64, INT32, INT32, ZXID)
    session_id: int
    cxid: int
    code: int
    zxid: int


@dataclass(frozen=True)
class SyncReply(Message):
    TAG = "syncreply"
    SHAPE = (INT64, INT32, ZXID)
    session_id: int
    cxid: int
    zxid: int  # the leader's commit point when the sync reached it


@dataclass(frozen=True)
class Revalidated(Message):
    TAG = "revalidated"
    SHAPE = (INT64, _is(bool))
    session_id: int
    valid: bool


LearnerMessage = (
    Info | AckEpoch | AckNewLeader | Ack | LearnerPing | ForwardedRequest | ForwardedSync | RevalidateSession
    | Relinquish
)
LeaderMessage = (
    LeaderInfo | SnapshotChunk | SyncTxns | SyncData | NewLeader | UpToDate | Proposal | Commit | LeaderPing | Refused
    | SyncReply | Revalidated
)
FROM_LEARNER: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (
        Info, AckEpoch, AckNewLeader, Ack, LearnerPing, ForwardedRequest, ForwardedSync, RevalidateSession, Relinquish,
    )
}  # fmt: skip
FROM_LEADER: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (
        LeaderInfo, SnapshotChunk, SyncTxns, SyncData, NewLeader, UpToDate, Proposal, Commit, LeaderPing, Refused, SyncReply,
        Revalidated,
    )
}  # fmt: skip


_FIELD_NAMES: dict[type[Message], tuple[str, ...]] = {}


def _field_names(cls: type[Message]) -> tuple[str, ...]:
    """A record's field names in wire order, looked up once per class (dataclasses.fields() cost
    ~0.3 us on every message sent)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    return names


def decode(message: Any, table: dict[str, type[Message]]) -> Any:
    """The record for an array from the other side (`table`: FROM_LEARNER or FROM_LEADER);
    ValueError unless it is one of them with fields of the right types."""
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ValueError(f"not a tagged message: {brief(message)}")
    tag = message[0]
    cls = table.get(tag)
    if cls is None:
        raise ValueError(f"unknown message {brief(tag)}")
    shape = cls.SHAPE
    if len(message) != len(shape) + 1:
        raise ValueError(f"{tag} with {len(message) - 1} fields, not {len(shape)}")
    values = message[1:]
    for i, valid in enumerate(shape):
        if not valid(values[i]):
            raise ValueError(f"{tag}: field {i + 1} is {brief(values[i])}")
    record = cls(*values)
    record.check()
    return record


def from_learner(message: Any) -> LearnerMessage:
    result: LearnerMessage = decode(message, FROM_LEARNER)
    return result


def from_leader(message: Any) -> LeaderMessage:
    result: LeaderMessage = decode(message, FROM_LEADER)
    return result
