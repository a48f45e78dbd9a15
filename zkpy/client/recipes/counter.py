"""A shared integer counter: compare-and-set on the node's version, retried on conflict.

An `add` whose reply is lost to a connection drop raises ConnectionLossError instead of being
retried: the write may have been applied, and repeating it could count twice.
"""

from __future__ import annotations

import contextlib

from zkpy.client.client import Client
from zkpy.client.retry import retry
from zkpy.errors import BadVersionError, NodeExistsError


class Counter:
    def __init__(self, client: Client, path: str, default: int = 0) -> None:
        self.client = client
        self.path = path
        self.default = default

    async def _ensure(self) -> None:
        if await retry(self.client.exists, self.path) is None:
            with contextlib.suppress(NodeExistsError):
                await retry(self.client.create, self.path, str(self.default).encode(), makepath=True)

    async def get(self) -> int:
        await self._ensure()
        data, _ = await retry(self.client.get, self.path)
        return int(data or b"0")

    async def add(self, delta: int = 1) -> int:
        """Add `delta` atomically and return the new value."""
        await self._ensure()
        while True:
            data, stat = await retry(self.client.get, self.path)
            value = int(data or b"0") + delta
            try:
                await self.client.set(self.path, str(value).encode(), version=stat.version)
                return value
            except BadVersionError:
                continue  # someone else added first: read again
