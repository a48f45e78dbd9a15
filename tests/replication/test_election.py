"""Fast leader election as a pure state machine: every interleaving is a test input, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.replication.election import (
    FOLLOWING,
    LEADING,
    LOOKING,
    NO_VOTE,
    OBSERVING,
    Election,
    Notification,
    Vote,
)


class Sim:
    """A network of Elections with an explicit in-flight list and virtual time."""

    def __init__(self, setups: dict[int, tuple[int, int]], observers: frozenset[int] = frozenset()) -> None:
        voters = frozenset(setups)
        self.setups = setups
        self.nodes = {sid: Election(sid, voters, observers) for sid in sorted(voters | observers)}
        self.now = 0.0
        self.inflight: list[tuple[int, Notification]] = []

    def start(self, sid: int, abstain: bool = False) -> None:
        epoch, zxid = self.setups.get(sid, (7, 7))  # observers' history must not matter
        self.inflight += self.nodes[sid].start(self.now, epoch, zxid, abstain=abstain)

    def run_for(self, steps: int) -> None:
        """Like run_fifo, for runs that must not settle."""
        for _ in range(steps):
            if self.inflight:
                self.deliver(0)
            elif not self.advance():
                return

    def deliver(self, i: int, keep: bool = False) -> None:
        dst, n = self.inflight[i] if keep else self.inflight.pop(i)
        self.inflight += self.nodes[dst].receive(self.now, n)

    def advance(self) -> bool:
        """Jump virtual time to the earliest deadline and tick whoever is due; False if none."""
        deadlines = [d for e in self.nodes.values() if (d := e.deadline()) is not None]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        for e in self.nodes.values():
            d = e.deadline()
            if d is not None and d <= self.now:
                self.inflight += e.tick(self.now)
        return True

    def run_fifo(self) -> None:
        for _ in range(10_000):
            if self.inflight:
                self.deliver(0)
            elif not self.advance():
                return
        raise AssertionError("election did not settle")

    def expected_leader(self) -> int:
        return max(self.setups, key=lambda sid: Vote(sid, self.setups[sid][1], self.setups[sid][0]).key())

    def assert_elected(self, leader: int) -> None:
        for sid, e in self.nodes.items():
            assert e.decided is not None, f"server {sid} undecided"
            assert e.decided.leader == leader
            if sid in self.setups:
                assert e.state == (LEADING if sid == leader else FOLLOWING)
            else:
                assert e.state == OBSERVING


def looking(sid: int, leader: int, zxid: int, peer_epoch: int, election_epoch: int = 1) -> Notification:
    return Notification(sid, LOOKING, Vote(leader, zxid, peer_epoch), election_epoch)


# -- vote order ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        (Vote(9, 100, 1), Vote(1, 0, 2)),  # epoch beats zxid and sid
        (Vote(9, 5, 2), Vote(1, 6, 2)),  # then zxid beats sid
        (Vote(1, 5, 2), Vote(2, 5, 2)),  # then sid breaks ties
        (NO_VOTE, Vote(0, 0, 0)),  # an observer's non-vote loses to everything
    ],
)
def test_vote_order(lower: Vote, higher: Vote) -> None:
    assert lower.key() < higher.key()


# -- single server and plain elections -----------------------------------------------------------


def test_single_voter_decides_itself_after_finalize_wait() -> None:
    e = Election(1, frozenset({1}))
    assert e.start(10.0, 3, 7) == []
    assert (e.state, e.logical_clock, e.deadline()) == (LOOKING, 1, pytest.approx(10.2))
    assert e.tick(10.1) == [] and e.state == LOOKING
    assert e.tick(10.2) == []
    assert (e.state, e.decided, e.deadline()) == (LEADING, Vote(1, 7, 3), None)


def test_start_broadcasts_to_voters_and_observers() -> None:
    e = Election(2, frozenset({1, 2, 3}), frozenset({4}))
    out = e.start(0.0, 1, 5)
    assert [dst for dst, _ in out] == [1, 3, 4]
    assert {n for _, n in out} == {Notification(2, LOOKING, Vote(2, 5, 1), 1)}


@pytest.mark.parametrize(
    ("setups", "leader"),
    [
        ({1: (1, 5), 2: (2, 0), 3: (1, 9)}, 2),  # highest epoch wins even with a short log
        ({1: (3, 10), 2: (3, 11), 3: (3, 10)}, 2),  # same epoch: longest log
        ({1: (0, 5), 2: (0, 5), 3: (0, 5)}, 3),  # all equal: highest sid
        ({1: (4, 4), 2: (0, 0), 3: (0, 0)}, 1),  # the lowest sid can win
    ],
)
def test_three_voters_elect_the_max(setups: dict[int, tuple[int, int]], leader: int) -> None:
    sim = Sim(setups)
    for sid in sim.nodes:
        sim.start(sid)
    sim.run_fifo()
    assert sim.expected_leader() == leader
    sim.assert_elected(leader)


def test_better_vote_during_finalize_wait_cancels_the_decision() -> None:
    e = Election(1, frozenset({1, 2, 3, 4, 5}))
    e.start(0.0, 0, 5)
    assert e.receive(0.0, looking(2, 1, 5, 0)) == []
    assert e.receive(0.0, looking(3, 1, 5, 0)) == []  # 2 and 3 agree with us: quorum, finalize at 0.2
    assert e.deadline() == pytest.approx(0.2)
    out = e.receive(0.1, looking(4, 4, 9, 0))  # something better arrives within the wait
    assert e.vote == Vote(4, 9, 0)
    assert out == [(dst, Notification(1, LOOKING, Vote(4, 9, 0), 1)) for dst in (2, 3, 4, 5)]
    assert e.tick(0.2) == out  # only a re-send: the decision was cancelled
    assert e.state == LOOKING and e.decided is None
    e.receive(0.3, looking(5, 4, 9, 0))  # 1, 4, 5: a quorum for the better vote
    assert e.deadline() == pytest.approx(0.5)
    assert e.tick(0.49) == [] and e.state == LOOKING
    e.tick(0.5)
    assert (e.state, e.decided) == (FOLLOWING, Vote(4, 9, 0))


@pytest.mark.parametrize(
    ("their_vote", "expected"),
    [
        (Vote(3, 0, 0), Vote(1, 5, 0)),  # ours is better: we keep our own initial vote
        (Vote(3, 9, 0), Vote(3, 9, 0)),  # theirs is better: adopt it
    ],
)
def test_higher_election_epoch_resets_the_round(their_vote: Vote, expected: Vote) -> None:
    e = Election(1, frozenset({1, 2, 3}))
    e.start(0.0, 0, 5)
    e.receive(0.0, looking(2, 2, 8, 0))  # adopted in round 1...
    assert e.vote == Vote(2, 8, 0)
    out = e.receive(0.0, Notification(3, LOOKING, their_vote, 4))  # ...but round 4 starts afresh
    assert e.logical_clock == 4 and e.vote == expected
    assert out == [(2, Notification(1, LOOKING, expected, 4)), (3, Notification(1, LOOKING, expected, 4))]
    if expected == their_vote:  # 3 and we agree: a quorum in round 4
        assert e.deadline() == pytest.approx(0.2)
    # A round-1 notification is stale: it is answered with our round, and does not count.
    stale = looking(2, expected.leader, expected.zxid, expected.peer_epoch, election_epoch=1)
    assert e.receive(0.1, stale) == [(2, Notification(1, LOOKING, expected, 4))]
    e.receive(0.1, Notification(2, LOOKING, expected, 4))
    assert e.deadline() is not None
    e.tick(10.0)
    assert e.decided == expected


def test_unknown_senders_and_own_echo_are_ignored() -> None:
    e = Election(1, frozenset({1, 2, 3}))
    e.start(0.0, 0, 0)
    assert e.receive(0.0, looking(9, 9, 99, 9)) == []
    assert e.receive(0.0, looking(1, 1, 99, 9)) == []
    assert e.vote == Vote(1, 0, 0)


def test_resend_backs_off_exponentially_up_to_the_cap() -> None:
    e = Election(1, frozenset({1, 2, 3}), finalize_wait=0.2, max_notification_interval=1.0)
    e.start(0.0, 0, 0)
    times = []
    for _ in range(5):
        d = e.deadline()
        assert d is not None
        times.append(round(d, 6))
        assert [dst for dst, _ in e.tick(d)] == [2, 3]
    assert times == [0.2, 0.6, 1.4, 2.4, 3.4]


# -- joining a running ensemble --------------------------------------------------------------


def report(sid: int, state: str, leader: int, election_epoch: int) -> Notification:
    return Notification(sid, state, Vote(leader, 100, 2), election_epoch)


@pytest.mark.parametrize(
    ("voters", "reports", "follows"),
    [
        # leader and one follower of three: a quorum, and the leader vouches
        ({1, 2, 3}, [report(2, FOLLOWING, 1, 5), report(1, LEADING, 1, 5)], True),
        ({1, 2, 3}, [report(1, LEADING, 1, 5), report(2, FOLLOWING, 1, 5)], True),
        # election epochs do not matter for a running ensemble
        ({1, 2, 3}, [report(2, FOLLOWING, 1, 9), report(1, LEADING, 1, 4)], True),
        # a follower alone: minority, and the leader never spoke
        ({1, 2, 3}, [report(2, FOLLOWING, 1, 5)], False),
        # of five, leader + one follower is a minority
        ({1, 2, 3, 4, 5}, [report(1, LEADING, 1, 5), report(2, FOLLOWING, 1, 5)], False),
        # a quorum of followers, but the leader never said LEADING (it may be dead)
        (
            {1, 2, 3, 4, 5},
            [report(2, FOLLOWING, 1, 5), report(4, FOLLOWING, 1, 5), report(5, FOLLOWING, 1, 5)],
            False,
        ),
        # ...until it does
        (
            {1, 2, 3, 4, 5},
            [
                report(2, FOLLOWING, 1, 5),
                report(4, FOLLOWING, 1, 5),
                report(5, FOLLOWING, 1, 5),
                report(1, LEADING, 1, 5),
            ],
            True,
        ),
        # reports naming different leaders do not add up
        (
            {1, 2, 3, 4, 5},
            [report(1, LEADING, 1, 5), report(2, FOLLOWING, 1, 5), report(4, FOLLOWING, 2, 5)],
            False,
        ),
        # the leader went back to LOOKING: its earlier LEADING no longer counts
        ({1, 2, 3}, [report(1, LEADING, 1, 5), looking(1, 1, 100, 2, 6), report(2, FOLLOWING, 1, 5)], False),
    ],
)
def test_joiner_learns_a_running_leader(voters: set[int], reports: list[Notification], follows: bool) -> None:
    e = Election(3, frozenset(voters))
    e.start(0.0, 0, 0)
    for n in reports:
        e.receive(0.0, n)
    if follows:
        assert (e.state, e.decided) == (FOLLOWING, Vote(1, 100, 2))
        assert e.logical_clock == reports[-1].election_epoch
    else:
        assert e.state == LOOKING and e.decided is None


def test_joiner_follows_a_leader_whose_followers_report_older_peer_epochs() -> None:
    """Server 1 joined leader 2 through the reports of an earlier election, so its vote says peer
    epoch 2 while leader 2's own says 3: a quorum follows 2 all the same (seed 37487 of the
    simulator: server 3 stayed out for good)."""
    e = Election(3, frozenset({1, 2, 3}))
    e.start(0.0, 3, 0x20000007B)
    e.receive(0.0, Notification(2, LEADING, Vote(2, 0x300000001, 3), 4))
    assert e.decided is None
    e.receive(0.0, Notification(1, FOLLOWING, Vote(2, 0x20000007B, 2), 3))
    assert e.decided is not None and e.decided.leader == 2 and e.state == FOLLOWING


def test_decided_server_answers_only_looking_peers() -> None:
    e = Election(3, frozenset({1, 2, 3}))
    e.start(0.0, 0, 0)
    e.receive(0.0, report(1, LEADING, 1, 5))
    e.receive(0.0, report(2, FOLLOWING, 1, 5))
    assert e.state == FOLLOWING and e.deadline() is None
    assert e.receive(1.0, looking(2, 2, 0, 0, 1)) == [(2, Notification(3, FOLLOWING, Vote(1, 100, 2), 5))]
    assert e.receive(1.0, report(2, FOLLOWING, 1, 5)) == []
    e.set_role(FOLLOWING)
    assert e.tick(100.0) == []


def test_restart_after_decision_begins_a_new_round() -> None:
    e = Election(1, frozenset({1}))
    e.start(0.0, 0, 0)
    e.tick(1.0)
    assert e.state == LEADING
    e.set_role(LOOKING)
    assert e.deadline() is None and e.decided is None
    e.start(2.0, 1, 50)
    assert (e.logical_clock, e.vote) == (2, Vote(1, 50, 1))
    e.tick(2.2)
    assert (e.state, e.decided) == (LEADING, Vote(1, 50, 1))
    with pytest.raises(ValueError):
        e.set_role("CONFUSED")


# -- observers -------------------------------------------------------------------------------


def test_observer_never_leads_and_learns_the_leader() -> None:
    sim = Sim({1: (0, 1), 2: (0, 3), 3: (0, 2)}, observers=frozenset({4}))
    for sid in sim.nodes:
        sim.start(sid)  # the observer starts with epoch 7, zxid 7: the best history, ignored
    assert sim.nodes[4].vote == NO_VOTE
    sim.run_fifo()
    sim.assert_elected(2)


def test_late_observer_learns_the_running_leader() -> None:
    sim = Sim({1: (0, 1), 2: (0, 3), 3: (0, 2)}, observers=frozenset({4}))
    for sid in (1, 2, 3):
        sim.start(sid)
    sim.inflight = [(dst, n) for dst, n in sim.inflight if dst != 4]  # it was down
    sim.run_fifo()
    assert sim.nodes[4].decided is None
    sim.start(4)
    sim.run_fifo()
    sim.assert_elected(2)


def test_observers_votes_never_count() -> None:
    e = Election(1, frozenset({1, 2, 3}), frozenset({4, 5}))
    e.start(0.0, 0, 0)
    # Observers (wrongly) claiming to vote for us get our proposal back but make no quorum.
    assert e.receive(0.0, looking(4, 1, 0, 0)) == [(4, Notification(1, LOOKING, Vote(1, 0, 0), 1))]
    e.receive(0.0, looking(5, 1, 0, 0))
    assert e.deadline() == pytest.approx(0.2)  # the resend, not a finalize
    e.tick(0.2)
    assert e.state == LOOKING


# -- a voter whose data was damaged abstains until it re-synced -------------------------------


def test_abstaining_voter_follows_the_others_and_never_counts() -> None:
    # Server 3's (lost) history would win; abstaining, it proposes nobody and follows 2.
    sim = Sim({1: (0, 1), 2: (0, 3), 3: (0, 9)})
    sent: list[Notification] = []
    for sid in sim.nodes:
        sim.start(sid, abstain=sid == 3)
    for _ in range(10_000):
        sent += [n for _, n in sim.inflight if n.sid == 3]
        if sim.inflight:
            sim.deliver(0)
        elif not sim.advance():
            break
    assert sim.nodes[1].decided == sim.nodes[2].decided == sim.nodes[3].decided == Vote(2, 3, 0)
    assert sim.nodes[3].state == FOLLOWING
    assert sent and all(n.vote == NO_VOTE for n in sent)


def test_abstaining_voter_and_one_other_make_no_quorum() -> None:
    """3 voters, one down, one abstaining: the last one must not be elected by counting the
    abstainer (its vote would carry a history shorter than what it acknowledged)."""
    sim = Sim({1: (0, 5), 2: (0, 9), 3: (0, 1)})
    sim.start(1)
    sim.start(3, abstain=True)
    sim.inflight = [(dst, n) for dst, n in sim.inflight if dst != 2]
    for _ in range(500):
        sim.inflight = [(dst, n) for dst, n in sim.inflight if dst != 2]  # server 2 is down
        if sim.inflight:
            sim.deliver(0)
        elif not sim.advance():
            break
    assert sim.nodes[1].decided is None and sim.nodes[3].decided is None
    assert sim.nodes[1].state == sim.nodes[3].state == LOOKING


def test_abstaining_voter_joins_a_running_ensemble() -> None:
    sim = Sim({1: (0, 1), 2: (0, 3), 3: (0, 9)})
    sim.start(1)
    sim.start(2)
    sim.inflight = [(dst, n) for dst, n in sim.inflight if dst != 3]
    sim.run_fifo()
    sim.start(3, abstain=True)
    sim.run_fifo()
    assert sim.nodes[3].decided == Vote(2, 3, 0) and sim.nodes[3].state == FOLLOWING


def test_abstaining_voter_ignores_stale_votes_for_itself() -> None:
    e = Election(3, frozenset({1, 2, 3}))
    e.start(0.0, 0, 0, abstain=True)
    e.receive(0.0, looking(1, 3, 9, 0))  # votes for it from before its data was lost
    e.receive(0.0, looking(2, 3, 9, 0))
    assert e.vote == NO_VOTE
    for t in (0.2, 0.4, 0.8, 1.6):
        e.tick(t)
    assert e.decided is None and e.state == LOOKING


def test_constructor_rejects_inconsistent_configs() -> None:
    for args in [(1, frozenset()), (4, frozenset({1, 2, 3})), (1, frozenset({1, 2}), frozenset({2}))]:
        with pytest.raises(ValueError):
            Election(*args)  # type: ignore[arg-type]


# -- wire form -------------------------------------------------------------------------------


def test_pack_round_trips() -> None:
    for n in [Notification(3, FOLLOWING, Vote(1, 2**63, 4), 9), Notification(4, OBSERVING, NO_VOTE, 1)]:
        assert n.pack()[0] == "vote"
        assert Notification.unpack(n.pack()) == n


@pytest.mark.parametrize(
    "msg",
    [
        [],
        ["vote"],
        ["hello", 1, LOOKING, 1, 0, 0, 1],
        ["vote", 1, LOOKING, 1, 0, 0],  # short
        ["vote", 1, LOOKING, 1, 0, 0, 1, 2],  # long
        ["vote", 1, "DANCING", 1, 0, 0, 1],
        ["vote", 1, b"LOOKING", 1, 0, 0, 1],
        ["vote", "1", LOOKING, 1, 0, 0, 1],
        ["vote", 1, LOOKING, 1.0, 0, 0, 1],
        ["vote", 1, LOOKING, 1, None, 0, 1],
        ["vote", True, LOOKING, 1, 0, 0, 1],
        ["vote", -1, LOOKING, 1, 0, 0, 1],
        ["vote", 1, LOOKING, -2, 0, 0, 1],
        ["vote", 1, LOOKING, 1, 0, 0, -1],
        "vote",
        None,
        {"vote": 1},
    ],
)
def test_malformed_packs_raise_value_error(msg: Any) -> None:
    with pytest.raises(ValueError):
        Notification.unpack(msg)


# -- any interleaving ------------------------------------------------------------------------


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    n_voters=st.sampled_from([1, 3, 5]),
    n_observers=st.integers(0, 1),
    histories=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=5, max_size=5),
    data=st.data(),
)
def test_any_interleaving_elects_the_max(
    n_voters: int, n_observers: int, histories: list[tuple[int, int]], data: st.DataObject
) -> None:
    setups = {sid: histories[sid - 1] for sid in range(1, n_voters + 1)}
    observers = frozenset(range(n_voters + 1, n_voters + 1 + n_observers))
    sim = Sim(setups, observers)
    order = data.draw(st.permutations(sorted(sim.nodes)), label="start order")
    for sid in order:
        sim.start(sid)
    duplicates = 20
    for _ in range(10_000):
        if sim.inflight:
            i = data.draw(st.integers(0, len(sim.inflight) - 1), label="deliver")
            keep = duplicates > 0 and data.draw(st.integers(0, 7), label="duplicate") == 0
            duplicates -= keep
            sim.deliver(i, keep=keep)
        elif not sim.advance():
            break
    else:
        raise AssertionError("election did not settle")
    sim.assert_elected(sim.expected_leader())
