"""Garbage after a valid handshake, for every opcode: the server answers or closes that connection,
never crashes, and other clients never notice."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient
from zkraw import ConnectionClosed, RawClient, read_frame

from zkpy.jute.ops import XID_PING, OpCode
from zkpy.testing.procs import ServerProcess, four_letter

OPCODES = [int(op) for op in OpCode] + [7777, -3]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(OPCODES), st.binary(max_size=64)), min_size=1, max_size=8))
def test_garbage_request_bodies_never_hurt_the_server(
    server: ServerProcess, zk: KazooClient, base: str, requests: list[tuple[int, bytes]]
) -> None:
    raw = RawClient(server.host, server.port)
    try:
        frames = b"".join(
            struct.pack(">iii", 8 + len(body), xid, op) + body for xid, (op, body) in enumerate(requests, 1)
        )
        # A ping last: replies come in request order, so its reply means everything was answered.
        raw.sock.sendall(frames + struct.pack(">iii", 8, XID_PING, OpCode.PING))
        raw.sock.settimeout(10)
        try:
            while True:
                xid = struct.unpack(">i", read_frame(raw.sock)[:4])[0]
                if xid == XID_PING:
                    break
        except ConnectionClosed:
            pass  # closing a connection that sent garbage is a fine answer too
    finally:
        raw.sock.close()
    assert four_letter(server.host, server.port, "ruok") == "imok"
    zk.set(base, b"still fine")
    assert zk.get(base)[0] == b"still fine"
