"""Breaker 6: scripted simulations against three changes of 2026-12-08: the leader's own
connections' withdrawable session claims (aab0159), the rule that closes a connection whose
client sent nothing for longer than its session timeout (10974b7), and idle connections parked
on a shared epoll (cbb464d; its real-socket tests are in tests/unit/test_idle_reader.py).

Each scenario ends with test_sim_regressions' finish (heal, write, check trees, acknowledged
writes and disks, power-cycle, check again); the simulator checks FIFO client order and the
history throughout.
"""

from __future__ import annotations

import pytest
import test_sim_session_moves
import trio
from test_sim_claims_adversarial import forwarded_claim_withdrawn
from test_sim_regressions import Scenario, caught_up, finish
from test_sim_session_moves import Revalidations, asked_by, handshakes_waiting

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode, PathWatchRequest, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.jute.records import ConnectRequest
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.simclient import SimClient
from zkpy.testing.workload import new_client

revalidations = test_sim_session_moves.revalidations  # the fixture: each revalidation the leader took


def owner(cluster: SimCluster, session_id: int) -> int | None:
    """The session's owner at the leader (owners.py), None without a serving leader."""
    leader = cluster.leader()
    peer = None if leader is None else cluster.servers[leader].peer
    server = None if peer is None else peer.serving
    return None if server is None else server.owners.owner(session_id)


async def keep_alive(client: SimClient, every: float, duration: float) -> None:
    """For `duration` seconds the client reads now and then, which keeps its session and its
    connection alive (the simulated client sends no pings of its own)."""
    until = trio.current_time() + duration
    while trio.current_time() < until:
        await trio.sleep(every)
        err, _, _ = await client.call(OpCode.EXISTS, PathWatchRequest("/k", False), "/k")
        assert err == 0, f"a read through the client's server was answered {err}"


# -- the silence rule on a learner ---------------------------------------------------------------


def late_question_on_a_half_open_connection(
    revalidations: Revalidations, at_leader: bool = False
) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow, home = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        if at_leader:
            slow = leader  # the leader claims at once: no question to hold
        client = new_client(cluster, "halfopen")
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "every server has /k")
        # The client tries F1, whose question to the leader is held on F1's link; the client
        # gives up, and its close never reaches F1 (its host's link to F1 went dark: the
        # connection is half-open at F1, as after a silent drop of the client's packets).
        started = trio.current_time()
        if not at_leader:
            cluster.network.cut(f"s{slow}", f"s{leader}")
        stream = await client.network.connect(f"s{slow}", CLIENT_PORT)
        hello = encode(
            ConnectRequest(
                0, client.last_zxid, client.session_timeout_ms, client.session_id, client.password, False
            )
        )
        if at_leader:
            # Late at the leader: the client resumes on F2 first, then its ConnectRequest
            # reaches the leader, which claims the session at once (aab0159's case), and the
            # client's close never follows.
            cluster.network.cut("halfopen", f"s{slow}")
            client.servers = [(f"s{home}", CLIENT_PORT)]
            await client.connect()
            assert asked_by(revalidations, home, started)
            cluster.network.uncut("halfopen", f"s{slow}")
            await stream.send_all(len(hello).to_bytes(4, "big") + hello)
            await cluster.wait_until(
                lambda: owner(cluster, client.session_id) == leader, 1.0, "the leader's claim"
            )
            cluster.network.cut("halfopen", f"s{slow}")
            await stream.aclose()
        else:
            await stream.send_all(len(hello).to_bytes(4, "big") + hello)
            await cluster.wait_until(
                lambda: handshakes_waiting(cluster, slow) == 1, 1.0, "the handshake at F1"
            )
            cluster.network.cut("halfopen", f"s{slow}")
            await stream.aclose()
            client.servers = [(f"s{home}", CLIENT_PORT)]
            await client.connect()
            assert asked_by(revalidations, home, started)
            cluster.network.uncut(f"s{slow}", f"s{leader}")  # F1's late question: F1 is the owner
            await cluster.wait_until(
                lambda: asked_by(revalidations, slow, started), 1.0, "F1's late question"
            )
        # The client stays on F2, reading now and then. F1's connection hears nothing from it:
        # once the session timeout has passed, F1 must close it, which withdraws F1's claim.
        await keep_alive(client, 1.0, client.session_timeout_ms / 1000 * 2)
        write = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert write.outcome == "ok", (
            f"the client's write through F2, where it has been for {trio.current_time() - started:.1f}s "
            f"(twice its session timeout), was answered {write.err}"
        )
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [601, 602])
def test_a_half_open_connection_on_a_learner_is_closed_after_the_session_timeout(
    seed: int, revalidations: Revalidations
) -> None:
    """10974b7 closes a connection silent for longer than its session timeout, so that a
    half-open connection gives back the claim its late question made at the leader (issue 14's
    known limit, docs/architecture.md). But the rule runs in _watch_loop, which an ensemble
    member starts only as leader (EnsembleServer.serve_role): on a learner, the server the
    rule was written for, the connection stays open and the client's writes through the server
    it is on are refused with SessionMoved for good. Now a learner's tick judges its silent
    connections too (learner.py, ZooKeeperServer.beat). Fails before that fix (on aab0159, and
    with learner.py's call removed): -118 after twice the session timeout, on both seeds."""
    simulate(seed, late_question_on_a_half_open_connection(revalidations), voters=3)


@pytest.mark.parametrize("seed", [603, 604])
def test_a_late_handshake_at_the_leader_on_a_half_open_connection_gives_the_session_back(
    seed: int, revalidations: Revalidations
) -> None:
    """aab0159's case (a ConnectRequest that reaches the leader after the client resumed on F2)
    with the client's close lost: the leader's claim is withdrawn only when the connection
    closes, which is the silence rule's doing (10974b7), a session timeout after the handshake.
    Covers the two changes together in an ensemble (test_silent_connections is standalone). A
    guard: fails with the silence rule removed (_close_silent_connections never called), and
    with aab0159's serving.py reverted (the leader's claim keyless): -118 on both seeds."""
    simulate(seed, late_question_on_a_half_open_connection(revalidations, at_leader=True), voters=3)


# -- the leader's own claim, kept once a write was ordered under it --------------------------------


@pytest.mark.parametrize("seed", [611, 612])
def test_the_leaders_own_claim_a_write_was_ordered_under_is_never_withdrawn(
    seed: int, revalidations: Revalidations
) -> None:
    """aab0159 made the leader's own connection's claim withdrawable when the connection
    closes, "kept if a request was ordered under it" (owners.check marks the newest claim's key
    used as the leader's own write is read). The client's /k=1 through F1 is held on its way;
    the client moves to the leader, sets /k=2 there (acknowledged) and leaves for F2, whose
    question is late: when /k=1 reaches the leader the leader's claim must still stand, or F1's
    is the owner again and /k=1 is applied after /k=2. A guard, not a regression test: passes
    on aab0159; fails with the leader's relinquish not checking use (serving.py
    connection_closed deleting its claim outright): "FIFO client order broken" (the oracle)."""
    simulate(seed, forwarded_claim_withdrawn(revalidations, through_leader=True), voters=3)
