"""A tiny blocking ZooKeeper client on a raw socket, for what kazoo cannot express.

kazoo (2.11) has no addWatch, removeWatches, getEphemerals, whoAmI, getAllChildrenNumber, container or
TTL creates, and it validates or reorders some things client-side. This client sends exactly the frames a
test asks for and hands back every frame in arrival order, so a test can check the server's ordering
(watch event before the reply that shows the change) and its answers to bad input.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from zkpy.errors import ZooKeeperError, error_for_code
from zkpy.jute.codec import decode, encode
from zkpy.jute.ops import RESPONSE_RECORDS, XID_NOTIFICATION, XID_PING, OpCode
from zkpy.jute.records import ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader, WatcherEvent

_LEN = struct.Struct(">i")


class ConnectionClosed(Exception):
    """The server closed (or reset) the connection."""


@dataclass(frozen=True)
class Reply:
    xid: int
    zxid: int
    err: int
    body: Any


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        try:
            chunk = sock.recv(n - len(out))
        except ConnectionResetError as e:
            raise ConnectionClosed(str(e)) from e
        if not chunk:
            raise ConnectionClosed("eof")
        out += chunk
    return bytes(out)


def read_frame(sock: socket.socket) -> bytes:
    (n,) = _LEN.unpack(recv_exact(sock, 4))
    return recv_exact(sock, n)


def connection_closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    """True when the server closes `sock` (EOF or reset) within `within` seconds, reading and dropping data."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


class RawClient:
    """One session on one socket. Replies and watch events are read strictly in wire order."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout_ms: int = 10000,
        session_id: int = 0,
        passwd: bytes = b"\x00" * 16,
        io_timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=io_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.events: list[WatcherEvent] = []
        self._xid = 0
        self.last_zxid = 0
        self.send_frame(encode(ConnectRequest(0, 0, timeout_ms, session_id, passwd, False)))
        self.handshake = decode(ConnectResponse, read_frame(self.sock))

    @property
    def session_id(self) -> int:
        return int(self.handshake.session_id)

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(_LEN.pack(len(body)) + body)

    def send(self, op: int, rec: Any = None, xid: int | None = None) -> int:
        """Send one request without waiting; returns its xid."""
        if xid is None:
            self._xid += 1
            xid = self._xid
        body = bytearray(encode(RequestHeader(xid, int(op))))
        if rec is not None:
            body += encode(rec)
        self.send_frame(bytes(body))
        return xid

    def next_packet(self) -> Reply | WatcherEvent:
        """The next frame from the server: a Reply (body still raw bytes) or a WatcherEvent."""
        data = read_frame(self.sock)
        header, off = ReplyHeader.read(data, 0)  # type: ignore[attr-defined]
        if header.xid == XID_NOTIFICATION:
            event, _ = WatcherEvent.read(data, off)  # type: ignore[attr-defined]
            return event
        if header.zxid > 0:
            self.last_zxid = max(self.last_zxid, header.zxid)
        return Reply(header.xid, header.zxid, header.err, data[off:])

    def read_reply(self, xid: int) -> Reply:
        """Read until the reply for `xid`, keeping watch events (and dropping ping replies) on the way."""
        while True:
            pkt = self.next_packet()
            if isinstance(pkt, WatcherEvent):
                self.events.append(pkt)
                continue
            if pkt.xid == XID_PING:
                continue
            if pkt.xid != xid:
                raise AssertionError(f"reply out of order: expected xid {xid}, got {pkt.xid}")
            return pkt

    def call(self, op: int, rec: Any = None, path: str | None = None) -> Any:
        """Send a request and return its decoded response record, or raise the zkpy error for its code."""
        reply = self.read_reply(self.send(op, rec))
        if reply.err:
            raise error_for_code(reply.err, path)
        resp_cls = RESPONSE_RECORDS[OpCode(op)]
        return decode(resp_cls, reply.body)

    def error_of(self, op: int, rec: Any = None) -> int:
        """Send a request and return its reply's error code (0 on success)."""
        return self.read_reply(self.send(op, rec)).err

    def ping(self) -> None:
        """A round trip: every event the server queued before it is in self.events afterwards."""
        self.send(OpCode.PING, None, xid=XID_PING)
        while True:
            pkt = self.next_packet()
            if isinstance(pkt, WatcherEvent):
                self.events.append(pkt)
            elif pkt.xid == XID_PING:
                return

    def wait_events(self, n: int, timeout: float = 10.0) -> list[WatcherEvent]:
        """Block until at least n events have arrived (pinging meanwhile); returns and clears them all."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} watch events, got {self.events}")
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                pkt = self.next_packet()
            except TimeoutError:
                self.sock.settimeout(10.0)
                self.ping()
                continue
            finally:
                self.sock.settimeout(10.0)
            if isinstance(pkt, WatcherEvent):
                self.events.append(pkt)
        out, self.events = self.events, []
        return out

    def take_events(self) -> list[WatcherEvent]:
        """Round-trip once, then return and clear every event received so far."""
        self.ping()
        out, self.events = self.events, []
        return out

    def close(self, send_close_session: bool = True) -> None:
        try:
            if send_close_session:
                self.call(OpCode.CLOSE_SESSION)
        except (OSError, ConnectionClosed, ZooKeeperError):
            pass
        finally:
            self.sock.close()
