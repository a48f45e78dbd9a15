"""Scripted simulations written to break issue 17 (pipelined proposals, bounded learner memory,
byte-bounded history, streamed SNAP): each drives an interleaving a review of the change
suspected, through protocol-point hooks, asserts that the step was really reached, and leaves
the verdict to the simulator's invariants and final checks (tests/replication/
test_sim_regressions.py has the helpers and the style)."""

from __future__ import annotations

import errno
import itertools
import math
import random
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
from zkpy.jute.ops import CreateRequest, OpCode, PathWatchRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.replication import leader as leader_module
from zkpy.replication import learner as learner_module
from zkpy.replication.leader import Leader
from zkpy.replication.learner import Learner
from zkpy.server.pipeline import CommitPipeline
from zkpy.testing import cluster as cluster_module
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.disk import MemorySnapshotSource, MemoryStore
from zkpy.testing.simclient import ConnectionLost, SessionExpired, SimClient
from zkpy.testing.workload import new_client


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


# -- the leader's role ends with several batches in flight: no client is left waiting -------------


async def patient_writer(cluster: SimCluster, name: str, until: float, longest: list[float]) -> None:
    """Writes as workload.writer, but waits up to 60 s for each reply (the usual 3 s timeout
    would hide a request the server never answers nor drops); records its longest wait."""
    client = new_client(cluster, name, request_timeout=60.0)
    n = 0
    while trio.current_time() < until:
        started = trio.current_time()
        try:
            if client._stream is None:
                await client.connect(until=until)
            path = f"/{name}-{n:05d}"
            n += 1
            started = trio.current_time()
            op = await client.record(
                "create", OpCode.CREATE, CreateRequest(path, path.encode(), OPEN, 0), path
            )
        except SessionExpired:
            continue
        except ConnectionLost:
            longest.append(trio.current_time() - started)
            await trio.sleep(0.05)
            continue
        longest.append(trio.current_time() - started)
        if op.outcome == "ok":
            cluster.invariants.acknowledged_write(op)
    await client.close()


def leader_ends_with_batches_in_flight(active: list[int]) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        waits: list[float] = []
        seen: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(patient_writer, cluster, f"w{i}", trio.current_time() + 8.0, waits)
            await cluster.wait_until(lambda: active[0] >= 3, 5.0, "three batches in flight on the leader")
            seen["in_flight"] = active[0]
            # Cut from the other servers, not from the clients: its role ends (lost quorum) with
            # the batches out, and its clients hear whatever it does about them.
            others = [f"s{sid}" for sid in cluster.servers if sid != leader]
            cluster.network.partition([f"s{leader}"], others)
            cluster.note(f"partition s{leader} from {others} with {active[0]} batches in flight")
            await cluster.wait_until(lambda: cluster.leader() not in (None, leader), 30.0, "another leader")
        assert seen["in_flight"] >= 3
        # Every request was answered or its connection dropped well within the 60 s timeout:
        # syncLimit, an election and a reconnect.
        assert max(waits) < 20.0, sorted(waits)[-5:]
        cluster.network.heal()
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [51, 52, 53])
def test_a_leader_whose_role_ends_with_batches_in_flight_leaves_no_client_waiting(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six writers keep the leader's pipeline full (every queued write may go as a batch of its
    own); once three or more batches are in flight
    (Leader.replicate calls running at once, counted by a wrapper), the leader is cut off from the
    other servers (not from the clients), so its role ends by lost quorum with them out. Asserted: no request waits for ever (each is answered
    or its connection is closed: clients wait up to 60 s here, the check is 20 s), another leader
    takes over; then the simulator's invariants (no write acknowledged that was not committed),
    heal, write, power cycle and check."""
    active = [0]
    replicate = Leader.replicate

    async def counting(self: Leader, txns: Any) -> None:
        active[0] += 1
        try:
            await replicate(self, txns)
        finally:
            active[0] -= 1

    monkeypatch.setattr(Leader, "replicate", counting)
    # Six writers keep only six writes queued: below the pipeline's min_pipelined_batch, so a
    # further batch would wait for the one in flight. Every queued write may go at once here, as
    # before that rule, so the role ends with several batches out.
    monkeypatch.setattr(CommitPipeline, "_worth_another_batch", lambda self: True)
    simulate(seed, leader_ends_with_batches_in_flight(active))


# -- a SNAP whose image cannot be forked costs that learner's link, not the leadership ------------


def snap_image_fails(failures: list[int]) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await write_for(cluster, 0.3, "a")
        leader = cluster.leader()
        assert leader is not None
        epochs = dict(cluster.invariants.leaders)
        wiped = min(sid for sid in cluster.servers if sid != leader)
        cluster.crash(wiped)
        await write_for(cluster, 1.0, "b")  # past the 5-transaction window: it needs a SNAP
        wipe(cluster, wiped)
        await cluster.start(wiped)
        await cluster.wait_until(lambda: failures[0] >= 1, 10.0, "a SNAP image that could not be forked")
        await write_for(cluster, 2.0, "c")
        # The leader that could not fork one learner's image still leads its epoch.
        assert cluster.leader() == leader and cluster.invariants.leaders == epochs, (
            f"leadership changed: {epochs} -> {cluster.invariants.leaders}"
        )
        await cluster.wait_until(lambda: cluster.servers[wiped].serving, 20.0, "the wiped server serving")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [61, 62])
def test_a_snap_image_that_cannot_be_forked_costs_the_link_not_the_leadership(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader takes a streamed SNAP's image by forking (DurableStore.snapshot_source:
    os.pipe + os.fork), which fails with ENOMEM/EAGAIN under memory pressure, EMFILE without fds:
    for a big tree exactly when SNAPs are needed. A failing image of one learner must cost that
    learner's link (as a failing read of the image does, StorageError in _stream_snapshot), not
    the leadership: else every leader that learner connects to steps down, one after another.

    Simulated: the store's snapshot_source raises OSError(ENOMEM) the first two times. Fails
    before breaker4's fix: the OSError from Leader._sync ends the leader's role ("leading failed"),
    a new epoch is elected (leaders {1: 3} -> {1: 3, 2: ...})."""
    failures = [0]
    source = MemoryStore.snapshot_source

    def failing(self: MemoryStore, tree: Any) -> Any:
        if failures[0] < 2:
            failures[0] += 1
            raise OSError(errno.ENOMEM, "Cannot allocate memory (simulated fork failure)")
        return source(self, tree)

    monkeypatch.setattr(MemoryStore, "snapshot_source", failing)
    simulate(seed, snap_image_fails(failures), commit_log_count=5)


# -- a learner that stops reading (bounded memory) stops touching its clients' sessions ------------


async def _busy_writer(cluster: SimCluster, name: str, until: float, server: int) -> None:
    """8 kB creates through one server, as fast as they are answered."""
    client = SimClient(name, cluster.network.host(name), [(f"s{server}", CLIENT_PORT)], random.Random(name))
    n = 0
    while trio.current_time() < until:
        try:
            if client._stream is None:
                await client.connect(until=until)
            path = f"/{name}-{n:05d}"
            n += 1
            op = await client.record("create", OpCode.CREATE, CreateRequest(path, b"v" * 8192, OPEN, 0), path)
        except (ConnectionLost, SessionExpired):
            await trio.sleep(0.05)
            continue
        if op.outcome == "ok":
            cluster.invariants.acknowledged_write(op)
    await client.close()


def sessions_on_a_slow_learner(seen: dict[str, Any]) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        slow = min(sid for sid in cluster.servers if sid != leader)
        # A client of the slow follower alone, active all along (a read every 100 ms).
        held = SimClient(
            "held", cluster.network.host("held"), [(f"s{slow}", CLIENT_PORT)], random.Random(7),
            session_timeout_ms=1000, request_timeout=30.0,
        )  # fmt: skip
        await held.connect()
        op = await held.record("create", OpCode.CREATE, CreateRequest("/held", b"", OPEN, 1), "/held")
        assert op.outcome == "ok", op  # an ephemeral of the held session
        role = _learner_of(cluster, slow)
        assert role is not None
        pings: list[float] = []

        def hook(sid: int, name: str) -> None:
            if sid == slow and name == "learner sent ping":
                pings.append(trio.current_time())

        cluster.point_hooks.append(hook)
        disk = cluster.servers[slow].disk
        disk.slow_until = math.inf
        disk.slow_fsync = (0.05, 0.1)
        disk.slow_bandwidth = 30_000  # far below the writers' rate
        until = trio.current_time() + 5.0
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(_busy_writer, cluster, f"w{i}", until, leader)
            while trio.current_time() < until:
                try:
                    await held.call(OpCode.EXISTS, PathWatchRequest("/", False), "/")
                except SessionExpired:
                    seen["expired"] = trio.current_time()
                    seen["same_role"] = _learner_of(cluster, slow) is role  # still following
                    break
                except ConnectionLost:
                    seen["lost"] = seen.get("lost", 0) + 1
                    await held.connect(until=until)  # the session resumes: it may not expire
                    continue
                await trio.sleep(0.1)
        leader_peer = cluster.servers[leader].peer
        assert leader_peer is not None and leader_peer.serving is not None
        seen["alive_at_leader"] = leader_peer.serving.sessions.is_alive(held.session_id)
        seen["ephemeral_at_leader"] = "/held" in leader_peer.tree.nodes
        slow_peer = cluster.servers[slow].peer
        assert slow_peer is not None
        seen["unlogged"] = slow_peer.stats.most_unlogged_bytes
        seen["role_unchanged"] = _learner_of(cluster, slow) is role
        seen["longest_ping_gap"] = max(b - a for a, b in itertools.pairwise(pings))
        cluster.point_hooks.remove(hook)
        disk.slow_until = trio.current_time()
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [71, 72])
def test_an_active_session_on_a_learner_that_stopped_reading_does_not_expire(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded memory (272b07e): a learner over its bound of unlogged proposals stops reading its
    link, so it reads no LeaderPing and sends no LearnerPing, and the sessions its clients keep
    alive are not touched at the leader while the reader is stopped. Apache's follower queues
    proposals to its SyncRequestProcessor and answers pings on its reading thread, whatever its
    disk does. Here (syncLimit 4 s, session timeout 1 s, the follower's disk at 30 kB/s, bound
    shrunk to 64 kB) an active client of the slow follower must keep its session while that
    follower still follows its leader.

    Fails before breaker4's fix (seeds 71, 72): the session expired at the leader and its
    ephemeral was deleted, though the follower never left its leader and the client read every
    100 ms (its LearnerPings stopped for up to 2.25 s); with the bound lifted (1 TiB) the same run
    keeps them (pings every 0.1 s, ~1 MB unlogged). Fixed: while its reader is stopped, the
    learner sends a LearnerPing with its touched sessions on each tick (the leader takes one at
    any time in broadcast)."""
    monkeypatch.setattr(learner_module, "MAX_UNLOGGED_BYTES", 64 * 1024)
    original = cluster_module.sim_config

    def longer_sync_limit(*args: Any, **kwargs: Any) -> Any:
        config = original(*args, **kwargs)
        config.sync_limit = 40  # 4 s: longer than the session timeout, as in production defaults
        return config

    monkeypatch.setattr(cluster_module, "sim_config", longer_sync_limit)
    seen: dict[str, Any] = {}
    simulate(seed, sessions_on_a_slow_learner(seen), snap_count=1_000_000, commit_log_count=1_000_000)
    assert seen["unlogged"] > 64 * 1024, seen  # the bound was reached: the reader stopped
    assert seen["role_unchanged"], seen  # it followed the same leader all along
    assert "expired" not in seen and seen["alive_at_leader"] and seen["ephemeral_at_leader"], seen
    assert seen["longest_ping_gap"] < 1.0, seen  # below the session timeout
