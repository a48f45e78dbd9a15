"""Watch registry: who asked to hear about which path, and who to tell when it changes.

A watcher is any object with `notify(event_type, path)`; the server's connections
are watchers. One-shot watches (data/exists and child) are dropped when they fire;
persistent and persistent-recursive watches stay until removed. A watcher hears
each event at most once, however many of its watches match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from zkpy import paths
from zkpy.errors import MarshallingError

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


# WatcherModes, per watcher and path in each half (ZooKeeper's WatcherModeManager).
STANDARD = 0
PERSISTENT = 1
PERSISTENT_RECURSIVE = 2

_Table = dict[str, dict[int, int]]  # path -> watcher id -> mode, in the order they were added


def _java_path_and_parents(path: str, parents: bool) -> Iterator[str]:
    """ZooKeeper's PathParentIterator: `path`, then (when `parents`) each parent up to "/". It works out the
    next parent before handing out a path, and fails on a path without '/' (a MarshallingError answer)."""
    more = True
    while path and more:
        current = path
        if path == "/":
            path = ""
        else:
            slash = path.rfind("/")
            if slash < 0:
                raise MarshallingError(path=current)
            path = path[:slash] or "/"
        more = parents
        yield current


class _Half:
    """One of ZooKeeper's two watch managers (data watches and child watches): watchers per path, each
    with its mode there. A persistent watch is filed in both halves, so removing one half leaves the other.

    Kept out of sight of Python's cycle collector, which walks every entry of every tracked container on
    each full collection (600k watches: ~90 ms of held event loop, several times during a watch flood):
    watchers are filed by their WatchManager id (an int), not as objects, and a path with one watcher --
    nearly all of them -- maps to one int (`id << 2 | mode`) in `table`, a dict of str to int, which the
    collector never tracks; only paths with several watchers have a dict of their own (`crowded`). Each
    watcher's paths are a dict of str to None, untracked for the same reason (a set would be tracked)."""

    __slots__ = ("by_watcher", "crowded", "recursive", "size", "table")

    def __init__(self) -> None:
        self.table: dict[str, int] = {}  # a path with one watcher: its id << 2 | mode
        self.crowded: _Table = {}  # a path with more: watcher id -> mode, in the order they were added
        self.by_watcher: dict[int, dict[str, None]] = {}  # watch2Paths
        self.recursive = 0  # how many (watcher, path) pairs are recursive: parents are looked at only then
        self.size = 0  # (watcher, path) pairs: the watch count, kept so mntr and srvr cost O(1)

    def __contains__(self, path: str) -> bool:
        return path in self.table or path in self.crowded

    def path_count(self) -> int:
        return len(self.table) + len(self.crowded)

    def paths(self) -> Iterator[str]:
        yield from self.table
        yield from self.crowded

    def watchers(self, path: str) -> dict[int, int] | None:
        """The watchers of `path` (id -> mode, in the order they were added), or None."""
        one = self.table.get(path)
        if one is not None:
            return {one >> 2: one & 3}
        return self.crowded.get(path)

    def mode(self, path: str, watcher: int) -> int | None:
        """`watcher`'s mode at `path`, None when it has no watch there."""
        one = self.table.get(path)
        if one is not None:
            return one & 3 if one >> 2 == watcher else None
        watchers = self.crowded.get(path)
        return None if watchers is None else watchers.get(watcher)

    def add(self, path: str, watcher: int, mode: int) -> None:
        """WatchManager.addWatch: the watcher's mode at `path` becomes `mode`, whatever it was (so a
        getData watch on a path a persistent watch covers makes that half one-shot, as in ZooKeeper)."""
        table = self.table
        one = table.get(path)
        old: int | None = None
        if one is None:
            watchers = self.crowded.get(path)
            if watchers is None:
                table[path] = watcher << 2 | mode
            else:
                old = watchers.get(watcher)
                watchers[watcher] = mode
        elif one >> 2 == watcher:
            old = one & 3
            table[path] = watcher << 2 | mode
        else:  # a second watcher: the path gets a dict of its own
            del table[path]
            self.crowded[path] = {one >> 2: one & 3, watcher: mode}
        self.size += old is None
        self.recursive += (mode == PERSISTENT_RECURSIVE) - (old == PERSISTENT_RECURSIVE)
        paths_of = self.by_watcher.get(watcher)
        if paths_of is None:
            self.by_watcher[watcher] = {path: None}
        else:
            paths_of[path] = None

    def _drop(self, path: str, watcher: int) -> int | None:
        """Take `watcher`'s watch at `path` out of the table; its mode, or None when it had none."""
        one = self.table.get(path)
        if one is not None:
            if one >> 2 != watcher:
                return None
            del self.table[path]
            return one & 3
        watchers = self.crowded.get(path)
        if watchers is None:
            return None
        old = watchers.pop(watcher, None)
        if len(watchers) == 1:  # one watcher left: back to an int
            ((left, left_mode),) = watchers.items()
            del self.crowded[path]
            self.table[path] = left << 2 | left_mode
        return old

    def remove(self, path: str, watcher: int, mode: int | None = None) -> bool:
        """WatchManager.removeWatcher(path, watcher), or only a watch of that mode when `mode` is given."""
        old = self.mode(path, watcher)
        if old is None or (mode is not None and old != mode):
            return False
        self._drop(path, watcher)
        self.size -= 1
        if old == PERSISTENT_RECURSIVE:
            self.recursive -= 1
        paths_of = self.by_watcher.get(watcher)
        if paths_of is not None:  # None: remove_watcher is forgetting this watcher
            paths_of.pop(path, None)
            if not paths_of:
                del self.by_watcher[watcher]
        return True

    def remove_watcher(self, watcher: int, chunk: int = 256) -> Iterator[None]:
        """Forget all of one watcher's watches, yielding after every `chunk` of them (see
        WatchManager.remove_watcher_steps). Its by_watcher entry goes first, so a watch that fires
        meanwhile finds the watcher already gone from it (remove() allows for that). The paths are
        popped one by one, so each is freed as it goes, not all at once at the end."""
        paths_of = self.by_watcher.pop(watcher, None)
        if not paths_of:
            return
        done = 0
        while paths_of:
            path, _ = paths_of.popitem()
            mode = self._drop(path, watcher)
            if mode is not None:
                self.size -= 1
                self.recursive -= mode == PERSISTENT_RECURSIVE
            done += 1
            if done % chunk == 0:
                yield

    def contains(self, path: str, watcher: int) -> bool:
        """WatchManager.containsWatcher, as ZooKeeper 3.8 has it: true when anyone watches `path` itself in
        this half, or when `watcher` has a recursive watch there; walking the parents (when any recursive
        watch exists) fails on a path without '/'."""
        mode = self.mode(path, watcher)
        if mode is None:
            mode = STANDARD
        first = True
        for p in _java_path_and_parents(path, self.recursive > 0):
            if first and p in self:
                return True
            first = False
            if mode == PERSISTENT_RECURSIVE:
                return True
        return False

    def has_mode(self, path: str, watcher: int, mode: int) -> bool:
        return self.mode(path, watcher) == mode

    def fire(self, event_type: int, path: str, hit: dict[int, None]) -> None:
        """WatchManager.triggerWatch: the watchers of `path` (one-shot ones are spent) and the recursive
        watchers of it and its parents (never for NodeChildrenChanged) join `hit`."""
        watchers = self.watchers(path)
        if watchers:
            spent = None
            for watcher, mode in watchers.items():
                if mode == PERSISTENT_RECURSIVE and event_type == NODE_CHILDREN_CHANGED:
                    continue
                hit[watcher] = None
                if mode == STANDARD:
                    if spent is None:
                        spent = [watcher]
                    else:
                        spent.append(watcher)
            if spent:
                for watcher in spent:
                    self.remove(path, watcher)
        if self.recursive and event_type != NODE_CHILDREN_CHANGED:
            for p in paths.ancestors(path):
                watchers = self.watchers(p)
                if watchers:
                    for watcher, mode in watchers.items():
                        if mode == PERSISTENT_RECURSIVE:
                            hit[watcher] = None


class WatchManager:
    """ZooKeeper's pair of watch managers (DataTree.dataWatches and childWatches). getData/exists watches
    are data watches, getChildren watches child watches, and addWatch files a persistent (or recursive)
    watch in both; each half is removed, checked and fired on its own."""

    def __init__(self) -> None:
        self.data_half = _Half()
        self.child_half = _Half()
        # May this watcher READ a node with this ACL? Asked for every watcher an event reaches, at trigger
        # time, whatever kind of watch it has (CVE-2024-23944: ZooKeeper's ServerCnxn.process(event, acl)
        # checks READ before sending). The server sets it; None lets every event through.
        self.readable: Callable[[Watcher, Any], bool] | None = None
        self._ids: dict[Watcher, int] = {}  # the halves file watchers by these ids (see _Half)
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0

    def _id(self, watcher: Watcher) -> int:
        """The watcher's id, given on its first watch (and forgotten by remove_watcher)."""
        wid = self._ids.get(watcher)
        if wid is None:
            self._next_id += 1
            wid = self._ids[watcher] = self._next_id
            self._watchers[wid] = watcher
        return wid

    def data_paths_by_watcher(self) -> dict[Watcher, dict[str, None]]:
        """The data half's paths per watcher (what wchc/wchp show)."""
        watchers = self._watchers
        return {watchers[wid]: ps for wid, ps in self.data_half.by_watcher.items() if wid in watchers}

    def has_data_watches(self, watcher: Watcher) -> bool:
        wid = self._ids.get(watcher)
        return wid is not None and wid in self.data_half.by_watcher

    # -- registration --------------------------------------------------------
    def add_data_watch(self, path: str, watcher: Watcher) -> None:
        self.data_half.add(path, self._id(watcher), STANDARD)

    def add_child_watch(self, path: str, watcher: Watcher) -> None:
        self.child_half.add(path, self._id(watcher), STANDARD)

    def add_persistent_watch(self, path: str, watcher: Watcher, recursive: bool) -> None:
        """addWatch: both halves, in that mode (the last mode set for a watcher and path wins)."""
        mode = PERSISTENT_RECURSIVE if recursive else PERSISTENT
        wid = self._id(watcher)
        self.child_half.add(path, wid, mode)
        self.data_half.add(path, wid, mode)

    def remove_watches(self, path: str, watcher_type: int, watcher: Watcher, dry_run: bool = False) -> bool:
        """removeWatches (or checkWatches, with dry_run) of a WatcherType: Children (1) and Data (2) are the
        halves and Any (3) both, as ZooKeeper 3.8's DataTree has them; 3.9's Persistent (4) and
        PersistentRecursive (5) are the watches of that mode in either half. checkWatches of 1-3 may raise
        MarshallingError (see _Half.contains)."""
        data, child = self.data_half, self.child_half
        watcher_id = self._ids.get(watcher, 0)  # 0: no watch at all (ids start at 1)
        if watcher_type in (4, 5):
            mode = PERSISTENT if watcher_type == 4 else PERSISTENT_RECURSIVE
            if dry_run:
                return child.has_mode(path, watcher_id, mode) or data.has_mode(path, watcher_id, mode)
            found_child = child.remove(path, watcher_id, mode)
            return data.remove(path, watcher_id, mode) or found_child
        halves = {1: (child,), 2: (data,), 3: (child, data)}.get(watcher_type, ())
        found = False
        for half in halves:  # every half is asked, as ZooKeeper does, even once one said yes
            if half.contains(path, watcher_id) if dry_run else half.remove(path, watcher_id):
                found = True
        return found

    def remove_watcher(self, watcher: Watcher) -> None:
        """Forget every watch of a closed connection."""
        for _ in self.remove_watcher_steps(watcher):
            pass

    def remove_watcher_steps(self, watcher: Watcher) -> Iterator[None]:
        """remove_watcher in steps of a few thousand watches: a server yields to its event loop between
        them, so closing a connection with 600k watches does not hold every other client for ~0.5 s."""
        wid = self._ids.get(watcher)
        if wid is None:
            return
        yield from self.data_half.remove_watcher(wid)
        yield from self.child_half.remove_watcher(wid)
        del self._ids[watcher]
        del self._watchers[wid]

    # -- triggering ----------------------------------------------------------
    def trigger(self, event_type: int, path: str, acl: Any = None) -> None:
        """Notify every watcher of `path` that the event concerns, once each: ZooKeeper fires the data half
        (for NodeChildrenChanged the child half), and for NodeDeleted the child half too. A watcher that may
        not READ `acl` (the ACL of the node the event is about) is not told, but its one-shot watch is
        spent all the same, as in ZooKeeper."""
        data, child = self.data_half, self.child_half
        if event_type == NODE_CHILDREN_CHANGED:  # recursive watches never hear it: the path alone decides
            if path not in child:
                return
        elif (path not in data and not data.recursive) and (
            event_type != NODE_DELETED or (path not in child and not child.recursive)
        ):
            return
        hit: dict[int, None] = {}
        if event_type == NODE_CHILDREN_CHANGED:
            self.child_half.fire(event_type, path, hit)
        else:
            self.data_half.fire(event_type, path, hit)
            if event_type == NODE_DELETED:
                self.child_half.fire(event_type, path, hit)
        readable = self.readable if acl is not None else None
        watchers = self._watchers
        for wid in hit:
            watcher = watchers.get(wid)
            if watcher is not None and (readable is None or readable(watcher, acl)):
                watcher.notify(event_type, path)

    # -- introspection (wchs, wchc, wchp) ----------------------------------------
    def count(self) -> int:
        """ZooKeeper's watch count: both halves (a persistent watch counts twice)."""
        return self.data_half.size + self.child_half.size

    def paths_of(self, watcher: Watcher) -> list[str]:
        wid = self._ids.get(watcher, 0)
        return sorted({*self.data_half.by_watcher.get(wid, ()), *self.child_half.by_watcher.get(wid, ())})

    def by_path(self) -> dict[str, list[Watcher]]:
        out: dict[str, list[Watcher]] = {}
        watchers = self._watchers
        for half in (self.data_half, self.child_half):
            for p in half.paths():
                out.setdefault(p, []).extend(
                    watchers[wid] for wid in half.watchers(p) or () if wid in watchers
                )
        return out

    def watched_paths(self) -> Iterable[str]:
        return {*self.data_half.paths(), *self.child_half.paths()}
