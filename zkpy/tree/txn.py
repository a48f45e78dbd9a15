"""Transactions: what the leader decides and every replica applies, in zxid order.

A transaction carries the client's request body exactly as it arrived (jute bytes), the
session that sent it and that session's auth ids. Applying it to a DataTree is
deterministic: every check (existence, versions, ACLs) happens at apply time against
the state all replicas share, so a failed check is itself a replicated outcome, as
ZooKeeper's ErrorTxn is. This keeps the log compact (no re-encoding on the hot path)
and the leader's job simple: order, persist, replicate.

On disk and between peers a transaction is one msgpack array:
    [zxid, time_ms, session_id, cxid, op, body, auth]
where `auth` is a list of [scheme, id] pairs. Bodies by op:
    CREATE_SESSION: msgpack-free jute int (the negotiated timeout in ms) followed by the 16-byte password
    CLOSE_SESSION:  empty
    DELETE_CONTAINER / expiry deletes issued by the server: a jute DeleteRequest body
    everything else: the client's jute request body for that op
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import msgpack

_SESSION = struct.Struct(">i")
# One Packer, reused: msgpack.packb builds a new one per call, which costs more than the packing.
# Only the event loop thread packs transactions.
_pack = msgpack.Packer(use_bin_type=True).pack

SERVER_AUTH: tuple[tuple[str, str], ...] = (("super", ""),)


@dataclass(slots=True)
class Txn:
    zxid: int
    time: int
    session_id: int
    cxid: int
    op: int
    body: bytes
    auth: tuple[tuple[str, str], ...] = field(default=())

    def pack(self) -> bytes:
        return _pack((self.zxid, self.time, self.session_id, self.cxid, self.op, self.body, self.auth))

    @classmethod
    def unpack(cls, raw: bytes) -> Txn:
        zxid, time, session_id, cxid, op, body, auth = msgpack.unpackb(raw, use_list=True, raw=False)
        return cls(zxid, time, session_id, cxid, op, body, tuple((s, i) for s, i in auth))


def session_body(timeout_ms: int, password: bytes) -> bytes:
    return _SESSION.pack(timeout_ms) + password


def parse_session_body(body: bytes) -> tuple[int, bytes]:
    (timeout,) = _SESSION.unpack_from(body, 0)
    return timeout, bytes(body[4:])
