"""Service registry and discovery: each live instance is an ephemeral node holding its address.

    registry = ServiceRegistry(zk)
    await registry.register("api", "10.0.0.5", 8080, {"zone": "a"})
    async for instances in registry.follow("api"):   # the live set, again after every change
        ...

An instance disappears when its session does (crash, partition, expiry). After an expiry the
registry re-registers its own instances as soon as the client has a new session.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from zkpy import paths
from zkpy.client.client import Client
from zkpy.client.events import State
from zkpy.client.retry import retry
from zkpy.errors import NodeExistsError, NoNodeError, ZooKeeperError


@dataclass(frozen=True)
class Instance:
    service: str
    id: str
    host: str
    port: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps({"host": self.host, "port": self.port, "metadata": self.metadata}).encode()

    @classmethod
    def decode(cls, service: str, instance_id: str, data: bytes) -> Instance:
        doc = json.loads(data or b"{}")
        return cls(
            service, instance_id, doc.get("host", ""), int(doc.get("port", 0)), doc.get("metadata", {})
        )


class ServiceRegistry:
    def __init__(self, client: Client, base: str = "/services") -> None:
        self.client = client
        self.base = paths.validate(base)
        self._mine: dict[str, Instance] = {}
        client.add_listener(self._on_state)

    def _path(self, service: str, instance_id: str | None = None) -> str:
        service_path = paths.join(self.base, service)
        return service_path if instance_id is None else paths.join(service_path, instance_id)

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        metadata: dict[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> Instance:
        """Publish an instance until `unregister`, the client closes, or its process dies."""
        instance = Instance(service, instance_id or uuid.uuid4().hex, host, port, dict(metadata or {}))
        self._mine[self._path(service, instance.id)] = instance
        await self._publish(instance)
        return instance

    async def _publish(self, instance: Instance) -> None:
        path = self._path(instance.service, instance.id)
        try:
            await retry(self.client.create, path, instance.encode(), ephemeral=True, makepath=True)
        except NodeExistsError:
            # Ours from before a lost reply, or one of an expired session whose deletion the server
            # has not applied yet: wait for that one to go (up to a session timeout), then publish.
            with trio.move_on_after(2 * self.client.session_timeout):
                while True:
                    gone = trio.Event()
                    stat = await retry(self.client.exists, path, watch=lambda _e, g=gone: g.set())
                    if stat is None:
                        with contextlib.suppress(NodeExistsError):
                            await retry(self.client.create, path, instance.encode(), ephemeral=True)
                            return
                        continue
                    if stat.ephemeralOwner == self.client.session_id:
                        await retry(self.client.set, path, instance.encode())
                        return
                    await gone.wait()
            raise

    async def unregister(self, instance: Instance) -> None:
        path = self._path(instance.service, instance.id)
        self._mine.pop(path, None)
        with contextlib.suppress(NoNodeError):
            await retry(self.client.delete, path)

    async def _on_state(self, state: State) -> None:
        if state is State.CONNECTED and self._mine:  # a new session after an expiry: publish again
            for instance in list(self._mine.values()):
                with contextlib.suppress(ZooKeeperError):  # the next new session will try again
                    await self._publish(instance)

    async def services(self) -> list[str]:
        try:
            return sorted(await retry(self.client.get_children, self.base))
        except NoNodeError:
            return []

    async def instances(self, service: str, watch: Any = None) -> list[Instance]:
        """The live instances of `service`, sorted by id."""
        path = self._path(service)
        try:
            ids = await retry(self.client.get_children, path, watch=watch)
        except NoNodeError:
            if watch is None:
                return []
            await retry(self.client.ensure_path, path)
            return await self.instances(service, watch)
        out = []
        for instance_id in sorted(ids):
            try:
                data, _ = await retry(self.client.get, paths.join(path, instance_id))
            except NoNodeError:
                continue  # went away between the listing and the read
            out.append(Instance.decode(service, instance_id, data))
        return out

    async def follow(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the live instances now and again after every change to the set."""
        changes = self.client.event_stream()
        last: list[Instance] | None = None
        while True:
            current = await self.instances(service, watch=changes)
            if current != last:
                yield current
                last = current
            await changes.get()

    def close(self) -> None:
        self.client.remove_listener(self._on_state)
