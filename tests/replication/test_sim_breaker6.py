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


async def keep_alive(client: SimClient, every: float, duration: float) -> None:
    """For `duration` seconds the client reads now and then, which keeps its session and its
    connection alive (the simulated client sends no pings of its own)."""
    until = trio.current_time() + duration
    while trio.current_time() < until:
        await trio.sleep(every)
        err, _, _ = await client.call(OpCode.EXISTS, PathWatchRequest("/k", False), "/k")
        assert err == 0, f"a read through the client's server was answered {err}"


# -- the silence rule on a learner ---------------------------------------------------------------


def late_question_on_a_half_open_connection(revalidations: Revalidations) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow, home = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        client = new_client(cluster, "halfopen")
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "every server has /k")
        # The client tries F1, whose question to the leader is held on F1's link; the client
        # gives up, and its close never reaches F1 (its host's link to F1 went dark: the
        # connection is half-open at F1, as after a silent drop of the client's packets).
        started = trio.current_time()
        cluster.network.cut(f"s{slow}", f"s{leader}")
        stream = await client.network.connect(f"s{slow}", CLIENT_PORT)
        hello = encode(
            ConnectRequest(
                0, client.last_zxid, client.session_timeout_ms, client.session_id, client.password, False
            )
        )
        await stream.send_all(len(hello).to_bytes(4, "big") + hello)
        await cluster.wait_until(lambda: handshakes_waiting(cluster, slow) == 1, 1.0, "the handshake at F1")
        cluster.network.cut("halfopen", f"s{slow}")
        await stream.aclose()
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        assert asked_by(revalidations, home, started)
        cluster.network.uncut(f"s{slow}", f"s{leader}")  # F1's late question: F1 is the owner
        await cluster.wait_until(lambda: asked_by(revalidations, slow, started), 1.0, "F1's late question")
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
    it is on are refused with SessionMoved for good."""
    simulate(seed, late_question_on_a_half_open_connection(revalidations), voters=3)
