"""FrameBuffer: frames come out whole however TCP splits them, and hostile lengths close the connection."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkpy.jute.framing import DEFAULT_MAX_BUFFER, FrameBuffer, FrameTooLarge, frame

BODIES = [b"", b"a", b"hello world", bytes(range(256)) * 3, b"\x00\x00\x00\x05"]
STREAM = b"".join(frame(b) for b in BODIES)


def test_frame_prefixes_big_endian_length() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"


def test_stream_split_at_every_byte_boundary_reassembles() -> None:
    for cut in range(len(STREAM) + 1):
        fb = FrameBuffer()
        fb.feed(STREAM[:cut])
        got = fb.frames()
        fb.feed(STREAM[cut:])
        got += fb.frames()
        assert got == BODIES, cut
        assert fb.buffered() == 0
        assert fb.next_frame() is None


def test_one_byte_at_a_time() -> None:
    fb = FrameBuffer()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        fb.feed(STREAM[i : i + 1])
        got += fb.frames()
    assert got == BODIES


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_arbitrary_chunking_reassembles(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(b) for b in bodies)
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    fb = FrameBuffer()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        fb.feed(stream[a:b])
        got += fb.frames()
    assert got == bodies


def test_large_frames_and_buffer_compaction() -> None:
    """Frames past the 64 KiB compaction point, with the next frame's start in the same read."""
    bodies = [bytes([i]) * 70_000 for i in range(4)]
    stream = b"".join(frame(b) for b in bodies)
    fb = FrameBuffer()
    got: list[bytes] = []
    for i in range(0, len(stream), 50_000):
        fb.feed(stream[i : i + 50_000])
        got += fb.frames()
    assert got == bodies
    assert fb.buffered() == 0


def test_peek_does_not_consume() -> None:
    fb = FrameBuffer()
    fb.feed(b"ruok")
    assert fb.peek(4) == b"ruok"
    assert fb.peek(10) == b"ruok"
    assert fb.buffered() == 4


def test_max_size_is_inclusive() -> None:
    fb = FrameBuffer(max_size=10)
    fb.feed(frame(b"x" * 10))
    assert fb.next_frame() == b"x" * 10


def test_oversize_length_raises_before_the_body_arrives() -> None:
    fb = FrameBuffer(max_size=10)
    fb.feed(struct.pack(">i", 11))
    with pytest.raises(FrameTooLarge):
        fb.next_frame()


def test_default_limit_is_jute_maxbuffer() -> None:
    fb = FrameBuffer()
    fb.feed(struct.pack(">i", DEFAULT_MAX_BUFFER + 1))
    with pytest.raises(FrameTooLarge):
        fb.next_frame()
    four_letter_word = FrameBuffer()
    four_letter_word.feed(b"ruok")  # 0x72756f6b, far above the limit
    with pytest.raises(FrameTooLarge):
        four_letter_word.next_frame()


@pytest.mark.parametrize("length", [-1, -2, -(2**31)])
def test_negative_length_raises(length: int) -> None:
    fb = FrameBuffer()
    fb.feed(struct.pack(">i", length) + b"abcd")
    with pytest.raises(FrameTooLarge):
        fb.frames()


def test_incomplete_length_waits() -> None:
    fb = FrameBuffer()
    fb.feed(b"\x00\x00\x00")
    assert fb.next_frame() is None
    fb.feed(b"\x02ab")
    assert fb.next_frame() == b"ab"
