"""A distributed work queue where a taken item is not lost if its consumer dies.

    queue = Queue(zk, "/queues/jobs")
    await queue.put(b"job")
    item = await queue.get()        # claims the oldest unclaimed item
    ...                             # process it
    await queue.consume(item)       # removes it for good (or `release(item)` to give it back)

Items are persistent sequential nodes under `<path>/entries`. Taking one creates an ephemeral
claim under `<path>/taken`; consuming deletes item and claim in one transaction. If the consumer
crashes, its claim goes with its session and the item is offered again.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import trio

from zkpy import paths
from zkpy.client.client import Client
from zkpy.client.retry import retry
from zkpy.errors import NodeExistsError, NoNodeError


@dataclass(frozen=True)
class QueueItem:
    name: str
    value: bytes


class Queue:
    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path
        self.entries = paths.join(path, "entries")
        self.taken = paths.join(path, "taken")
        self.owner = uuid.uuid4().hex.encode()

    async def _ensure(self) -> None:
        for p in (self.entries, self.taken):
            await retry(self.client.ensure_path, p)

    async def put(self, value: bytes) -> str:
        await self._ensure()
        path = await retry(self.client.create, paths.join(self.entries, "item-"), value, sequence=True)
        return paths.basename(path)

    async def __len__(self) -> int:  # type: ignore[misc]
        await self._ensure()
        return len(await retry(self.client.get_children, self.entries))

    async def get(self, timeout: float | None = None) -> QueueItem | None:
        """Claim the oldest unclaimed item, waiting for one; None if `timeout` passes first."""
        await self._ensure()
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            while True:
                woken = trio.Event()
                wake = lambda _e, w=woken: w.set()  # noqa: E731
                names = sorted(await retry(self.client.get_children, self.entries, watch=wake))
                claimed = set(await retry(self.client.get_children, self.taken, watch=wake))
                for name in names:
                    if name in claimed:
                        continue
                    item = await self._claim(name)
                    if item is not None:
                        return item
                await woken.wait()
        return None

    async def _claim(self, name: str) -> QueueItem | None:
        claim = paths.join(self.taken, name)
        try:
            await retry(self.client.create, claim, self.owner, ephemeral=True)
        except NodeExistsError:
            _data, stat = await retry(self.client.get, claim)
            if stat.ephemeralOwner != self.client.session_id:
                return None  # someone else's
        try:
            value, _ = await retry(self.client.get, paths.join(self.entries, name))
        except NoNodeError:  # consumed between our listing and our claim
            with contextlib.suppress(NoNodeError):
                await retry(self.client.delete, claim)
            return None
        return QueueItem(name, value)

    async def consume(self, item: QueueItem) -> None:
        """Remove a claimed item for good."""
        txn = self.client.transaction()
        txn.delete(paths.join(self.entries, item.name)).delete(paths.join(self.taken, item.name))
        await txn.commit()

    async def release(self, item: QueueItem) -> None:
        """Give a claimed item back to the queue."""
        with contextlib.suppress(NoNodeError):
            await retry(self.client.delete, paths.join(self.taken, item.name))
