"""Majority quorums over the voting members; observers never count."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Quorum:
    def __init__(self, voters: Iterable[int]) -> None:
        self.voters = frozenset(voters)
        self.size = len(self.voters) // 2 + 1

    def contains_quorum(self, sids: Iterable[int]) -> bool:
        return len(self.voters.intersection(sids)) >= self.size

    def commit_point(self, acks: Mapping[int, int]) -> int:
        """The highest zxid a quorum of voters has acknowledged (acks are cumulative: a voter
        that acked z holds everything up to z). -1 when no quorum has acked anything."""
        acked = sorted((acks.get(sid, -1) for sid in self.voters), reverse=True)
        return acked[self.size - 1]
