"""A ZooKeeper client for simulated runs: the real wire protocol over a simulated link, one
request at a time, recording what it saw.

It is deliberately small and strict: every reply is checked against the request it answers,
every write's outcome is recorded as acknowledged (with its zxid), failed, or unknown (the
connection broke before the reply, or the reply said the session had expired), which is what a
history checker needs. On a broken connection it moves to another server and resumes its
session, as real clients do; when the ensemble says the session expired (on reconnecting, or in
a reply) it raises SessionExpired and its next connect() starts a new session. The client's name
stays: the history checks the new session's reads against the old one's, which holds because
the client hands the ensemble the newest zxid it saw whenever it connects.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from zkpy.errors import Code
from zkpy.jute.codec import decode, encode
from zkpy.jute.framing import FrameBuffer
from zkpy.jute.ops import RESPONSE_RECORDS, XID_NOTIFICATION, XID_PING, OpCode
from zkpy.jute.records import ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader

if TYPE_CHECKING:
    from zkpy.replication.environment import Network

_LEN = struct.Struct(">i")


class ConnectionLost(Exception):
    """No reply: the request may or may not have been applied."""


class SessionExpired(Exception):
    """The ensemble no longer knows this session."""


@dataclass
class Op:
    """One client operation as the history records it."""

    client: str
    kind: str  # "create", "set", "get", ...
    path: str
    value: bytes | None
    invoked: float
    outcome: str = "pending"  # ok, error, unknown
    completed: float | None = None
    zxid: int = -1
    err: int = 0
    result: Any = None
    version: int | None = None  # the expected version of a conditional set or delete


@dataclass
class SimClient:
    name: str
    network: Network
    servers: list[tuple[str, int]]
    rng: random.Random
    session_timeout_ms: int = 4000
    request_timeout: float = 3.0  # how long a request waits for its reply before the client moves on
    connect_timeout: float = 3.0  # a new session waits for a commit: not shorter than a write
    on_gave_up: Callable[[], None] | None = None  # told when a request's reply took too long
    history: list[Op] = field(default_factory=list)
    session_id: int = 0
    password: bytes = b"\x00" * 16
    last_zxid: int = 0
    _stream: trio.abc.Stream | None = None
    _frames: FrameBuffer = field(default_factory=FrameBuffer)
    _xid: int = 0

    async def connect(self, attempts: int = 1000, until: float | None = None) -> None:
        """Connect to some server, resuming the session when there is one; ConnectionLost after
        `attempts` tries, or once the virtual time `until` has come."""
        for _ in range(attempts):
            if until is not None and trio.current_time() >= until:
                break
            host, port = self.rng.choice(self.servers)
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await self.network.connect(host, port)
                    self._stream, self._frames = stream, FrameBuffer()
                    await self._send(
                        encode(
                            ConnectRequest(
                                0,
                                self.last_zxid,
                                self.session_timeout_ms,
                                self.session_id,
                                self.password,
                                False,
                            )
                        )
                    )
                    response = decode(ConnectResponse, await self._frame())
            except (OSError, trio.TooSlowError, ConnectionLost, trio.BrokenResourceError):
                await self._drop()
                await trio.sleep(0.05 + self.rng.random() * 0.1)
                continue
            except BaseException:
                # Cancelled mid-handshake: the server may still answer it on this stream later,
                # where the next call would take its ConnectResponse for a reply.
                await self._drop()
                raise
            if response.timeout <= 0:
                await self._drop()
                if self.session_id:
                    self.session_id = 0
                    raise SessionExpired(self.name)
                await trio.sleep(0.05)  # a server refusing us (behind our zxid, not serving)
                continue
            self.session_id, self.password = response.session_id, bytes(response.passwd)
            return
        raise ConnectionLost(f"{self.name}: no server accepted a connection")

    async def call(self, op: int, record: Any, path: str = "") -> tuple[int, int, Any]:
        """One request; (err, zxid, response record). ConnectionLost when it cannot tell."""
        if self._stream is None:
            raise ConnectionLost("not connected")
        self._xid += 1
        xid = self._xid
        body = bytearray(encode(RequestHeader(xid, int(op))))
        if record is not None:
            body += encode(record)
        try:
            with trio.fail_after(self.request_timeout):
                await self._send(bytes(body))
                while True:
                    data = await self._frame()
                    header, off = ReplyHeader.read(data, 0)  # type: ignore[attr-defined]
                    if header.xid in (XID_NOTIFICATION, XID_PING):
                        continue
                    if header.xid != xid:
                        raise AssertionError(f"{self.name}: reply for xid {header.xid}, expected {xid}")
                    if header.zxid > 0:
                        if header.zxid < self.last_zxid and header.err == 0 and op != OpCode.PING:
                            pass  # reads may carry an older zxid from another server after a move
                        self.last_zxid = max(self.last_zxid, header.zxid)
                    result = None
                    if header.err == 0 and OpCode(op) in RESPONSE_RECORDS:
                        result = decode(RESPONSE_RECORDS[OpCode(op)], data[off:])
                    if header.err == int(Code.SESSION_EXPIRED):
                        break
                    return header.err, header.zxid, result
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            if isinstance(e, trio.TooSlowError) and self.on_gave_up is not None:
                self.on_gave_up()  # it moves on with the request in flight
            await self._drop()
            raise ConnectionLost(f"{self.name}: {type(e).__name__}") from None
        await self._drop()  # the server ends the connection too; the next connect starts afresh
        self.session_id = 0
        raise SessionExpired(self.name)

    async def record(
        self,
        kind: str,
        op: int,
        record: Any,
        path: str,
        value: bytes | None = None,
        version: int | None = None,
    ) -> Op:
        """Run one operation and append it to the history with its outcome."""
        entry = Op(self.name, kind, path, value, trio.current_time(), version=version)
        self.history.append(entry)
        try:
            err, zxid, result = await self.call(op, record, path)
        except ConnectionLost:
            entry.outcome = "unknown"
            entry.completed = trio.current_time()
            return entry
        except SessionExpired:
            # Answered SessionExpired: the caller learns it; for the history the request's fate
            # stays unknown (it may have been ordered before the session's close).
            entry.outcome = "unknown"
            entry.completed = trio.current_time()
            raise
        entry.completed = trio.current_time()
        entry.zxid, entry.err, entry.result = zxid, err, result
        entry.outcome = "ok" if err == 0 else "error"
        return entry

    @property
    def outstanding(self) -> bool:
        """Is a request of this client waiting for its reply?"""
        return bool(self.history) and self.history[-1].outcome == "pending"

    async def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(ConnectionLost, SessionExpired):
                await self.call(OpCode.CLOSE_SESSION, None)
        await self._drop()

    async def _send(self, body: bytes) -> None:
        assert self._stream is not None
        await self._stream.send_all(_LEN.pack(len(body)) + body)

    async def _frame(self) -> bytes:
        assert self._stream is not None
        while True:
            frame = self._frames.next_frame()
            if frame is not None:
                return frame
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionLost("closed by server")
            self._frames.feed(data)

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
            ):
                await stream.aclose()
