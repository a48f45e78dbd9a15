"""Session ownership under client moves (ensemble safety item 4, with the sessions issue's rules):
scripted simulations of a client that leaves a learner while something is still on its way and
then comes back to it.

FIFO client order is ZooKeeper's first guarantee: a session's writes take effect in the order
sent, and a write whose outcome the client never learned must not take effect after a later one
that did. The leader enforces it across moves by session owners: the server a client resumes its
session on asks the leader (revalidation) and becomes the owner; forwards from any other server
are refused with SessionMoved. These scenarios check the learner's side of that round trip:
what the session's old connection there may still do while the question is out, which answer
goes to which question, a session the learner has not applied yet, and what the connection left
on the old server gets (compared with Apache 3.8). Each ends with test_sim_regressions' finish
(heal, write, check trees, acknowledged writes and disks, power-cycle, check again).
"""

from __future__ import annotations

from collections.abc import Hashable

import pytest
import trio
from test_sim_regressions import Scenario, caught_up, finish

from zkpy.errors import Code
from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode, PathRequest, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.jute.records import ConnectRequest
from zkpy.replication.owners import SessionOwners
from zkpy.replication.serving import EnsembleServer
from zkpy.server.connection import ClientConnection
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.simclient import ConnectionLost, SimClient
from zkpy.testing.workload import new_client

# (virtual time, the learner that asked) for every revalidation the leader answered
Revalidations = list[tuple[float, int]]


@pytest.fixture
def revalidations(monkeypatch: pytest.MonkeyPatch) -> Revalidations:
    """Record each revalidation as the leader takes it (it makes the asking server the owner)."""
    seen: Revalidations = []
    revalidated = EnsembleServer.revalidated

    def recording(self: EnsembleServer, session_id: int, owner: int, *claim: Hashable) -> bool:
        seen.append((trio.current_time(), owner))
        return revalidated(self, session_id, owner, *claim)

    monkeypatch.setattr(EnsembleServer, "revalidated", recording)
    return seen


def asked_by(revalidations: Revalidations, sid: int, since: float) -> bool:
    return any(owner == sid and t > since for t, owner in revalidations)


def assert_everywhere(cluster: SimCluster, path: str, value: bytes, why: str) -> None:
    for sid, server in cluster.servers.items():
        assert server.peer is not None
        data = server.peer.tree.nodes[path].data
        assert data == value, f"s{sid} has {path}={data!r} {why}"


def waiting(cluster: SimCluster, sid: int) -> set[ClientConnection]:
    """The connections whose ConnectRequest server `sid` has read and not answered yet."""
    peer = cluster.servers[sid].peer
    server = None if peer is None else peer.serving
    return (
        set()
        if server is None
        else {c for c in server.connections if c.packets_received and not c.session_id}
    )


def handshakes_waiting(cluster: SimCluster, sid: int) -> int:
    return len(waiting(cluster, sid))


# -- the old connection on the server a client comes back to ---------------------------------


async def give_up_on(client: SimClient, sid: int) -> None:
    """The client tries server `sid` and gives up on the handshake after 0.05 s (its connect and
    request timeouts are 3 s again afterwards)."""
    client.servers = [(f"s{sid}", CLIENT_PORT)]
    client.request_timeout = client.connect_timeout = 0.05  # the handshake waits as long
    with pytest.raises(ConnectionLost):
        await client.connect(attempts=1)
    client.request_timeout = client.connect_timeout = 3.0


def two_learners(cluster: SimCluster, observer_first: bool) -> tuple[int, int]:
    """Two servers other than the leader; the first is the observer if asked (the last sid)."""
    learners = sorted(sid for sid in cluster.servers if sid != cluster.leader())
    return (learners[-1], learners[0]) if observer_first else (learners[0], learners[1])


def write_held_on_the_old_connection(revalidations: Revalidations, observer: bool = False) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        old, new = two_learners(cluster, observer)
        client = new_client(cluster, "mover")
        client.servers = [(f"s{old}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        # The client's /k=1 to F1 is slow on the client's own link (a retransmission, a stalled
        # NAT): it reaches F1 0.3 s later, after the client gave up on F1. Nothing tells F1 that
        # the client left: it still holds the connection (the client's FIN comes after /k=1).
        cluster.network.delay_spike(0.3, 0.001, ["mover"])
        client.request_timeout = 0.05
        client.connect_timeout = 0.05  # the handshake waits as long
        stale = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert stale.outcome == "unknown"
        cluster.network.end_spikes()
        held_until = stale.invoked + 0.3
        client.request_timeout = 3.0
        client.connect_timeout = 3.0  # the handshake waits as long
        client.servers = [(f"s{new}", CLIENT_PORT)]
        await client.connect()
        moved = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"2", -1), "/k", b"2")
        assert moved.outcome == "ok"
        acknowledged = trio.current_time()
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "F1 has /k=2")
        # The client comes back to F1, which asks the leader to revalidate the session; the
        # answer is slow (the leader's link to F1 holds it for a moment, well within syncLimit).
        cluster.network.cut(f"s{leader}", f"s{old}")
        client.servers = [(f"s{old}", CLIENT_PORT)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.connect)
            await cluster.wait_until(
                lambda: asked_by(revalidations, old, acknowledged), 1.0, "F1 revalidated"
            )
            # The case is reached: F1 is the owner again before the old /k=1 reaches it.
            assert trio.current_time() < held_until, "the schedule no longer reaches the case"
            await trio.sleep_until(held_until + 0.01)  # the old /k=1 is at F1 (the link's delay)
            cluster.network.heal()
        # A later write of the client, acknowledged: whatever reached the leader before it has
        # been ordered by now.
        after = await client.record("create", OpCode.CREATE, CreateRequest("/after", b"", OPEN, 0), "/after")
        assert after.outcome == "ok"
        await cluster.wait_until(lambda: caught_up(cluster), 10.0, "every server caught up")
        assert_everywhere(cluster, "/k", b"2", "after the client's acknowledged /k=2")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [51, 52, 53])
def test_a_write_held_on_the_old_connection_is_not_applied_after_the_client_returns(
    seed: int, revalidations: Revalidations
) -> None:
    """FIFO client order across a move back. The client sets /k=1 through F1; the bytes are
    slow on the client's own link, so it gives up, moves to F2 and sets /k=2 (acknowledged),
    then comes back to F1. F1 asks the leader to revalidate the session, which makes F1 the owner
    again; while the answer is on its way the old /k=1 arrives on the session's old connection,
    which F1 still reads, and is forwarded: the leader, seeing its owner, applies /k=1 after the
    acknowledged /k=2. Apache's processConnectRequest closes the session's other connections on
    that server (serverCnxnFactory.closeSession, CLIENT_RECONNECT) before it revalidates.
    Fails on 93912ca: /k=1 on every server, on all three seeds."""
    simulate(seed, write_held_on_the_old_connection(revalidations), voters=3)


@pytest.mark.parametrize("seed", [54, 55])
def test_the_same_through_an_observer(seed: int, revalidations: Revalidations) -> None:
    """The case above with an observer as the server the client leaves and comes back to (an
    observer forwards and revalidates as a follower does). Fails on 93912ca: /k=1."""
    simulate(seed, write_held_on_the_old_connection(revalidations, observer=True), voters=3, observers=1)


# -- which answer goes to which question -------------------------------------------------------


def answer_to_an_earlier_question(revalidations: Revalidations, observer: bool = False) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow, other = two_learners(cluster, observer)
        client = new_client(cluster, "mover")
        client.servers = [(f"s{other}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "F1 has /k")
        # The leader's answers to F1 are slow for a moment (well within syncLimit). The client
        # tries F1: F1 asks the leader, which makes F1 the owner, but the client gives up before
        # the answer is back and goes back to F2, which asks too and becomes the owner. (It
        # writes nothing there: F1 could not take it back before it has the commit, which comes
        # after the answer on the leader's link.)
        started = trio.current_time()
        cluster.network.cut(f"s{leader}", f"s{slow}")
        await give_up_on(client, slow)
        assert asked_by(revalidations, slow, started)
        client.servers = [(f"s{other}", CLIENT_PORT)]
        await client.connect()
        assert asked_by(revalidations, other, started)
        # The client comes back to F1 while F1's first question is still unanswered. The answer
        # to that question (asked before F2 became the owner) must not stand for this one.
        back = trio.current_time()
        before = waiting(cluster, slow)  # the handshake the client gave up on, if F1 still holds it
        client.servers = [(f"s{slow}", CLIENT_PORT)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.connect)
            await cluster.wait_until(lambda: waiting(cluster, slow) - before, 1.0, "the handshake at F1")
            cluster.network.heal()
        assert client.session_id, "the session lives: the client resumed it on F1"
        # The client's next write through F1 must be taken, as on Apache, where every connect
        # sends its own REVALIDATE (Learner.validateSession) and the leader answers each in turn.
        write = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"2", -1), "/k", b"2")
        assert write.outcome == "ok", (
            f"the client's write through F1 was refused with error {write.err}; owner questions "
            f"from F1 since the client came back: {[r for r in revalidations if r[0] > back]}"
        )
        await cluster.wait_until(lambda: caught_up(cluster), 10.0, "every server caught up")
        assert_everywhere(cluster, "/k", b"2", "after the client's acknowledged /k=2")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [61, 62, 63])
def test_a_client_back_on_a_learner_with_a_question_pending_can_write(
    seed: int, revalidations: Revalidations
) -> None:
    """Liveness of session moves. A learner asked the leader once per session and handed the
    one answer to every connection waiting for it. The client resumes its session on F1, whose
    question makes F1 the owner, but gives up before the answer is back (the leader's link to F1
    is slow for a moment), resumes it on F2 (now the owner), then comes back to F1 while that
    first question is still out. F1 asked nothing more and took the old answer for the new
    connection, while the leader had last made F2 the owner: the client's writes through F1 are
    refused with SessionMoved, and nothing makes F1 the owner again until the client leaves it.
    Apache's learner sends a REVALIDATE for every connect. Fails on 93912ca: the write through
    F1 is answered -118 (SessionMoved) on all three seeds."""
    simulate(seed, answer_to_an_earlier_question(revalidations), voters=3)


@pytest.mark.parametrize("seed", [64, 65])
def test_the_same_back_on_an_observer(seed: int, revalidations: Revalidations) -> None:
    """The case above with an observer as the server the client comes back to. Fails on
    93912ca: SessionMoved."""
    simulate(seed, answer_to_an_earlier_question(revalidations, observer=True), voters=3, observers=1)


# -- a session the learner has not heard of yet --------------------------------------------------


def fresh_session_to_a_lagging_learner(revalidations: Revalidations) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        first, lagging = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        # F2 lags for a moment (the leader's link to it holds what it sends, within syncLimit).
        cluster.network.cut(f"s{leader}", f"s{lagging}")
        client = new_client(cluster, "newcomer")
        client.servers = [(f"s{first}", CLIENT_PORT)]
        await client.connect()  # a new session, committed by the leader and F1
        session = client.session_id
        peer = cluster.servers[lagging].peer
        assert peer is not None and session not in peer.tree.sessions, "F2 already has the session"
        # F1 goes away before the client sent anything; the client resumes its session on F2,
        # which has not applied the session's creation yet. The client has seen no zxid of it
        # (a ConnectResponse carries none), so F2 is not "behind" the client.
        client.servers = [(f"s{lagging}", CLIENT_PORT)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.connect)
            await cluster.wait_until(
                lambda: handshakes_waiting(cluster, lagging) == 1, 1.0, "the handshake at F2"
            )
            cluster.network.heal()
        # Apache's learner asks the leader (Learner.validateSession), which knows the session;
        # its password is checked against the session id alone (checkPasswd), not the tree.
        assert client.session_id == session, "F2 told the client that its live session had expired"
        write = await client.record("create", OpCode.CREATE, CreateRequest("/n", b"", OPEN, 0), "/n")
        assert write.outcome == "ok"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [71, 72, 73])
def test_a_new_session_resumed_on_a_lagging_learner_is_not_expired(
    seed: int, revalidations: Revalidations
) -> None:
    """A client's session is created through F1; before it sends anything it moves to F2, which
    lags (it has not applied the session's creation yet) though it is not behind the client (a
    ConnectResponse carries no zxid). F2 looked the session up in its own tree, found nothing,
    and answered "expired": the client lost a live session (and waits for a new one, while the
    old one's ephemerals, if any, stay until its timeout). Apache's learner asks the leader
    before deciding. Fails on 93912ca: SessionExpired at the connect on all three seeds."""
    simulate(seed, fresh_session_to_a_lagging_learner(revalidations), voters=3)


# -- the server a session moved away from ------------------------------------------------------


def second_connection_elsewhere() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        first, second = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        old = new_client(cluster, "old")
        old.servers = [(f"s{first}", CLIENT_PORT)]
        await old.connect()
        await old.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        # The same session is resumed through F2 (a second process holding the session's id and
        # password, as in Apache's session-moved tests): F2 is its owner now, while the first
        # connection stays open on F1.
        moved = new_client(cluster, "moved")
        moved.session_id, moved.password, moved.last_zxid = old.session_id, old.password, old.last_zxid
        moved.servers = [(f"s{second}", CLIENT_PORT)]
        await moved.connect()
        assert moved.session_id == old.session_id
        write = await old.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert write.err == int(Code.SESSION_MOVED), (
            f"a write through F1 was answered {write.outcome} ({write.err})"
        )
        # A sync orders nothing: answered, as on Apache (see the test's docstring).
        err, _, _ = await old.call(OpCode.SYNC, PathRequest("/k"), "/k")
        assert err == 0, f"sync through the old server answered {err}"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [81, 82])
def test_the_connection_left_on_the_old_server_gets_session_moved_for_writes_only(seed: int) -> None:
    """A session resumed through F2 while its first connection stays open on F1 (Apache's
    session-moved case): F2 owns it, so a write through F1 is refused with SessionMoved. A sync
    through F1 is answered 0, as on Apache 3.8: its PrepRequestProcessor does run checkSession
    for a learner's sync, but ProposalRequestProcessor hands every LearnerSyncRequest to
    Leader.processSync whatever that check said, so the follower answers it (zkpy's leader
    answers a forwarded sync without a check). Fails with the owner check removed (serving.py
    check_session's SessionMoved line): the write through F1 is answered 0."""
    simulate(seed, second_connection_elsewhere(), voters=3)


# -- a question that reaches the leader late -----------------------------------------------------


def late_question_from_a_server_the_client_left(
    revalidations: Revalidations,
    observer: bool = False,
    back_to_leader: bool = False,
    slow_answer: bool = False,
) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow, home = two_learners(cluster, observer)
        if back_to_leader:
            home = leader
        client = new_client(cluster, "flapper")
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "F1 has /k")
        # The client tries F1, whose question to the leader is held on F1's link for a moment
        # (within syncLimit); it gives up and resumes its session on F2 again, which asks too.
        started = trio.current_time()
        cluster.network.cut(f"s{slow}", f"s{leader}")
        await give_up_on(client, slow)
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        assert not asked_by(revalidations, slow, started)
        assert back_to_leader or asked_by(revalidations, home, started)
        if slow_answer:
            # The leader's answer to F1 will be slow too: F1 cannot wait for it to learn that
            # its client is gone (well within syncLimit: the leader's pings are as late).
            cluster.network.delay_one_way(f"s{leader}", f"s{slow}", cluster.sync_limit_s / 3, 1.0)
        cluster.network.heal()  # F1's question arrives now: the leader makes F1 the owner
        await cluster.wait_until(lambda: asked_by(revalidations, slow, started), 1.0, "F1's late question")
        write = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert write.outcome == "ok", f"the client's write through F2, where it is, was answered {write.err}"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [91, 92])
def test_a_late_question_from_a_server_the_client_left_does_not_take_the_session(
    seed: int, revalidations: Revalidations
) -> None:
    """Liveness of session moves. The client tries F1, whose revalidation is slow to reach the
    leader; it gives up, resumes its session on F2 (the owner), and then F1's question arrives
    and makes F1 the owner: every write the client sent through F2 was refused with SessionMoved
    until it reconnected for another reason (neither Apache's client nor zkpy's reconnects on
    SessionMoved). Questions from different learners are not ordered with each other; only the
    client knows which connect came last. Apache 3.8 shares it (by reading: its LearnerHandler's
    REVALIDATE sets the owner to whichever learner asked last). Now F1 sees the client close the
    connection whose handshake waits, and withdraws the claim (a relinquish behind its question on
    the same link), and the leader's owner falls back to F2 (owners.py). Fails before this change
    (on 64955c5): the write is answered -118 on both seeds."""
    simulate(seed, late_question_from_a_server_the_client_left(revalidations), voters=3)


@pytest.mark.parametrize("seed", [93, 94])
def test_a_late_question_whose_answer_is_slow_too(seed: int, revalidations: Revalidations) -> None:
    """The case above with the leader's answer to F1 slow as well (a third of syncLimit). A
    learner that learned of its client's leaving only when the answer came (its connection reads
    nothing while the handshake waits, as Apache's) would withdraw the claim a round trip late,
    and the client's write through F2 in the meantime is refused. F1 notices the close while the
    question is out, so the relinquish is on the link right behind the question. Fails with
    connection.py's read during the handshake removed (_await_handshake waiting only): -118."""
    simulate(seed, late_question_from_a_server_the_client_left(revalidations, slow_answer=True), voters=3)


@pytest.mark.parametrize("seed", [95, 96])
def test_a_late_question_from_an_observer_after_the_client_went_back_to_the_leader(
    seed: int, revalidations: Revalidations
) -> None:
    """The same with an observer as the server whose question is late, and the leader as the
    server the client goes back to: the leader's own connection claims the session at once (no
    question), and the observer's withdrawn claim gives it back to the leader. Fails before this change (on 64955c5): -118."""
    scenario = late_question_from_a_server_the_client_left(revalidations, observer=True, back_to_leader=True)
    simulate(seed, scenario, voters=3, observers=1)


def withdrawn_claim_with_a_write_held_elsewhere(revalidations: Revalidations) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        first, slow, last = sorted(sid for sid in cluster.servers if sid != leader)  # F1, F2, the observer
        client = new_client(cluster, "mover")
        client.servers = [(f"s{first}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "every server has /k")
        # The client's /k=1 through F1 is slow on the client's own link: it reaches F1 0.8 s
        # later, on the connection F1 still holds. The client gives up on it.
        cluster.network.delay_spike(0.8, 0.001, ["mover"])
        client.request_timeout = 0.05
        stale = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert stale.outcome == "unknown"
        cluster.network.end_spikes()
        held_until = stale.invoked + 0.8
        # It tries F2, whose question is held on F2's link; it gives up there too.
        started = trio.current_time()
        cluster.network.cut(f"s{slow}", f"s{leader}")
        await give_up_on(client, slow)
        # It resumes the session on the observer and sets /k=2 there, acknowledged.
        client.servers = [(f"s{last}", CLIENT_PORT)]
        await client.connect()
        moved = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"2", -1), "/k", b"2")
        assert moved.outcome == "ok"
        # F2's late question, and its relinquish, reach the leader; then the old /k=1 reaches F1,
        # which forwards it. The owner the relinquish leaves must be the observer, not F1.
        cluster.network.heal()
        await cluster.wait_until(lambda: asked_by(revalidations, slow, started), 1.0, "F2's late question")
        assert trio.current_time() < held_until, "the schedule no longer reaches the case"
        await trio.sleep_until(held_until + 0.01)
        after = await client.record("create", OpCode.CREATE, CreateRequest("/after", b"", OPEN, 0), "/after")
        assert after.outcome == "ok", f"the client's write through the observer was answered {after.err}"
        await cluster.wait_until(lambda: caught_up(cluster), 10.0, "every server caught up")
        assert_everywhere(cluster, "/k", b"2", "after the client's acknowledged /k=2")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [97, 98])
def test_a_withdrawn_claim_does_not_hand_the_session_to_a_server_holding_an_old_write(
    seed: int, revalidations: Revalidations
) -> None:
    """Item 4's safety with claims withdrawn. The client's /k=1 through F1 is held on its way;
    the client gives up, tries F2 (whose question is late, then withdrawn), and sets /k=2 on
    the observer, acknowledged. When F2's relinquish reaches the leader the owner must fall back
    to the newest claim still standing, the observer's, and never to F1, whose connection still
    holds the old /k=1 and forwards it afterwards: that /k=1 is refused. Fails with the withdrawn
    claim leaving the session without an owner (owners.py's relinquish deleting every claim, so
    the first server to forward takes it): the simulator's check finds /k=1 committed after the
    client's later /k=2, "FIFO client order broken", on both seeds."""
    simulate(seed, withdrawn_claim_with_a_write_held_elsewhere(revalidations), voters=3, observers=1)


# -- a handshake that reaches the leader itself late ---------------------------------------------


def late_connect_at_the_leader(claims: list[tuple[float, int, Hashable]]) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        home, _ = two_learners(cluster, False)
        client = new_client(cluster, "late")
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "every server has /k")
        # The client tries the leader: the connection opens, but what it sends there is slow on
        # its way (0.8 s: retransmitted after a silent drop, say); it gives up on the handshake,
        # closes, and resumes its session on F1, which asks the leader and is the owner.
        started = trio.current_time()
        stream = await client.network.connect(f"s{leader}", CLIENT_PORT)
        cluster.network.delay_one_way("late", f"s{leader}", 0.8, 0.2)
        hello = encode(
            ConnectRequest(
                0, client.last_zxid, client.session_timeout_ms, client.session_id, client.password, False
            )
        )
        await stream.send_all(len(hello).to_bytes(4, "big") + hello)
        await trio.sleep(0.05)
        await stream.aclose()
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        # The ConnectRequest reaches the leader now, the client's close right behind it.
        await cluster.wait_until(
            lambda: any(t > started and sid == leader for t, sid, _ in claims), 2.0, "the leader's late claim"
        )
        await trio.sleep(0.05)
        write = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert write.outcome == "ok", f"the client's write through F1, where it is, was answered {write.err}"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [99, 100])
def test_a_late_handshake_at_the_leader_does_not_take_the_session(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's own connection claimed a session at once and for good: no question, so
    nothing a client could abandon halfway, it seemed. But the client's ConnectRequest can reach
    the leader after the client gave up on it (its bytes held or retransmitted after a silent
    drop) and resumed the session on F1: the leader's claim was then the newest, and every write
    through F1 was refused with SessionMoved until the client reconnected for another reason
    (the Jepsen run of 2026-12-08: 4,325 refusals, one stretch of 12 s; Apache's run had none).
    Now the leader withdraws its own connection's claim when that connection closes without
    ordering anything, as a learner's relinquish does. Fails before this change: -118."""
    claims: list[tuple[float, int, Hashable]] = []
    claim = SessionOwners.claim

    def recording(self: SessionOwners, session_id: int, sid: int, key: Hashable = None) -> None:
        claims.append((trio.current_time(), sid, key))
        claim(self, session_id, sid, key)

    monkeypatch.setattr(SessionOwners, "claim", recording)
    simulate(seed, late_connect_at_the_leader(claims), voters=3)
