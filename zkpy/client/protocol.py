"""The client side of the ZooKeeper wire protocol, sans-IO (in the style of h11).

Requests go in and bytes come out (`data_to_send`); bytes go in (`receive_data`) and replies,
notifications and handshake outcomes come out. The object matches replies to requests by xid,
tracks lastZxidSeen, keeps the watch registry and, after a reconnect handshake, queues the
setWatches2 and auth packets that restore the session's watches and identity. No sockets, no
clocks: the trio glue in connection.py decides when to ping and when a server is dead.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from zkpy.client.events import EventType, WatchedEvent
from zkpy.client.watches import CHILD, DATA, EXIST, PERSISTENT, RECURSIVE, WatchRegistry
from zkpy.errors import (
    AuthFailedError,
    Code,
    ConnectionLossError,
    MarshallingError,
    SessionExpiredError,
    ZooKeeperError,
    error_for_code,
)
from zkpy.jute.codec import JuteError
from zkpy.jute.framing import DEFAULT_MAX_BUFFER, FrameBuffer, FrameTooLarge
from zkpy.jute.ops import (
    RESPONSE_RECORDS,
    XID_AUTH,
    XID_NOTIFICATION,
    XID_PING,
    XID_SET_WATCHES,
    OpCode,
    SetWatches2Request,
)
from zkpy.jute.records import REPLY_HEADER_STRUCT, AuthPacket, ConnectRequest, ConnectResponse, WatcherEvent

_HEADER = struct.Struct(">iii")  # frame length, xid, type
_PING = _HEADER.pack(8, XID_PING, OpCode.PING)
_SET_WATCHES_CHUNK = 128 * 1024  # as the Java client splits them


class ProtocolError(Exception):
    """The server sent something we cannot follow: drop the connection.

    `events` holds what the same `receive_data` call decoded before the bad frame: replies whose
    requests have left the in-flight queue and notifications whose one-shot watches have fired.
    The glue must deliver them before failing the rest, or their callers wait for ever.
    """

    def __init__(self, message: str, events: list[Any] | None = None) -> None:
        super().__init__(message)
        self.events: list[Any] = events if events is not None else []


@dataclass(slots=True, eq=False)
class Pending:
    """One request in flight. `waiter` belongs to the IO glue; the protocol fills `result`/`error`."""

    xid: int
    op: int
    path: str | None = None
    watch: tuple[str, Any] | None = None
    waiter: Any = None
    result: Any = None
    error: ZooKeeperError | None = None
    done: bool = False


@dataclass(slots=True)
class Connected:
    session_id: int
    passwd: bytes
    timeout_ms: int
    read_only: bool
    new_session: bool


@dataclass(slots=True)
class Expired:
    pass


@dataclass(slots=True)
class Notification:
    event: WatchedEvent
    callbacks: tuple[Any, ...]


@dataclass(slots=True)
class Replied:
    pending: Pending


@dataclass
class ClientProtocol:
    chroot: str = ""
    max_frame: int = DEFAULT_MAX_BUFFER
    session_id: int = 0
    passwd: bytes = b"\x00" * 16
    timeout_ms: int = 0
    last_zxid: int = 0
    auth: list[tuple[str, bytes]] = field(default_factory=list)
    watches: WatchRegistry = field(default_factory=WatchRegistry)

    def __post_init__(self) -> None:
        self._xid = 0
        self._pending: deque[Pending] = deque()
        self._auth_pending: deque[Pending] = deque()
        self._out = bytearray()
        self._frames = FrameBuffer(self.max_frame)
        self._handshaking = False

    # -- paths --------------------------------------------------------------------------------

    def to_server(self, path: str) -> str:
        if not self.chroot:
            return path
        return self.chroot if path == "/" else self.chroot + path

    def to_client(self, path: str) -> str:
        if not self.chroot:
            return path
        if path == self.chroot:
            return "/"
        if path.startswith(self.chroot + "/"):
            return path[len(self.chroot) :]
        return path

    # -- sending ------------------------------------------------------------------------------

    def forget_session(self) -> None:
        """Ask for a new session at the next handshake (the last one was local to a read-only server)."""
        self.session_id = 0
        self.passwd = b"\x00" * 16

    def connect(self, requested_timeout_ms: int, read_only: bool = False) -> None:
        """Start a handshake on a fresh connection (resuming the session if we have one)."""
        self._frames = FrameBuffer(self.max_frame)
        self._out.clear()
        self._handshaking = True
        body = bytearray(b"\x00\x00\x00\x00")
        ConnectRequest(
            0, self.last_zxid, requested_timeout_ms, self.session_id, self.passwd, read_only
        ).write(body)
        struct.pack_into(">i", body, 0, len(body) - 4)
        self._out += body

    def request(
        self, op: int, record: Any, path: str | None = None, watch: tuple[str, Any] | None = None
    ) -> Pending:
        """Queue one request; `path` is the client's path (for errors), `watch` what to arm on success."""
        self._xid = xid = (self._xid + 1) & 0x7FFFFFFF or 1
        pending = Pending(xid, op, path, watch)
        self._pending.append(pending)
        self._write(xid, op, record)
        return pending

    def ping(self) -> None:
        self._out += _PING

    def add_auth(self, scheme: str, credential: bytes) -> Pending:
        """Send an auth packet now; it is remembered and re-sent after every reconnect."""
        self.auth.append((scheme, credential))
        return self._send_auth(scheme, credential)

    def _send_auth(self, scheme: str, credential: bytes) -> Pending:
        pending = Pending(XID_AUTH, OpCode.AUTH, path=scheme, watch=None)
        pending.result = (scheme, credential)
        self._auth_pending.append(pending)
        self._write(XID_AUTH, OpCode.AUTH, AuthPacket(0, scheme, credential))
        return pending

    def _write(self, xid: int, op: int, record: Any) -> None:
        out = self._out
        start = len(out)
        out += _HEADER.pack(0, xid, op)
        record.write(out)
        struct.pack_into(">i", out, start, len(out) - start - 4)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def has_data_to_send(self) -> bool:
        return bool(self._out)

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Connected | Expired | Notification | Replied]:
        """Decode every whole frame received. On a frame we cannot follow, raise ProtocolError
        carrying the events decoded before it (the requests it does not answer stay in flight for
        `connection_lost` to fail)."""
        self._frames.feed(data)
        events: list[Connected | Expired | Notification | Replied] = []
        try:
            while (body := self._frames.next_frame()) is not None:
                if self._handshaking:
                    events.append(self._handshake(body))
                else:
                    event = self._frame(body)
                    if event is not None:
                        events.append(event)
        except (JuteError, FrameTooLarge, ValueError, struct.error) as exc:
            raise ProtocolError(str(exc), events) from exc
        except ProtocolError as exc:
            exc.events = events
            raise
        return events

    def _handshake(self, body: bytes) -> Connected | Expired:
        response, _ = ConnectResponse.read(body)
        self._handshaking = False
        if response.timeout <= 0:
            return Expired()
        new_session = response.session_id != self.session_id
        self.session_id = response.session_id
        self.passwd = response.passwd
        self.timeout_ms = response.timeout
        self._rearm()
        return Connected(
            response.session_id, response.passwd, response.timeout, bool(response.read_only), new_session
        )

    def _rearm(self) -> None:
        """After a handshake: restore watches (setWatches2) and identity (auth), before any request."""
        kinds = [
            [self.to_server(p) for p in self.watches.paths(k)]
            for k in (DATA, EXIST, CHILD, PERSISTENT, RECURSIVE)
        ]
        batch: list[list[str]] = [[], [], [], [], []]
        size = 0
        for i, paths in enumerate(kinds):
            for p in paths:
                if size + len(p) > _SET_WATCHES_CHUNK:
                    self._set_watches(batch)
                    batch, size = [[], [], [], [], []], 0
                batch[i].append(p)
                size += len(p) + 4
        if size:
            self._set_watches(batch)
        for scheme, credential in self.auth:
            self._send_auth(scheme, credential)

    def _set_watches(self, batch: list[list[str]]) -> None:
        pending = Pending(XID_SET_WATCHES, OpCode.SET_WATCHES2)
        self._pending.append(pending)
        self._write(XID_SET_WATCHES, OpCode.SET_WATCHES2, SetWatches2Request(self.last_zxid, *batch))

    def _frame(self, body: bytes) -> Notification | Replied | None:
        xid, zxid, err = REPLY_HEADER_STRUCT.unpack_from(body, 0)
        if zxid > self.last_zxid:
            self.last_zxid = zxid
        if xid == XID_NOTIFICATION:
            event, _ = WatcherEvent.read(body, REPLY_HEADER_STRUCT.size)
            path = self.to_client(event.path or "/")
            return Notification(
                WatchedEvent(EventType(event.type), path, event.state), self.watches.trigger(event.type, path)
            )
        if xid == XID_PING:
            return None
        if xid == XID_AUTH:
            if not self._auth_pending:
                raise ProtocolError("auth reply without an auth request")
            pending = self._auth_pending.popleft()
            if err:
                pending.error = AuthFailedError(path=pending.path)
                if pending.result in self.auth:
                    self.auth.remove(pending.result)
            pending.done = True
            return Replied(pending)
        if not self._pending or self._pending[0].xid != xid:
            want = self._pending[0].xid if self._pending else None
            raise ProtocolError(f"reply xid {xid} but expected {want}")
        # Decode before taking the request off the queue: if the body is malformed, the request
        # stays in flight and connection_lost fails it (popping first would orphan its caller).
        pending = self._pending[0]
        op = pending.op
        result: Any = None
        if not err:
            rec_cls = RESPONSE_RECORDS.get(op)
            if rec_cls is None:
                self._pending.popleft()
                pending.done = True
                pending.error = MarshallingError(f"no response record for op {op}")
                return Replied(pending)
            result, _ = rec_cls.read(body, REPLY_HEADER_STRUCT.size)
        self._pending.popleft()
        pending.done = True
        if err:
            if op == OpCode.EXISTS and err == Code.NO_NODE:
                pending.result = None
                if pending.watch:
                    self.watches.add(EXIST, pending.path or "/", pending.watch[1])
            else:
                pending.error = error_for_code(err, pending.path)
            return Replied(pending)
        pending.result = result
        if pending.watch:
            kind, callback = pending.watch
            self.watches.add(DATA if kind == EXIST else kind, pending.path or "/", callback)
        return Replied(pending)

    # -- losing the connection or the session -------------------------------------------------

    def connection_lost(self) -> list[Pending]:
        """Fail everything in flight with ConnectionLoss; watches and auth stay for the next connection."""
        return self._fail_all(ConnectionLossError)

    def expire(self) -> tuple[list[Pending], list[Any]]:
        """The session is gone: fail everything, drop every watch; returns (failed, watch callbacks)."""
        failed = self._fail_all(SessionExpiredError)
        callbacks = self.watches.all_callbacks()
        self.watches.clear()
        self.session_id, self.passwd, self.last_zxid = 0, b"\x00" * 16, 0
        return failed, callbacks

    def _fail_all(self, error: type[ZooKeeperError]) -> list[Pending]:
        failed = [*self._pending, *self._auth_pending]
        for pending in failed:
            if pending.op == OpCode.CLOSE_SESSION:
                pending.result = None  # the session is closed either way
            else:
                pending.error = error(path=pending.path)
            pending.done = True
        self._pending.clear()
        self._auth_pending.clear()
        self._out.clear()
        self._handshaking = False
        return failed

    def in_flight_op(self, op: int) -> Pending | None:
        """The first request in flight with opcode `op`, if any."""
        return next((p for p in self._pending if p.op == op), None)

    @property
    def in_flight(self) -> int:
        return len(self._pending)


__all__ = ["ClientProtocol", "Connected", "Expired", "Notification", "Pending", "ProtocolError", "Replied"]
