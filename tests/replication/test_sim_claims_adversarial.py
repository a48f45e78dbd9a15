"""Adversarial scripted simulations of session claims (owners.py) and the connection's read during
its handshake wait: cases the session-moves scenarios (test_sim_session_moves.py) do not reach.

Each scenario sets up a schedule the nemesis would only hit by luck, then checks the liveness
or safety property the claims exist for, and ends with test_sim_regressions' finish (heal, write,
check trees, acknowledged writes and disks, power-cycle, check again).
"""

from __future__ import annotations

import pytest
import trio
from test_sim_regressions import Scenario, caught_up, finish
from test_sim_session_moves import Revalidations, asked_by, give_up_on, revalidations

from zkpy.jute.ops import CreateRequest, OpCode, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.workload import new_client

__all__ = ["revalidations"]  # the fixture, imported for the tests below


def claims_left(cluster: SimCluster, sid: int) -> int:
    """How many client connections server `sid` still holds a claim for (serving.py _claims)."""
    peer = cluster.servers[sid].peer
    server = None if peer is None else peer.serving
    return 0 if server is None else len(server._claims)


def abandoned_catch_up(revalidations: Revalidations) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        home, lagging = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        setup = new_client(cluster, "setup")
        await setup.connect()
        await setup.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        await cluster.wait_until(lambda: caught_up(cluster), 1.0, "every server has /k")
        # F2 lags for a moment: what the leader sends it takes a third of syncLimit longer (its
        # pings as well, so F2 keeps its leader).
        delay = cluster.sync_limit_s / 3
        cluster.network.delay_one_way(f"s{leader}", f"s{lagging}", delay, 1.0)
        client = new_client(cluster, "newcomer")
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()  # a new session, committed by the leader and F1
        peer = cluster.servers[lagging].peer
        assert peer is not None and client.session_id not in peer.tree.sessions, "F2 has the session"
        # The client tries F2, which has not applied the session's creation: F2 catches up with a
        # sync round trip first (EnsembleServer.handle_connect), whose answer is late. The client
        # gives up and resumes its session on F1 again, which asks the leader (F1 owns it).
        started = trio.current_time()
        await give_up_on(client, lagging)
        client.servers = [(f"s{home}", CLIENT_PORT)]
        await client.connect()
        assert asked_by(revalidations, home, started)
        assert not asked_by(revalidations, lagging, started), "the schedule no longer reaches the case"
        # F2's sync answer comes: the connection it was for closed long ago.
        await trio.sleep(2 * delay + 0.5)  # whatever F2 does about it has reached the leader
        assert cluster.servers[lagging].serving, "F2 lost its leader: the schedule no longer reaches the case"
        write = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert write.outcome == "ok", (
            f"the client's write through F1, where it is, was answered {write.err}; "
            f"questions from F2 since the client left it: {asked_by(revalidations, lagging, started)}"
        )
        assert claims_left(cluster, lagging) == 0, "F2 holds a claim for a connection that is gone"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [201, 202, 203])
def test_a_catch_up_answered_after_the_client_left_does_not_claim_the_session(
    seed: int, revalidations: Revalidations
) -> None:
    """Liveness of session moves (the hole owners.py closes, reopened by another path). A client
    resumes its session on F2, which has not applied the session's creation yet and first
    catches up with the leader (a sync round trip, EnsembleServer.handle_connect); the answer is
    slow, the client gives up (the connection closes: nothing to withdraw yet) and resumes its
    session on F1. When F2's sync answer finally comes, caught_up() resumes the session for the
    closed connection all the same: F2 asks the leader, whose claim for F2 is now the newest, and
    the connection that could withdraw it closed before the claim was recorded (serving.py's
    _claims entry for it is never removed). Every write the client sends through F1 is then
    refused with SessionMoved. Fails on main at e8388aa: the write is answered -118."""
    simulate(seed, abandoned_catch_up(revalidations), voters=3)
