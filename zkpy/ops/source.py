"""What the metrics endpoint and the AdminServer look at: the server answering clients now.

A standalone server is one object for the life of the process. An ensemble member builds a new
client-facing server for each role and has none while it elects or syncs, so the endpoints ask
for the current one at each request and fall back to what the peer itself knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zkpy.replication.peer import QuorumPeer
    from zkpy.server.config import ServerConfig
    from zkpy.server.node import ZooKeeperServer


class Source:
    config: ServerConfig

    def current(self) -> ZooKeeperServer | None:
        """The server answering clients, None while there is none (electing, syncing)."""
        raise NotImplementedError

    def state(self) -> str:
        """standalone, leader, follower, observer, read-only; or the peer's state between roles."""
        raise NotImplementedError

    def idle_metrics(self) -> dict[str, int | float | str]:
        """mntr-style metrics known without a serving server (election time, fsync...)."""
        return {}

    @property
    def peer(self) -> QuorumPeer | None:
        return None


@dataclass
class StandaloneSource(Source):
    server: ZooKeeperServer

    def __post_init__(self) -> None:
        self.config = self.server.config

    def current(self) -> ZooKeeperServer | None:
        return self.server

    def state(self) -> str:
        return self.server.state


@dataclass
class PeerSource(Source):
    quorum_peer: QuorumPeer

    def __post_init__(self) -> None:
        self.config = self.quorum_peer.config

    def current(self) -> ZooKeeperServer | None:
        return self.quorum_peer.serving

    def state(self) -> str:
        server = self.quorum_peer.serving
        return server.state if server is not None else self.quorum_peer.state

    def idle_metrics(self) -> dict[str, int | float | str]:
        return {**self.quorum_peer.store.metrics(), **self.quorum_peer.metrics()}

    @property
    def peer(self) -> QuorumPeer | None:
        return self.quorum_peer
