"""One client connection's wire protocol, sans-IO: bytes in -> events, answers -> bytes.

The first four bytes of a fresh connection are either a frame length or a
four-letter word (ZooKeeper tells them apart by matching the known words). The
first frame is the ConnectRequest; every later frame is RequestHeader + body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from zkpy.jute.codec import JuteError
from zkpy.jute.framing import DEFAULT_MAX_BUFFER, FrameBuffer, FrameTooLarge
from zkpy.jute.ops import XID_NOTIFICATION
from zkpy.jute.records import ConnectRequest, ConnectResponse
from zkpy.server.config import ALL_FOUR_LETTER_WORDS

FOUR_LETTER_WORDS = ALL_FOUR_LETTER_WORDS  # recognised before any handshake

_HEADER = struct.Struct(">ii")
_REPLY = struct.Struct(">iiqi")  # frame length, xid, zxid, err
_EVENT_PREFIX = struct.Struct(">iiqiii")  # length, xid=-1, zxid=-1, err=0, type, state


@dataclass(slots=True)
class FourLetterWord:
    word: str


@dataclass(slots=True)
class ConnectRequested:
    request: ConnectRequest


@dataclass(slots=True)
class RequestReceived:
    xid: int
    op: int
    body: bytes


class ProtocolError(Exception):
    """The peer broke the protocol (bad handshake, oversize or malformed frame): close it."""


class ServerProtocol:
    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        # ZooKeeper closes a connection whose frame length exceeds jute.maxbuffer.
        self._frames = FrameBuffer(max_buffer)
        self.connected = False
        self._sniffed = False

    def between_frames(self) -> bool:
        """Connected, with no part of a frame buffered: the next bytes start a request."""
        return self.connected and self._frames.buffered() == 0

    def receive(self, data: bytes | bytearray) -> list[FourLetterWord | ConnectRequested | RequestReceived]:
        """Feed received bytes; returns the complete events they finish. Raises ProtocolError."""
        self._frames.feed(data)
        events: list[FourLetterWord | ConnectRequested | RequestReceived] = []
        if not self._sniffed:
            if self._frames.buffered() < 4:
                return events
            self._sniffed = True
            head = self._frames.peek(4)
            word = head.decode("latin-1")
            if word in FOUR_LETTER_WORDS:
                return [FourLetterWord(word)]
        try:
            while (frame := self._frames.next_frame()) is not None:
                if not self.connected:
                    try:
                        request, _ = ConnectRequest.read(frame, 0)
                    except JuteError as e:
                        raise ProtocolError(f"bad ConnectRequest: {e}") from None
                    self.connected = True
                    events.append(ConnectRequested(request))
                    continue
                if len(frame) < 8:
                    raise ProtocolError(f"request frame of {len(frame)} bytes has no header")
                xid, op = _HEADER.unpack_from(frame, 0)
                events.append(RequestReceived(xid, op, frame[8:]))
        except FrameTooLarge as e:
            raise ProtocolError(str(e)) from None
        return events


def connect_response(response: ConnectResponse) -> bytes:
    body = bytearray()
    response.write(body)
    return struct.pack(">i", len(body)) + body


def reply(xid: int, zxid: int, err: int, body: bytes = b"") -> bytes:
    """A framed reply: header, then the body (empty on error)."""
    if err:
        return _REPLY.pack(16, xid, zxid, err)
    return _REPLY.pack(16 + len(body), xid, zxid, 0) + body


def watch_event(event_type: int, state: int, path: str) -> bytes:
    raw = path.encode("utf-8")
    return _EVENT_PREFIX.pack(16 + 12 + len(raw), XID_NOTIFICATION, -1, 0, event_type, state) + (
        len(raw).to_bytes(4, "big") + raw
    )
