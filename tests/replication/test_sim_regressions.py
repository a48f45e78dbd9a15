"""Named regressions: the interleavings that lost data in Apache ZooKeeper's history, each driven
exactly by a scripted simulation (zkpy.testing.cluster) on a few fixed seeds.

Each scenario crashes servers from a protocol-point hook (cluster.point_hooks) at the step the
original bug needed, asserts that the step was really reached (so a change of timing cannot make
a test pass without exercising its case), and then leaves the verdict to the simulator: the
invariants checked as the run goes, and at the end, after healing everything, one more write,
every server caught up, check_trees and check_acknowledged, plus what is on every disk. Then
the whole ensemble is power-cycled and checked again from what the disks held.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from zkpy.jute.ops import CreateRequest, OpCode, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE as OPEN
from zkpy.replication.leader import Leader
from zkpy.replication.learner_core import Effect, LearnerCore, Send
from zkpy.testing.cluster import CLIENT_PORT, InvariantViolation, SimCluster, simulate
from zkpy.testing.disk import MemoryDisk
from zkpy.testing.workload import nemesis, new_client, one_write, recover_everything, writer
from zkpy.tree.txn import Txn

Scenario = Callable[[SimCluster], Awaitable[None]]


# -- helpers ----------------------------------------------------------------------------------


class Points:
    """Every protocol point every server reports, in order, with the virtual time."""

    def __init__(self, cluster: SimCluster) -> None:
        self.seen: list[tuple[float, int, str]] = []
        cluster.point_hooks.append(self._record)

    def _record(self, sid: int, name: str) -> None:
        self.seen.append((trio.current_time(), sid, name))

    def count(self, name: str, sid: int | None = None, since: float = 0.0) -> int:
        return sum(1 for t, s, n in self.seen if n == name and t >= since and (sid is None or s == sid))


def leader_of(cluster: SimCluster) -> Leader:
    sid = cluster.leader()
    assert sid is not None
    peer = cluster.servers[sid].peer
    assert peer is not None and isinstance(peer.role, Leader)
    return peer.role


def store_points(cluster: SimCluster, sid: int) -> None:
    """Report the store's own points (between a SNAP's two durable steps) through the cluster's
    hooks. Call right after cluster.start(sid): the store is new with each start."""
    peer = cluster.servers[sid].peer
    assert peer is not None

    def report(name: str) -> None:
        for hook in list(cluster.point_hooks):
            hook(sid, name)

    peer.store.on_point = report  # type: ignore[attr-defined]


async def write_for(cluster: SimCluster, seconds: float, *names: str) -> None:
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(writer, cluster, name, until)


async def new_leader(cluster: SimCluster, not_sid: int, timeout: float = 30.0) -> int:
    await cluster.wait_until(
        lambda: cluster.leader() not in (None, not_sid), timeout, f"a leader other than s{not_sid}"
    )
    sid = cluster.leader()
    assert sid is not None
    return sid


def caught_up(cluster: SimCluster) -> bool:
    zxids = {s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None and s.serving}
    return len(zxids) == 1


def check_disks(cluster: SimCluster) -> None:
    """What each disk would recover from is committed history (SimCluster.check_disks)."""
    cluster.check_disks()


async def settle_and_check(cluster: SimCluster, name: str) -> None:
    await recover_everything(cluster)
    await one_write(cluster, name, timeout=60.0)
    await cluster.wait_until(lambda: caught_up(cluster), 30.0, "every server caught up")
    cluster.check_trees()
    cluster.check_acknowledged()
    check_disks(cluster)


async def finish(cluster: SimCluster) -> None:
    """Heal, write, check; then power-cycle the whole ensemble and check what the disks kept."""
    cluster.point_hooks.clear()
    await settle_and_check(cluster, "after-heal")
    for sid in cluster.servers:
        cluster.crash(sid)
    cluster.note("power cut: every server")
    await trio.sleep(0.2)
    await settle_and_check(cluster, "after-power-cycle")


def crash_at_once(cluster: SimCluster, *sids: int) -> None:
    for sid in sids:
        cluster.crash(sid)


def logged_uncommitted(cluster: SimCluster, sid: int) -> bool:
    """Server `sid`'s log ends in a transaction no leader committed."""
    log = cluster.servers[sid].disk.log
    return bool(log) and log[-1][0] not in cluster.invariants.committed


def wipe(cluster: SimCluster, sid: int) -> None:
    """A new, empty disk for a crashed server: it comes back as a new member, so what it applied
    before is forgotten by the never-go-back invariant too."""
    assert not cluster.servers[sid].alive
    cluster.servers[sid].disk = MemoryDisk()
    cluster.invariants.max_applied.pop(sid, None)
    cluster.note(f"wipe s{sid}")


def uncommitted_tail(cluster: SimCluster, sid: int) -> int:
    """The last zxid on server `sid`'s disk, asserting no leader committed it."""
    last = cluster.servers[sid].disk.log[-1][0]
    assert last not in cluster.invariants.committed
    return last


# -- ZOOKEEPER-1154 -----------------------------------------------------------------------------


def zk1154() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 1.0, "a")
        old = cluster.leader()
        assert old is not None
        followers = sorted(sid for sid in cluster.servers if sid != old)
        lucky, others = followers[0], followers[1:]
        for sid in others:  # the leader's proposals now reach only `lucky`: no quorum of 5
            cluster.network.cut(f"s{old}", f"s{sid}")
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if "tails" in state or (sid, name) not in ((old, "leader logged"), (lucky, "learner logged")):
                return
            if logged_uncommitted(cluster, old) and logged_uncommitted(cluster, lucky):
                state["tails"] = (uncommitted_tail(cluster, old), uncommitted_tail(cluster, lucky))
                crash_at_once(cluster, old, lucky)

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 6.0, "b", "c")
            await cluster.wait_until(lambda: "tails" in state, 5.0, "the divergent tail logged, then crashed")
            leader = await new_leader(cluster, old)
            assert leader in others
            cluster.network.heal()  # the crashed leader's held proposals died with the old links
            await trio.sleep(1.0)  # the new epoch writes
            restarted = trio.current_time()
            await cluster.start(old)
            await cluster.start(lucky)
            await cluster.wait_all_serving()
        # Both stale servers were rolled back, not DIFF'd on top of their divergent suffix.
        assert points.count("leader sent syncdata:trunc", leader, since=restarted) >= 2, points.seen[-40:]
        for tail in state["tails"]:
            assert tail not in cluster.invariants.committed
        await finish(cluster)
        for sid in (old, lucky):
            assert all(z in cluster.invariants.committed for z, _ in cluster.servers[sid].disk.log)

    return scenario


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_zk1154_highest_uncommitted_zxid_is_truncated(seed: int) -> None:
    """ZOOKEEPER-1154: a server whose log ended in proposals of an old epoch that were never
    committed rejoined and was sent a DIFF that kept its divergent suffix: data inconsistency.

    Forced: in a 5-server ensemble the leader's links to three followers are cut, so its last
    proposals reach (and are logged by) only one follower, never a quorum. Both are crashed the
    moment that follower logged the uncommitted batch; the other three elect and write; the two
    stale servers restart with the highest zxids of the old epoch and must be sent TRUNC."""
    simulate(seed, zk1154(), voters=5, commit_log_count=10_000)


# -- ZOOKEEPER-2845 -----------------------------------------------------------------------------


def zk2845(new_epoch_writes: bool) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 1.0, "a")
        old = cluster.leader()
        assert old is not None
        for sid in cluster.servers:
            if sid != old:  # nothing the leader proposes from now on reaches anyone
                cluster.network.cut(f"s{old}", f"s{sid}")
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if "tail" in state or sid != old or name != "leader logged":
                return
            if logged_uncommitted(cluster, old):
                state["tail"] = uncommitted_tail(cluster, old)
                cluster.crash(old)

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 6.0, "b", "c")
            await cluster.wait_until(lambda: "tail" in state, 5.0, "the leader logged alone, then crashed")
            leader = await new_leader(cluster, old)
            cluster.network.heal()
            if new_epoch_writes:
                await trio.sleep(1.0)
            else:
                nursery.cancel_scope.cancel()  # the new epoch has nothing but what it synced
        restarted = trio.current_time()
        await cluster.start(old)
        await cluster.wait_all_serving()
        assert cluster.leader() == leader
        assert points.count("leader sent syncdata:trunc", leader, since=restarted) == 1, points.seen[-40:]
        old_peer = cluster.servers[old].peer
        assert old_peer is not None
        assert not old_peer.history.holds(state["tail"])
        assert state["tail"] not in cluster.invariants.committed
        await finish(cluster)
        assert state["tail"] not in cluster.invariants.committed
        assert all(z != state["tail"] for z, _ in cluster.servers[old].disk.log)

    return scenario


@pytest.mark.parametrize("new_epoch_writes", [False, True], ids=["quiet-epoch", "writing-epoch"])
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_zk2845_leaders_own_uncommitted_proposal_is_dropped(seed: int, new_epoch_writes: bool) -> None:
    """ZOOKEEPER-2845: a leader logged a proposal no follower received and crashed; the others
    went on in a new epoch; the old leader restarted with that transaction in its log and data
    tree, was sent TRUNC for the log but kept (and served) the transaction in memory.

    Forced: every link out of the leader is cut, the leader is crashed at its "leader logged"
    point for a batch nobody else has; the other two elect (and, in one variant, write); the
    old leader restarts and must be sent TRUNC, and never apply, serve or keep that batch, across
    a later power cycle too."""
    simulate(seed, zk2845(new_epoch_writes), commit_log_count=10_000)


# -- ZOOKEEPER-3104 -----------------------------------------------------------------------------


def zk3104() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        leader = cluster.leader()
        assert leader is not None
        wiped = min(sid for sid in cluster.servers if sid != leader)
        cluster.crash(wiped)
        state: dict[str, Any] = {"in_flight": 0}

        def hook(sid: int, name: str) -> None:
            if sid == leader and name == "leader sent syncdata:snap" and "snap" not in state:
                role = leader_of(cluster)
                # Proposals the snapshot does not hold: in the leader's history, not in its tree.
                state["snap"] = (role.peer.tree.last_zxid, role.peer.history.last)
            elif sid == leader and name == "leader logged" and "snap" in state and "acknl" not in state:
                state["in_flight"] += 1
            elif sid == wiped and name == "learner sent acknl" and "snap" in state:
                state["acknl"] = True

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 4.0, "b", "c", "d")
            await trio.sleep(1.0)  # well past the leader's 5-transaction window
            wipe(cluster, wiped)
            await cluster.start(wiped)
            await cluster.wait_until(lambda: cluster.servers[wiped].serving, 10.0, "the wiped server serving")
        assert "snap" in state, points.seen[-40:]
        snapshot_zxid, proposed = state["snap"]
        assert state["in_flight"] > 0 or proposed > snapshot_zxid, (
            "no proposal was on its way beside the SNAP (logged by the leader before the learner's "
            "acknl, or proposed and not yet in the tree the SNAP sent)"
        )
        # Now it holds data nobody else may: the leader goes, the wiped server and the third elect.
        cluster.crash(leader)
        await new_leader(cluster, leader)
        await write_for(cluster, 0.5, "e")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_zk3104_snap_under_writes_fits_the_stream(seed: int) -> None:
    """ZOOKEEPER-3104: during a SNAP sync the snapshot and the transactions forwarded after it
    could overlap or leave a gap (and NEWLEADER was acknowledged before the snapshot was on
    disk), so the learner's state differed from the leader's.

    Forced: a small commit log window (5) and a follower whose disk is replaced by an empty one
    while it is down rejoin under three running writers, so the leader must SNAP while proposals
    are on their way (asserted: logged by the leader before the learner's acknl, or proposed
    beyond the tree the SNAP holds; with batches pipelined the second is the usual one). Then the leader is crashed, so the wiped server's data counts,
    and the ensemble is healed, written to and power-cycled."""
    simulate(seed, zk3104(), commit_log_count=5)


# -- ZOOKEEPER-3642 -----------------------------------------------------------------------------


def zk3642(wiped: bool) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        late = min(sid for sid in cluster.servers if sid != old)
        cluster.crash(late)
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if sid == old and name == "leader sent syncdata:snap" and "crashed" not in state:
                state["crashed"] = trio.current_time()
                cluster.crash(old)  # NEWLEADER, queued right behind the snapshot, is never written

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 5.0, "b", "c")
            await trio.sleep(1.0)  # past the 5-transaction window: the late server needs a SNAP
            if wiped:
                wipe(cluster, late)
            await cluster.start(late)
            await cluster.wait_until(lambda: "crashed" in state, 5.0, "the leader crashed after sending SNAP")
            leader = await new_leader(cluster, old)
            await trio.sleep(1.0)
            await cluster.start(old)
            await cluster.wait_all_serving()
        installs = points.count("learner installed snapshot", late, since=state["crashed"])
        assert installs >= 1, points.seen[-40:]
        assert points.count("leader sent newleader", old, since=state["crashed"] - 1.0) == 0
        cluster.note(f"leader after the SNAP crash: s{leader}")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize(("seed", "wiped"), [(41, False), (42, True), (43, False), (44, True)])
def test_zk3642_leader_dies_between_snap_and_newleader(seed: int, wiped: bool) -> None:
    """ZOOKEEPER-3642: the leader crashed right after sending a SNAP and before NEWLEADER; the
    learner had installed the snapshot (taking on its zxid) without the epoch that goes with it,
    and the next elections could pick an inconsistent history.

    Forced: a follower is taken down (and in two seeds its disk wiped) until it is beyond the
    leader's 5-transaction window; it rejoins under writers, and the leader is crashed at its
    "leader sent syncdata:snap" point, so NEWLEADER is never written (asserted), while the learner
    installs the snapshot (asserted). The survivors elect and write; the old leader comes back."""
    simulate(seed, zk3642(wiped), commit_log_count=5)


# -- ZOOKEEPER-3911 -----------------------------------------------------------------------------


def zk3911() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        behind, other = sorted(sid for sid in cluster.servers if sid != old)
        cluster.crash(behind)
        await write_for(cluster, 0.5, "b")  # committed by the leader and `other`: `behind` lacks them
        cluster.network.cut(f"s{old}", f"s{other}")
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if "tail" not in state:
                # The leader logs a batch `other` never gets, then the two crash: the batch is
                # on the leader's disk only, not committed (yet).
                if sid == old and name == "leader logged" and logged_uncommitted(cluster, old):
                    state["tail"] = uncommitted_tail(cluster, old)
                    crash_at_once(cluster, old, other)
            elif "power_cut" not in state and sid == old and name == "leader sent uptodate":
                # Established on {old, behind}: `behind` acknowledged NEWLEADER after a DIFF that
                # carried `other`'s batches and the leader-only tail; the history is committed now.
                state["power_cut"] = trio.current_time()
                crash_at_once(cluster, old, behind)

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 3.0, "c", "d")
            await cluster.wait_until(lambda: "tail" in state, 5.0, "the leader logged alone, then crashed")
            nursery.cancel_scope.cancel()
        cluster.network.heal()
        resync = trio.current_time()
        await cluster.start(old)
        await cluster.start(behind)
        await cluster.wait_until(lambda: "power_cut" in state, 10.0, "established on a DIFF, then power cut")
        assert points.count("leader sent syncdata:diff", old, since=resync) >= 1, points.seen[-40:]
        assert points.count("learner sent acknl", behind, since=resync) == 1
        assert state["tail"] in cluster.invariants.committed  # committed by establishing the epoch
        # The old leader stays down: only what `behind` made durable before acknowledging can
        # carry the tail into the next epoch.
        await cluster.start(behind)
        await cluster.start(other)
        leader = await new_leader(cluster, old)
        assert leader == behind  # it alone holds the tail
        await write_for(cluster, 0.5, "e")
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [51, 52, 53])
def test_zk3911_quorum_crash_after_newleader_ack_keeps_the_diff(seed: int) -> None:
    """ZOOKEEPER-3911: followers acknowledged NEWLEADER after a DIFF before the DIFF's
    transactions were on their disks; a whole-quorum crash right after the leader was
    established lost transactions that the establishment had committed.

    Forced: a leader-only uncommitted tail (links cut, leader and one follower crashed); the
    leader and the follower that was down restart and form a quorum by a DIFF (asserted) that
    commits the tail; both crash at the leader's "leader sent uptodate" point. The follower that
    took the DIFF and the third server (which never had the tail) must elect with the tail and
    every acknowledged write intact."""
    simulate(seed, zk3911(), commit_log_count=10_000, snap_count=10_000)  # DIFF: no snapshot cuts the history


# -- ZOOKEEPER-2872 -----------------------------------------------------------------------------


def zk2872(crash_point: str) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        for sid in cluster.servers:
            if sid != old:
                cluster.network.cut(f"s{old}", f"s{sid}")
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            if sid != old:
                return
            if "tail" not in state and name == "leader logged" and logged_uncommitted(cluster, old):
                state["tail"] = uncommitted_tail(cluster, old)  # a divergent tail, to be thrown away
                cluster.crash(old)
            elif "tail" in state and "crashed" not in state and name == crash_point:
                disk = cluster.servers[old].disk
                state["crashed"] = (trio.current_time(), len(disk.snapshots), bool(disk.log))
                cluster.crash(old)

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 5.0, "b", "c")
            await cluster.wait_until(lambda: "tail" in state, 5.0, "the leader logged alone, then crashed")
            await new_leader(cluster, old)
            cluster.network.heal()
            await trio.sleep(1.0)  # past the 5-transaction window: the old leader needs a SNAP
            await cluster.start(old)
            store_points(cluster, old)
            await cluster.wait_until(lambda: "crashed" in state, 10.0, f"crashed at {crash_point}")
            await trio.sleep(0.3)
            restarted = trio.current_time()
            await cluster.start(old)
            await cluster.wait_all_serving()
        assert points.count("learner installed snapshot", old, since=restarted) >= 1, points.seen[-40:]
        if crash_point == "store snapshot written":
            _, snapshots, old_log = state["crashed"]
            assert snapshots >= 1 and old_log  # the new snapshot beside the old (divergent) log
        await finish(cluster)

    return scenario


@pytest.mark.parametrize(
    "crash_point", ["learner installing snapshot", "store snapshot written", "learner installed snapshot"]
)
@pytest.mark.parametrize("seed", [61, 62])
def test_zk2872_interrupted_snap_recovers_and_resyncs(seed: int, crash_point: str) -> None:
    """ZOOKEEPER-2872: a SNAP sync interrupted by a crash left a partial snapshot (and the old
    log) behind; on restart the server loaded it as its newest state and served damaged data.

    Forced: the learner is an old leader with a divergent, never-committed tail, beyond the new
    leader's 5-transaction window, so it is sent a SNAP; it is crashed before the install, between
    the snapshot's write and the old log's removal ("store snapshot written": the new snapshot
    beside the old divergent log), or after the install but before the DIFF'd transactions and
    NEWLEADER's acknowledgement. It restarts from that disk and must sync again (asserted: a
    second install) and hold only committed history."""
    simulate(seed, zk2872(crash_point), commit_log_count=5)


# -- ensemble safety item 3: a restarted follower's uncommitted tail ------------------------------


def restarted_learner_with_an_uncommitted_tail(observer: bool = False) -> Scenario:
    """A learner (a follower, or the observer) logs a proposal, crashes before it could count and
    restarts while every other voter but the leader logs seconds late, so the proposal is still
    uncommitted when the learner rejoins the same leader."""

    async def scenario(cluster: SimCluster) -> None:
        points = Points(cluster)
        await cluster.wait_all_serving()
        await write_for(cluster, 0.5, "a")
        old = cluster.leader()
        assert old is not None
        voters = sorted(sid for sid in cluster.servers if sid != old and sid <= cluster.voters)
        learner = max(cluster.servers) if observer else voters[0]
        for sid in voters:  # they log the next proposals seconds late: no quorum acks them yet
            if sid != learner:
                disk = cluster.servers[sid].disk
                disk.slow_fsync = (3.0, 3.0)
                disk.slow_until = trio.current_time() + 20.0
        state: dict[str, Any] = {}

        def hook(sid: int, name: str) -> None:
            # Crashed the moment the proposal is on its disk, before its ack leaves.
            first = "tail" not in state and sid == learner and name == "learner logged"
            if first and logged_uncommitted(cluster, learner):
                state["tail"] = uncommitted_tail(cluster, learner)
                cluster.crash(learner)

        cluster.point_hooks.append(hook)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_for, cluster, 2.0, "b")
            await cluster.wait_until(
                lambda: "tail" in state, 2.0, "the learner logged a proposal, then crashed"
            )
            restarted = trio.current_time()
            await cluster.start(learner)  # recovery applies its whole log, the tail included
            await cluster.wait_until(lambda: cluster.servers[learner].serving, 10.0, "the learner serving")
        assert cluster.leader() == old  # it rejoined the same leader, in broadcast
        assert state["tail"] not in cluster.invariants.committed or points.count(
            "leader sent syncdata:trunc", old, since=restarted
        )
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_restarted_follower_never_serves_its_uncommitted_tail(seed: int) -> None:
    """Ensemble safety item 3: a follower logged a proposal, crashed before acknowledging it and
    restarted; recovery applied its whole log, the leader DIFFed it (its last zxid was in the
    leader's history) and at UPTODATE it served a transaction no quorum had committed (Apache
    truncates such a learner to maxCommittedLog). Three followers log slowly here, so the proposal
    stays uncommitted while the restarted follower rejoins the same leader. The simulator's
    serving oracle fails on 7a18865 ("serves a tree at zxid ..., which no leader committed").
    syncLimit is 2 s: the slow followers' 3 s fsyncs must stay within the learner's behind rule
    (syncLimit plus two write times, a hung write counted as syncLimit), or they leave service
    and the leader loses its quorum."""
    simulate(seed, restarted_learner_with_an_uncommitted_tail(), voters=5, sync_limit=20)


# -- ensemble safety item 7: a leader's host vanishes right after the election --------------------


def leader_vanishes_after_its_election() -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        cluster.network.connect_timeout = 130.0  # a real kernel's SYN retries, not the sim's 1 s
        await cluster.wait_all_serving()
        first = cluster.leader()
        assert first is not None
        state: dict[str, int] = {}

        def hook(sid: int, name: str) -> None:
            if "gone" not in state and name.startswith("elected ") and sid != first:
                state["gone"] = int(name.split()[1])  # the moment one server has decided
                cluster.network.isolate(f"s{state['gone']}")
                cluster.note(f"isolate s{state['gone']}, just elected")

        cluster.point_hooks.append(hook)
        cluster.crash(first)
        await cluster.wait_until(lambda: "gone" in state, 10.0, "a new election decided")
        vanished = state["gone"]
        t0 = trio.current_time()
        # initLimit is 1 s here: the others give up on it and elect another well within 10 s.
        await new_leader(cluster, vanished, timeout=10.0)
        assert trio.current_time() - t0 < 10.0
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [31, 32])
def test_followers_of_a_leader_that_vanished_give_up_within_init_limit(seed: int) -> None:
    """Ensemble safety item 7: a learner's connect to its leader had no deadline of its own; if
    the leader's host vanished after the election, its followers waited for the kernel's SYN
    timeout (about 2 minutes; the simulated connect timeout is raised to 130 s here) instead of
    initLimit, telling looking peers all the while that they followed it. Fails on 7a18865 (no
    leader other than the vanished one within 10 s of virtual time)."""
    simulate(seed, leader_vanishes_after_its_election(), voters=5)


# -- ensemble safety item 4: a write from the server a client left ------------------------------


def write_from_the_server_a_client_left(arrivals: list[tuple[float, int, int]]) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        old, new = sorted(sid for sid in cluster.servers if sid != leader)[:2]
        client = new_client(cluster, "mover")
        client.servers = [(f"s{old}", CLIENT_PORT)]
        await client.connect()
        await client.record("create", OpCode.CREATE, CreateRequest("/k", b"0", OPEN, 0), "/k")
        cluster.network.cut(f"s{old}", f"s{leader}")  # its forward is held, the link kept
        client.request_timeout = 0.05
        stale = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"1", -1), "/k", b"1")
        assert stale.outcome == "unknown"  # the client gave up on that server
        client.request_timeout = 3.0
        client.servers = [(f"s{new}", CLIENT_PORT)]
        await client.connect()  # the same session, through another server
        moved = await client.record("set", OpCode.SET_DATA, SetDataRequest("/k", b"2", -1), "/k", b"2")
        assert moved.outcome == "ok"
        acknowledged = trio.current_time()
        cluster.network.heal()  # the held forward reaches the leader now
        await cluster.wait_until(
            lambda: any(t >= acknowledged and owner == old for t, owner, _ in arrivals),
            5.0,
            "the stale forward reached the leader after the acknowledged write",
        )
        await cluster.wait_until(lambda: caught_up(cluster), 10.0, "every server caught up")
        for sid, server in cluster.servers.items():
            assert server.peer is not None
            value = server.peer.tree.nodes["/k"].data
            assert value == b"2", f"s{sid} has /k={value!r} after the client's acknowledged /k=2"
        await finish(cluster)

    return scenario


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_a_write_from_the_server_a_client_left_is_not_applied_after_its_next(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ensemble safety item 4 (FIFO client order): sessions had no owner, so the leader applied
    any forwarded request. The client sets /k=1 through F1, F1's forward is held in flight while
    the client gives up on F1, reconnects to F2 and sets /k=2 (acknowledged); then /k=1 arrived
    and was applied after it. As Apache's, the leader now makes the server that revalidated the
    session its owner and refuses the stale forward with SessionMoved. Fails on 7a18865 (/k=1 on
    seeds 41 and 42; on 43 the held forward is ordered before the move)."""
    arrivals: list[tuple[float, int, int]] = []
    forward = Leader._forward

    def recording(self: Leader, effect: Any) -> None:
        if effect.op == OpCode.SET_DATA:
            arrivals.append((trio.current_time(), effect.owner, effect.cxid))
        forward(self, effect)

    monkeypatch.setattr(Leader, "_forward", recording)
    simulate(seed, write_from_the_server_a_client_left(arrivals), voters=3)


# -- the checker catches a broken build ------------------------------------------------------------


def faulty(duration: float) -> Scenario:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        until = trio.current_time() + duration
        rng = random.Random(cluster.rng.getrandbits(64))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until)
            nursery.start_soon(writer, cluster, "c2", until)
            nursery.start_soon(nemesis, cluster, until, rng)
        await settle_and_check(cluster, "after-heal")

    return scenario


MUTANT_SEEDS = range(40)  # the first seed that catches it ends the search (a few, usually)


def test_checker_catches_ack_before_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator is only worth its passes if it fails a broken build: a learner that
    acknowledges proposals before they are fsynced lets a leader commit what a whole-quorum
    crash (one of the nemesis' faults) then loses. Over a few seeds of the random nemesis the
    invariants (or the final checks) must catch it, and the seeds that catch it pass unbroken."""
    on_proposal = LearnerCore._on_proposal

    def ack_on_receipt(self: LearnerCore, message: list[Any]) -> list[Effect]:
        """Acknowledge each proposal as it arrives, before it is logged."""
        return [*on_proposal(self, message), Send(["ack", Txn.unpack(message[1][-1]).zxid])]

    caught: dict[int, str] = {}
    with monkeypatch.context() as patch:
        patch.setattr(LearnerCore, "_on_proposal", ack_on_receipt)
        for seed in MUTANT_SEEDS:
            try:
                simulate(seed, faulty(6.0))
            except BaseException as e:  # an invariant breaks inside trio's nurseries: look inside
                cause = _violation(e)
                if cause is None:
                    raise
                caught[seed] = str(cause)
                break  # one catch shows it; the schedules shift whenever the nemesis changes
    assert caught, f"ack-before-fsync went unnoticed on seeds {list(MUTANT_SEEDS)}"
    for seed in caught:
        simulate(seed, faulty(6.0))  # the correct build passes the very same schedule


def _violation(e: BaseException) -> BaseException | None:
    if isinstance(e, InvariantViolation):
        return e
    if isinstance(e, AssertionError) and "seed" in str(e):  # one_write: no write after healing
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _violation(inner)
            if found is not None:
                return found
    return None
