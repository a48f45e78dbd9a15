"""Size limits, malformed input and invalid paths: refused, and only the offending connection suffers."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.states import KazooState
from zkraw import ConnectionClosed, RawClient, connection_closed_by_server
from zkwait import wait_until

from zkpy.errors import BadArgumentsError, NoNodeError
from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, DeleteRequest, OpCode, PathWatchRequest, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE, RequestHeader
from zkpy.testing.procs import ServerProcess, four_letter

MAX_FRAME = 0xFFFFF  # jute.maxbuffer's default
Clients = Callable[..., KazooClient]


def test_a_972800_byte_value_round_trips(zk: KazooClient, make_client: Clients, base: str) -> None:
    value = bytes(range(256)) * 3800
    assert len(value) == 972_800
    zk.create(f"{base}/big", value)
    data, stat = make_client().get(f"{base}/big")
    assert data == value
    assert stat.dataLength == 972_800


def test_a_2_mib_value_drops_only_that_connection(zk: KazooClient, make_client: Clients, base: str) -> None:
    zk.create(f"{base}/n", b"small")
    bystander = make_client()
    bystander_states: list[str] = []
    bystander.add_listener(bystander_states.append)
    states: list[str] = []
    zk.add_listener(states.append)
    session = zk.client_id

    with pytest.raises(ConnectionLoss):
        zk.set(f"{base}/n", b"x" * (2 * 1024 * 1024))

    assert bystander.get(f"{base}/n")[0] == b"small"
    wait_until(lambda: zk.connected, what="the client to reconnect")
    assert zk.client_id == session  # a dropped connection is not a lost session
    assert KazooState.LOST not in states
    assert zk.get(f"{base}/n")[0] == b"small"
    assert bystander_states == []


def test_frame_of_exactly_max_size_is_accepted(server: ServerProcess, base: str) -> None:
    raw = RawClient(server.host, server.port)
    try:
        path = f"{base}/edge"
        raw.call(OpCode.CREATE, CreateRequest(path, b"", OPEN_ACL_UNSAFE, 0))
        overhead = len(encode(RequestHeader(1, OpCode.SET_DATA))) + len(encode(SetDataRequest(path, b"", -1)))
        value = b"v" * (MAX_FRAME - overhead)
        body = encode(RequestHeader(1000, OpCode.SET_DATA)) + encode(SetDataRequest(path, value, -1))
        assert len(body) == MAX_FRAME
        raw.send_frame(body)
        reply = raw.read_reply(1000)
        assert reply.err == 0
        assert raw.call(OpCode.GET_DATA, PathWatchRequest(path, False)).stat.dataLength == len(value)
    finally:
        raw.close()


def test_frame_one_byte_over_max_size_closes_the_connection(server: ServerProcess, zk: KazooClient) -> None:
    raw = RawClient(server.host, server.port)
    try:
        raw.sock.sendall(struct.pack(">i", MAX_FRAME + 1) + b"\x00" * 16)
        assert connection_closed_by_server(raw.sock)
    finally:
        raw.sock.close()
    assert zk.exists("/") is not None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack(">i", 0x7FFFFFFF) + b"abc", id="huge-length-before-handshake"),
        pytest.param(struct.pack(">i", -5) + b"abc", id="negative-length"),
        pytest.param(struct.pack(">i", 10) + b"garbage!!!", id="garbage-handshake"),
    ],
)
def test_bad_handshake_frames_close_only_that_connection(
    server: ServerProcess, zk: KazooClient, base: str, payload: bytes
) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(payload)
        assert connection_closed_by_server(sock)
    zk.create(f"{base}/after")
    assert four_letter(server.host, server.port, "ruok") == "imok"


def test_frame_too_short_for_a_request_header_closes_the_connection(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    raw = RawClient(server.host, server.port)
    try:
        raw.send_frame(b"\x00\x00")
        assert connection_closed_by_server(raw.sock)
    finally:
        raw.sock.close()
    zk.create(f"{base}/after")


def test_truncated_request_body_is_refused(server: ServerProcess, zk: KazooClient, base: str) -> None:
    """A request whose body does not decode gets MarshallingError (Apache keeps the connection) or a close."""
    raw = RawClient(server.host, server.port)
    try:
        # create: path length says 1000 bytes, 4 follow.
        raw.send_frame(encode(RequestHeader(7, OpCode.CREATE)) + struct.pack(">i", 1000) + b"/abc")
        try:
            reply = raw.read_reply(7)
        except ConnectionClosed:
            pass
        else:
            assert reply.err == -5  # MarshallingError
    finally:
        raw.sock.close()
    assert zk.exists(f"{base}/abc") is None
    zk.create(f"{base}/after")


def test_unknown_opcode_gets_unimplemented(server: ServerProcess, zk: KazooClient) -> None:
    raw = RawClient(server.host, server.port)
    try:
        raw.send(999)
        assert raw.read_reply(1).err == -6  # Unimplemented
    finally:
        raw.sock.close()
    assert zk.exists("/") is not None


INVALID_NAMES = {
    "dot": ".",
    "dotdot": "..",
    "empty-name": "",
    "nul": "a\x00b",
    "control-01": "a\x01b",
    "control-1f": "\x1f",
    "del-7f": "a\x7fb",
    "c1-control-9f": "\x9f",
    "private-use-e000": "a\ue000b",
    "private-use-f8ff": "\uf8ff",
    "specials-fff0": "\ufff0",
    "specials-fffe": "\ufffe",
}


@pytest.mark.parametrize("name", list(INVALID_NAMES.values()), ids=list(INVALID_NAMES))
def test_invalid_path_refused_on_create_and_set(server: ServerProcess, base: str, name: str) -> None:
    raw = RawClient(server.host, server.port)
    try:
        path = f"{base}/{name}"
        with pytest.raises(BadArgumentsError):
            raw.call(OpCode.CREATE, CreateRequest(path, b"", OPEN_ACL_UNSAFE, 0))
        with pytest.raises(BadArgumentsError):
            raw.call(OpCode.SET_DATA, SetDataRequest(path, b"", -1))
        raw.ping()  # the connection survives a refused request
    finally:
        raw.close()


@pytest.mark.parametrize("name", ["a\u00a0b", "\ud7ff", "caf\u00e9", "\u4e2d\u6587", "a b", "-_.:~"])
def test_unusual_but_valid_names_are_accepted(zk: KazooClient, base: str, name: str) -> None:
    path = f"{base}/{name}"
    zk.create(path, b"ok")
    assert zk.get(path)[0] == b"ok"
    assert name in zk.get_children(base)


@pytest.mark.parametrize("path", ["no-slash", "/a//b", "/a/", "/a/./b"])
def test_malformed_paths_are_refused(server: ServerProcess, path: str) -> None:
    """Apache reports NoNode here (it looks the parent up before validating); BadArguments is also a refusal."""
    raw = RawClient(server.host, server.port)
    try:
        with pytest.raises((BadArgumentsError, NoNodeError)):
            raw.call(OpCode.CREATE, CreateRequest(path, b"", OPEN_ACL_UNSAFE, 0))
        with pytest.raises(BadArgumentsError):
            raw.call(OpCode.SET_DATA, SetDataRequest(path, b"", -1))
    finally:
        raw.close()


def test_root_cannot_be_deleted_or_created(server: ServerProcess) -> None:
    raw = RawClient(server.host, server.port)
    try:
        with pytest.raises(BadArgumentsError):
            raw.call(OpCode.DELETE, DeleteRequest("/", -1))
        assert raw.error_of(OpCode.CREATE, CreateRequest("/", b"", OPEN_ACL_UNSAFE, 0)) == -110  # NodeExists
    finally:
        raw.close()
