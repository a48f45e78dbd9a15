"""Leader election: candidates line up as ephemeral sequential nodes; the first is the leader.

    election = Election(zk, "/election/app", b"host-1")
    await election.run(lead)   # returns when lead() returns; raises LeadershipLost if cut short

Each candidate watches only its predecessor, so a leader's death wakes exactly one candidate
(no herd effect). A leader whose connection is suspended gives up at once: the others can only
take over after its session expires, which is later, so two leaders never act at the same time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from zkpy.client.client import Client
from zkpy.client.recipes.contenders import Contender, LossWatch


class LeadershipLost(Exception):
    """Leadership ended before the leader's function returned (connection suspended, session expired)."""


class Election:
    def __init__(self, client: Client, path: str, identifier: bytes = b"") -> None:
        self.client = client
        self.path = path
        self.identifier = identifier
        self.is_leader = False

    async def run(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Stand for election; once elected, run `func(*args)` as leader, then step down."""
        contender = Contender(self.client, self.path, "n", self.identifier)
        try:
            await contender.join()
            await contender.wait_turn(lambda mine, other: True)
            finished = False
            async with LossWatch(self.client, contender.node or "") as loss, trio.open_nursery() as nursery:

                async def step_down_on_loss() -> None:
                    await loss.lost.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(step_down_on_loss)
                self.is_leader = True
                result = await func(*args)
                finished = True
                nursery.cancel_scope.cancel()
            if not finished:
                raise LeadershipLost(loss.reason)
            return result
        finally:
            self.is_leader = False
            with trio.CancelScope(shield=True), trio.move_on_after(self.client.session_timeout):
                await contender.leave()

    async def contenders(self) -> list[bytes]:
        """Identifiers of all candidates, the leader first."""
        probe = Contender(self.client, self.path, "n")
        out = []
        for name in await probe.line():
            with contextlib.suppress(Exception):
                out.append((await self.client.get(f"{self.path}/{name}"))[0])
        return out

    async def leader(self) -> bytes | None:
        names = await self.contenders()
        return names[0] if names else None
