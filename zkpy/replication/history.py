"""The window of logged transactions a leader brings learners up to date from, and the choice
between DIFF, TRUNC and SNAP (Apache's LearnerHandler.syncFollower, as a pure function).

The window holds every transaction this server logged after `base`, committed or not, in zxid
order. A learner that reports its last logged zxid F is brought to the leader's history:

- DIFF: F is in the window (or is its base): send every transaction after F.
- TRUNC + DIFF: F is not in the leader's history (a proposal of an old epoch that never
  committed), or goes past the commit point (proposals not committed yet). The learner drops
  everything after the newest zxid both hold (at most the commit point), then gets the rest
  (ZOOKEEPER-1154: a divergent suffix inside the DIFF range is truncated, never kept).
- SNAP: F is older than the window, or the truncation point would fall below the learner's own
  snapshot (it could not roll its tree back that far): send the whole tree, then the window
  after the tree's zxid.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

DIFF, TRUNC, SNAP = "diff", "trunc", "snap"


@dataclass
class SyncPlan:
    mode: str
    zxid: int  # TRUNC: truncate after this; SNAP: the snapshot's zxid; DIFF: the learner's own last
    txns: list[bytes] = field(default_factory=list)  # packed transactions to log after that point


# The window's size in bytes at most (beside its count, commitLogCount): memory on every server,
# and a learner further behind gets a SNAP (as with Apache's snapshotSizeFactor). Larger than what
# a learner can lag by before its leader drops it (its unlogged bound plus the leader's queue
# bound, about 192 MiB), so a dropped learner can usually come back by DIFF (sent in pieces).
MAX_WINDOW_BYTES = 256 * 1024 * 1024


class History:
    def __init__(self, base: int = 0, limit: int = 200_000, limit_bytes: int = MAX_WINDOW_BYTES) -> None:
        self.base = base  # every transaction after this zxid is held
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.bytes = 0
        # Never trim above this zxid: a learner's logged but unapplied tail must stay.
        self.floor: Callable[[], int] = lambda: self.last
        self.zxids: list[int] = []
        self.packed: list[bytes] = []

    @property
    def last(self) -> int:
        return self.zxids[-1] if self.zxids else self.base

    def __len__(self) -> int:
        return len(self.zxids)

    def append(self, zxid: int, packed: bytes) -> None:
        if zxid <= self.last:
            raise ValueError(f"history: zxid {zxid:#x} does not follow {self.last:#x}")
        self.zxids.append(zxid)
        self.packed.append(packed)
        self.bytes += len(packed)
        if len(self.zxids) > self.limit + self.limit // 4:  # trim in steps, not on every append
            self._trim(len(self.zxids) - self.limit)
        elif self.bytes > self.limit_bytes:
            # Down to three quarters in one step; only as far as the floor allows (no scan when
            # the floor holds everything: a learner's unapplied tail).
            stop = bisect.bisect_right(self.zxids, self.floor())
            excess, cut = self.bytes - self.limit_bytes * 3 // 4, 0
            while excess > 0 and cut < stop:
                excess -= len(self.packed[cut])
                cut += 1
            self._trim(cut)

    def _trim(self, count: int) -> None:
        """Forget the oldest `count` (fewer where the floor says they are still needed)."""
        cut = min(count, bisect.bisect_right(self.zxids, self.floor()))
        if cut <= 0:
            return
        self.base = self.zxids[cut - 1]
        self.bytes -= sum(map(len, self.packed[:cut]))
        del self.zxids[:cut]
        del self.packed[:cut]

    def truncate_after(self, zxid: int) -> None:
        keep = bisect.bisect_right(self.zxids, zxid)
        self.bytes -= sum(map(len, self.packed[keep:]))
        del self.zxids[keep:]
        del self.packed[keep:]
        if zxid < self.base:  # nothing is known below the cut any more
            self.base = zxid

    def reset(self, base: int) -> None:
        """After a SNAP: the history starts again at the snapshot."""
        self.base = base
        self.bytes = 0
        self.zxids.clear()
        self.packed.clear()

    def after(self, zxid: int) -> list[bytes]:
        return self.packed[bisect.bisect_right(self.zxids, zxid) :]

    def holds(self, zxid: int) -> bool:
        i = bisect.bisect_left(self.zxids, zxid)
        return (i < len(self.zxids) and self.zxids[i] == zxid) or zxid == self.base

    def plan_sync(
        self, learner_last: int, learner_snapshot: int, tree_zxid: int, committed: int | None = None
    ) -> SyncPlan:
        """How to bring a learner whose log ends at `learner_last` (its newest snapshot at
        `learner_snapshot`) to this history. `tree_zxid` is the zxid of the tree a SNAP sends;
        `committed` is the newest zxid known committed (None: the whole history, as while a new
        leader syncs its quorum, whose whole history is committed once a quorum has it).

        A learner whose log goes past `committed` is cut back to it (Apache's TRUNC to
        maxCommittedLog): it recovered its tree from its log, so a proposal it logged before a
        restart is already applied there, and it would serve it at UPTODATE although no quorum
        may ever commit it. The proposals after the cut are sent again, to be applied on commit."""
        if committed is None or committed > self.last:
            committed = self.last
        if learner_last >= self.base:
            i = bisect.bisect_right(self.zxids, min(learner_last, committed))
            common = self.zxids[i - 1] if i else self.base
            if common == learner_last:
                return SyncPlan(DIFF, learner_last, self.packed[i:])
            # The learner holds zxids we never had, or ones not committed. Truncating to `base` is
            # safe only when base is the very start (nothing below it can differ) and never below
            # its snapshot.
            if (i or self.base == 0) and common >= learner_snapshot:
                return SyncPlan(TRUNC, common, self.packed[i:])
        if tree_zxid < self.base:
            raise ValueError(f"history starts after {self.base:#x}, beyond the tree at {tree_zxid:#x}")
        return SyncPlan(SNAP, tree_zxid, self.after(tree_zxid))
