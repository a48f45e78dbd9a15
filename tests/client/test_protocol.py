"""ClientProtocol without sockets: bytes in, replies and events out."""

from __future__ import annotations

import struct

import pytest

from zkpy.client.events import EventType
from zkpy.client.protocol import ClientProtocol, Connected, Expired, Notification, ProtocolError, Replied
from zkpy.errors import ConnectionLossError, NoNodeError, SessionExpiredError
from zkpy.jute.codec import encode
from zkpy.jute.framing import FrameBuffer, frame
from zkpy.jute.ops import (
    GetDataResponse,
    OpCode,
    PathWatchRequest,
    SetWatches2Request,
    StatResponse,
)
from zkpy.jute.records import AuthPacket, ConnectRequest, ConnectResponse, ReplyHeader, Stat, WatcherEvent

STAT = Stat(1, 2, 3, 4, 5, 6, 7, 0, 1, 0, 9)


def reply(xid: int, zxid: int, err: int = 0, body: object = None) -> bytes:
    return frame(encode(ReplyHeader(xid, zxid, err)) + (encode(body) if body is not None else b""))


def sent_frames(proto: ClientProtocol) -> list[bytes]:
    buf = FrameBuffer()
    buf.feed(proto.data_to_send())
    return buf.frames()


def handshake(proto: ClientProtocol, session_id: int = 0x1234, timeout: int = 6000) -> list[object]:
    proto.connect(10000)
    sent_frames(proto)
    return proto.receive_data(frame(encode(ConnectResponse(0, timeout, session_id, b"p" * 16))))


def test_handshake_sends_session_and_zxid_and_reports_connected() -> None:
    proto = ClientProtocol()
    proto.last_zxid, proto.session_id = 77, 0
    proto.connect(4000, read_only=True)
    (body,) = sent_frames(proto)
    req, _ = ConnectRequest.read(body)
    assert (req.last_zxid_seen, req.timeout, req.session_id, req.read_only) == (77, 4000, 0, True)
    (event,) = proto.receive_data(frame(encode(ConnectResponse(0, 3000, 42, b"x" * 16, False))))
    assert event == Connected(42, b"x" * 16, 3000, False, True)
    assert (proto.session_id, proto.timeout_ms) == (42, 3000)


def test_handshake_with_timeout_zero_means_expired() -> None:
    proto = ClientProtocol()
    proto.session_id = 5
    proto.connect(4000)
    assert proto.receive_data(frame(encode(ConnectResponse(0, 0, 0, b"\x00" * 16)))) == [Expired()]


def test_replies_match_by_xid_and_track_last_zxid() -> None:
    proto = ClientProtocol()
    handshake(proto)
    a = proto.request(OpCode.GET_DATA, PathWatchRequest("/a", False), "/a")
    b = proto.request(OpCode.EXISTS, PathWatchRequest("/b", False), "/b")
    frames = sent_frames(proto)
    assert [struct.unpack_from(">ii", f) for f in frames] == [(a.xid, 4), (b.xid, 3)]
    data = reply(a.xid, 10, 0, GetDataResponse(b"hi", STAT)) + reply(b.xid, 12, -101)
    events = proto.receive_data(data[:7])
    assert events == []
    events = proto.receive_data(data[7:])
    assert events == [Replied(a), Replied(b)]
    assert a.result.data == b"hi" and a.error is None
    assert b.result is None and b.error is None  # exists on a missing node is not an error
    assert proto.last_zxid == 12


def test_error_reply_carries_the_typed_exception() -> None:
    proto = ClientProtocol()
    handshake(proto)
    a = proto.request(OpCode.GET_DATA, PathWatchRequest("/a", False), "/a")
    proto.receive_data(reply(a.xid, 3, -101))
    assert isinstance(a.error, NoNodeError) and a.error.path == "/a"


def test_out_of_order_reply_is_a_protocol_error() -> None:
    proto = ClientProtocol()
    handshake(proto)
    proto.request(OpCode.GET_DATA, PathWatchRequest("/a", False), "/a")
    b = proto.request(OpCode.GET_DATA, PathWatchRequest("/b", False), "/b")
    with pytest.raises(ProtocolError):
        proto.receive_data(reply(b.xid, 3, -101))


def test_watch_armed_on_reply_fires_once_with_chroot_stripped() -> None:
    proto = ClientProtocol(chroot="/app")
    handshake(proto)
    seen: list[str] = []
    cb = seen.append
    a = proto.request(OpCode.GET_DATA, PathWatchRequest("/app/x", True), "/x", ("data", cb))
    proto.receive_data(reply(a.xid, 5, 0, GetDataResponse(b"", STAT)))
    event = frame(encode(ReplyHeader(-1, -1, 0)) + encode(WatcherEvent(3, 3, "/app/x")))
    (note,) = proto.receive_data(event)
    assert isinstance(note, Notification)
    assert note.event.type == EventType.CHANGED and note.event.path == "/x" and note.callbacks == (cb,)
    (again,) = proto.receive_data(event)
    assert again.callbacks == ()  # one-shot


def test_exists_on_missing_node_arms_an_exist_watch_and_errors_arm_nothing() -> None:
    proto = ClientProtocol()
    handshake(proto)
    cb = object()
    a = proto.request(OpCode.EXISTS, PathWatchRequest("/n", True), "/n", ("exist", cb))
    b = proto.request(OpCode.GET_DATA, PathWatchRequest("/m", True), "/m", ("data", cb))
    proto.receive_data(reply(a.xid, 1, -101) + reply(b.xid, 1, -101))
    assert proto.watches.has("exist", "/n")
    assert not proto.watches.has("data", "/m")


def test_recursive_watch_sees_descendants_but_not_child_events() -> None:
    proto = ClientProtocol()
    handshake(proto)
    cb = object()
    proto.watches.add("recursive", "/a", cb)
    assert proto.watches.trigger(EventType.CREATED, "/a/b/c") == (cb,)
    assert proto.watches.trigger(EventType.CHILD, "/a") == ()
    assert proto.watches.trigger(EventType.DELETED, "/ab") == ()


def test_reconnect_rearms_watches_with_set_watches2_and_resends_auth_first() -> None:
    proto = ClientProtocol(chroot="/c")
    handshake(proto)
    proto.add_auth("digest", b"u:p")
    sent_frames(proto)
    for kind, path in [
        ("data", "/d"),
        ("exist", "/e"),
        ("child", "/k"),
        ("persistent", "/p"),
        ("recursive", "/r"),
    ]:
        proto.watches.add(kind, path, object())
    proto.last_zxid = 99
    proto.connection_lost()
    handshake(proto, session_id=0x1234)
    frames = sent_frames(proto)
    assert [struct.unpack_from(">ii", f) for f in frames] == [(-8, 105), (-4, 100)]
    sw, _ = SetWatches2Request.read(frames[0], 8)
    assert sw == SetWatches2Request(99, ["/c/d"], ["/c/e"], ["/c/k"], ["/c/p"], ["/c/r"])
    auth, _ = AuthPacket.read(frames[1], 8)
    assert (auth.scheme, auth.auth) == ("digest", b"u:p")
    # the setWatches reply is consumed silently as far as callers go
    (r,) = proto.receive_data(reply(-8, 100))
    assert isinstance(r, Replied) and r.pending.error is None


def test_connection_loss_fails_in_flight_and_expiry_drops_watches() -> None:
    proto = ClientProtocol()
    handshake(proto)
    a = proto.request(OpCode.SET_DATA, PathWatchRequest("/a", False), "/a")
    (failed,) = proto.connection_lost()
    assert failed is a and isinstance(a.error, ConnectionLossError)
    cb = object()
    proto.watches.add("data", "/x", cb)
    handshake(proto)
    b = proto.request(OpCode.EXISTS, PathWatchRequest("/a", False), "/a")
    failed, callbacks = proto.expire()
    assert failed[-1] is b and isinstance(b.error, SessionExpiredError)
    assert callbacks == [cb] and not proto.watches.has("data", "/x")
    assert proto.session_id == 0


def test_stat_reply_decodes_to_the_shared_stat_record() -> None:
    proto = ClientProtocol()
    handshake(proto)
    a = proto.request(OpCode.SET_DATA, PathWatchRequest("/a", False), "/a")
    proto.receive_data(reply(a.xid, 3, 0, StatResponse(STAT)))
    assert a.result.stat == STAT


def test_many_watches_are_re_armed_in_several_set_watches_frames() -> None:
    proto = ClientProtocol()
    handshake(proto)
    paths = [f"/node-{i:05d}-" + "x" * 100 for i in range(3000)]
    for p in paths:
        proto.watches.add("data", p, object())
    proto.connection_lost()
    handshake(proto, session_id=0x1234)
    frames = sent_frames(proto)
    assert len(frames) > 1 and all(len(f) < 200_000 for f in frames)
    rearmed = []
    for f in frames:
        assert struct.unpack_from(">ii", f) == (-8, 105)
        rearmed += SetWatches2Request.read(f, 8)[0].dataWatches
    assert sorted(rearmed) == paths


def test_replies_and_events_before_an_over_long_frame_are_handed_out_with_the_error() -> None:
    """Issue 15 item 3. Fails before the fix in receive_data: the ProtocolError carried nothing, so
    the request answered by the first frame (already popped off the in-flight queue) was neither
    returned nor failed by connection_lost (its caller hung), and the notification's one-shot watch
    callbacks were consumed and thrown away."""
    proto = ClientProtocol()
    handshake(proto)
    cb = object()
    proto.watches.add("data", "/w", cb)
    a = proto.request(OpCode.GET_DATA, PathWatchRequest("/a", True), "/a", ("data", cb))
    b = proto.request(OpCode.GET_DATA, PathWatchRequest("/big", False), "/big")
    note = frame(encode(ReplyHeader(-1, -1, 0)) + encode(WatcherEvent(3, 3, "/w")))
    too_long = struct.pack(">i", proto.max_frame + 1) + b"\x00" * 64
    with pytest.raises(ProtocolError) as caught:
        proto.receive_data(note + reply(a.xid, 7, 0, GetDataResponse(b"hi", STAT)) + too_long)
    events = caught.value.events
    assert [type(e) for e in events] == [Notification, Replied]
    assert events[0].callbacks == (cb,) and events[0].event.path == "/w"
    assert events[1] == Replied(a) and a.done and a.result.data == b"hi"
    assert proto.watches.has("data", "/a")  # the watch the reply armed stays for the next connection
    assert proto.connection_lost() == [b] and isinstance(b.error, ConnectionLossError)


def test_a_malformed_reply_body_leaves_its_request_for_connection_lost() -> None:
    """Issue 15 item 3 (the same class). Fails before the fix: _frame popped the request before
    decoding its body, so a reply that did not decode orphaned its caller (connection_lost returned
    nothing for it and it was never marked done)."""
    proto = ClientProtocol()
    handshake(proto)
    a = proto.request(OpCode.GET_DATA, PathWatchRequest("/a", False), "/a")
    truncated = frame(encode(ReplyHeader(a.xid, 7, 0)) + b"\x00\x00\x00\x09ab")
    with pytest.raises(ProtocolError):
        proto.receive_data(truncated)
    assert proto.connection_lost() == [a] and a.done and isinstance(a.error, ConnectionLossError)
