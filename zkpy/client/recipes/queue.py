"""A distributed work queue where a taken item is not lost if its consumer dies.

    queue = Queue(zk, "/queues/jobs")
    await queue.put(b"job")
    item = await queue.get()        # claims the oldest unclaimed item
    ...                             # process it
    await queue.consume(item)       # removes it for good (or `release(item)` to give it back)

Items are persistent sequential nodes under `<path>/entries`. Taking one creates an ephemeral
claim under `<path>/taken`; consuming deletes item and claim in one transaction. If the consumer
crashes, its claim goes with its session and the item is offered again.

A put enqueues exactly once, even when its reply is lost to a connection drop and it is retried:
the item is created in one transaction with an ephemeral marker `<path>/puts/<guid>`, so a retry
whose marker already exists knows the first attempt was applied. Looking for the item itself
(Curator's protected mode) would not do for a queue: a consumer may take it before the retry
looks. The marker is deleted once the put knows its outcome, or goes with the session. Item names
are `_c_<guid>-item-<seq>` (the guid finds the item again); the queue is ordered by `<seq>`.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import trio

from zkpy import paths
from zkpy.client.client import Client
from zkpy.client.retry import retry
from zkpy.errors import NodeExistsError, NoNodeError, ZooKeeperError


def _sequence(name: str) -> str:
    """The sequence suffix that orders items (`item-<seq>` of older queues sorts the same way)."""
    return name[-10:]


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
        self.puts = paths.join(path, "puts")
        self.owner = uuid.uuid4().hex.encode()

    async def _ensure(self) -> None:
        for p in (self.entries, self.taken, self.puts):
            await retry(self.client.ensure_path, p)

    async def put(self, value: bytes) -> str:
        """Enqueue `value` exactly once (retrying across connection losses while the session
        lives); returns the item's name. If the reply was lost and a consumer took the item before
        the retry could look, the name is not known any more: `_c_<guid>-item-` is returned."""
        await self._ensure()
        guid = uuid.uuid4().hex
        marker = paths.join(self.puts, guid)
        prefix = f"_c_{guid}-item-"

        async def attempt() -> str:
            txn = self.client.transaction()
            txn.create(marker, ephemeral=True).create(paths.join(self.entries, prefix), value, sequence=True)
            try:
                results = await txn.commit()
            except NodeExistsError as exc:
                if exc.path != marker:
                    raise
                # An earlier attempt was applied and its reply lost: do not enqueue again.
                for name in await self.client.get_children(self.entries):
                    if name.startswith(prefix):
                        return name
                return prefix
            return paths.basename(results[1])

        name = await retry(attempt)
        with contextlib.suppress(ZooKeeperError):  # else it goes with the session
            await retry(self.client.delete, marker)
        return name

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
                names = sorted(await retry(self.client.get_children, self.entries, watch=wake), key=_sequence)
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
