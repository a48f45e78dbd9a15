"""zkpy's bound on the ops of one multi or multiRead (config multiMaxOps; Apache has none).

A multi is applied atomically, in one go on the event loop: no reader may see half of it, so it
cannot yield to other clients' reads halfway. Each op costs 10-30 us of decoding, checking, applying
and answering, so the 40,000 small ops one jute.maxbuffer request can carry held every client about
0.5 s (issue 16's budget: 50 ms per request). 1,000 ops -- what Apache's own zkCli deleteall sends at
most by default -- cost about 25 ms. A bigger one is refused with BadArguments before it is ordered
(nothing logged), and the client can split it.
"""

from __future__ import annotations

from zkpy.jute.ops import MultiRequest

DEFAULT_MULTI_MAX_OPS = 1000
_SMALLEST_OP = 14  # bytes of the smallest op: its multi header (9), an empty path (4), a watch flag (1)


def too_many_ops(body: bytes, limit: int, read: bool = False) -> bool:
    """Whether a multi (with `read`, a multiRead) holds more than `limit` ops; a body too short to hold
    more is not parsed, and a longer one only as far as op limit + 1."""
    if len(body) < _SMALLEST_OP * (limit + 1):
        return False
    return MultiRequest.more_ops_than(body, limit, read)
