"""The protocol-aware nemesis (zkpy/testing/nemesis.py), swarm configurations and the oracles
added with them (zkpy/testing/cluster.py)."""

from __future__ import annotations

import pytest

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.cluster import ClusterInvariants, InvariantViolation, SimCluster, simulate, swarm
from zkpy.testing.nemesis import Buggify, point_kind
from zkpy.testing.workload import FAULTS, faulty_scenario
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

THINK = 0.05


def test_point_kinds_drop_sids_zxids_and_epochs() -> None:
    assert point_kind("elected 3") == "elected N"
    assert point_kind("leader sent syncdata:snap") == "leader sent syncdata:snap"
    assert point_kind("learner got commit 0x40000000e to 12") == "learner got commit N to N"


def test_buggify_activates_a_quarter_of_the_kinds_the_same_for_one_seed() -> None:
    kinds = [f"point {chr(97 + i)}{chr(97 + j)}" for i in range(20) for j in range(20)]
    first = Buggify(SimCluster(5), SimCluster(5).rng)
    again = Buggify(SimCluster(5), SimCluster(5).rng)
    other = Buggify(SimCluster(6), SimCluster(6).rng)
    active = [k for k in kinds if first.active(k)]
    assert 0.18 < len(active) / len(kinds) < 0.32
    assert active == [k for k in kinds if again.active(k)]
    assert active != [k for k in kinds if other.active(k)]


def test_swarm_draws_configurations_from_the_seed() -> None:
    drawn = [swarm(seed, list(FAULTS)) for seed in range(60)]
    assert drawn[7] == swarm(7, list(FAULTS))
    assert {d["voters"] for d in drawn} == {3, 5}
    assert {d["tick_ms"] for d in drawn} == {50, 100, 200}
    assert len({d["faults"] for d in drawn}) == 60
    assert all({"restart", "heal"} <= d["faults"] for d in drawn)  # type: ignore[operator]
    assert all(d["init_limit"] >= d["sync_limit"] for d in drawn)  # type: ignore[operator]


def test_same_seed_same_swarm_run_with_buggify() -> None:
    options = swarm(12, list(FAULTS))
    first = simulate(12, faulty_scenario(4.0, THINK), **options)
    second = simulate(12, faulty_scenario(4.0, THINK), **options)
    assert first.events == second.events
    assert first.reach.points == second.reach.points
    assert first.buggify is not None and second.buggify is not None
    assert first.buggify.done == second.buggify.done


def test_buggify_faults_happen_at_points_and_the_runs_count_what_they_reach() -> None:
    """Over a few seeds Buggify acts at protocol points (the trace says where), and Reach counts
    point kinds and conjunctions such as a client moving on with a request in flight."""
    acted = 0
    for seed in range(4):
        cluster = simulate(seed, faulty_scenario(6.0, THINK))
        assert cluster.buggify is not None
        acted += cluster.buggify.done.total()
        assert cluster.reach.points["leader sent proposal"] > 0
        assert sum(1 for e in cluster.events if " buggify " in e) == cluster.buggify.done.total()
    assert acted > 0


# -- the oracles --------------------------------------------------------------------------------


def _txn(n: int, epoch: int = 1) -> Txn:
    body = encode(CreateRequest(f"/n{n}", b"v", OPEN_ACL_UNSAFE, 0))
    return Txn(epoch << 32 | n, 1000, 0x77, n, OpCode.CREATE2, body)


def _items(txns: list[Txn]) -> list[object]:
    tree = DataTree()
    applier = Applier(tree)
    for txn in txns:
        applier.apply(txn)
    return list(tree_items(tree))


def test_two_leaders_past_an_ackepoch_quorum_for_one_epoch_fail() -> None:
    inv = ClusterInvariants()
    inv.past_epoch_quorum(1, 4)
    inv.past_epoch_quorum(1, 4)  # the same leader, again: fine
    inv.past_epoch_quorum(2, 5)
    with pytest.raises(InvariantViolation, match="ackepoch quorum for epoch 4"):
        inv.past_epoch_quorum(3, 4)


def test_a_snapshot_that_is_not_the_committed_history_fails_when_written_or_committed() -> None:
    inv = ClusterInvariants()
    txns = [_txn(n) for n in range(1, 5)]
    for txn in txns[:3]:
        inv.committed_by(1, txn.zxid, txn.pack())
    inv.snapshot_written(2, txns[2].zxid, _items(txns[:3]))  # right
    with pytest.raises(InvariantViolation, match="snapshot at zxid 0x100000002"):
        inv.snapshot_written(2, txns[1].zxid, _items([txns[0], txns[2]]))  # labelled 2, holds 1 and 3
    inv = ClusterInvariants()
    inv.snapshot_written(3, txns[1].zxid, _items([txns[0], _txn(9)]))  # not committed yet: later
    inv.committed_by(1, txns[0].zxid, txns[0].pack())
    with pytest.raises(InvariantViolation, match="server 3 wrote a snapshot"):
        inv.committed_by(1, txns[1].zxid, txns[1].pack())
    assert inv.snapshots_checked == 1


def test_a_zxid_names_one_logged_transaction() -> None:
    inv = ClusterInvariants()
    inv.logged(1, [(_txn(1).zxid, _txn(1).pack())])
    inv.logged(2, [(_txn(1).zxid, _txn(1).pack())])
    with pytest.raises(InvariantViolation, match="different transaction at zxid 0x100000001"):
        inv.logged(3, [(_txn(1).zxid, _txn(7).pack())])


def test_a_new_leaders_snapshot_tail_is_committed_from_what_was_logged() -> None:
    """A leader whose tree came whole from a SNAP (a tail nobody committed) commits it at
    establishment; the simulator learns those transactions from what was logged of that epoch."""
    inv = ClusterInvariants()
    txns = [_txn(n, epoch=2) for n in range(1, 4)]
    inv.logged(1, [(t.zxid, t.pack()) for t in txns])
    inv.committed_by(1, txns[0].zxid, txns[0].pack())
    inv.leader_tree(2, txns[2].zxid)
    assert sorted(inv.committed) == [t.zxid for t in txns]
    with pytest.raises(InvariantViolation, match="never logged"):
        inv.leader_tree(2, 2 << 32 | 9)
