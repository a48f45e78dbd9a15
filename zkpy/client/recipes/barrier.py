"""A double barrier: `count` participants enter together and leave together.

    barrier = DoubleBarrier(zk, "/barriers/round-7", count=3)
    await barrier.enter()   # returns once 3 participants have entered
    ...                     # the work of the round
    await barrier.leave()   # returns once every participant has left (or died)

Participants are ephemeral nodes, so one that crashes after entering no longer holds the
others back at `leave`. Use one path per round: the "ready" node stays until the last leaver.
"""

from __future__ import annotations

import contextlib
import uuid

import trio

from zkpy import paths
from zkpy.client.client import Client
from zkpy.client.retry import retry
from zkpy.errors import NodeExistsError, NoNodeError

READY = "ready"


class DoubleBarrier:
    def __init__(self, client: Client, path: str, count: int, identifier: str | None = None) -> None:
        self.client = client
        self.path = path
        self.count = count
        self.name = identifier or uuid.uuid4().hex
        self.node = paths.join(path, self.name)
        self.ready = paths.join(path, READY)

    async def enter(self, timeout: float | None = None) -> None:
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            await retry(self.client.ensure_path, self.path)
            with contextlib.suppress(NodeExistsError):
                await retry(self.client.create, self.node, ephemeral=True)
            while True:
                woken = trio.Event()
                if await retry(self.client.exists, self.ready, watch=lambda _e, w=woken: w.set()):
                    return
                children = [c for c in await retry(self.client.get_children, self.path) if c != READY]
                if len(children) >= self.count:
                    with contextlib.suppress(NodeExistsError):
                        await retry(self.client.create, self.ready)
                    return
                await woken.wait()

    async def leave(self, timeout: float | None = None) -> None:
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            with contextlib.suppress(NoNodeError):
                await retry(self.client.delete, self.node)
            while True:
                woken = trio.Event()
                children = await retry(self.client.get_children, self.path, watch=lambda _e, w=woken: w.set())
                if not [c for c in children if c != READY]:
                    with contextlib.suppress(NoNodeError):
                        await retry(self.client.delete, self.ready)
                    return
                await woken.wait()

    async def participants(self) -> list[str]:
        try:
            return sorted(c for c in await retry(self.client.get_children, self.path) if c != READY)
        except NoNodeError:
            return []
