"""Session liveness: who has been heard from recently, and who has timed out.

ZooKeeper's ExpiryQueue: deadlines are rounded up to the next tick, so sessions
expire in buckets and the expirer wakes once per tick at most, however many
sessions there are. Time comes from an injected clock (trio's, in production a
real one, in tests a MockClock), so expiry is testable without sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


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
