"""The leader's protocol exchange by exchange, without sockets or disks."""

from __future__ import annotations

import pytest

from zkpy.replication import messages as m
from zkpy.replication.history import DIFF, SNAP, TRUNC, History, SyncPlan
from zkpy.replication.leader_core import (
    BROADCAST,
    EPOCH,
    SYNC,
    AcceptEpoch,
    Broadcast,
    Close,
    Committed,
    Establish,
    ForwardRequest,
    LeaderCore,
    Relinquish,
    Revalidate,
    SendTo,
    SyncLearner,
    TouchSessions,
    WriteLog,
)
from zkpy.replication.quorum import Quorum
from zkpy.replication.roles import AboveEpoch, RoleEnded
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn


def z(epoch: int, counter: int) -> int:
    return epoch << 32 | counter


def packed(zxid: int) -> bytes:
    return f"{zxid:x}".encode()


def logged(last: int = 9) -> History:
    """The leader's history: transactions (1, 1) to (1, last), from the start."""
    history = History()
    for counter in range(1, last + 1):
        history.append(z(1, counter), packed(z(1, counter)))
    return history


def leader(voters: tuple[int, ...] = (1, 2, 3), servers: tuple[int, ...] = (1, 2, 3, 4)) -> LeaderCore:
    return LeaderCore(
        my_id=3, quorum=Quorum(voters), accepted_epoch=1, current_epoch=1, last_logged=z(1, 9),
        servers=frozenset(servers), init_limit=5.0, sync_limit=1.0, now=0.0, history=logged(),
    )  # fmt: skip


def diff(last: int, *sent: int) -> SyncPlan:
    return SyncPlan(DIFF, last, [packed(x) for x in sent])


def join(core: LeaderCore, conn: int, sid: int, now: float = 0.1, accepted: int = 1) -> list[object]:
    core.connected(conn, now)
    return list(core.receive(conn, m.Info(sid, accepted, "participant"), now))


def established(core: LeaderCore) -> None:
    """Learner 1 on link 10 syncs: with the leader, a quorum of three."""
    join(core, 10, 1)
    core.receive(10, m.AckEpoch(1, z(1, 7), 0), 0.2)
    core.receive(10, m.AckNewLeader(z(1, 9)), 0.3)
    assert core.phase == BROADCAST


def test_the_new_epoch_comes_with_a_quorum_of_accepted_epochs() -> None:
    core = leader()
    assert core.start() == []
    assert join(core, 10, 1, accepted=4) == [AcceptEpoch(5), SendTo(10, m.LeaderInfo(5))]
    assert join(core, 11, 2) == [SendTo(11, m.LeaderInfo(5))]  # the epoch is fixed by then


def test_a_learner_ahead_of_the_leader_ends_the_leadership() -> None:
    core = leader()
    join(core, 10, 1)
    with pytest.raises(RoleEnded, match="ahead"):
        core.receive(10, m.AckEpoch(1, z(1, 12), 0), 0.2)


def test_a_voter_that_accepted_a_later_epoch_makes_the_leader_step_down() -> None:
    """A voter promised epoch 7 (as a would-be leader whose offers never went out) and can never
    follow epoch 2: the leader steps down so the next election's epoch can include it (the swarm
    seed of tests/replication/test_sim_liveness.py looped elections before). An equal accepted
    epoch changes nothing. Fails before this change (no RoleEnded). The step-down carries the
    voter's epoch, which the server takes as its own acceptedEpoch (roles.AboveEpoch)."""
    core = leader()
    established(core)
    assert core.epoch == 2
    assert join(core, 13, 2, accepted=2) == [SendTo(13, m.LeaderInfo(2))]
    with pytest.raises(AboveEpoch, match="voter 2 has accepted epoch 7") as ended:
        join(core, 14, 2, accepted=7)
    assert ended.value.accepted == 7


def test_an_observer_that_accepted_a_later_epoch_makes_the_leader_step_down_too() -> None:
    """An observer can be above the ensemble's epoch as well (a would-be leader's offer reached
    it and no voter: test_sim_epoch_adversarial), and can never follow this leader either: it
    steps down for it as for a voter. Fails on e8388aa: the observer is sent LeaderInfo(2)."""
    core = leader()
    established(core)
    assert join(core, 13, 4, accepted=2) == [SendTo(13, m.LeaderInfo(2))]  # server 4 observes
    with pytest.raises(RoleEnded, match="observer 4 has accepted epoch 7"):
        join(core, 12, 4, accepted=7)


def test_an_observers_accepted_epoch_told_in_discovery_raises_the_epoch_not_the_quorum() -> None:
    """The next leader's epoch goes above an observer's acceptedEpoch when the observer tells it
    during DISCOVERY (one step-down is then enough), while the observer still counts for no
    quorum. Fails on e8388aa: the epoch is 2, below the observer's 7."""
    core = leader()
    assert core.start() == []
    assert join(core, 12, 4, accepted=7) == []  # server 4 observes: no quorum yet
    expected = [AcceptEpoch(8), SendTo(12, m.LeaderInfo(8)), SendTo(10, m.LeaderInfo(8))]
    assert join(core, 10, 1, accepted=1) == expected


def test_an_uncounted_epoch_ack_does_not_make_a_quorum() -> None:
    """Ensemble safety item 5: an ackepoch of -1 (the learner had already promised this epoch to
    another leader) is not part of the epoch quorum, and is not judged ahead of the leader; the
    learner is synced once a quorum of others has acknowledged. Fails before this change."""
    core = leader(voters=(1, 2, 3, 4, 5), servers=(1, 2, 3, 4, 5))
    join(core, 10, 1)
    join(core, 11, 2)
    assert core.phase == EPOCH
    assert core.receive(10, m.AckEpoch(-1, z(1, 12), 0), 0.2) == []  # would be "ahead" if counted
    assert core.receive(11, m.AckEpoch(1, z(1, 7), 0), 0.2) == []
    assert core.phase == EPOCH  # the leader and 2: not three of five
    join(core, 12, 4)
    effects = core.receive(12, m.AckEpoch(1, z(1, 8), 0), 0.3)
    assert core.phase == SYNC
    assert {e.conn for e in effects if isinstance(e, SyncLearner)} == {10, 11, 12}


def test_a_quorum_of_newleader_acks_commits_the_whole_history() -> None:
    core = leader()
    join(core, 10, 1)
    assert core.receive(10, m.AckEpoch(1, z(1, 7), 0), 0.2) == [SyncLearner(10, 1, z(1, 7), diff(z(1, 7), z(1, 8), z(1, 9)), 2)]
    effects = core.receive(10, m.AckNewLeader(z(1, 9)), 0.3)
    assert effects[:2] == [Establish(2, z(1, 9)), SendTo(10, m.UpToDate(z(1, 9)))]
    assert core.committed == z(1, 9)


def test_a_commit_needs_a_quorum_including_the_leaders_own_log() -> None:
    core = leader()
    established(core)
    a = Txn(z(2, 1), 0, 1, 1, 1, b"")
    proposal = core.propose([a])
    assert proposal == [Broadcast((10,), m.Proposal([a.pack()])), WriteLog([a])]
    assert core.history.last == z(2, 1)  # a learner syncing from now on gets it too
    assert core.receive(10, m.Ack(z(2, 1)), 0.4) == []  # the follower has it, the leader not yet
    assert core.logged(z(2, 1)) == [Committed(z(2, 1)), Broadcast((10,), m.Commit(z(2, 1)))]


def test_a_learner_that_joins_a_running_leader_is_synced_at_once() -> None:
    core = leader()
    established(core)
    join(core, 11, 2, now=1.0)
    assert core.receive(11, m.AckEpoch(1, z(1, 5), 0), 1.1) == [
        SyncLearner(11, 2, z(1, 5), diff(z(1, 5), z(1, 6), z(1, 7), z(1, 8), z(1, 9)), 2)
    ]
    assert core.receive(11, m.AckNewLeader(z(1, 9)), 1.2)[0] == SendTo(11, m.UpToDate(z(1, 9)))


def test_synced_learners_forward_requests_pings_and_syncs() -> None:
    core = leader()
    established(core)
    assert core.receive(10, m.LearnerPing([7, 8]), 0.5) == [TouchSessions([7, 8])]
    assert core.receive(10, m.ForwardedRequest(7, 3, 1, b"x", [["digest", "a"]]), 0.5) == [
        ForwardRequest(10, 1, 7, 3, 1, b"x", (("digest", "a"),))
    ]
    assert core.receive(10, m.ForwardedSync(7, 4), 0.5) == [SendTo(10, m.SyncReply(7, 4, z(1, 9)))]
    assert core.receive(10, m.RevalidateSession(7, 4000), 0.5) == [Revalidate(10, 1, 7, 4000, 1)]


def test_revalidations_are_numbered_per_link_and_a_relinquish_names_one() -> None:
    """A learner withdraws a claim by its question's number on the link (owners.py): both sides
    count the questions in the order sent, so the revalidate on the wire is unchanged. A
    relinquish of a question never asked is a protocol error: it costs the link. Fails before
    this change: Revalidate has no number, and a relinquish is an unknown message."""
    core = leader()
    established(core)
    join(core, 11, 2, now=0.4)
    core.receive(11, m.AckEpoch(1, z(1, 9), 0), 0.4)
    core.receive(11, m.AckNewLeader(z(1, 9)), 0.4)
    assert core.receive(10, m.RevalidateSession(7, 4000), 0.5) == [Revalidate(10, 1, 7, 4000, 1)]
    assert core.receive(11, m.RevalidateSession(7, 4000), 0.5) == [Revalidate(11, 2, 7, 4000, 1)]
    assert core.receive(10, m.RevalidateSession(8, 3000), 0.5) == [Revalidate(10, 1, 8, 3000, 2)]
    assert core.receive(10, m.Relinquish(7, 1), 0.6) == [Relinquish(10, 1, 7, 1)]
    effects = core.receive(10, m.Relinquish(7, 3), 0.6)
    assert isinstance(effects[-1], Close) and 10 not in core.learners
    assert core.receive(11, m.Relinquish(7, 1), 0.6) == [Relinquish(11, 2, 7, 1)]


def test_a_protocol_error_closes_only_that_link() -> None:
    core = leader()
    established(core)
    effects = core.receive(10, m.NewLeader(9), 0.5)
    assert isinstance(effects[-1], Close) and core.phase == BROADCAST


@pytest.mark.parametrize("sid", [3, 9])  # itself, or not in the configuration
def test_a_stranger_is_refused(sid: int) -> None:
    core = leader()
    effects = join(core, 10, sid)
    assert isinstance(effects[-1], Close)


def test_silent_learners_are_dropped_and_a_lost_quorum_ends_the_leadership() -> None:
    core = leader()
    established(core)
    assert isinstance(core.tick(0.9)[-1], Broadcast)  # pings
    with pytest.raises(RoleEnded, match="lost the quorum"):
        core.tick(1.5)  # learner 1 silent for more than syncLimit: only the leader is left


def test_no_quorum_within_initlimit_ends_the_leadership() -> None:
    core = leader()
    join(core, 10, 1)  # epoch chosen, but no ackepoch ever comes
    core.tick(4.0)
    with pytest.raises(RoleEnded, match="initLimit"):
        core.tick(5.5)


def test_an_exhausted_counter_forces_a_new_epoch() -> None:
    core = leader()
    established(core)
    last = Txn(z(2, core.counter_limit + 1), 0, 1, 1, 1, b"")
    with pytest.raises(RoleEnded, match="counter"):
        core.propose([last])


def test_observers_never_count_for_a_quorum() -> None:
    core = leader(voters=(1, 2, 3), servers=(1, 2, 3, 4))
    join(core, 10, 4)  # an observer: no quorum of accepted epochs from it
    assert core.phase == "discovery"


def test_a_learner_joining_in_broadcast_is_cut_back_to_the_commit_point() -> None:
    """The sync plan is the core's: in broadcast, a learner whose log reaches proposals not yet
    committed (it logged them, restarted, and its recovery applied them) is cut back to the commit
    point and sent them again (ensemble safety item 3); while the history is being established,
    the whole of it counts, since a NEWLEADER quorum commits it all."""
    core = leader()
    established(core)
    proposed = [Txn(z(2, counter), 0, 1, counter, 1, b"") for counter in (1, 2)]
    for txn in proposed:  # into the history, acknowledged by nobody yet
        core.propose([txn])
    assert core.committed == z(1, 9)
    join(core, 11, 2, now=1.0)
    (sync,) = core.receive(11, m.AckEpoch(1, z(2, 2), 0), 1.1)
    assert isinstance(sync, SyncLearner)
    assert sync.plan == SyncPlan(TRUNC, z(1, 9), [txn.pack() for txn in proposed])


def test_before_establishment_the_whole_history_is_the_sync_point() -> None:
    core = leader()
    join(core, 10, 1)
    (sync,) = core.receive(10, m.AckEpoch(1, z(1, 9), 0), 0.2)
    assert isinstance(sync, SyncLearner) and sync.plan == SyncPlan(DIFF, z(1, 9), [])


def test_a_learner_older_than_the_window_gets_the_tree_as_it_stands() -> None:
    history = History(base=z(1, 4))
    for counter in range(5, 10):
        history.append(z(1, counter), packed(z(1, counter)))
    tree = DataTree()
    tree.last_zxid = z(1, 8)  # z(1, 9) is logged, not applied yet
    core = LeaderCore(
        my_id=3, quorum=Quorum((1, 2, 3)), accepted_epoch=1, current_epoch=1, last_logged=z(1, 9),
        servers=frozenset((1, 2, 3)), init_limit=5.0, sync_limit=1.0, now=0.0,
        history=history, tree=lambda: tree,
    )  # fmt: skip
    join(core, 10, 1)
    (sync,) = core.receive(10, m.AckEpoch(1, z(1, 2), 0), 0.2)
    assert isinstance(sync, SyncLearner)
    assert sync.plan == SyncPlan(SNAP, z(1, 8), [packed(z(1, 9))])  # the tree, then what it lacks
    # The core builds the messages too: the tree's items in the same step, then NEWLEADER.
    assert sync.messages() == [
        m.SyncData(SNAP, z(1, 8), list(tree_items(tree)), [packed(z(1, 9))]),
        m.NewLeader(2),
    ]


def test_observer_syncs_are_throttled_by_kind_and_followers_never() -> None:
    """Apache's maxConcurrentSnapSyncs/maxConcurrentDiffSyncs (LearnerSyncThrottler): an observer
    over the bound is closed and tries again later; a follower is exempt (the quorum needs it)."""
    core = LeaderCore(
        my_id=3, quorum=Quorum((1, 2, 3)), accepted_epoch=1, current_epoch=1, last_logged=z(1, 9),
        servers=frozenset((1, 2, 3, 4, 5, 6)), init_limit=5.0, sync_limit=1.0, now=0.0, history=logged(),
        max_snap_syncs=1, max_diff_syncs=1,
    )  # fmt: skip
    established(core)
    for conn, sid in ((11, 4), (12, 5)):
        join(core, conn, sid, now=1.0)
    (first,) = core.receive(11, m.AckEpoch(1, z(1, 5), 0), 1.1)
    assert isinstance(first, SyncLearner) and first.plan.mode == DIFF
    second = core.receive(12, m.AckEpoch(1, z(1, 6), 0), 1.1)  # a second DIFF of an observer: refused
    assert isinstance(second[-1], Close) and "try again" in second[-1].reason and 12 not in core.learners
    join(core, 13, 2, now=1.2)  # a follower is never throttled
    (follower,) = core.receive(13, m.AckEpoch(1, z(1, 6), 0), 1.2)
    assert isinstance(follower, SyncLearner)
    core.receive(11, m.AckNewLeader(z(1, 9)), 1.3)  # the first observer's sync is done
    join(core, 14, 5, now=1.4)
    (again,) = core.receive(14, m.AckEpoch(1, z(1, 6), 0), 1.4)
    assert isinstance(again, SyncLearner)


def test_a_stall_of_the_leader_is_not_blamed_on_its_learners() -> None:
    """Issue 17 (heartbeats judged in order): after this process stalls for more than syncLimit,
    its first tick comes before the learners' queued pings are read; it must not drop them (or
    step down) for a silence that was its own. Silence after the stall still counts."""
    core = leader()
    established(core)
    core.tick(0.9)
    effects = core.tick(4.0)  # stalled from 0.9 to 4.0: learner 1's pings are still queued
    assert not any(isinstance(e, Close) for e in effects) and 10 in core.learners
    core.tick(4.5)  # heard nothing since the stall ended: within syncLimit still
    with pytest.raises(RoleEnded, match="lost the quorum"):
        core.tick(5.2)


def test_a_streamed_sync_gives_the_learner_initlimit_from_its_last_piece() -> None:
    """A SNAP of a large tree takes a while to send; the learner's initLimit (to acknowledge
    NEWLEADER) counts from when its last piece went out, as Apache's socket timeout does."""
    core = leader()
    established(core)
    join(core, 11, 2, now=1.0)
    core.receive(11, m.AckEpoch(1, z(1, 5), 0), 1.0)  # its sync starts streaming

    def ticks(start: float, end: float) -> list[object]:
        effects: list[object] = []
        t = start
        while t <= end:
            core.receive(10, m.LearnerPing([]), t)  # learner 1 keeps the quorum
            effects += core.tick(t)
            t += 0.5
        return effects

    ticks(1.5, 5.5)
    core.sync_sent(11, 5.5)  # 4.5 s of streaming
    effects = ticks(6.0, 10.0)  # past initLimit (5 s) from the connect, within it from the last piece
    assert not any(isinstance(e, Close) and e.conn == 11 for e in effects) and 11 in core.learners
    effects = ticks(10.5, 11.0)  # initLimit after the last piece, no acknl: dropped
    assert Close(11, "no sync within initLimit") in effects
