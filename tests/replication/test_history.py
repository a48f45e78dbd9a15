"""The DIFF/TRUNC/SNAP choice, as a table (Apache's LearnerHandlerTest does the same)."""

from __future__ import annotations

import pytest

from zkpy.replication.history import DIFF, SNAP, TRUNC, History
from zkpy.replication.quorum import Quorum


def z(epoch: int, counter: int) -> int:
    return epoch << 32 | counter


def history(base: int, zxids: list[int]) -> History:
    h = History(base)
    for zxid in zxids:
        h.append(zxid, f"{zxid:x}".encode())
    return h


LEADER = [z(1, 1), z(1, 2), z(1, 3), z(2, 1), z(2, 2)]


@pytest.mark.parametrize(
    ("learner_last", "learner_snap", "mode", "point", "sent"),
    [
        (z(2, 2), 0, DIFF, z(2, 2), []),  # up to date
        (z(1, 3), 0, DIFF, z(1, 3), [z(2, 1), z(2, 2)]),  # behind
        (0, 0, DIFF, 0, LEADER),  # empty learner, history from the start
        (z(1, 4), 0, TRUNC, z(1, 3), [z(2, 1), z(2, 2)]),  # uncommitted old-epoch proposal (ZOOKEEPER-1154)
        (z(2, 7), 0, TRUNC, z(2, 2), []),  # ahead of the leader in the same epoch
        (z(3, 1), 0, TRUNC, z(2, 2), []),  # an epoch the leader never saw
        (z(1, 4), z(1, 4), SNAP, z(2, 2), []),  # truncating would go below its snapshot
    ],
)
def test_plan_from_the_start(
    learner_last: int, learner_snap: int, mode: str, point: int, sent: list[int]
) -> None:
    plan = history(0, LEADER).plan_sync(learner_last, learner_snap, tree_zxid=z(2, 2))
    assert (plan.mode, plan.zxid) == (mode, point)
    assert plan.txns == [f"{x:x}".encode() for x in sent]


@pytest.mark.parametrize(
    ("learner_last", "learner_snap", "mode", "point", "sent"),
    [
        (z(2, 1), 0, DIFF, z(2, 1), [z(2, 2)]),  # committed: DIFF as before
        (z(2, 2), 0, TRUNC, z(2, 1), [z(2, 2)]),  # logged, not committed: cut back, sent again
        (z(2, 2), z(2, 2), SNAP, z(2, 1), [z(2, 2)]),  # its snapshot holds it: the leader's tree
        (z(2, 7), 0, TRUNC, z(2, 1), [z(2, 2)]),  # beyond the leader too
    ],
)
def test_a_learner_past_the_commit_point_is_cut_back_to_it(
    learner_last: int, learner_snap: int, mode: str, point: int, sent: list[int]
) -> None:
    """Ensemble safety item 3 (Apache's TRUNC to maxCommittedLog): a follower that logged a
    proposal, restarted (its recovery applies the whole log) and rejoined by DIFF served a
    transaction no quorum had committed. Fails before this change (the second row was a DIFF)."""
    plan = history(0, LEADER).plan_sync(learner_last, learner_snap, tree_zxid=z(2, 1), committed=z(2, 1))
    assert (plan.mode, plan.zxid) == (mode, point)
    assert plan.txns == [f"{x:x}".encode() for x in sent]


def test_snap_when_the_learner_is_older_than_the_window() -> None:
    h = history(z(1, 2), [z(1, 3), z(2, 1), z(2, 2)])
    plan = h.plan_sync(z(1, 1), 0, tree_zxid=z(2, 1))
    assert plan.mode == SNAP and plan.zxid == z(2, 1)
    assert plan.txns == [f"{z(2, 2):x}".encode()]  # the snapshot, then what the tree lacks


def test_divergent_learner_below_a_trimmed_window_gets_a_snapshot() -> None:
    # Nothing the leader holds confirms the learner's history below the window: SNAP, not TRUNC.
    h = history(z(1, 5), [z(2, 1)])
    assert h.plan_sync(z(1, 7), 0, tree_zxid=z(2, 1)).mode == SNAP


def test_window_trims_and_keeps_its_base() -> None:
    h = History(0, limit=4)
    for counter in range(1, 11):
        h.append(z(1, counter), b"x")
    assert h.base < h.zxids[0] and h.last == z(1, 10)
    assert h.plan_sync(h.base, 0, tree_zxid=z(1, 10)).mode == DIFF
    with pytest.raises(ValueError):
        h.append(z(1, 3), b"old")


def test_truncate_after() -> None:
    h = history(0, LEADER)
    h.truncate_after(z(1, 3))
    assert h.last == z(1, 3) and not h.holds(z(2, 1))


@pytest.mark.parametrize(
    ("voters", "acks", "point"),
    [
        ({1, 2, 3}, {1: 5, 2: 4}, 4),
        ({1, 2, 3}, {1: 5}, -1),
        ({1, 2, 3}, {1: 5, 2: 7, 3: 6}, 6),
        ({1, 2, 3, 4, 5}, {1: 9, 2: 8, 3: 1, 9: 100}, 1),  # 9 is no voter (an observer)
        ({1}, {1: 3}, 3),
    ],
)
def test_commit_point(voters: set[int], acks: dict[int, int], point: int) -> None:
    assert Quorum(voters).commit_point(acks) == point


def test_quorum_ignores_non_voters() -> None:
    q = Quorum({1, 2, 3})
    assert q.contains_quorum({1, 2}) and not q.contains_quorum({1, 7, 8})


def test_the_window_is_bounded_by_bytes_too() -> None:
    """A DIFF is one frame: the window keeps at most MAX_WINDOW_BYTES-like bytes (here 10 kB),
    trimmed to three quarters of it in one step, never above the floor (a learner's unapplied
    tail); a learner further behind gets a SNAP."""
    h = History(limit=1000, limit_bytes=10_000)
    for counter in range(1, 31):
        h.append(z(1, counter), b"x" * 1000)
    assert h.bytes <= 10_000 and h.bytes == 1000 * len(h)
    assert h.plan_sync(z(1, 2), 0, tree_zxid=z(1, 30)).mode == SNAP
    assert h.plan_sync(z(1, 29), 0, tree_zxid=z(1, 30)).mode == DIFF
    h.truncate_after(z(1, 29))
    assert h.bytes == 1000 * len(h)
    floored = History(limit=1000, limit_bytes=10_000)
    floored.floor = lambda: z(1, 5)  # applied only up to 5: nothing after it may go
    for counter in range(1, 31):
        floored.append(z(1, counter), b"x" * 1000)
    assert floored.base == z(1, 5) and len(floored) == 25
