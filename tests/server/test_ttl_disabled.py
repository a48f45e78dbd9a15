"""With extendedTypesEnabled=false, TTL creates are refused (Unimplemented), alone or inside a multi,
and nothing of them reaches the log: a restart replays the same tree."""

from __future__ import annotations

from zkraw import RawClient

from zkpy.errors import Code
from zkpy.jute.ops import (
    PERSISTENT_WITH_TTL,
    CreateRequest,
    CreateTTLRequest,
    MultiRequest,
    OpCode,
    PathWatchRequest,
)
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import running_server


def test_ttl_creates_refused_when_extended_types_are_off() -> None:
    with running_server("zkpy", {"extendedTypesEnabled": "false"}) as server:
        raw = RawClient(server.host, server.port)
        try:
            ttl = CreateTTLRequest("/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 60_000)
            assert raw.error_of(OpCode.CREATE_TTL, ttl) == Code.UNIMPLEMENTED
            multi = MultiRequest(
                [(OpCode.CREATE, CreateRequest("/m", b"", OPEN_ACL_UNSAFE, 0)), (OpCode.CREATE_TTL, ttl)]
            )
            assert raw.error_of(OpCode.MULTI, multi) == Code.UNIMPLEMENTED
            assert raw.error_of(OpCode.EXISTS, PathWatchRequest("/m", False)) == Code.NO_NODE
        finally:
            raw.close()
        server.kill()
        server.start()
        raw = RawClient(server.host, server.port)
        try:
            assert raw.error_of(OpCode.EXISTS, PathWatchRequest("/t", False)) == Code.NO_NODE
        finally:
            raw.close()
