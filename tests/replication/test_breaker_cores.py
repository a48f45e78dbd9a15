"""Ensemble safety item 5 across cores: two LeaderCores and the LearnerCores of one shared server,
wired by hand (no trio, no sockets), to show what the -1 ackepoch prevents and that it costs
no more than initLimit of liveness. The per-core tests (test_leader_core, test_learner_core)
check each half; these check the two halves together."""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.replication import messages as m
from zkpy.replication.leader_core import EPOCH, SYNC, LeaderCore, SendTo, SyncLearner
from zkpy.replication.learner_core import LearnerCore, Send
from zkpy.replication.quorum import Quorum
from zkpy.replication.roles import RoleEnded

VOTERS = (1, 2, 3, 4, 5)
LAST = 1 << 32 | 5  # every server's log ends at zxid (1, 5); every acceptedEpoch is 1


def leader(sid: int) -> LeaderCore:
    core = LeaderCore(
        my_id=sid, quorum=Quorum(VOTERS), accepted_epoch=1, current_epoch=1, last_logged=LAST,
        servers=frozenset(VOTERS), init_limit=5.0, sync_limit=1.0, now=0.0,
    )  # fmt: skip
    assert core.start() == []
    return core


class Server:
    """One learner server's durable epochs across its links (each link a new LearnerCore)."""

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.accepted = 1
        self.current = 1

    def connect(self, core: LeaderCore, conn: int, now: float) -> tuple[LearnerCore, list[Any]]:
        """A new link to `core`: the learner's info goes in; returns the learner and the leader's
        answer."""
        learner = LearnerCore(self.sid, "participant", self.accepted, self.current, LAST, 0, 5.0, 1.0, now)
        core.connected(conn, now)
        (info,) = learner.start()
        assert isinstance(info, Send)
        return learner, core.receive(conn, info.message, now)

    def take_leaderinfo(
        self, core: LeaderCore, conn: int, learner: LearnerCore, offered: list[Any], now: float
    ) -> list[Any]:
        """Deliver the leaderinfo among `offered` (the leader's effects) and the ackepoch back."""
        (message,) = [e.message for e in offered if isinstance(e, SendTo) and e.conn == conn]
        answer = learner.receive(message, now)
        self.accepted = learner.accepted_epoch  # AcceptEpoch is durable before the ack is sent
        (ack,) = [e.message for e in answer if isinstance(e, Send)]
        return core.receive(conn, ack, now)


def newleader_ack(core: LeaderCore, conn: int, now: float) -> list[Any]:
    return core.receive(conn, m.AckNewLeader(LAST), now)


def two_leaders_one_epoch() -> tuple[LeaderCore, LeaderCore]:
    """A (5) and B (4) each have one follower of their own (2 and 3); server 1 (q) is needed by
    both. q's info at acceptedEpoch 1 completes B's discovery and then A's: both propose epoch 2.
    q accepts 2 from A (counted there), then is offered 2 by B. Returns (A, B) afterwards."""
    a, b = leader(5), leader(4)
    q, p, r = Server(1), Server(2), Server(3)
    r_link, _ = r.connect(b, 30, 0.1)
    _, offered_b = q.connect(b, 10, 0.2)  # B's discovery: {4, 3, 1}
    assert b.phase == EPOCH and b.epoch == 2
    r.take_leaderinfo(b, 30, r_link, offered_b, 0.3)  # r acknowledges; q's leaderinfo is lost
    b.disconnected(10)

    p_link, _ = p.connect(a, 20, 0.4)
    q_link, offered_a = q.connect(a, 11, 0.5)  # A's discovery: {5, 2, 1}
    assert a.phase == EPOCH and a.epoch == 2
    p.take_leaderinfo(a, 20, p_link, offered_a, 0.6)
    effects = q.take_leaderinfo(a, 11, q_link, offered_a, 0.7)  # q accepts 2: A's epoch quorum
    assert a.phase == SYNC and any(isinstance(e, SyncLearner) for e in effects)
    a.disconnected(11)  # q leaves before A's NEWLEADER

    q_link, offered_b = q.connect(b, 12, 0.8)  # q, acceptedEpoch 2, offered 2 again by B
    q.take_leaderinfo(b, 12, q_link, offered_b, 0.9)
    if b.phase == SYNC:  # it counted q: B syncs r and q, who acknowledge NEWLEADER
        newleader_ack(b, 30, 1.0)
        newleader_ack(b, 12, 1.0)
        q.current = 2
    b.disconnected(12)

    q_link, offered_a = q.connect(a, 13, 1.1)  # back to A, in its sync phase: synced, and acks
    q.take_leaderinfo(a, 13, q_link, offered_a, 1.2)
    newleader_ack(a, 20, 1.3)
    newleader_ack(a, 13, 1.3)
    return a, b


def test_one_learner_cannot_make_two_leaders_of_one_epoch() -> None:
    """Ensemble safety item 5 with both halves together: server 1, offered epoch 2 by B after it
    had accepted 2 from A, answers -1, and B does not count it; A establishes epoch 2 and B stays
    in its epoch phase. Fails with either half of 60aa3e5 reverted (the learner's -1 answer in
    learner_core, or the leader's not counting it): then B establishes epoch 2 with {4, 3, 1},
    A with {5, 2, 1}, and the two commit different histories at the same zxids."""
    a, b = two_leaders_one_epoch()
    assert a.phase != EPOCH and a.epoch == 2  # A established with {5, 2, 1}
    assert b.phase == EPOCH, f"two leaders of epoch 2: B is in {b.phase} too"  # no epoch quorum for B
    assert not (a.current_epoch == 2 and b.current_epoch == 2)


def test_a_leader_left_with_uncounted_acks_gives_up_within_init_limit() -> None:
    """The cost of the -1 answer is bounded: B, short of an epoch quorum because server 1 may not
    be counted, ends its leadership once initLimit (5 s here) has passed in its epoch phase (it
    entered it at 0.2 s), and the next leader, hearing acceptedEpoch 2, proposes epoch 3."""
    _, b = two_leaders_one_epoch()
    b.tick(5.1)  # within initLimit: still waiting (the links still syncing are dropped)
    assert b.phase == EPOCH
    with pytest.raises(RoleEnded, match="no quorum acknowledged the epoch within initLimit"):
        b.tick(5.3)
    again = LeaderCore(
        my_id=4, quorum=Quorum(VOTERS), accepted_epoch=2, current_epoch=1, last_logged=LAST,
        servers=frozenset(VOTERS), init_limit=5.0, sync_limit=1.0, now=6.0,
    )  # fmt: skip
    again.start()
    q = Server(1)
    q.accepted = 2
    q_link, _ = q.connect(again, 40, 6.1)
    r = Server(3)
    r_link, offered = r.connect(again, 41, 6.2)
    assert again.epoch == 3 and SendTo(41, m.LeaderInfo(3)) in offered
    q.take_leaderinfo(again, 40, q_link, [SendTo(40, m.LeaderInfo(3))], 6.3)
    assert q.accepted == 3 and again.phase == EPOCH
    r.take_leaderinfo(again, 41, r_link, offered, 6.4)
    assert again.phase == SYNC  # q's ack counted this time: {4, 1, 3} is a quorum
