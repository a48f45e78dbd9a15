"""Session liveness: who has been heard from recently, and who has timed out.

ZooKeeper's ExpiryQueue: deadlines are rounded up to the next tick, so sessions
expire in buckets and the expirer wakes once per tick at most, however many
sessions there are. Time comes from an injected clock (trio's, in production a
real one, in tests a MockClock), so expiry is testable without sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zkpy.tree.datatree import DataTree


class SessionTracker:
    def __init__(
        self,
        tick_ms: int,
        server_id: int = 0,
        clock: Callable[[], float] = time.monotonic,
        first_id: int | None = None,
    ) -> None:
        self.tick_ms = tick_ms
        self.clock = clock
        self.timeouts: dict[int, int] = {}  # session id -> timeout ms
        self._deadline: dict[int, int] = {}  # session id -> bucket (ms)
        self._buckets: dict[int, set[int]] = {}
        self.closing: set[int] = set()  # expired or closed, close txn not yet applied
        self.closes_in_flight: set[int] = set()  # closing, with its closeSession submitted
        if first_id is None:  # ZooKeeper's: the server id, then the start time, then a count
            first_id = ((int(time.time() * 1000) << 24) & 0x00FFFFFFFFFFFFFF) >> 8 | (server_id << 56)
            first_id += int.from_bytes(os.urandom(2), "big")
        self._next_id = first_id

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _bucket(self, deadline_ms: int) -> int:
        return (deadline_ms // self.tick_ms + 1) * self.tick_ms

    def new_session_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add(self, session_id: int, timeout_ms: int) -> None:
        self.timeouts[session_id] = timeout_ms
        self.touch(session_id)

    def touch(self, session_id: int) -> bool:
        """Push the session's deadline out by its timeout; False if it is not alive."""
        timeout = self.timeouts.get(session_id)
        if timeout is None or session_id in self.closing:
            return False
        bucket = self._bucket(self._now_ms() + timeout)
        if self._deadline.get(session_id) == bucket:
            return True  # the common case for a busy session: nothing moves
        self._unschedule(session_id)
        self._deadline[session_id] = bucket
        self._buckets.setdefault(bucket, set()).add(session_id)
        return True

    def is_alive(self, session_id: int) -> bool:
        return session_id in self.timeouts and session_id not in self.closing

    def mark_closing(self, session_id: int) -> None:
        """The session is going (closeSession asked, or expired): no more touches revive it."""
        self.closing.add(session_id)
        self._unschedule(session_id)

    def remove(self, session_id: int) -> None:
        self.timeouts.pop(session_id, None)
        self.closing.discard(session_id)
        self.closes_in_flight.discard(session_id)
        self._unschedule(session_id)

    def _unschedule(self, session_id: int) -> None:
        bucket = self._deadline.pop(session_id, None)
        if bucket is not None:
            members = self._buckets.get(bucket)
            if members is not None:
                members.discard(session_id)
                if not members:
                    del self._buckets[bucket]

    def next_deadline(self) -> float | None:
        """Clock time (seconds) when the next bucket is due, or None with no live sessions."""
        if not self._buckets:
            return None
        return min(self._buckets) / 1000

    def expired(self) -> list[int]:
        """Sessions whose deadline has passed; they are marked closing."""
        now = self._now_ms()
        due = [b for b in self._buckets if b <= now]
        out: list[int] = []
        for bucket in sorted(due):
            out.extend(sorted(self._buckets.pop(bucket)))
        for sid in out:
            self._deadline.pop(sid, None)
            self.closing.add(sid)
        return out


def session_problems(tree: DataTree, tracker: SessionTracker, attached: Iterable[int] = ()) -> list[str]:
    """What breaks the session invariant on the server whose tracker expires sessions (standalone
    or leader); empty when it holds. A session that is neither scheduled nor closing never
    expires, and an ephemeral without its session is never removed: both leak for ever. Sessions
    `attached` to a client connection must exist (a client holding a session the tree does not
    know could make ephemerals nothing expires)."""
    unknown = [
        f"a client holds session 0x{sid:x}, which is no session"
        for sid in attached
        if sid not in tree.sessions
    ]
    return orphan_ephemerals(tree) + unscheduled_sessions(tree, tracker) + unknown


def orphan_ephemerals(tree: DataTree) -> list[str]:
    """Ephemerals whose owner is no session of the tree (true on every server of an ensemble)."""
    return [
        f"ephemeral {path} is owned by 0x{owner:x}, which is no session"
        for owner, owned in tree.ephemerals.items()
        if owner not in tree.sessions
        for path in sorted(owned)
    ]


def unscheduled_sessions(tree: DataTree, tracker: SessionTracker) -> list[str]:
    """Sessions of the tree not in exactly one expiry bucket, unless closing (then in none, with
    its closeSession on its way: a close refused and forgotten would leave it closing for ever)."""
    buckets: dict[int, int] = {}
    for members in tracker._buckets.values():
        for session_id in members:
            buckets[session_id] = buckets.get(session_id, 0) + 1
    problems = []
    for session_id in sorted(tree.sessions):
        scheduled = buckets.get(session_id, 0)
        if session_id in tracker.closing:
            if scheduled:
                problems.append(f"session 0x{session_id:x} is closing but still in an expiry bucket")
            if session_id not in tracker.closes_in_flight:
                problems.append(f"session 0x{session_id:x} is closing but no closeSession is on its way")
        elif scheduled == 0:
            problems.append(f"session 0x{session_id:x} is live but in no expiry bucket")
        elif scheduled > 1:
            problems.append(f"session 0x{session_id:x} is in {scheduled} expiry buckets")
    return problems
