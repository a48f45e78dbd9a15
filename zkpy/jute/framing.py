"""Length-prefixed frames: bytes in, whole frames out, with jute.maxbuffer enforced."""

from __future__ import annotations

import struct

DEFAULT_MAX_BUFFER = 0xFFFFF  # jute.maxbuffer's default (1 MiB - 1)
_LEN = struct.Struct(">i")


class FrameTooLarge(ValueError):
    """A peer announced a frame above the limit: the connection must be closed."""


class FrameBuffer:
    """Accumulates received bytes and yields complete frame bodies.

    `max_size` bounds a single frame's body, so one peer can never make us buffer
    more than that (plus one read) before we notice and close it.
    """

    __slots__ = ("_buf", "_pos", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_BUFFER) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_size = max_size

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def peek(self, n: int) -> bytes:
        """The first `n` unread bytes (fewer if not yet received): for sniffing four-letter words."""
        return bytes(self._buf[self._pos : self._pos + n])

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next whole frame body, or None until more bytes arrive."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (n,) = _LEN.unpack_from(buf, pos)
        if n < 0 or n > self.max_size:
            raise FrameTooLarge(f"frame length {n} outside 0..{self.max_size}")
        end = pos + 4 + n
        if len(buf) < end:
            return None
        frame = bytes(buf[pos + 4 : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end > 65536:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return frame

    def frames(self) -> list[bytes]:
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out


def frame(body: bytes | bytearray) -> bytes:
    return _LEN.pack(len(body)) + body
