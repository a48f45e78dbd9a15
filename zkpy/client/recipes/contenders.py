"""Ephemeral sequential contenders: the shared core of locks, read/write locks and leader election.

Each contender creates `<path>/<guid>-<kind>-<seq>` (ephemeral, sequential) and waits, watching
only the nearest node ahead of it that blocks it, so one deletion wakes one waiter (no herd). The
guid in the name lets a contender find its own node after a create whose reply was lost to a
connection drop (Curator's "protected" mode). A crashed contender's node goes with its session.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable

import trio

from zkpy import paths
from zkpy.client.client import Client
from zkpy.client.events import EventType, State, WatchedEvent
from zkpy.client.retry import retry
from zkpy.errors import ConnectionLossError, NoNodeError, SessionExpiredError, ZooKeeperError


def _set(event: trio.Event, _: object) -> None:
    event.set()


def sequence_of(name: str) -> int:
    return int(name[-10:])


def kind_of(name: str) -> str:
    return name.split("-")[1] if name.count("-") >= 2 else ""


class Contender:
    """One node in the line at `path`. `blocks(mine, other)` says whether `other`, ahead of us, blocks."""

    def __init__(self, client: Client, path: str, kind: str, data: bytes = b"") -> None:
        if "-" in kind:
            raise ValueError("kind must not contain '-'")
        self.client = client
        self.path = path
        self.kind = kind
        self.data = data
        self.guid = uuid.uuid4().hex
        self.node: str | None = None  # our full path once created

    async def join(self) -> str:
        """Create our node (exactly once, even across a connection loss) and return its path."""
        await retry(self.client.ensure_path, self.path)
        prefix = paths.join(self.path, f"{self.guid}-{self.kind}-")
        while True:
            try:
                self.node = await self.client.create(prefix, self.data, ephemeral=True, sequence=True)
                return self.node
            except ConnectionLossError:
                found = await self._find_own()
                if found:
                    self.node = found
                    return found

    async def _find_own(self) -> str | None:
        children = await retry(self.client.get_children, self.path)
        for name in children:
            if name.startswith(self.guid + "-"):
                return paths.join(self.path, name)
        return None

    async def line(self) -> list[str]:
        """Everyone's node names in the line, first first."""
        try:
            children = await retry(self.client.get_children, self.path)
        except NoNodeError:
            return []
        return sorted((c for c in children if c.count("-") >= 2), key=sequence_of)

    async def wait_turn(self, blocks: Callable[[str, str], bool]) -> None:
        """Return once no node ahead of ours blocks us; raise SessionExpiredError if our node is gone."""
        assert self.node is not None
        mine = paths.basename(self.node)
        while True:
            line = await self.line()
            if mine not in line:
                raise SessionExpiredError("our contender node is gone (session expired?)", self.node)
            for name in line:  # a twin from a create whose reply we lost and then repeated
                if name.startswith(self.guid + "-") and name != mine:
                    with contextlib.suppress(ZooKeeperError):
                        await retry(self.client.delete, paths.join(self.path, name))
            ahead = [name for name in line[: line.index(mine)] if blocks(mine, name)]
            if not ahead:
                return
            woken = trio.Event()
            wake = functools.partial(_set, woken)
            # watch only the nearest blocker: its deletion is the only change that can let us go
            if await retry(self.client.exists, paths.join(self.path, ahead[-1]), watch=wake) is None:
                continue
            await woken.wait()

    async def leave(self) -> None:
        """Delete our node (if the session still has it); safe to call twice."""
        node, self.node = self.node, None
        if node is None:
            return
        with contextlib.suppress(ZooKeeperError):  # gone already, or the session with it
            await retry(self.client.delete, node)


class LossWatch:
    """Sets `lost` when holding something on a session can no longer be trusted.

    That is when the connection is suspended (others may soon see our session expire), the
    session expires, the client closes, or our node is deleted.
    """

    def __init__(self, client: Client, node: str) -> None:
        self.client = client
        self.node = node
        self.lost = trio.Event()
        self.reason = ""

    def _state(self, state: State) -> None:
        if state in (State.SUSPENDED, State.EXPIRED, State.CLOSED):
            self._lose(f"connection {state.value}")

    async def _node(self, event: WatchedEvent) -> None:
        if event.type in (EventType.DELETED, EventType.NONE):
            self._lose("our node was deleted")
        elif not self.lost.is_set():  # a data change: keep watching
            try:
                if await self.client.exists(self.node, watch=self._node) is None:
                    self._lose("our node was deleted")
            except ZooKeeperError:
                self._lose("could not re-arm the watch on our node")

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    async def __aenter__(self) -> LossWatch:
        self.client.add_listener(self._state)
        if not self.client.connected:
            self._lose("not connected")
        elif await retry(self.client.exists, self.node, watch=self._node) is None:
            self._lose("our node was deleted")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.remove_listener(self._state)
