"""Whole ensembles under the deterministic simulator (zkpy.testing.cluster): the real server
code, virtual time, simulated links and disks, faults drawn from one seed. Every run checks the
ensemble's invariants as it goes and at the end."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.replication.leader import Leader
from zkpy.replication.wire import encode_frame
from zkpy.testing.cluster import CLIENT_PORT, ELECTION_PORT, PEER_PORT, SimCluster, simulate, swarm
from zkpy.testing.conjunctions import SLOW_REJOIN, SNAP_BELOW_SNAPSHOT, SNAP_ORPHAN
from zkpy.testing.simclient import ConnectionLost, SessionExpired, SimClient
from zkpy.testing.workload import (
    EXPIRING_CLIENT,
    EXPIRING_SESSION_MS,
    FAULTS,
    OPEN,
    check_history,
    inject_fault,
    make_registers,
    one_write,
    recover_everything,
    register_client,
    writer,
)
from zkpy.testing.workload import faulty_scenario as faulty


async def steady(cluster: SimCluster) -> None:
    await cluster.wait_all_serving()
    acked = await writer(cluster, "c1", trio.current_time() + 3.0)
    assert acked > 50
    cluster.check_trees()
    cluster.check_acknowledged()


def test_steady_writes_commit_everywhere() -> None:
    cluster = simulate(1, steady)
    assert cluster.leader() is None  # the run is over: nothing is left running
    assert len(cluster.invariants.committed) > 50


# The seeded runs below: 210 random schedules per CI run across the whole fault catalogue
# (zkpy/testing/workload.py FAULTS), each with its invariants, trees, acknowledged writes and
# clients' histories checked. The clients pause up to THINK seconds between operations: about
# half the operations of a run without pauses, and a bit more than half its cost, with as many
# requests caught by the faults (scripts/simulate.py runs them without pauses by default).
THINK = 0.05


def test_same_seed_same_run() -> None:
    first = simulate(7, faulty(6.0, THINK))
    second = simulate(7, faulty(6.0, THINK))
    assert first.events == second.events
    assert first.invariants.committed == second.invariants.committed


@pytest.mark.parametrize("seed", range(60))
def test_faults_lose_nothing(seed: int) -> None:
    simulate(seed, faulty(8.0, THINK))


@pytest.mark.parametrize("seed", range(100, 120))
def test_faults_with_an_observer(seed: int) -> None:
    simulate(seed, faulty(8.0, THINK), observers=1)


@pytest.mark.parametrize("seed", range(200, 220))
def test_faults_five_voters(seed: int) -> None:
    simulate(seed, faulty(8.0, THINK), voters=5)


@pytest.mark.timeout(900)  # 110 whole-ensemble runs, about half a second each
@settings(max_examples=110, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_schedules(seed: int) -> None:
    """Each seed also draws its configuration (swarm testing: tick, limits, snapCount,
    commitLogCount, 3 or 5 voters, an observer sometimes, which faults the nemesis uses)."""
    simulate(seed, faulty(5.0, THINK), **swarm(seed, list(FAULTS)))


def test_an_exhausted_zxid_counter_forces_a_new_epoch() -> None:
    """The leader steps down before its 32-bit counter would spill into the next epoch's zxids
    (here the limit is lowered to 20 transactions so the run reaches it)."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()

        def lower_limit(sid: int, name: str) -> None:
            peer = cluster.servers[sid].peer
            if peer is not None and isinstance(peer.role, Leader):
                peer.role.counter_limit = 20

        cluster.point_hooks.append(lower_limit)
        acked = await writer(cluster, "c1", trio.current_time() + 6.0)
        assert acked > 30  # more than one epoch holds
        assert len(cluster.invariants.leaders) >= 3
        assert all(zxid & 0xFFFFFFFF <= 21 + 1000 for zxid in cluster.invariants.committed)
        cluster.check_trees()

    simulate(3, scenario)


@pytest.mark.parametrize("seed", range(3))
def test_a_majority_partition_keeps_writing_and_a_minority_never_does(seed: int) -> None:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        old = cluster.leader()
        assert old is not None
        cluster.network.isolate(f"s{old}")
        majority = [(f"s{sid}", CLIENT_PORT) for sid in cluster.servers if sid != old]
        inside = SimClient("c-major", cluster.network.host("c-major"), majority, random.Random(seed))
        outside = SimClient(
            "c-minor", cluster.network.host("c-minor"), [(f"s{old}", CLIENT_PORT)], random.Random(seed)
        )
        cluster.network.partition(
            {f"s{old}", "c-minor"}, {f"s{sid}" for sid in cluster.servers if sid != old} | {"c-major"}
        )

        async def minority_writes() -> None:
            while True:
                try:
                    if outside._stream is None:
                        await outside.connect(attempts=1)
                    op = await outside.record(
                        "create", OpCode.CREATE, CreateRequest("/minor", b"", OPEN, 0), "/minor"
                    )
                    assert op.outcome != "ok", "a server cut off from its quorum acknowledged a write"
                except (ConnectionLost, SessionExpired):
                    await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(minority_writes)
            started = trio.current_time()
            await cluster.wait_until(lambda: cluster.leader() not in (None, old), 10.0, "a new leader")
            await inside.connect()
            op = await inside.record("create", OpCode.CREATE, CreateRequest("/major", b"", OPEN, 0), "/major")
            assert op.outcome == "ok"
            cluster.invariants.acknowledged_write(op)
            assert trio.current_time() - started < 10.0
            await trio.sleep(3.0)  # the minority keeps trying meanwhile
            nursery.cancel_scope.cancel()
        cluster.network.heal()
        await cluster.wait_all_serving()
        cluster.check_trees()

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(2))
def test_garbage_on_the_quorum_and_election_ports_harms_nobody(seed: int) -> None:
    """A stranger writes junk to the leader's quorum port and to every election port: each bad
    link is closed, the leader keeps leading and writes keep committing."""
    junk = [
        b"\x00\x00\x00\x05\x00\x00\x00\x00hello",  # a bad checksum
        (1 << 31).to_bytes(4, "big") + b"\x00" * 4,  # a frame length far over any limit
        encode_frame(["info", 99, 7, "participant"]),  # a server id not in the configuration
        encode_frame(["vote", "x"]),
        encode_frame(["hello", 2]) + b"\xff" * 64,  # election: claims to be server 2, then junk
        bytes(random.Random(seed).randbytes(4096)),
    ]

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        stranger = cluster.network.host("stranger")
        for data in junk:
            for sid in cluster.servers:
                for port in (PEER_PORT, ELECTION_PORT):
                    try:
                        stream = await stranger.connect(f"s{sid}", port)
                        await stream.send_all(data)
                        with trio.move_on_after(2.0):
                            while await stream.receive_some(4096):
                                pass
                        await stream.aclose()
                    except (OSError, trio.BrokenResourceError):
                        pass
        acked = await writer(cluster, "c1", trio.current_time() + 2.0)
        assert acked > 10
        assert cluster.leader() == leader and len(cluster.invariants.leaders) == 1
        cluster.check_trees()

    simulate(seed, scenario)


@pytest.mark.parametrize(
    "seed",
    [
        # A learner that had logged proposals in an earlier role never applied them after an empty
        # DIFF (found with the nemesis of that day, before whole-quorum crashes and slow disks:
        # the seed's run differs now; the bug's own scenario is scripted below).
        7,
        40,  # a leader whose role ended during its own fsync voted and synced learners with that batch
        # A server whose disk failed twice found the leader and a follower reporting votes of
        # different peer epochs (the follower had joined through an earlier election's reports)
        # and never joined: the election now only asks that a quorum follow the same leader.
        37487,
        # A SNAP's snapshot written, the old log not yet dropped, a crash; then that newest
        # snapshot damaged: the older one plus the old log came back quietly behind what the
        # server had applied. A skipped snapshot ahead of what recovery reached is now damage.
        105304,
    ],
)
def test_seeds_that_found_bugs(seed: int) -> None:
    if seed in (37487, 105304):
        simulate(seed, faulty(5.0, 0.02))  # found when the seeded runs' THINK was 0.02
    else:
        simulate(seed, faulty(8.0 if seed == 40 else 6.0))


@pytest.mark.parametrize("seed", [90426, 91301])
def test_swarm_seeds_that_found_bugs(seed: int) -> None:
    """`scripts/simulate.py --first SEED --seeds 1` (swarm configuration, 5 s, 0.02 think) on
    61248f4: no write after healing. Their disks' fsyncs (up to 0.2 s) were longer than syncLimit
    (two 50 ms ticks), and the learner's new behind rule took followers out every few ticks;
    it now allows two of the disk's recent writes beyond syncLimit."""
    simulate(seed, faulty(5.0, 0.02), **swarm(seed, list(FAULTS)))


def test_the_random_schedule_that_caught_the_leader_with_a_proposal_in_flight() -> None:
    """Hypothesis's seed 240 of test_random_schedules (CI, 2026-12-08): the end-of-run disk check
    ran while the leader had logged a proposal not yet committed and took it for a divergent
    record ("s5's log holds 0x700000004, not the committed transaction there"). The run now waits
    until nothing is logged past what every server applied."""
    simulate(240, faulty(5.0, THINK), **swarm(240, list(FAULTS)))


@pytest.mark.parametrize(
    ("seed", "reached"),
    [
        # Item 1: a leader with a tail only it logged SNAPs a learner and dies before its NEWLEADER
        # quorum; the learner joins the next leader's sync and is SNAPped below its snapshot.
        # On 254f930 seed 37 got there and, with SNAP keeping the snapshots above it
        # (MemoryStore.install_snapshot's deletion loop removed), failed: "server 3 wrote a
        # snapshot at zxid 0x700000001 that is not the committed history". Since the learner's
        # syncLimit rule (a63829e) seed 37 no longer gets there; seed 35, the first five-voter
        # seed from 0 that does, reaches the precondition but passes with the mutant (the stale
        # snapshot is not loaded again within the run): this keeps the reach, not the catch.
        (35, (SNAP_ORPHAN, SNAP_BELOW_SNAPSHOT)),
        # Item 3: a follower bounced right after logging while the other followers' disks are
        # slow rejoins with its tail uncommitted. With the TRUNC to the commit point reverted
        # (leader_core._sync passing committed=None in broadcast) the run fails: "server 4
        # serves a tree at zxid 0x10000000b, which no leader committed" (the 5th seed from 0;
        # checked on 254f930).
        (4, (SLOW_REJOIN,)),
    ],
)
def test_conjunction_faults_reach_the_safety_holes(seed: int, reached: tuple[str, ...]) -> None:
    """Five-voter random seeds (swarm configuration, 8 s, no think time: `scripts/simulate.py
    --voters 5`) whose conjunction faults (zkpy/testing/conjunctions.py) reach an interleaving of
    the ensemble-safety review: with its fix reverted each fails, which seeds before those faults
    never did (docs/testing.md, the mutation table). Here, with the fixes, it passes, and the
    assertion keeps CI's reach: a nemesis change that no longer gets there fails it."""
    options = {**swarm(seed, list(FAULTS)), "voters": 5}
    cluster = simulate(seed, faulty(8.0), **options)
    for what in reached:
        assert cluster.reach.conjunctions[what] > 0, what


def test_a_learner_applies_what_it_logged_in_an_earlier_role() -> None:
    """The bug seed 7 found, scripted: follower A logs proposal z and acks it, the leader commits z
    but its COMMIT never reaches A, the leader dies and comes back, and wins again (it has z too).
    A's sync is an empty DIFF: A must still apply z, which it logged in its earlier role."""
    reached = []

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader == 3  # equal zxids: the highest id wins, so s3 wins again after its restart
        a, b = 1, 2
        cluster.network.cut("s3", f"s{b}")  # B never sees the proposal

        def hold_commit_from_a(sid: int, name: str) -> None:
            if sid == a and name == "learner logged" and not reached:
                reached.append(trio.current_time())
                cluster.network.cut("s3", f"s{a}")  # A's ack gets through, the COMMIT does not

        client = SimClient("c1", cluster.network.host("c1"), [("s3", CLIENT_PORT)], random.Random(1))
        await client.connect()  # its session is a write too: hold commits only after it
        cluster.point_hooks.append(hold_commit_from_a)
        op = await client.record("create", OpCode.CREATE, CreateRequest("/z", b"z", OPEN, 0), "/z")
        assert op.outcome == "ok" and reached  # committed by s3 and s1, applied by s3 only
        cluster.invariants.acknowledged_write(op)
        cluster.crash(3)
        cluster.network.partition({f"s{a}"}, {f"s{b}"})  # no election without s3 meanwhile
        await trio.sleep(1.0)  # A gives up on the silent leader (syncLimit) before the COMMIT it holds
        cluster.network.heal()
        await cluster.start(3)
        await cluster.wait_all_serving()
        assert cluster.leader() == 3
        follow = await writer(cluster, "c2", trio.current_time() + 1.0)  # A applies z, then these
        assert follow > 0
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(5, scenario)


@pytest.mark.parametrize(("seed", "who"), [(1, "leader"), (2, "leader"), (3, "follower"), (4, "follower")])
def test_a_failing_disk_steps_its_server_aside_until_it_works(seed: int, who: str) -> None:
    """fsync fails (EIO) on one server: nothing of the failed batch is acknowledged, that server
    leaves the ensemble (a leader steps down), the others carry on, and once its disk works again
    it rejoins and catches up."""

    async def scenario(cluster: SimCluster) -> None:
        victim = await _serving_victim(cluster, who)
        epochs_before = set(cluster.invariants.leaders)
        cluster.servers[victim].disk.fail_next_fsync = 3  # the first retries fail too
        acked = await writer(cluster, "c1", trio.current_time() + 4.0)
        assert acked > 20
        peer = cluster.servers[victim].peer
        assert peer is not None
        if who == "leader":
            # It stepped down: new epochs were established after the failure. (Once its disk works
            # it may win the next election again, with the others' votes: it is up to date.)
            assert set(cluster.invariants.leaders) - epochs_before, "the failed leader never stepped down"
        await cluster.wait_all_serving()
        await one_write(cluster, "after", timeout=30.0)
        await cluster.wait_until(lambda: _caught_up(cluster), 30.0, "the failed server caught up")
        assert cluster.servers[victim].disk.fail_next_fsync == 0  # every injected failure was hit
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(seed, scenario)


def _caught_up(cluster: SimCluster) -> bool:
    return (
        len({s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None and s.serving})
        == 1
    )


def test_a_restarted_leader_syncs_from_the_log_behind_its_snapshot() -> None:
    """After a restart a server's history starts at its newest snapshot; the log behind it still
    serves a DIFF to a follower that is behind that snapshot (rather than a whole SNAP)."""
    modes: list[str] = []

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        cluster.point_hooks.append(
            lambda sid, name: (
                modes.append(name.split(":")[1]) if name.startswith("leader sent syncdata") else None
            )
        )
        leader = cluster.leader()
        assert leader is not None
        behind = next(sid for sid in cluster.servers if sid != leader)
        assert await writer(cluster, "c0", trio.current_time() + 0.3) > 0  # it holds some history
        cluster.crash(behind)
        assert await writer(cluster, "c1", trio.current_time() + 2.0) > 30  # several snapshots meanwhile
        assert cluster.servers[leader].disk.snapshots
        for sid in cluster.servers:  # everyone restarts from disk: histories start at snapshots
            cluster.crash(sid)
        modes.clear()
        for sid in cluster.servers:
            await cluster.start(sid)
        await cluster.wait_all_serving()
        assert modes and set(modes) == {"diff"}, modes
        cluster.check_trees()

    simulate(8, scenario, snap_count=10, commit_log_count=1000)


# -- the nemesis's newer faults, one at a time: each happens, and the ensemble stays correct ------


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_of_the_catalogue_takes_effect(fault: str) -> None:
    """Each fault of the nemesis on its own, on a healthy ensemble under load: it finds something
    to act on (a fault that silently did nothing would leave the random runs blind to it), and
    after everything is recovered the usual checks hold."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        rng = random.Random(11)
        until = trio.current_time() + 5.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_client, cluster, "r1", until, 4000, THINK)
            nursery.start_soon(register_client, cluster, EXPIRING_CLIENT, until, EXPIRING_SESSION_MS, THINK)
            async with trio.open_nursery() as later:
                await trio.sleep(0.5)
                if fault == "restart":
                    cluster.crash(rng.choice(sorted(cluster.servers)))  # someone to restart
                assert await inject_fault(cluster, fault, rng, later, until)
                await trio.sleep(until - trio.current_time())
                later.cancel_scope.cancel()
        if fault == "expire_client":
            assert any(e.endswith(f"session expired {EXPIRING_CLIENT}") for e in cluster.events)
        await recover_everything(cluster)
        await _all_correct_after(cluster)

    simulate(4, scenario)


def _rejoins(cluster: SimCluster) -> list[tuple[float, int]]:
    """(time, sid) each time a learner (re)connects to a leader, from now on."""
    joins: list[tuple[float, int]] = []
    cluster.point_hooks.append(
        lambda sid, name: joins.append((trio.current_time(), sid)) if name == "learner sent info" else None
    )
    return joins


async def _serving_victim(cluster: SimCluster, who: str) -> int:
    """Once every server serves: the leader's id (who="leader") or a follower's."""
    await cluster.wait_all_serving()
    leader = cluster.leader()
    assert leader is not None
    return leader if who == "leader" else next(sid for sid in cluster.servers if sid != leader)


async def _all_correct_after(cluster: SimCluster) -> None:
    """The end of every fault test: serving, a write goes through, everyone caught up, and the
    trees, the acknowledged writes and the register clients' histories check out."""
    await cluster.wait_all_serving()
    await one_write(cluster, "after", timeout=30.0)
    await cluster.wait_until(lambda: _caught_up(cluster), 30.0, "every server caught up")
    cluster.check_trees()
    cluster.check_acknowledged()
    check_history(cluster)


@pytest.mark.parametrize(("seed", "extra", "drops"), [(1, 1.0, True), (2, 0.8, True), (3, 0.1, False)])
def test_a_delay_spike_past_sync_limit_drops_followers_who_rejoin(
    seed: int, extra: float, drops: bool
) -> None:
    """Every trip takes `extra` seconds longer for 2 s. Order holds, so the first message after
    the spike starts comes `extra` late: past syncLimit (0.5 s) the followers give up on their
    leader (or it on them) and join again; below it nothing happens."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        epochs = len(cluster.invariants.leaders)
        joins = _rejoins(cluster)
        until = trio.current_time() + 5.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until, THINK)
            nursery.start_soon(register_client, cluster, "r1", until, 4000, THINK)
            await trio.sleep(1.0)
            cluster.network.delay_spike(extra, duration=2.0)
        if drops:
            assert joins, "no learner joined a leader again"
        else:
            assert not joins and len(cluster.invariants.leaders) == epochs
        await _all_correct_after(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize(("seed", "who"), [(1, "leader"), (2, "follower")])
def test_slow_fsyncs_slow_the_leader_but_not_a_quorum_without_the_slow_follower(seed: int, who: str) -> None:
    """One server's every fsync takes 0.5-3 s for 3 s. On the leader every write waits for it (the
    leader counts its own ack only once logged); on a follower the other two still commit fast."""

    async def scenario(cluster: SimCluster) -> None:
        victim = await _serving_victim(cluster, who)
        disk = cluster.servers[victim].disk
        start = trio.current_time()
        disk.slow_until = start + 3.0
        acked = await writer(cluster, "c1", start + 5.0)
        assert acked > 5 and disk.slow_fsyncs > 0
        slow = [op for op in cluster.invariants.acknowledged if start < op.invoked < start + 2.5]
        assert slow
        latencies = [op.completed - op.invoked for op in slow if op.completed is not None]
        if who == "leader":
            assert min(latencies) >= 0.5
        else:
            assert max(latencies) < 0.5
        await _all_correct_after(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize(("seed", "who"), [(1, "leader"), (2, "follower")])
def test_a_full_disk_steps_its_server_aside_until_there_is_room(
    seed: int, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Log writes fail with ENOSPC on one server for 2 s: it steps aside saying the disk is full
    (a leader gives up leadership), and it comes back once there is room. (The others carry on
    only if it does not win the next election: see the test below.)"""

    async def scenario(cluster: SimCluster) -> None:
        victim = await _serving_victim(cluster, who)
        disk = cluster.servers[victim].disk
        disk.full_until = trio.current_time() + 2.0
        acked = await writer(cluster, "c1", trio.current_time() + 4.0)
        assert acked > 10 and disk.full_refusals > 0
        if who == "leader":
            assert len(cluster.invariants.leaders) > 1  # it gave up leadership
        await _all_correct_after(cluster)
        assert cluster.servers[victim].serving

    simulate(seed, scenario)
    full = [r.getMessage() for r in caplog.records if r.getMessage().startswith("disk failed")]
    assert full and all("No space left on device" in message for message in full), full


def test_a_leader_with_a_full_disk_does_not_keep_winning_elections() -> None:
    """Its disk probe (a log file's preallocation) fails while the disk is full, so it stays out
    of elections and the two others, a healthy quorum, go on committing. (When the probe only
    re-read the disk, the full server rejoined 0.1 s after each failure, won with the highest
    id, failed its first write, and no write committed for as long as its disk was full.)"""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader == 3
        start = trio.current_time()
        cluster.servers[leader].disk.full_until = start + 10.0
        await writer(cluster, "c1", start + 10.0)
        during = [op for op in cluster.invariants.acknowledged if op.completed is not None]
        assert during, f"no write committed in 10 s; epochs and leaders: {cluster.invariants.leaders}"

    simulate(3, scenario)


@pytest.mark.parametrize("seed", range(3))
def test_a_paused_leader_is_replaced_and_its_stale_messages_arrive_late(seed: int) -> None:
    """The leader is frozen for 4 s (past syncLimit and the clients' session timeouts): the others
    elect a new leader meanwhile; on resume everything it sent and was sent arrives at once, stale,
    and it rejoins as a follower of the new epoch without harming anything."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        old = cluster.leader()
        assert old is not None
        first_epoch = max(cluster.invariants.leaders)
        until = trio.current_time() + 7.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until, THINK)
            nursery.start_soon(register_client, cluster, "r1", until, 4000, THINK)
            nursery.start_soon(register_client, cluster, "e1", until, 1000, THINK)
            await trio.sleep(1.0)
            cluster.network.pause(f"s{old}")
            await trio.sleep(4.0)
            replaced = {sid for epoch, sid in cluster.invariants.leaders.items() if epoch > first_epoch}
            assert replaced and old not in replaced, "no new leader while the old one was frozen"
            held = cluster.network.resume(f"s{old}")
            assert held > 0
        await _all_correct_after(cluster)
        peer = cluster.servers[old].peer
        assert peer is not None and not isinstance(peer.role, Leader)

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(3))
def test_connection_resets_lose_messages_not_writes(seed: int) -> None:
    """Every connection of the leader is reset three times under load (its learners' links and its
    clients'): requests and replies in flight are lost, their outcomes unknown; the learners go
    back to election (as Apache's followers do when their leader's link breaks), the leader loses
    its quorum, everyone is back within half a second and the clients reconnect; nothing
    acknowledged is lost."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        leader = cluster.leader()
        assert leader is not None
        joins = _rejoins(cluster)
        until = trio.current_time() + 5.0
        resets: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until, THINK)
            nursery.start_soon(register_client, cluster, "r1", until, 4000, THINK)
            nursery.start_soon(register_client, cluster, "r2", until, 4000, THINK)
            for _ in range(3):
                await trio.sleep(1.0)
                assert cluster.network.reset(f"s{leader}") > 0
                resets.append(trio.current_time())
        # every follower joined again (the leader too, if the resets cost it its quorum meanwhile)
        assert {sid for _, sid in joins} >= set(cluster.servers) - {leader}
        assert all(any(t < when < t + 0.5 for when, _ in joins) for t in resets), "slow to reconnect"
        after = [op for op in cluster.invariants.acknowledged if op.invoked > resets[-1]]
        assert after, "no write went through after the last reset"
        await _all_correct_after(cluster)

    simulate(seed, scenario)


@pytest.mark.parametrize("seed", range(3))
def test_a_client_cut_off_past_its_session_timeout_mid_write_gets_session_expired(seed: int) -> None:
    """A client with a 1 s session is cut off from every server for 4 s while a write of its is
    outstanding: the write's outcome is unknown, the ensemble expires the session meanwhile, and
    when the client comes back it is told SessionExpired and starts a new session. Its history,
    across both sessions, is checked with the others'."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        until = trio.current_time() + 8.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_client, cluster, "e1", until, 1000)
            nursery.start_soon(register_client, cluster, "r1", until, 4000, THINK)
            await trio.sleep(0.5)
            client = next(c for c in cluster.clients if c.name == "e1")
            while not (client.outstanding and client.history[-1].kind == "set"):
                await trio.sleep(0.0005)
            pending, old_session = client.history[-1], client.session_id
            cluster.network.isolate("e1")
            await trio.sleep(4.0)
            leader = cluster.leader()
            assert leader is not None
            peer = cluster.servers[leader].peer
            assert peer is not None and old_session not in peer.tree.sessions, "not expired"
            cluster.network.rejoin("e1")
            rejoined = trio.current_time()
        assert pending.outcome == "unknown"
        assert any(e.endswith("session expired e1") for e in cluster.events)
        assert client.session_id not in (0, old_session)
        assert any(op.outcome == "ok" and op.kind == "set" and op.invoked > rejoined for op in client.history)
        await _all_correct_after(cluster)

    simulate(seed, scenario)
