"""Client-side watch bookkeeping: which callbacks a notification fires, and what to re-arm after a reconnect.

The rules are the Java client's (ZKWatchManager): one-shot data/exist/child watches fire once and are
dropped; persistent watches stay; recursive ones see every create/delete/change below them but never
NodeChildrenChanged. A callback registered on several lists that one event fires runs once.
"""

from __future__ import annotations

from typing import Any

from zkpy import paths
from zkpy.client.events import EventType

DATA, EXIST, CHILD, PERSISTENT, RECURSIVE = "data", "exist", "child", "persistent", "recursive"
KINDS = (DATA, EXIST, CHILD, PERSISTENT, RECURSIVE)


class WatchRegistry:
    def __init__(self) -> None:
        self.by_kind: dict[str, dict[str, list[Any]]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, path: str, callback: Any) -> None:
        callbacks = self.by_kind[kind].setdefault(path, [])
        if not any(c is callback for c in callbacks):
            callbacks.append(callback)

    def remove(self, kinds: tuple[str, ...], path: str, callback: Any | None = None) -> bool:
        """Forget watches on `path` (only `callback`'s, if given); True if any were there."""
        found = False
        for kind in kinds:
            callbacks = self.by_kind[kind].get(path)
            if not callbacks:
                continue
            keep = [] if callback is None else [c for c in callbacks if c is not callback]
            found = found or len(keep) < len(callbacks)
            if keep:
                self.by_kind[kind][path] = keep
            else:
                del self.by_kind[kind][path]
        return found

    def has(self, kind: str, path: str) -> bool:
        return bool(self.by_kind[kind].get(path))

    def trigger(self, event_type: int, path: str) -> tuple[Any, ...]:
        """The callbacks a notification of `event_type` on `path` fires (one-shot ones are removed)."""
        one_shot: tuple[str, ...]
        if event_type in (EventType.CREATED, EventType.CHANGED):
            one_shot = (DATA, EXIST)
        elif event_type == EventType.DELETED:
            one_shot = (DATA, EXIST, CHILD)
        elif event_type == EventType.CHILD:
            one_shot = (CHILD,)
        else:
            one_shot = ()
        fired: list[Any] = []
        for kind in one_shot:
            fired += self.by_kind[kind].pop(path, [])
        fired += self.by_kind[PERSISTENT].get(path, [])
        if event_type != EventType.CHILD:
            recursive = self.by_kind[RECURSIVE]
            if recursive:
                for p in (path, *paths.ancestors(path)):
                    fired += recursive.get(p, [])
        unique: list[Any] = []
        for callback in fired:
            if not any(c is callback for c in unique):
                unique.append(callback)
        return tuple(unique)

    def all_callbacks(self) -> list[Any]:
        out: list[Any] = []
        for table in self.by_kind.values():
            for callbacks in table.values():
                out += [c for c in callbacks if not any(c is o for o in out)]
        return out

    def clear(self) -> None:
        for table in self.by_kind.values():
            table.clear()

    def paths(self, kind: str) -> list[str]:
        return list(self.by_kind[kind])
