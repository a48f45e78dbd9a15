"""The interaction harness (zkpy.testing.interaction) against the glue it stands in for: a
script must not see what production cannot do, or a "violation" it reports is the harness's.
When a role ends, leader.py and learner.py end its writer task with it (a write in flight
either lands or not; its completion reaches no later role), peer.py cuts the history back to
the disk before the next election, and a RoleEnded raised by the leader's core ends the role."""

from __future__ import annotations

from zkpy.testing.interaction import Interaction


def running() -> Interaction:
    """Server 1 leads epoch 1 with 2 and 3, and /a is committed."""
    e = Interaction(voters=3)
    e.lead(1, 2, 3)
    e.settle()
    e.propose(1, "a")
    e.settle()
    return e


def test_a_leader_whose_role_ends_inside_its_own_fsync_starts_its_next_role_from_its_disk() -> None:
    """1 proposes /b, nobody gets it, and its role ends (no quorum heard) while its own fsync
    of /b is in flight. Its next role starts from what its disk holds, as peer.py's does. Fails
    before this change: the harness kept /b in 1's history and its write queued, so 1's next
    leadership DIFFed /b to 2 and committed it at establishment with nothing on 1's disk, and
    check() reported "committed ... durable only on [2]" after 1 crashed: a violation the glue
    cannot make."""
    e = running()
    a = e.committed_zxid("a")
    e.propose(1, "b")
    e.drop_messages(1, 2)
    e.drop_messages(1, 3)
    e.disconnect(2)
    e.disconnect(3)
    e.tick(1, 6.0)  # lost the quorum: the role ends inside the fsync of /b
    assert e.nodes[1].leader is None
    e.lead(1, 2)
    for _ in range(3):  # info, leaderinfo, ackepoch: 1 plans 2's sync
        e.deliver(2, 1)
        e.deliver(1, 2)
    e.complete(2)  # 2's sync is durable; 1's own disk is not touched
    e.deliver(2, 1)  # acknl: 1 establishes its epoch
    committed = e.leader_of(1).committed
    e.crash(1)
    e.check()
    assert committed == a


def test_a_learners_log_write_in_flight_dies_with_its_link() -> None:
    """2's log write of /b is in flight when its link drops; it connects again. Fails before
    this change: the old role's write completed into the new link's core, which acknowledged
    /b before its epoch handshake, and the leader closed the new link for that protocol error,
    so 2 never served again in the script."""
    e = running()
    e.propose(1, "b")
    e.deliver(1, 2)
    assert [kind for kind, _ in e.nodes[2].writes] == ["log"]
    e.disconnect(2)
    e.follow(2, 1)
    e.settle()
    assert e.nodes[2].serving
    assert e.tree(2) == e.tree(1) == {"a", "b"}
    e.check()


def test_a_learner_ahead_of_its_leader_ends_the_leaders_role() -> None:
    """3 missed /a and is made leader of 1 and 2, who are ahead of it: its core raises
    RoleEnded at their ackepoch, which the glue turns into the end of the role. Fails before
    this change: deliver() let RoleEnded escape from the script's step, with 3 still leading."""
    e = Interaction(voters=3)
    e.lead(1, 2)
    e.settle()
    e.propose(1, "a")
    e.settle()
    e.crash(1)
    e.restart(1)
    e.lead(3, 1, 2)
    e.settle()
    assert e.nodes[3].leader is None
    assert any("3: role ended: learner" in line for line in e.trace)
    e.lead(1, 2, 3)
    e.settle()
    assert e.tree(3) == {"a"}
    e.check()


def _b_logged_by_1_and_2_then_a_power_cut() -> Interaction:
    """/b is logged by 1 and 2 only, never committed; every server crashes; 1 and 2 restart
    (2's recovered tree holds /b) and 1 leads with /b in its history; 2's DIFF is empty and
    durable, its tree keeps /b, and 1 has not established its epoch yet."""
    e = running()
    e.propose(1, "b")
    e.deliver(1, 2)
    e.complete(2)
    e.complete(1)  # no ack delivered: /b is not committed
    for sid in (1, 2, 3):
        e.crash(sid)
    e.restart(1)
    e.restart(2)
    assert e.tree(2) == {"a", "b"}
    e.lead(1, 2)
    for _ in range(3):
        e.deliver(2, 1)
        e.deliver(1, 2)
    e.complete(2)
    return e


def test_a_learner_synced_by_a_leader_not_yet_established_may_hold_that_leaders_history() -> None:
    """1's NEWLEADER quorum commits /b a moment later, and 2 serves nothing before UPTODATE.
    Fails before this change: check() called 2's /b "beyond anything committed" between its
    sync and 1's establishment, a false alarm (found by random scripts of the harness, 5
    voters, seed 3147)."""
    e = _b_logged_by_1_and_2_then_a_power_cut()
    e.check()
    e.deliver(2, 1)  # acknl: 1 establishes, committing /b
    e.deliver(1, 2)
    assert e.nodes[2].serving and e.tree(2) == {"a", "b"}
    e.check()


def test_a_learner_whose_role_ends_before_its_leader_establishes_keeps_its_tree() -> None:
    """1's role ends before its epoch is established: 2 keeps the tree it recovered, /b and
    all, as a restarted server does, serving nothing until its next sync cuts or commits /b
    (here its own leadership commits it).
    Fails before this change (the same false alarm, 2 being neither linked nor recovered)."""
    e = _b_logged_by_1_and_2_then_a_power_cut()
    e.tick(1, 11.0)  # no quorum synced within initLimit
    assert e.nodes[1].leader is None and e.nodes[2].link is None
    e.check()
    e.lead(2, 1)  # 2 took NEWLEADER (currentEpoch 2): it is ahead of 1 now
    e.settle()
    assert e.tree(1) == e.tree(2) == {"a", "b"} and e.nodes[1].serving
    e.check()
