"""Liveness limits the random runs found (scripts/simulate.py, protocol-point faults).

A server that accepted a new epoch as a would-be leader twice (elected, crashed right after its
acceptedEpoch write, restarted, elected again with its own acceptedEpoch in the quorum, crashed
again) holds acceptedEpoch E+2, while the others, who never heard its offers, elect a leader of
epoch E+1. Back, it is told to follow that leader and must refuse an epoch below its
acceptedEpoch (ZAB's promise; Apache's Learner.registerWithLeader throws "Leaders epoch ... is less
than accepted epoch" alike). It used to go back to election, whose answer was the same leader, and
loop until the next leader change, as Apache's would (its Leader.getEpochToPropose looks at
learners' acceptedEpochs only until the epoch is chosen). Now the leader steps down when such a
voter introduces itself (leader_core._on_info), and the next election's epoch includes it. Found
as swarm seed 8 with 5 voters (`scripts/simulate.py --first 8 --seeds 1 --voters 5`, when the
simulator's heal restarted the leader as an operator's remedy). Fails on 64955c5: s{n1} never
serves again.
"""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.testing.cluster import SimCluster, simulate


@pytest.mark.parametrize("seed", range(2))
def test_a_server_that_accepted_a_higher_epoch_as_a_would_be_leader_rejoins(seed: int) -> None:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        old = cluster.leader()
        assert old is not None
        state: dict[str, Any] = {"round": 0}

        def hook(sid: int, name: str) -> None:
            if name != "leader accepted epoch" or state.get("n1", sid) != sid or state["round"] >= 2:
                return
            state["n1"] = sid
            state["round"] += 1
            cluster.crash(sid)  # right after its acceptedEpoch write, before any offer went out
            state[f"crashed{state['round']}"] = True

        cluster.point_hooks.append(hook)
        cluster.crash(old)
        await cluster.wait_until(lambda: "crashed1" in state, 20.0, "the first would-be leader crashed")
        n1 = state["n1"]
        await cluster.start(n1)  # back at once: elected again, with its own acceptedEpoch counted
        await cluster.wait_until(lambda: "crashed2" in state, 20.0, "its second attempt crashed")
        await cluster.wait_until(lambda: cluster.leader() not in (None, n1, old), 20.0, "another leader")
        leader = cluster.leader()
        assert leader is not None
        peer = cluster.servers[leader].peer
        assert peer is not None
        assert cluster.servers[n1].disk.epochs["acceptedEpoch"] > peer.epochs.current
        await cluster.start(n1)
        await cluster.start(old)
        await cluster.wait_until(lambda: cluster.servers[n1].serving, 20.0, f"s{n1} serving again")

    simulate(seed, scenario, voters=5)
