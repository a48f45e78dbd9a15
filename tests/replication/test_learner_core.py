"""The learner's protocol exchange by exchange, without sockets or disks (as Apache's
Zab1_0Test scripts packets against one role)."""

from __future__ import annotations

import pytest

from zkpy.replication import messages as m
from zkpy.replication.learner_core import (
    BROADCAST,
    AcceptEpoch,
    AnswerSync,
    Apply,
    LearnerCore,
    Log,
    MakeCurrent,
    Pong,
    Refuse,
    Revalidated,
    RoleEnded,
    Send,
    Serve,
    SnapshotPiece,
    TakeSync,
)
from zkpy.tree.txn import Txn


def z(epoch: int, counter: int) -> int:
    return epoch << 32 | counter


def txn(zxid: int) -> Txn:
    return Txn(zxid, 0, 1, zxid & 0xFFFF, 1, b"body")


def core(accepted: int = 1, current: int = 1, last: int = z(1, 5)) -> LearnerCore:
    return LearnerCore(2, "participant", accepted, current, last, z(1, 2), 5.0, 1.0, now=0.0)


def synced(
    c: LearnerCore, mode: str = "diff", sent: list[int] | None = None, tree: int = z(1, 5)
) -> list[Txn]:
    """Drive a core through leaderinfo and syncdata; returns the sync's transactions."""
    c.start()
    c.receive(m.LeaderInfo(2), now=0.1)
    txns = [txn(x) for x in sent or []]
    effects = c.receive(m.SyncData(mode, tree, None, [t.pack() for t in txns]), now=0.2)
    assert effects == [TakeSync(mode, tree, None, txns)]
    return txns


def test_handshake_reports_epochs_and_where_the_log_ends() -> None:
    c = core()
    assert c.start() == [Send(m.Info(2, 1, "participant"))]
    assert c.receive(m.LeaderInfo(2), now=0.1) == [AcceptEpoch(2), Send(m.AckEpoch(1, z(1, 5), z(1, 2)))]


def test_an_epoch_already_accepted_is_acknowledged_without_being_counted() -> None:
    """Ensemble safety item 5: a learner offered the epoch it had already accepted (promised to
    another would-be leader) answered with its real currentEpoch, and that leader counted it too.
    As Apache's Learner.registerWithLeader it answers -1, and accepts nothing anew. Fails before
    this change."""
    c = core(accepted=2)
    c.start()
    assert c.receive(m.LeaderInfo(2), now=0.1) == [Send(m.AckEpoch(-1, z(1, 5), z(1, 2)))]
    assert c.state == "wait-sync"  # still synced by that leader, if it establishes without it


def test_an_epoch_older_than_accepted_ends_the_role() -> None:
    c = core(accepted=3)
    c.start()
    with pytest.raises(RoleEnded):
        c.receive(m.LeaderInfo(2), now=0.1)


@pytest.mark.parametrize("message", [m.NewLeader(2), m.Proposal([]), m.UpToDate(0), m.Commit(1)])
def test_out_of_order_messages_are_protocol_errors(message: list[object]) -> None:
    c = core()
    c.start()
    c.receive(m.LeaderInfo(2), now=0.1)
    with pytest.raises(ValueError):
        c.receive(message, now=0.2)


def test_newleader_is_acknowledged_only_after_the_sync_is_durable() -> None:
    c = core()
    sent = synced(c, sent=[z(1, 6), z(1, 7)])
    # NEWLEADER arrives while the DIFF is still being written: nothing is acknowledged yet.
    assert c.receive(m.NewLeader(2), now=0.3) == []
    effects = c.sync_taken(z(1, 5), sent, last_logged=z(1, 7))
    assert effects == [MakeCurrent(2), Send(m.AckNewLeader(z(1, 7)))]


def test_newleader_for_another_epoch_is_refused() -> None:
    c = core()
    synced(c)
    c.sync_taken(z(1, 5), [], last_logged=z(1, 5))
    with pytest.raises(ValueError):
        c.receive(m.NewLeader(3), now=0.3)


def broadcasting(c: LearnerCore, pending: list[Txn] | None = None) -> list[object]:
    synced(c)
    c.sync_taken(z(1, 5), pending or [], last_logged=z(1, 5) if not pending else pending[-1].zxid)
    c.receive(m.NewLeader(2), now=0.3)
    return list(c.receive(m.UpToDate(z(1, 5) if not pending else pending[-1].zxid), now=0.4))


def test_uptodate_applies_what_is_committed_then_serves() -> None:
    c = core()
    pending = [txn(z(1, 6)), txn(z(1, 7))]
    assert broadcasting(c, pending) == [Apply(pending), Serve()]
    assert c.state == BROADCAST


def test_proposals_are_logged_one_batch_at_a_time_and_acked_cumulatively() -> None:
    c = core()
    broadcasting(c)
    a, b, d = txn(z(2, 1)), txn(z(2, 2)), txn(z(2, 3))
    assert c.receive(m.Proposal([a.pack()]), now=1) == [Log([a])]
    assert c.receive(m.Proposal([b.pack()]), now=1) == []  # waits for the first fsync
    assert c.receive(m.Proposal([d.pack()]), now=1) == []
    assert c.logged([a]) == [Send(m.Ack(z(2, 1))), Log([b, d])]  # group commit: b and d together
    assert c.logged([b, d]) == [Send(m.Ack(z(2, 3)))]


def test_a_log_batch_is_capped_in_bytes() -> None:
    """What arrives during one fsync is the next batch, up to MAX_LOG_BATCH_BYTES (1 MiB): a slow
    disk's backlog went out as one 64 MiB write (a 43.7 s fsync in
    scripts/bench_slow_follower.py). Fails before this change (one batch of all five)."""
    c = core()
    broadcasting(c)
    big = [Txn(z(2, n), 0, 1, n, 1, b"x" * (768 * 1024)) for n in range(1, 6)]
    assert c.receive(m.Proposal([big[0].pack()]), now=1) == [Log(big[:1])]
    assert c.receive(m.Proposal([t.pack() for t in big[1:]]), now=1) == []
    assert c.logged(big[:1]) == [Send(m.Ack(z(2, 1))), Log(big[1:3])]  # 1.5 MiB: past 1, then cut
    assert c.logged(big[1:3]) == [Send(m.Ack(z(2, 3))), Log(big[3:5])]


def test_a_proposal_not_logged_within_synclimit_takes_this_server_out() -> None:
    """Ensemble reads are served only up to what this server has logged, so a disk that cannot
    follow served reads 25-48 s old (scripts/bench_slow_follower.py, syncLimit 10 s), and kept
    serving 38 s after the leader had dropped it: it did not read its link, so it never saw
    that. A proposal still unlogged syncLimit (plus two of this disk's recent log writes: one in
    flight, its own) after it arrived ends the role (Apache's leader drops such a follower,
    "transaction timeout"); a stall of this process is not the disk's. Fails before this change
    (no RoleEnded)."""
    c = core()
    broadcasting(c)
    a, b = txn(z(2, 1)), txn(z(2, 2))
    c.receive(m.Proposal([a.pack()]), now=1.0)
    c.receive(m.Proposal([b.pack()]), now=1.5)
    c.receive(m.LeaderPing(), now=1.9)
    assert c.tick(1.9) == []
    quick = core()
    broadcasting(quick)
    quick.receive(m.Proposal([a.pack()]), now=1.0)
    quick.logged([a], now=1.01)  # this disk writes in 10 ms
    quick.receive(m.Proposal([b.pack()]), now=1.5)
    quick.receive(m.LeaderPing(), now=4.4)
    assert quick.tick(4.4) == []  # b's write hangs: syncLimit and two writes of at most syncLimit
    with pytest.raises(RoleEnded, match=r"arrived 3\.1s ago is not yet logged here"):
        quick.tick(4.6)
    paused = core()
    broadcasting(paused)
    paused.receive(m.Proposal([a.pack()]), now=1.0)
    paused.tick(1.0)
    paused.receive(m.LeaderPing(), now=9.0)  # queued while this process was stopped
    assert paused.tick(9.0) == []  # stalled for 8 s: judged from now
    for now in (9.5, 10.0, 10.5, 11.0, 11.5, 12.0):
        paused.receive(m.LeaderPing(), now=now)
        assert paused.tick(now) == []
    with pytest.raises(RoleEnded, match="not yet logged"):
        paused.tick(12.1)


def test_a_disk_slower_per_write_than_synclimit_that_keeps_up_stays_in() -> None:
    """A disk whose writes take 0.2 s under a syncLimit of 0.1 s (a simulator configuration,
    swarm seed 90426) keeps up with the leader by group commit: its proposals wait one write in
    flight and their own, and it is not taken out (it was, every few ticks, and no write could
    commit). One that does not keep up is."""
    c = LearnerCore(2, "participant", 1, 1, z(1, 5), z(1, 2), 5.0, 0.1, now=0.0)
    broadcasting(c)
    in_flight: tuple[list[Txn], float] | None = None

    def take(effects: list[object], now: float) -> None:
        nonlocal in_flight
        for effect in effects:
            if isinstance(effect, Log):
                in_flight = (effect.txns, now)

    t = 1.0
    for n in range(1, 40):  # a proposal every 0.05 s; each write takes 0.2 s
        if in_flight is not None and t - in_flight[1] >= 0.2:
            batch, in_flight = in_flight[0], None
            take(c.logged(batch, now=t), t)
        take(c.receive(m.Proposal([txn(z(2, n)).pack()]), now=t), t)
        c.receive(m.LeaderPing(), now=t)
        assert c.tick(t) == []
        t += 0.05
    assert c.log_seconds >= 0.2
    with pytest.raises(RoleEnded, match="not yet logged"):  # then a write never completes
        for _ in range(40):
            c.receive(m.LeaderPing(), now=t)
            c.tick(t)
            t += 0.05


def test_a_commit_is_applied_only_once_the_transaction_is_durable_here() -> None:
    c = core()
    broadcasting(c)
    a = txn(z(2, 1))
    c.receive(m.Proposal([a.pack()]), now=1)
    assert c.receive(m.Commit(z(2, 1)), now=1) == []  # committed by others, not yet on our disk
    assert c.logged([a]) == [Send(m.Ack(z(2, 1))), Apply([a])]


def test_a_forwarded_sync_is_answered_once_its_point_is_applied() -> None:
    c = core()
    broadcasting(c)
    a = txn(z(2, 1))
    c.receive(m.Proposal([a.pack()]), now=1)
    assert c.receive(m.SyncReply(7, 3, z(2, 1)), now=1) == []
    c.logged([a])
    assert c.receive(m.Commit(z(2, 1)), now=1) == [Apply([a]), AnswerSync(7, 3)]
    assert c.receive(m.SyncReply(7, 4, z(2, 1)), now=1) == [AnswerSync(7, 4)]


def test_pings_refusals_and_silence() -> None:
    c = core()
    broadcasting(c)
    assert c.receive(m.LeaderPing(), now=2.0) == [Pong()]
    assert c.receive(m.Refused(7, 5, -101, z(2, 0)), now=2.0) == [Refuse(7, 5, -101, z(2, 0))]
    assert c.tick(2.9) == []
    with pytest.raises(RoleEnded):
        c.tick(3.1)  # syncLimit (1 s) without a word from the leader


def test_revalidation_answers_go_to_their_own_questions() -> None:
    """Questions are numbered in the order asked (the leader counts them the same way); the
    leader answers a link's questions in order, so each answer about a session is for its
    oldest question still out, and a second connect's question gets its own answer, never
    the first one's. An answer nobody asked for is a protocol error. Fails before this change:
    the core had no revalidate (the glue matched answers per session)."""
    c = core()
    broadcasting(c)
    assert c.revalidate(7, 4000) == (1, [Send(m.RevalidateSession(7, 4000))])
    assert c.revalidate(8, 4000) == (2, [Send(m.RevalidateSession(8, 4000))])
    assert c.revalidate(7, 3000) == (3, [Send(m.RevalidateSession(7, 3000))])
    assert c.receive(m.Revalidated(8, True), now=1) == [Revalidated(8, True, 2)]
    assert c.receive(m.Revalidated(7, False), now=1) == [Revalidated(7, False, 1)]
    assert c.receive(m.Revalidated(7, True), now=1) == [Revalidated(7, True, 3)]
    with pytest.raises(ValueError):
        c.receive(m.Revalidated(7, True), now=1)


def test_a_claim_is_withdrawn_only_if_nothing_was_forwarded_under_it() -> None:
    """The learner's side of owners.py. A connection that closes while its question is out
    withdraws the claim at once (the relinquish follows the question on the link) and its
    answer is dropped; one that closes after a "valid" answer withdraws it if nothing of the
    session was forwarded since. A claim some request went to the leader under is never
    withdrawn (the leader may have ordered that request as the owner's), nor one the leader
    did not make (an invalid answer), nor one twice. Fails before this change: the core has no
    revalidate, forwarded or withdraw."""
    c = core()
    broadcasting(c)
    c.revalidate(7, 4000)
    assert c.withdraw(7, 1) == [Send(m.Relinquish(7, 1))]  # the client gave up on the handshake
    assert c.withdraw(7, 1) == []
    assert c.receive(m.Revalidated(7, True), now=1) == []  # the answer to a closed connection
    c.revalidate(7, 4000)
    assert c.receive(m.Revalidated(7, True), now=1) == [Revalidated(7, True, 2)]
    assert c.withdraw(7, 2) == [Send(m.Relinquish(7, 2))]  # it left before writing anything
    c.revalidate(7, 4000)
    c.receive(m.Revalidated(7, True), now=1)
    c.forwarded(8)  # another session's write changes nothing for this one
    c.forwarded(7)  # a write of this session went to the leader under claim 3
    assert c.withdraw(7, 3) == []
    c.revalidate(7, 4000)
    c.receive(m.Revalidated(7, False), now=1)
    assert c.withdraw(7, 4) == []  # the session was gone: the leader made no claim


def test_the_sync_waits_for_initlimit_not_synclimit() -> None:
    c = core()
    synced(c)
    assert c.tick(4.0) == []  # a large SNAP may take longer than syncLimit
    with pytest.raises(RoleEnded):
        c.tick(5.3)


def test_a_stall_of_this_server_is_not_blamed_on_the_leader() -> None:
    """A follower resumed after SIGSTOP logged "leader silent for 32.1s" although it was the one
    paused (the first-hour issue's list): a gap between its own ticks longer than the limit says
    so. Fails before this change (the message blamed the leader)."""
    c = core()
    synced(c)
    c.tick(0.5)
    with pytest.raises(RoleEnded, match=r"this server was stalled for 31.6s \(paused\?\)"):
        c.tick(32.1)
    quiet = core()
    synced(quiet)
    quiet.tick(5.0)
    with pytest.raises(RoleEnded, match=r"leader silent for 5\.3s"):
        quiet.tick(5.5)


def test_a_sync_sent_in_pieces_is_taken_whole() -> None:
    """Issue 17 (DIFF in chunks): a large sync's transactions come ahead of its SyncData in
    SyncTxns pieces; the learner takes them all, in order, with the SyncData's own, as one sync
    that is durable before NEWLEADER is acknowledged."""
    c = core()
    c.start()
    c.receive(m.LeaderInfo(2), now=0.1)
    first, second, last = txn(z(1, 6)), txn(z(1, 7)), txn(z(1, 8))
    assert c.receive(m.SyncTxns([first.pack()]), now=0.2) == []
    assert c.receive(m.SyncTxns([second.pack()]), now=0.2) == []
    effects = c.receive(m.SyncData("diff", z(1, 5), None, [last.pack()]), now=0.3)
    assert effects == [TakeSync("diff", z(1, 5), None, [first, second, last])]
    assert c.receive(m.NewLeader(2), now=0.4) == []  # held until the sync is durable


# -- a streamed SNAP (issue 17), as breaker4 probed it ----------------------------------------------


def test_snapshot_pieces_are_taken_only_while_waiting_for_the_sync_and_complete_a_streamed_snap() -> None:
    c = core()
    c.start()
    with pytest.raises(ValueError):  # before the epoch: not yet
        core().receive(m.SnapshotChunk(b"ZKPS"), now=0.05)
    c.receive(m.LeaderInfo(2), now=0.1)
    assert c.receive(m.SnapshotChunk(b"ZKPS"), now=0.11) == [SnapshotPiece(b"ZKPS")]
    assert c.receive(m.SnapshotChunk(b"rest"), now=0.12) == [SnapshotPiece(b"rest")]
    effects = c.receive(m.SyncData("snap", z(2, 0), None, []), now=0.2)
    assert effects == [TakeSync("snap", z(2, 0), None, [])]
    c.sync_taken(z(2, 0), [], z(2, 0))
    c.receive(m.NewLeader(2), now=0.3)
    c.receive(m.UpToDate(z(2, 0)), now=0.4)
    with pytest.raises(ValueError):  # in broadcast: a stray piece is a protocol error
        c.receive(m.SnapshotChunk(b"late"), now=0.5)


def test_a_streamed_snap_without_pieces_is_refused() -> None:
    c = core()
    c.start()
    c.receive(m.LeaderInfo(2), now=0.1)
    with pytest.raises(ValueError):
        c.receive(m.SyncData("snap", z(2, 0), None, []), now=0.2)


@pytest.mark.parametrize(
    "sync", [m.SyncData("diff", z(1, 5), None, []), m.SyncData("trunc", z(1, 3), None, [])]
)
def test_snapshot_pieces_followed_by_another_sync_are_refused(sync: m.SyncData) -> None:
    """breaker4: a leader that sends SnapshotChunks and then a DIFF or TRUNC broke the protocol;
    the learner took the DIFF and left the pieces' temp file open and unused (the glue's receiver
    was handed to take_sync, which ignores it for a DIFF, and never aborted). Refused now, so the
    role ends and the glue aborts the receiver. Fails before breaker4's fix: TakeSync is returned."""
    c = core()
    c.start()
    c.receive(m.LeaderInfo(2), now=0.1)
    c.receive(m.SnapshotChunk(b"ZKPS"), now=0.11)
    with pytest.raises(ValueError):
        c.receive(sync, now=0.2)
