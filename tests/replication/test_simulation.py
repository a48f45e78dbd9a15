"""Whole ensembles under the deterministic simulator (zkpy.testing.cluster): the real server
code, virtual time, simulated links and disks, faults drawn from one seed. Every run checks the
ensemble's invariants as it goes and at the end."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.testing.cluster import SimCluster, simulate
from zkpy.testing.workload import nemesis, one_write, recover_everything, writer


async def steady(cluster: SimCluster) -> None:
    await cluster.wait_all_serving()
    acked = await writer(cluster, "c1", trio.current_time() + 3.0)
    assert acked > 50
    cluster.check_trees()
    cluster.check_acknowledged()


def faulty(duration: float) -> object:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        until = trio.current_time() + duration
        rng = random.Random(cluster.rng.getrandbits(64))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until)
            nursery.start_soon(writer, cluster, "c2", until)
            nursery.start_soon(nemesis, cluster, until, rng)
        await recover_everything(cluster)
        await one_write(cluster, "after-heal", timeout=60.0)
        await cluster.wait_until(lambda: _all_caught_up(cluster), 30.0, "every server caught up")
        cluster.check_trees()
        cluster.check_acknowledged()

    return scenario


def _all_caught_up(cluster: SimCluster) -> bool:
    zxids = {s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None and s.serving}
    return len(zxids) == 1


def test_steady_writes_commit_everywhere() -> None:
    cluster = simulate(1, steady)
    assert cluster.leader() is None  # the run is over: nothing is left running
    assert len(cluster.invariants.committed) > 50


def test_same_seed_same_run() -> None:
    first = simulate(7, faulty(6.0))
    second = simulate(7, faulty(6.0))
    assert first.events == second.events
    assert first.invariants.committed == second.invariants.committed


@pytest.mark.parametrize("seed", range(5))
def test_faults_lose_nothing(seed: int) -> None:
    simulate(seed, faulty(8.0))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_schedules(seed: int) -> None:
    simulate(seed, faulty(6.0))
