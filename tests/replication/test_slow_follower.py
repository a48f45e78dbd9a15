"""A follower whose disk cannot keep up with the write rate (issue 17: bounded memory). It stops
reading its link while its unlogged proposals exceed a bound (learner.MAX_UNLOGGED_BYTES); the
leader keeps committing with the other follower, and the slow one catches up once its disk is
fast again. The bound is shrunk here so that a few virtual seconds show it: without it the slow
follower held 18-22 MB of unlogged proposals in these runs, with it 265 kB.

What ends the slow follower's link here is its own rule (it hears nothing for syncLimit while it
does not read, and syncs again); the leader's bound on its queue to one learner
(leader.MAX_QUEUED_TO_LEARNER) needs a transport that pushes back, which the simulated network
does not (its pipes never block a sender): tests/replication/test_link.py checks the count it
is judged on."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.replication import leader as leader_module
from zkpy.replication import learner as learner_module
from zkpy.testing.cluster import SimCluster, simulate
from zkpy.testing.simclient import ConnectionLost, SessionExpired
from zkpy.testing.workload import new_client, recover_everything

UNLOGGED = 256 * 1024
QUEUED = 512 * 1024
VALUE = 8 * 1024


async def big_writer(cluster: SimCluster, name: str, until: float, acked: list[int]) -> None:
    client = new_client(cluster, name)
    n = 0
    while trio.current_time() < until:
        try:
            if client._stream is None:
                await client.connect(until=until)
            path = f"/{name}-{n:05d}"
            n += 1
            op = await client.record("create", OpCode.CREATE, CreateRequest(path, b"v" * VALUE, OPEN, 0), path)
        except (ConnectionLost, SessionExpired):
            await trio.sleep(0.05)
            continue
        if op.outcome == "ok":
            cluster.invariants.acknowledged_write(op)
            acked.append(1)
    await client.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_follower_with_a_slow_disk_keeps_bounded_memory_and_the_others_commit(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learner_module, "MAX_UNLOGGED_BYTES", UNLOGGED)
    monkeypatch.setattr(leader_module, "MAX_QUEUED_TO_LEARNER", QUEUED)
    seen: dict[str, int] = {}

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow = min(sid for sid in cluster.servers if sid != leader)
        disk = cluster.servers[slow].disk
        disk.slow_until = math.inf
        disk.slow_fsync = (0.1, 0.3)  # 100x the usual 1-3 ms
        disk.slow_bandwidth = 500_000  # and 500 kB/s: the writers below go well past that
        acked: list[int] = []
        until = trio.current_time() + 6.0
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(big_writer, cluster, f"w{i}", until, acked)
        slow_peer = cluster.servers[slow].peer
        leader_peer = cluster.servers[leader].peer
        assert slow_peer is not None and leader_peer is not None
        seen["acked"] = len(acked)
        seen["unlogged"] = slow_peer.stats.most_unlogged_bytes
        seen["queued"] = leader_peer.stats.most_queued_to_learner
        seen["slow_applied"] = slow_peer.tree.last_zxid
        seen["leader_applied"] = leader_peer.tree.last_zxid
        disk.slow_until = trio.current_time()  # the disk is fast again: it catches up
        await recover_everything(cluster)
        await cluster.wait_until(
            lambda: len({s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None}) == 1,
            60.0,
            "every server caught up",
        )
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(seed, scenario, snap_count=1_000_000, commit_log_count=1_000_000)
    # More written in 6 s than the slow disk could take (500 kB/s), acknowledged by the others.
    assert seen["acked"] * VALUE > 3 * 6 * 500_000, seen
    assert seen["slow_applied"] < seen["leader_applied"], seen  # it really fell behind
    # Bounded: at most the bound plus what one read or one broadcast adds past it.
    assert seen["unlogged"] <= UNLOGGED + 64 * VALUE, seen
    assert seen["queued"] <= QUEUED + 64 * VALUE, seen


@pytest.mark.parametrize("seed", [4, 5])
def test_the_leader_stops_reading_its_learners_while_its_inputs_wait(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's driver takes one input at a time (messages of every link, ticks, its own log
    completions); a link's reader stops reading while more than leader.MAX_WAITING_MESSAGES of the
    learners' messages wait,
    so learners that send faster than the leader handles fill their sockets, not its memory. The
    driver is slowed to 200 inputs a virtual second and the bound shrunk to 8, so that the
    writers' acks, pings and forwarded requests pass it: each reader adds at most one past it,
    and the ensemble keeps committing. Fails before this change (the waiting inputs were not
    bounded)."""
    monkeypatch.setattr(leader_module, "MAX_WAITING_MESSAGES", 8)
    init = leader_module.Leader.__init__

    class SlowDriver:
        """The driver's input channel, taken at most 200 inputs a virtual second."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __aiter__(self) -> SlowDriver:
            return self

        async def __anext__(self) -> Any:
            await trio.sleep(0.005)
            return await self.inner.__anext__()

        def receive_nowait(self) -> Any:
            raise trio.WouldBlock  # one input a turn, each after its pause

    def slow_init(self: leader_module.Leader, peer: Any) -> None:
        init(self, peer)
        self._events = SlowDriver(self._events)  # type: ignore[assignment]

    monkeypatch.setattr(leader_module.Leader, "__init__", slow_init)
    seen: dict[str, int] = {}

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        acked: list[int] = []
        until = trio.current_time() + 3.0
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(big_writer, cluster, f"w{i}", until, acked)
        leader = cluster.leader()
        assert leader is not None
        leader_peer = cluster.servers[leader].peer
        assert leader_peer is not None
        seen["acked"] = len(acked)
        seen["waiting"] = leader_peer.stats.most_waiting_messages
        seen["links"] = len(cluster.servers) - 1
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(seed, scenario)
    assert seen["acked"] > 100, seen
    assert 8 <= seen["waiting"] <= 8 + seen["links"], seen  # reached, and held
