"""Watch registry: who asked to hear about which path, and who to tell when it changes.

A watcher is any object with `notify(event_type, path)`; the server's connections
are watchers. One-shot watches (data/exists and child) are dropped when they fire;
persistent and persistent-recursive watches stay until removed. A watcher hears
each event at most once, however many of its watches match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from zkpy import paths

# WatchedEvent types.
EVENT_NONE = -1
NODE_CREATED = 1
NODE_DELETED = 2
NODE_DATA_CHANGED = 3
NODE_CHILDREN_CHANGED = 4
DATA_WATCH_REMOVED = 5
CHILD_WATCH_REMOVED = 6
PERSISTENT_WATCH_REMOVED = 7

# Keeper states.
STATE_SYNC_CONNECTED = 3
STATE_EXPIRED = -112


class Watcher(Protocol):
    def notify(self, event_type: int, path: str) -> None: ...


_Table = dict[str, set[Watcher]]


def _add(table: _Table, path: str, watcher: Watcher) -> None:
    watchers = table.get(path)
    if watchers is None:
        table[path] = {watcher}
    else:
        watchers.add(watcher)


def _discard(table: _Table, path: str, watcher: Watcher) -> bool:
    watchers = table.get(path)
    if not watchers or watcher not in watchers:
        return False
    watchers.discard(watcher)
    if not watchers:
        del table[path]
    return True


class WatchManager:
    def __init__(self) -> None:
        self.data: _Table = {}
        self.child: _Table = {}
        self.persistent: _Table = {}
        self.recursive: _Table = {}
        # watcher -> every path it has some watch on, so closing a connection costs its own
        # watches, not a scan of everyone's (ZooKeeper's watch2Paths).
        self._paths_by_watcher: dict[Watcher, set[str]] = {}

    # -- registration --------------------------------------------------------
    def _register(self, table: _Table, path: str, watcher: Watcher) -> None:
        _add(table, path, watcher)
        paths_of = self._paths_by_watcher.get(watcher)
        if paths_of is None:
            self._paths_by_watcher[watcher] = {path}
        else:
            paths_of.add(path)

    def _forget_if_unwatched(self, path: str, watcher: Watcher) -> None:
        for table in (self.data, self.child, self.persistent, self.recursive):
            if watcher in table.get(path, ()):
                return
        paths_of = self._paths_by_watcher.get(watcher)
        if paths_of is not None:
            paths_of.discard(path)
            if not paths_of:
                del self._paths_by_watcher[watcher]

    def add_data_watch(self, path: str, watcher: Watcher) -> None:
        self._register(self.data, path, watcher)

    def add_child_watch(self, path: str, watcher: Watcher) -> None:
        self._register(self.child, path, watcher)

    def add_persistent_watch(self, path: str, watcher: Watcher, recursive: bool) -> None:
        """One persistent mode per watcher and path, as ZooKeeper keeps it: the last addWatch wins."""
        _discard(self.persistent if recursive else self.recursive, path, watcher)
        self._register(self.recursive if recursive else self.persistent, path, watcher)

    def remove_watches(self, path: str, watcher_type: int, watcher: Watcher, dry_run: bool = False) -> bool:
        """removeWatches/checkWatches: True if `watcher` had a watch of that WatcherType on `path`."""
        tables = {
            1: (self.child,),
            2: (self.data,),
            3: (self.data, self.child, self.persistent, self.recursive),
            4: (self.persistent,),
            5: (self.recursive,),
        }.get(watcher_type, ())
        found = False
        for table in tables:
            if dry_run:
                found = found or watcher in table.get(path, ())
            else:
                found = _discard(table, path, watcher) or found
        if found and not dry_run:
            self._forget_if_unwatched(path, watcher)
        return found

    def remove_watcher(self, watcher: Watcher) -> None:
        """Forget every watch of a closed connection."""
        for path in self._paths_by_watcher.pop(watcher, ()):
            for table in (self.data, self.child, self.persistent, self.recursive):
                _discard(table, path, watcher)

    # -- triggering ----------------------------------------------------------
    def trigger(self, event_type: int, path: str) -> None:
        """Notify every watcher of `path` that the event concerns, once each."""
        hit: set[Watcher] | None = None
        if event_type == NODE_CHILDREN_CHANGED:
            one_shot = self.child.pop(path, None)
            if one_shot:
                hit = one_shot
        else:
            one_shot = self.data.pop(path, None)
            if one_shot:
                hit = one_shot
            if event_type == NODE_DELETED:
                children = self.child.pop(path, None)
                if children:
                    hit = children if hit is None else hit | children
        if hit:  # one-shot watches are gone now
            for watcher in hit:
                self._forget_if_unwatched(path, watcher)
        persistent = self.persistent.get(path)
        if persistent:
            hit = set(persistent) if hit is None else hit | persistent
        if self.recursive and event_type != NODE_CHILDREN_CHANGED:
            for p in (path, *paths.ancestors(path)):
                recursive = self.recursive.get(p)
                if recursive:
                    hit = set(recursive) if hit is None else hit | recursive
        if hit:
            for watcher in hit:
                watcher.notify(event_type, path)

    # -- introspection (wchs, wchc, wchp) ----------------------------------------
    def count(self) -> int:
        return sum(
            len(ws) for t in (self.data, self.child, self.persistent, self.recursive) for ws in t.values()
        )

    def paths_of(self, watcher: Watcher) -> list[str]:
        return sorted(self._paths_by_watcher.get(watcher, ()))

    def by_path(self) -> dict[str, list[Watcher]]:
        out: dict[str, list[Watcher]] = {}
        for table in (self.data, self.child, self.persistent, self.recursive):
            for p, ws in table.items():
                out.setdefault(p, []).extend(ws)
        return out

    def watched_paths(self) -> Iterable[str]:
        return {*self.data, *self.child, *self.persistent, *self.recursive}
