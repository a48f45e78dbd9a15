"""Scripted simulations written to break issue 17 (pipelined proposals, bounded learner memory,
byte-bounded history, streamed SNAP): each drives an interleaving a review of the change
suspected, through protocol-point hooks, asserts that the step was really reached, and leaves
the verdict to the simulator's invariants and final checks (tests/replication/
test_sim_regressions.py has the helpers and the style)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.replication.test_sim_regressions import (
    Points,
    Scenario,
    finish,
    leader_of,
    wipe,
    write_for,
)
from zkpy.replication import leader as leader_module
from zkpy.replication.leader import Leader
from zkpy.replication.learner import Learner
from zkpy.testing.cluster import SimCluster, simulate
from zkpy.testing.disk import MemorySnapshotSource


def _learner_of(cluster: SimCluster, sid: int) -> Learner | None:
    peer = cluster.servers[sid].peer
    role = None if peer is None else peer.role
    return role if isinstance(role, Learner) else None


# -- a streamed SNAP cut mid-stream, under pipelined writes, then a second SNAP ----------------------


def snap_cut_midstream() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.3, "a")
        leader = cluster.leader()
        assert leader is not None
        wiped = min(sid for sid in cluster.servers if sid != leader)
        cluster.crash(wiped)
        state: dict[str, Any] = {"cuts": 0}

        def hook(sid: int, name: str) -> None:
            if sid == leader and name == "leader sent snapchunk" and state["cuts"] < 2:
                role = leader_of(cluster)
                # The leader's pump is running and it holds what it broadcast meanwhile.
                state.setdefault("pumps", []).append(len(role._pumps))
                state["cuts"] += 1
                cluster.network.reset(f"s{leader}", f"s{wiped}")  # between a chunk and the rest
                cluster.note(f"reset s{leader} <-> s{wiped} inside a streamed SNAP")
            elif sid == leader and name == "leader sent syncdata:snap":
                state["snaps_completed"] = state.get("snaps_completed", 0) + 1

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 4.0, "b", "c", "d")
            await trio.sleep(1.0)  # well past the leader's 5-transaction window: a SNAP
            wipe(cluster, wiped)
            await cluster.start(wiped)
            await cluster.wait_until(lambda: cluster.servers[wiped].serving, 20.0, "the wiped server serving")
        assert state["cuts"] == 2, points.seen[-40:]
        assert all(p >= 1 for p in state["pumps"]), state
        assert state.get("snaps_completed", 0) >= 1, state
        role: Leader = leader_of(cluster)
        # Nothing of the cut streams is left behind on the leader: no pump, no held broadcasts.
        assert role._pumps == {} and role._holding == {}, (role._pumps, role._holding)
        learner = _learner_of(cluster, wiped)
        assert learner is not None and learner._received is None  # its half SNAPs were dropped
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_a_streamed_snap_cut_twice_midstream_under_pipelined_writes_resyncs_cleanly(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower that needs a SNAP (wiped, commit log window of 5) rejoins under three writers,
    so batches are in flight; its link is reset twice right after the leader wrote a
    SnapshotChunk (before the SyncData and NEWLEADER), so it reconnects and is SNAPped again.
    Asserted: the cuts happened inside a running pump, a third SNAP completed, the leader keeps
    no pump or held broadcasts for the dead links, the learner no half snapshot; then the
    simulator's invariants, heal, write, power cycle and check. Pieces of 512 bytes and a window of
    2 kB make the small simulated tree a stream the pump really waits on."""
    monkeypatch.setattr(MemorySnapshotSource, "PIECE", 512)
    monkeypatch.setattr(leader_module, "STREAM_WINDOW", 2048)
    simulate(seed, snap_cut_midstream(), commit_log_count=5)
