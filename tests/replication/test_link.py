"""A peer link's count of bytes queued and not yet written, which the leader judges a slow learner
by (leader.MAX_QUEUED_TO_LEARNER): it grows while the other side does not read and falls as the
writer task gets the bytes out."""

from __future__ import annotations

import trio
import trio.testing

from zkpy.replication import messages as m
from zkpy.replication.link import PeerLink


async def test_queued_bytes_grow_while_the_peer_does_not_read_and_fall_as_it_does() -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()  # a send completes only as it is read
    link = PeerLink(ours)
    other = PeerLink(theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.send_loop)
        for _ in range(10):
            link.send(m.Proposal([b"x" * 1000]))
        await trio.testing.wait_all_tasks_blocked()
        assert link.queued_bytes > 10 * 1000  # nobody reads: all of it is still queued
        for _ in range(10):
            assert await other.receive() == ["proposal", [b"x" * 1000]]
        await trio.testing.wait_all_tasks_blocked()
        assert link.queued_bytes == 0
        nursery.cancel_scope.cancel()
