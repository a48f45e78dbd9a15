"""What the leader and learner roles share and what they may touch of their server.

A role (leader.Leader, learner.Learner) lives for one epoch. It sees its server only through
RoleContext, not through QuorumPeer: the context lists exactly the state a role reads and
changes, and keeps the import graph a tree (peer -> leader/learner -> cores -> roles), so a
role can be driven in a test by anything with these fields.

RoleEnded is how either side of a role, core or glue, says that this epoch is over for this
server and it must go back to election. This module is pure: the cores import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zkpy.replication.environment import Environment, Store
    from zkpy.replication.epochs import Epochs
    from zkpy.replication.history import History
    from zkpy.replication.quorum import Quorum
    from zkpy.replication.serving import EnsembleServer
    from zkpy.replication.stats import ReplicationStats
    from zkpy.server.config import ServerConfig
    from zkpy.tree.datatree import DataTree


class RoleEnded(Exception):
    """This server stops leading or following; it goes back to election."""


class AboveEpoch(RoleEnded):
    """A leader steps down for a learner that accepted a later epoch than its own, `accepted`,
    and can never follow it (leader_core._on_info). The server takes that epoch as its own
    acceptedEpoch (a promise to refuse older leaders, which it may always make) before it votes
    again: the next epoch it chooses as leader, or that a leader whose discovery quorum it is in
    chooses, is then above it, in one election rather than one election per epoch."""

    def __init__(self, message: str, accepted: int) -> None:
        super().__init__(message)
        self.accepted = accepted


class RoleContext(Protocol):
    """The server a role runs on (QuorumPeer in production)."""

    my_id: int
    is_observer: bool
    config: ServerConfig
    quorum: Quorum
    env: Environment
    store: Store
    epochs: Epochs
    history: History  # the window of logged transactions syncs are planned from
    tree: DataTree  # replaced by a learner that installs a SNAP
    stats: ReplicationStats
    serving: EnsembleServer | None  # set once the role serves clients
    disk_failed: str | None  # set when the local log refused a write: out of elections until it works

    def metrics(self) -> dict[str, int | float | str]: ...

    async def reload_tree(self) -> None:
        """Rebuild the tree from disk (after a TRUNC below what it holds)."""
        ...

    def resynced(self) -> None:
        """A leader's whole history is durable here: a server that lost its data votes again."""
        ...
