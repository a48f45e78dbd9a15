"""Adversarial scripted simulations of the leader's step-down for a voter above its epoch
(leader_core._on_info, 7125515): the same stuck state reached by an observer.

A would-be leader W that chose epoch E+1 sends LeaderInfo to every learner waiting for it,
observers included. If only the observer's arrives (W's links to the voters broke) and W dies,
the observer has accepted E+1 while no voter has. Twice over (W restarted, elected again with
its own acceptedEpoch counted, E+2), and the ensemble's next leader, elected without W, chooses
an epoch below the observer's: the observer refuses it (ZAB's promise, Learner.registerWithLeader
in Apache) and goes back to election, whose answer is the same leader.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from zkpy.testing.cluster import SimCluster, simulate


def observer_above_the_epoch() -> Any:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        old = cluster.leader()
        assert old is not None
        observer = max(cluster.servers)
        voters = [sid for sid in cluster.servers if sid != observer]
        state: dict[str, Any] = {"round": 0}

        def hook(sid: int, name: str) -> None:
            if name != "leader accepted epoch" or state.get("w", sid) != sid or state["round"] >= 2:
                return
            state["w"] = sid
            state["round"] += 1
            state["cut"] = True
            for voter in voters:  # its offers reach the observer only: its voters' links break
                if voter != sid:
                    cluster.network.cut(f"s{sid}", f"s{voter}")
                    cluster.network.cut(f"s{voter}", f"s{sid}")
                    cluster.network.reset(f"s{sid}", f"s{voter}")

        cluster.point_hooks.append(hook)
        cluster.crash(old)
        for round_ in (1, 2):
            await cluster.wait_until(
                lambda r=round_: state["round"] == r, 20.0, f"would-be leader, round {round_}"
            )
            w = state["w"]
            epoch = cluster.servers[w].disk.epochs["acceptedEpoch"]
            await cluster.wait_until(
                lambda e=epoch: cluster.servers[observer].disk.epochs.get("acceptedEpoch", 0) == e,
                5.0,
                "the observer accepted the would-be leader's epoch",
            )
            cluster.crash(w)
            cluster.network.heal()
            if round_ == 1:
                await cluster.start(w)  # back at once: elected again, with its own acceptedEpoch counted
        await cluster.wait_until(
            lambda: cluster.leader() not in (None, state["w"], old), 30.0, "another leader"
        )
        leader = cluster.leader()
        assert leader is not None
        peer = cluster.servers[leader].peer
        assert peer is not None
        accepted = cluster.servers[observer].disk.epochs["acceptedEpoch"]
        if accepted <= peer.epochs.current:
            pytest.skip("the schedule no longer reaches the case: the observer is not above the epoch")
        await cluster.start(
            old
        )  # W stays down (its machine is gone, say): nothing above the epoch but the observer
        await cluster.wait_until(
            lambda: cluster.servers[observer].serving, 30.0, "the observer serving again"
        )

    return scenario


@pytest.mark.parametrize("seed", range(2))
def test_an_observer_that_accepted_a_would_be_leaders_epoch_rejoins(seed: int) -> None:
    """Liveness of observers (the case 7125515 left out: "an observer's accepted epoch changes
    nothing"). The observer holds an acceptedEpoch above the ensemble's leader's, reached as in
    the module docstring, and must serve again; W stays down, so no voter is above the epoch.
    Now the leader steps down for an observer as for a voter, and counts an observer's
    acceptedEpoch told in DISCOVERY into the next epoch. Fails on main at e8388aa: the observer
    does not serve again within 30 s on both seeds (it re-elects the same leader, refuses its
    epoch, and loops until the next leader change; Apache's Learner.registerWithLeader alike)."""
    simulate(seed, observer_above_the_epoch(), voters=5, observers=1)


def voter_far_above(k: int) -> Any:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        peer = cluster.servers[leader].peer
        assert peer is not None
        x = max(sid for sid in cluster.servers if sid != leader)
        cluster.crash(x)
        # X accepted k epochs above the ensemble's (a would-be leader elected and dead k times
        # right after its acceptedEpoch write, as in test_sim_liveness), and it is far away: its
        # every trip takes 50 ms longer, so it connects to each new leader after the others.
        current = peer.epochs.current
        cluster.servers[x].disk.epochs["acceptedEpoch"] = current + k
        cluster.network.delay_spike(0.05, 1000.0, [f"s{x}"])
        started = trio.current_time()
        await cluster.start(x)
        await cluster.wait_until(
            lambda: all(s.serving for s in cluster.servers.values() if s.alive), 30.0, "everybody serving"
        )
        took = trio.current_time() - started
        cluster.network.end_spikes()
        assert took < 4.0, f"{took:.1f}s of elections for a voter {k} epochs above"

    return scenario


@pytest.mark.parametrize("seed", [1, 2])
def test_a_voter_many_epochs_above_costs_one_step_down(seed: int) -> None:
    """Change 7125515 has the leader step down for such a voter; the next leader's discovery
    quorum, without the far voter, chose an epoch one above the last, and the voter made it step
    down again: one election per epoch X is above (20 epochs: ~10.5 s of elections, writes
    refused meanwhile). The leader that steps down now takes X's acceptedEpoch as its own
    (roles.AboveEpoch), so whichever quorum elects the next leader holds it: one step-down.
    Fails on e8388aa: 10.6 s and 10.4 s."""
    simulate(seed, voter_far_above(20), voters=5)
