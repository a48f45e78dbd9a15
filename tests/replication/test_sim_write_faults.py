"""Failing snapshot, epoch-file and resync-marker writes in whole simulated ensembles: each fails
where the server relies on it, and nothing acknowledged is lost (a server may drop out of its
role, or fail to start, and come back; it must never act as if the write had happened).

ZAB's rule for the epochs: a learner makes its currentEpoch durable before it acknowledges
NEWLEADER (learner_core emits MakeCurrent before the ack), and a leader makes the new
acceptedEpoch durable before it offers it. A failed write must therefore end the role before the
acknowledgement or the offer goes out."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.replication.test_sim_regressions import Points, finish, write_for
from zkpy.testing.cluster import SimCluster, simulate
from zkpy.testing.disk import MemoryDisk


@pytest.mark.parametrize("seed", range(3))
def test_a_learner_whose_current_epoch_write_fails_does_not_acknowledge_newleader(seed: int) -> None:
    """A new epoch; one follower's currentEpoch write fails when NEWLEADER arrives: it sends no
    acknl in that role (it leaves the role and joins again), and the ensemble goes on. Fails with
    the failed write swallowed (learner.py catching OSError around make_current): 's1 sent acknl
    after its currentEpoch write failed'. (learner_core's answer reordered as [Send(acknl),
    MakeCurrent] still passes: the queued ack is dropped with the link when the write raises.)"""

    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        victim = min(sid for sid in cluster.servers if sid != old)
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if sid != victim:
                return
            if name == "learner accepted epoch" and "failed" not in state:
                cluster.servers[victim].disk.fail_next_epoch = 1  # its coming currentEpoch write
                state["armed"] = True
            elif name == "learner got newleader" and state.get("armed") and "failed" not in state:
                state["failed"] = trio.current_time()  # the write fails while this is handled
            elif name == "learner sent acknl" and "failed" in state and "rejoined" not in state:
                raise AssertionError(f"s{victim} sent acknl after its currentEpoch write failed")
            elif name == "learner connected" and "failed" in state:
                state["rejoined"] = True

        cluster.point_hooks.append(hook)
        cluster.crash(old)  # a new epoch: every learner writes its epochs again
        await cluster.wait_until(lambda: "rejoined" in state, 20.0, "the failed write, then a new role")
        assert cluster.servers[victim].disk.failed_writes == 1
        await cluster.start(old)
        await write_for(cluster, 0.5, "b")
        assert points.count("learner sent acknl", victim, since=state["failed"]) >= 1  # it rejoined
        await finish(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(3))
def test_a_leader_whose_accepted_epoch_write_fails_offers_nothing(seed: int) -> None:
    """The elected server's acceptedEpoch write fails: it leaves the role before any leaderinfo
    goes out in it; an election follows and the ensemble writes again."""

    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        for server in cluster.servers.values():
            server.disk.fail_next_epoch = 1  # whoever leads next fails its first epoch write
        failed_at: dict[int, float] = {}

        def hook(sid: int, name: str) -> None:
            disk = cluster.servers[sid].disk
            if name == "leader sent leaderinfo" and disk.failed_writes and sid not in failed_at:
                raise AssertionError(f"s{sid} offered an epoch it failed to accept")
            if name.startswith("elected ") and disk.failed_writes:
                failed_at.setdefault(sid, trio.current_time())

        cluster.point_hooks.append(hook)
        cluster.crash(old)
        await cluster.wait_until(lambda: cluster.leader() not in (None, old), 30.0, "a new leader")
        assert any(s.disk.failed_writes for s in cluster.servers.values())
        await cluster.start(old)
        await write_for(cluster, 0.5, "b")
        assert points.count("leader established") >= 2
        await finish(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(2))
def test_a_failed_marker_write_at_start_leaves_the_server_down_until_it_starts_again(seed: int) -> None:
    """Damaged data found at start: the resync marker's write fails, so the process cannot start
    (as DurableStore's discard_damaged raising); the next start marks, sets aside and re-syncs."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await write_for(cluster, 1.0, "a")
        sid = min(s for s in cluster.servers if s != cluster.leader())
        cluster.crash(sid)
        disk = cluster.servers[sid].disk
        disk.damage("log")
        disk.fail_next_marker = 1
        assert not await cluster.start(sid)
        assert not cluster.servers[sid].alive and disk.resync_marker is None
        assert await cluster.start(sid)
        await cluster.wait_all_serving()
        assert disk.set_aside == 1
        await finish(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(2))
def test_a_failed_snapshot_install_ends_the_learners_role_and_it_syncs_again(seed: int) -> None:
    """A learner SNAPped (its disk wiped) whose snapshot write fails leaves the role (OSError),
    nothing changed on its disk, and takes the SNAP again in its next role."""

    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 1.5, "a")
        sid = min(s for s in cluster.servers if s != cluster.leader())
        cluster.crash(sid)
        cluster.servers[sid].disk = MemoryDisk(fail_next_snapshot=1)
        cluster.invariants.max_applied.pop(sid, None)  # a new, empty member
        await cluster.start(sid)
        await cluster.wait_until(
            lambda: points.count("learner installed snapshot", sid) >= 1, 20.0, "a second SNAP taken"
        )
        assert points.count("learner installing snapshot", sid) >= 2
        assert cluster.servers[sid].disk.failed_writes == 1
        await finish(cluster)

    simulate(seed, scenario)
