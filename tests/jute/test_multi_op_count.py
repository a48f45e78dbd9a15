"""MultiRequest.more_ops_than steps over ops without decoding them (zkpy.server.limits' bound on multis):
it must agree with the full decode on every well-formed multi, and never claim more ops than precede
damage in a truncated one."""

from __future__ import annotations

import random
from typing import Any

from zkpy.jute.codec import encode
from zkpy.jute.ops import (
    CheckVersionRequest,
    CreateRequest,
    CreateTTLRequest,
    DeleteRequest,
    MultiRequest,
    OpCode,
    PathWatchRequest,
    SetDataRequest,
)
from zkpy.jute.records import ACL, Id


def _random_op(rng: random.Random) -> tuple[int, Any]:
    path = "/" + "x" * rng.randrange(5)
    acl = [ACL(31, Id("digest", "u:" + "h" * rng.randrange(4)))] * rng.randrange(3)
    return rng.choice(
        [
            (OpCode.CREATE, CreateRequest(path, b"d" * rng.randrange(4), acl, 0)),
            (OpCode.CREATE2, CreateRequest(path, None, None, 0)),
            (OpCode.CREATE_TTL, CreateTTLRequest(path, None, acl, 5, 100)),
            (OpCode.DELETE, DeleteRequest(path, -1)),
            (OpCode.SET_DATA, SetDataRequest(path, b"", 3)),
            (OpCode.CHECK, CheckVersionRequest(path, 1)),
        ]
    )


def test_the_op_count_agrees_with_the_full_decode() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        ops = [_random_op(rng) for _ in range(rng.randrange(12))]
        body = encode(MultiRequest(ops))
        limit = rng.randrange(12)
        assert MultiRequest.more_ops_than(body, limit) == (len(ops) > limit)
        cut = body[: rng.randrange(len(body) + 1)]
        if MultiRequest.more_ops_than(cut, limit):  # limit + 1 whole ops before the cut
            whole = encode(MultiRequest(ops[: limit + 1]))[:-9]  # without the end marker
            assert cut.startswith(whole)


def test_multi_read_ops_are_counted_too() -> None:
    ops = [
        (OpCode.GET_DATA, PathWatchRequest("/a", False)),
        (OpCode.GET_CHILDREN, PathWatchRequest("/", True)),
    ]
    body = encode(MultiRequest(ops * 3))
    assert MultiRequest.more_ops_than(body, 5, read=True)
    assert not MultiRequest.more_ops_than(body, 6, read=True)
    assert not MultiRequest.more_ops_than(body, 1)  # read ops are not write ops: the decode answers it
