"""Peer-to-peer framing: what servers send each other on the quorum and election ports.

A frame is a 4-byte big-endian length, a 4-byte CRC32 of the payload, then the payload: one
msgpack array whose first element names the message. The CRC catches what TCP's checksum
lets through and, more usefully, a stranger or a confused peer writing garbage: a bad frame
closes that link and nothing else. Pure: bytes in, messages out.
"""

from __future__ import annotations

import reprlib
import struct
import zlib
from typing import Any

import msgpack

HEADER = struct.Struct(">II")
MAX_FRAME = 256 * 1024 * 1024  # a SNAP of a large tree travels as one frame
# What a connection may send before it has said which server it is (a hello or an info: a few
# bytes): a stranger's announced frame is refused before it is buffered, not after.
MAX_HANDSHAKE_FRAME = 64 * 1024


_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxdict, _short.maxstring, _short.maxother = 2, 6, 4, 40, 40


def brief(value: Any) -> str:
    """A short repr of something a peer sent, for error messages: a plain repr of a deeply nested
    list raises RecursionError, and one of a big frame would flood the log."""
    return _short.repr(value)


class WireError(ValueError):
    """A frame that is not one of ours: the link that sent it is closed."""


def encode_frame(message: tuple[Any, ...] | list[Any]) -> bytes:
    payload = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class FrameDecoder:
    """Feed bytes in as they arrive; take whole messages out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next_message(self) -> list[Any] | None:
        buf = self._buf
        if len(buf) < HEADER.size:
            return None
        length, crc = HEADER.unpack_from(buf, 0)
        if length > self.max_frame:
            raise WireError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        end = HEADER.size + length
        if len(buf) < end:
            return None
        payload = bytes(buf[HEADER.size : end])
        del buf[:end]
        if zlib.crc32(payload) != crc:
            raise WireError("frame checksum mismatch")
        try:
            message = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
        except Exception as e:  # msgpack raises several types for malformed input
            raise WireError(f"undecodable frame: {e}") from None
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            raise WireError("frame is not a tagged message")
        return message
