"""Known-bad interleavings of ZAB as short scripts against the real cores, recovery and store
(zkpy.testing.interaction): Apache ZooKeeper's data-loss bugs ZOOKEEPER-1154, 2845, 3104, 3642,
3911 and 2872, and items 1, 3 and 5 of the ensemble-safety review. Each script is the bug
report's sequence of deliveries, disk writes and crashes; each ends with the harness's oracles
(one transaction per committed zxid, served trees committed, committed data on a quorum of
disks) and with what a client would check.

Each was checked by reverting its rule (on 79a44c1 plus this harness) and watching its script
fail: SNAP keeps snapshots above it (item 1); no TRUNC to the commit point (item 3); the
ackepoch of an already accepted epoch counted (item 5); a divergent suffix kept (1154); the
tree not rebuilt after a TRUNC (1154, item 3); the learner reporting its applied zxid rather
than its log's end (2845); acknl before the sync is durable (3104, 3911 and most others); a
SNAP held in memory only (3642, 3104, item 1); the old log dropped before the snapshot is
written (2872)."""

from __future__ import annotations

import pytest

from zkpy.replication import leader_core as lc
from zkpy.testing.interaction import Interaction


def running(voters: int = 3, commit_log_count: int = 1000) -> Interaction:
    """Server 1 leads epoch 1 with everyone, and /a is committed."""
    e = Interaction(voters=voters, commit_log_count=commit_log_count)
    e.lead(1, *range(2, voters + 1))
    e.settle()
    e.propose(1, "a")
    e.settle()
    return e


def handshake(e: Interaction, leader: int, *learners: int) -> None:
    """Discovery and the epoch for `learners` (connected to `leader`): infos, leaderinfos and
    ackepochs delivered, so the leader's sync plans are queued, nothing of them delivered."""
    for step in range(3):
        for learner in learners:
            if step % 2 == 0:
                e.deliver(learner, leader)
            else:
                e.deliver(leader, learner)


def test_zk1154_a_proposal_only_the_old_leader_logged_is_cut_from_it_when_it_rejoins() -> None:
    """ZOOKEEPER-1154: the leader logs /lost and crashes before anyone else has it; the others
    go on without it. Back, it must be truncated (and its tree, which recovery rebuilt with
    /lost, rebuilt without it), never keep /lost beside the new epoch."""
    e = running()
    e.propose(1, "lost")
    e.complete(1)  # only the leader's own log has it
    e.crash(1)
    e.lead(2, 3)
    e.settle()
    e.propose(2, "b")
    e.settle()
    e.restart(1)
    assert "lost" in e.tree(1)  # recovery replays the whole log
    e.follow(1, 2)
    e.settle()
    assert e.syncs[-1] == (2, 1, "trunc", e.committed_zxid("a"))
    assert e.tree(1) == e.tree(2) == {"a", "b"}
    e.check()


def test_zk2845_a_logged_proposal_nobody_else_got_is_truncated_even_if_the_tree_never_had_it() -> None:
    """ZOOKEEPER-2845: leader 3 logs /n (the proposal never leaves it), 1 and 2 restart and form
    epoch 2 without it, and 3 rejoins as their follower. Apache's follower reported the zxid its
    in-memory database had applied, got an empty DIFF and kept /n in its log, to serve it after
    its next restart. The learner reports where its log ends, so it is cut."""
    e = Interaction(voters=3)
    e.lead(3, 1, 2)
    e.settle()
    e.propose(3, "a")
    e.settle()
    e.propose(3, "n")
    e.complete(3)  # on 3's disk only
    e.drop_messages(3, 1)
    e.drop_messages(3, 2)
    for sid in (1, 2):
        e.crash(sid)
        e.restart(sid)
    e.tick(3, 6.0)  # no quorum heard within syncLimit: 3 steps down
    assert e.nodes[3].leader is None
    assert "n" not in e.tree(3)  # never applied: only logged
    e.lead(2, 1)
    e.settle()
    e.follow(3, 2)
    e.settle()
    assert e.syncs[-1] == (2, 3, "trunc", e.committed_zxid("a"))
    e.crash(3)
    e.restart(3)
    assert e.tree(3) == {"a"}
    e.check()


def test_zk3104_a_snap_learner_acks_newleader_only_once_the_snapshot_is_on_its_disk() -> None:
    """ZOOKEEPER-3104: a learner that needs a SNAP acknowledged NEWLEADER before the snapshot was
    durable, and proposals committed with its ack were lost when it crashed. Here 2 is down, so
    1 needs 3 (which missed the window: SNAP) for every commit."""
    e = running(commit_log_count=2)
    e.crash(3)
    for name in ("b", "c", "d", "e"):
        e.propose(1, name)
        e.settle()
    e.crash(2)
    e.restart(3)
    e.follow(3, 1)
    e.deliver(3, 1)
    e.deliver(1, 3)
    e.deliver(3, 1)  # ackepoch: the SNAP is planned
    e.deliver(1, 3)  # SNAP and NEWLEADER arrive
    assert e.syncs[-1][1:3] == (3, "snap")
    assert e.queued(3, 1) == []  # no acknl while the snapshot is only in memory
    (during,) = e.propose(1, "during")
    e.complete(1)
    e.deliver(1, 3)  # the proposal waits behind the sync
    e.crash(3)  # before the SNAP reached its disk
    assert during not in e.committed
    e.restart(3)
    e.follow(3, 1)
    e.settle()
    assert during in e.committed
    e.crash(3)
    e.restart(3)
    assert e.tree(3) == {"a", "b", "c", "d", "e", "during"}
    e.check()


def test_zk3642_a_snap_from_a_leader_that_dies_before_newleader_is_durable_before_it_counts() -> None:
    """ZOOKEEPER-3642: the leader dies right after SNAPping a learner; the learner had advanced
    its zxid without writing the snapshot, the next leader DIFFed it from there, and its next
    restart lost everything up to that zxid. Here the SNAP is on disk before anything else."""
    e = running(voters=3, commit_log_count=2)
    e.crash(3)
    for name in ("b", "c", "d"):
        e.propose(1, name)
        e.settle()
    e.restart(3)
    e.follow(3, 1)
    e.deliver(3, 1)
    e.deliver(1, 3)
    e.deliver(3, 1)
    e.deliver(1, 3)  # SNAP and NEWLEADER
    assert e.syncs[-1] == (1, 3, "snap", e.committed_zxid("d"))
    e.complete(3)  # the snapshot is written
    e.crash(1)  # before 3's NEWLEADER ack
    e.lead(2, 3)  # 3 reports the snapshot's zxid and is DIFFed from there
    e.settle()
    assert e.syncs[-1] == (2, 3, "diff", e.committed_zxid("d"))
    e.propose(2, "f")
    e.settle()
    e.crash(3)
    e.restart(3)
    assert e.tree(3) == {"a", "b", "c", "d", "f"}
    e.check()


def test_zk3911_diff_transactions_are_durable_before_newleader_is_acknowledged() -> None:
    """ZOOKEEPER-3911: followers logged a DIFF only after UPTODATE but acknowledged NEWLEADER
    before; a quorum crash right after the leader started serving lost committed data. Here
    every follower's acknl waits for its sync's write, and a crash of every server after the
    new leader is established keeps the whole history."""
    e = running()
    e.crash(3)
    e.propose(1, "b")
    e.settle()
    e.restart(3)
    e.crash(1)  # 2 has /b; 3 does not
    e.restart(1)
    e.lead(2, 3)
    handshake(e, 2, 3)
    e.deliver(2, 3)  # DIFF with /b and NEWLEADER
    assert e.syncs[-1] == (2, 3, "diff", e.committed_zxid("a"))
    assert e.queued(3, 2) == []  # no acknl before the DIFF is on 3's disk
    e.complete(2) if e.nodes[2].writes else None
    e.complete(3)
    e.deliver(3, 2)
    assert e.leader_of(2).phase == lc.BROADCAST
    for sid in (1, 2, 3):
        e.crash(sid)
    for sid in (1, 2, 3):
        e.restart(sid)
    assert e.tree(3) == {"a", "b"}
    e.check()


@pytest.mark.parametrize("crash_at", ["store writing snapshot", "store snapshot written"])
def test_zk2872_a_snap_interrupted_anywhere_in_its_install_recovers(crash_at: str) -> None:
    """ZOOKEEPER-2872: a learner crashing inside a SNAP install lost data. The snapshot is
    written whole before the old log is dropped; a crash before the snapshot recovers the old
    state, one between the two recovers the snapshot; either way the learner rejoins and ends
    with the committed tree."""
    e = running(commit_log_count=2)
    e.crash(3)
    for name in ("b", "c", "d"):
        e.propose(1, name)
        e.settle()
    e.restart(3)
    assert e.tree(3) == {"a"}
    e.follow(3, 1)
    for _ in range(2):
        e.deliver(3, 1)
        e.deliver(1, 3)
    assert e.syncs[-1][2:] == ("snap", e.leader_of(1).committed)
    assert e.complete(3, crash_at=crash_at) == "sync"
    e.restart(3)
    assert e.tree(3) in ({"a"}, {"a", "b", "c", "d"})
    e.follow(3, 1)
    e.settle()
    e.propose(1, "e")
    e.settle()
    assert e.tree(3) == {"a", "b", "c", "d", "e"}
    e.check()


def test_item1_a_snap_below_the_learners_own_snapshot_deletes_that_snapshot() -> None:
    """Ensemble safety item 1: L1 comes back with a tail /t only it logged and is elected; it
    SNAPs learner 5 at /t (5 now holds a snapshot with /t) and dies before a NEWLEADER quorum.
    2 is elected by the others and SNAPs 5 again, below that snapshot. At 5's next restart
    recovery must not load the stale snapshot with /t and replay the new epoch on top."""
    e = running(voters=5, commit_log_count=2)
    e.crash(5)
    for name in ("b", "c", "d"):
        e.propose(1, name)
        e.settle()
    e.propose(1, "t")
    e.complete(1)  # only 1 logs /t
    e.crash(1)
    e.restart(1)  # power cycle: /t is in its tree now
    e.restart(5)
    e.lead(1, 4, 5)
    handshake(e, 1, 4, 5)
    e.deliver(1, 5)  # SNAP at /t, NEWLEADER
    assert e.syncs[-1] == (1, 5, "snap", 1 << 32 | 5)
    e.complete(5)
    assert "t" in e.tree(5)
    e.crash(1)  # before a NEWLEADER quorum: /t is never committed
    e.lead(2, 3, 4, 5)
    e.settle()
    assert (2, 5, "snap", e.committed_zxid("d")) in e.syncs  # below 5's own snapshot
    e.propose(2, "g")
    e.settle()
    e.crash(5)
    e.restart(5)
    assert e.tree(5) == {"a", "b", "c", "d", "g"}
    e.check()


def test_item3_a_restarted_follower_is_cut_back_to_the_commit_point_before_it_serves() -> None:
    """Ensemble safety item 3: follower 3 logs proposal /p, crashes, restarts (its recovery
    applies /p) and rejoins the same leader. A DIFF from its last zxid would let it serve /p,
    which no quorum has; it is cut back to the commit point and /p comes again as a proposal."""
    e = running(voters=5)
    (p,) = e.propose(1, "p")
    e.deliver(1, 3)
    e.complete(3)  # 3 logged /p; its ack is lost with it
    e.crash(3)
    e.restart(3)
    assert "p" in e.tree(3)
    e.follow(3, 1)
    for _ in range(4):
        e.deliver(3, 1)
        e.deliver(1, 3)
    while e.nodes[3].writes:
        e.complete(3)
    assert e.syncs[-1] == (1, 3, "trunc", e.committed_zxid("a"))
    e.deliver(3, 1)
    e.deliver(1, 3)  # UPTODATE
    assert e.nodes[3].serving and p not in e.committed
    assert "p" not in e.tree(3)
    e.check()


def test_item5_one_learner_cannot_make_two_leaders_of_one_epoch() -> None:
    """Ensemble safety item 5: server 1 is needed by two would-be leaders, 4 (with 3) and 5
    (with 2). It is counted in 4's discovery, loses 4's epoch offer, accepts epoch 2 from 5 and
    leaves 5 before NEWLEADER, then is offered epoch 2 by 4 again. Its ackepoch to 4 must not
    count (it promised epoch 2 to 5), so 4 never reaches an epoch quorum and gives up within
    initLimit: two leaders of one epoch could commit different transactions at one zxid."""
    e = running(voters=5)
    e.lead(4, 3, 1)
    e.deliver(3, 4)
    e.deliver(1, 4)  # 4's discovery: {4, 3, 1}
    assert e.leader_of(4).epoch == 2
    e.deliver(4, 3)
    e.deliver(3, 4)  # 3 accepts epoch 2
    e.disconnect(1)  # 4's offer to 1 is lost with the link
    e.lead(5, 2, 1)
    handshake(e, 5, 2, 1)  # 5's discovery {5, 2, 1}: epoch 2, accepted by both
    assert e.leader_of(5).epoch == 2 and e.leader_of(5).phase == lc.SYNC
    e.disconnect(1)  # 1 leaves 5 before NEWLEADER
    e.follow(1, 4)
    handshake(e, 4, 1)
    assert e.leader_of(4).phase == lc.EPOCH  # 1's ack was not counted
    e.tick(4, 11.0)
    assert e.nodes[4].leader is None  # no epoch quorum within initLimit
    e.check()
