"""A server whose log or snapshot is damaged (bit flips found by the checksums on restart) sets the
damaged files aside, re-syncs from the ensemble and does not vote until it has: simulated runs.

The safety case is the one that matters: a voter that lost transactions it had acknowledged
would, if it voted, let a quorum elect a leader that lacks a committed write. The scenario below
builds exactly that situation, shows the real build keeps the write, and shows that a build whose
damaged server votes anyway loses it (the simulator's checks catch the loss).
"""

from __future__ import annotations

import re

import pytest
import trio

from zkpy.replication import election as fle
from zkpy.testing.cluster import InvariantViolation, SimCluster, simulate
from zkpy.testing.workload import one_write, recover_everything, writer


async def _caught_up(cluster: SimCluster) -> None:
    def same() -> bool:
        zxids = {s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None and s.serving}
        return len(zxids) == 1

    await cluster.wait_until(same, 30.0, "every server caught up")


@pytest.mark.parametrize("damage", ["log", "every snapshot"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_damaged_follower_resyncs_and_votes_again(seed: int, damage: str) -> None:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        follower = next(sid for sid in cluster.servers if sid != leader)
        await writer(cluster, "c1", trio.current_time() + 3.0)  # > snapCount: snapshots on every disk
        disk = cluster.servers[follower].disk
        assert disk.log and disk.snapshots
        cluster.crash(follower)
        disk.damage(damage)
        await cluster.start(follower)
        peer = cluster.servers[follower].peer
        assert peer is not None and disk.set_aside == 1 and peer.store.needs_resync
        assert peer.tree.last_zxid == 0  # everything was set aside: it starts empty
        await cluster.wait_all_serving()
        await one_write(cluster, "after", timeout=30.0)
        await _caught_up(cluster)
        assert disk.resync_marker is None and not peer.election.abstaining
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(seed, scenario)


def test_a_damaged_newest_snapshot_is_skipped_for_an_older_one() -> None:
    """The log still reaches back to an older snapshot: nothing is lost, no re-sync needed."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        follower = next(sid for sid in cluster.servers if sid != leader)
        await writer(cluster, "c1", trio.current_time() + 3.0)
        disk = cluster.servers[follower].disk
        assert len(disk.snapshots) >= 2
        before = max(disk.log)[0]
        cluster.crash(follower)
        disk.damage("newest snapshot")
        await cluster.start(follower)
        peer = cluster.servers[follower].peer
        assert peer is not None and disk.set_aside == 0 and not peer.store.needs_resync
        assert peer.tree.last_zxid == before  # the older snapshot plus the log: all of it
        await cluster.wait_all_serving()
        await one_write(cluster, "after", timeout=30.0)
        await _caught_up(cluster)
        cluster.check_trees()
        cluster.check_acknowledged()

    simulate(7, scenario)


async def losing_scenario(cluster: SimCluster, check_no_leader: bool = True) -> None:
    """Leader L and follower D commit writes while follower C is cut off; a power cut; D's log is
    found damaged; D and C come back, L stays down for a while. Only L has the writes now."""
    await cluster.wait_all_serving()
    leader = cluster.leader()
    assert leader is not None
    cut, damaged = (sid for sid in sorted(cluster.servers) if sid != leader)
    cluster.network.partition({f"s{leader}", f"s{damaged}", "c1"}, {f"s{cut}"})
    await writer(cluster, "c1", trio.current_time() + 2.0)
    assert cluster.invariants.acknowledged, "writes were acknowledged by L and D"
    for sid in cluster.servers:
        cluster.crash(sid)
    cluster.network.heal()
    cluster.servers[damaged].disk.damage("log")
    await cluster.start(damaged)
    await cluster.start(cut)
    await trio.sleep(10.0)
    assert cluster.servers[damaged].disk.set_aside == 1
    if check_no_leader:
        assert cluster.leader() is None, "a leader was elected counting the damaged server's vote"
    await recover_everything(cluster)
    await one_write(cluster, "after", timeout=30.0)
    await _caught_up(cluster)
    cluster.check_trees()
    cluster.check_acknowledged()


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_damaged_voter_cannot_help_elect_a_leader_missing_committed_writes(seed: int) -> None:
    simulate(seed, losing_scenario)


def test_the_same_run_loses_writes_if_the_damaged_server_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mutant: a damaged server votes with what it has left. D (empty) and C (cut off during
    the writes) elect C, whose history lacks the acknowledged writes."""
    start = fle.Election.start

    def start_voting_anyway(self: fle.Election, now: float, epoch: int, zxid: int, *, abstain: bool = False):  # type: ignore[no-untyped-def]
        return start(self, now, epoch, zxid, abstain=False)

    monkeypatch.setattr(fle.Election, "start", start_voting_anyway)
    with pytest.raises(BaseException) as raised:  # from inside trio's nurseries: look inside
        simulate(4, lambda cluster: losing_scenario(cluster, check_no_leader=False))
    violation = _find_violation(raised.value)
    assert violation is not None, raised.value
    assert re.search(r"skipped committed|acknowledged .* missing|not committed", str(violation))


def _find_violation(e: BaseException) -> InvariantViolation | None:
    if isinstance(e, InvariantViolation):
        return e
    for inner in e.exceptions if isinstance(e, BaseExceptionGroup) else ():
        if (found := _find_violation(inner)) is not None:
            return found
    return None
