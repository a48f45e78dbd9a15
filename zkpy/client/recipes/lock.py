"""A mutual-exclusion lock and a read/write lock (ZooKeeper's recipes, without the herd effect).

    async with Lock(zk, "/locks/db"):
        ...

Holding a lock is only as good as the session: if the connection is suspended or the session
expires, `lock.lost` is set — code that must not run unlocked should check it, or use
`async with lock.hold() as scope` (which cancels the block when the lock is lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio

from zkpy.client.client import Client
from zkpy.client.recipes.contenders import Contender, LossWatch, kind_of


def _exclusive(mine: str, other: str) -> bool:
    return True


def _reader_blocked(mine: str, other: str) -> bool:
    return kind_of(other) == "write"


class Lock:
    """An exclusive lock at `path`; `identifier` is stored in our node (see `contenders()`)."""

    kind = "lock"

    def __init__(self, client: Client, path: str, identifier: bytes = b"") -> None:
        self.client = client
        self.path = path
        self.identifier = identifier
        self._contender: Contender | None = None
        self._loss: LossWatch | None = None
        self._lost: trio.Event | None = None

    def _blocks(self, mine: str, other: str) -> bool:
        return _exclusive(mine, other)

    @property
    def is_acquired(self) -> bool:
        return self._contender is not None and self._contender.node is not None

    @property
    def lost(self) -> trio.Event:
        """Set once the lock can no longer be trusted (connection suspended, session expired)."""
        assert self._lost is not None, "lock never acquired"
        return self._lost

    async def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock; False if `timeout` passes first (our place in line is then given up)."""
        if self.is_acquired:
            raise RuntimeError("lock already acquired by this object")
        contender = Contender(self.client, self.path, self.kind, self.identifier)
        acquired = False
        try:
            await contender.join()
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await contender.wait_turn(self._blocks)
                acquired = True
        finally:
            if not acquired:
                with trio.CancelScope(shield=True), trio.move_on_after(self.client.session_timeout):
                    await contender.leave()
        if acquired:
            self._contender = contender
            self._loss = LossWatch(self.client, contender.node or "")
            self._lost = self._loss.lost
            await self._loss.__aenter__()
        return acquired

    async def release(self) -> None:
        contender, self._contender = self._contender, None
        if self._loss is not None:
            await self._loss.__aexit__()
            self._loss = None
        if contender is not None:
            await contender.leave()

    async def contenders(self) -> list[bytes]:
        """The identifiers of everyone holding or waiting, in line order."""
        probe = Contender(self.client, self.path, self.kind)
        out = []
        for name in await probe.line():
            with contextlib.suppress(Exception):
                out.append((await self.client.get(f"{self.path}/{name}"))[0])
        return out

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self.client.session_timeout):
            await self.release()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[trio.CancelScope]:
        """Acquire, run the block, release; the block is cancelled if the lock is lost meanwhile."""
        async with self, trio.open_nursery() as nursery:

            async def cancel_on_loss() -> None:
                await self.lost.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_on_loss)
            yield nursery.cancel_scope
            nursery.cancel_scope.cancel()


class ReadLock(Lock):
    """Shared with other readers; waits only for writers ahead of it."""

    kind = "read"

    def _blocks(self, mine: str, other: str) -> bool:
        return _reader_blocked(mine, other)


class WriteLock(Lock):
    """Exclusive against readers and writers alike."""

    kind = "write"


class ReadWriteLock:
    """A pair of locks on one path: `rw.read` (shared) and `rw.write` (exclusive)."""

    def __init__(self, client: Client, path: str, identifier: bytes = b"") -> None:
        self.read = ReadLock(client, path, identifier)
        self.write = WriteLock(client, path, identifier)
