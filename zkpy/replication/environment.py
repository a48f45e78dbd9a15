"""What an ensemble member takes from the world, injected so the same code runs on real sockets,
disks and clocks in production and on simulated ones under `zkpy.testing` (one seed, virtual
time, in-memory links and disks; see zkpy/testing/cluster.py).

- Network: how to listen and connect. TcpNetwork is the real one.
- Store: the durable log, snapshots and epochs. zkpy.server.durable.DurableStore is the real one.
- wall_clock_ms: the time written into transactions (ctime/mtime, TTL expiry).
- rng: session ids and passwords.
Time for timeouts, heartbeats and expiry is trio's clock, which a MockClock replaces.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from zkpy.replication.epochs import Epochs
    from zkpy.tree.datatree import DataTree
    from zkpy.tree.txn import Txn


class Network(Protocol):
    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Bind; OSError when the address cannot be had."""
        ...

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to host:port; OSError when nobody listens there or it cannot be reached."""
        ...


class TcpNetwork:
    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        return list(await trio.open_tcp_listeners(port, host=host or None))

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)


class Store(Protocol):
    """A server's durable state. Every method that returns has made its change durable."""

    last_snapshot_zxid: int

    def recover(self, replayed: Callable[[int, bytes], None] | None = None) -> DataTree:
        """The newest snapshot plus every logged transaction after it (each handed to `replayed`)."""
        ...

    async def persist(self, txns: list[Txn]) -> None: ...

    async def truncate_after(self, zxid: int) -> None: ...

    async def install_snapshot(self, zxid: int, items: list[Any]) -> None: ...

    def snapshot_source(self, tree: DataTree) -> SnapshotSource:
        """A SNAP to stream: the snapshot of `tree` as it stands at this call (a point-in-time
        image: the caller goes on changing the tree), read piece by piece."""
        ...

    def snapshot_receiver(self) -> SnapshotSink:
        """Where a streamed SNAP's pieces are written as they arrive."""
        ...

    async def install_received(self, zxid: int, sink: SnapshotSink) -> DataTree:
        """As install_snapshot, for a streamed SNAP (whole, every checksum checked, durable, newer
        snapshots deleted, the log dropped); returns the tree it holds."""
        ...

    def close_log(self) -> None:
        """Before recover() is called again (it reopens the log)."""
        ...

    def last_durable_zxid(self) -> int: ...

    def logged_before(self, zxid: int, limit: int) -> list[tuple[int, bytes]]:
        """The newest `limit` logged records at or below `zxid`, oldest first."""
        ...

    def maybe_snapshot(self, tree: DataTree) -> None:
        """Between batches: take a snapshot of `tree` if one is due."""
        ...

    def metrics(self) -> dict[str, int | float | str]: ...

    def epochs(self) -> Epochs: ...

    @property
    def needs_resync(self) -> bool:
        """The data was found damaged and moved aside: take a leader's sync before voting."""
        ...

    def discard_damaged(self, reason: str) -> object:
        """Recovery found damage (CorruptLogError/CorruptSnapshotError): durably mark the store as
        needing a re-sync, then set the damaged files aside so recover() starts empty."""
        ...

    def resynced(self) -> None:
        """A leader's sync is durable here: clear the mark."""
        ...

    def check_writable(self) -> None:
        """Raise (OSError/StorageError) while the disk cannot take a new log file, e.g. full."""
        ...


class SnapshotSource(Protocol):
    async def read(self) -> bytes:
        """The next piece (b"" at the end; StorageError if the image could not be written)."""
        ...

    def close(self) -> None: ...


class SnapshotSink(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...


class Observer(Protocol):
    """Told of what the invariants of a simulated run are about (zkpy.testing.cluster); in
    production there is none."""

    def established(self, sid: int, epoch: int) -> None:
        """`sid` leads `epoch`: a quorum synced with it."""
        ...

    def committed(self, sid: int, zxid: int, packed: bytes) -> None:
        """Leader `sid` decided that this transaction is committed."""
        ...

    def applied(self, sid: int, zxid: int, packed: bytes) -> None:
        """Server `sid` applied this committed transaction to the tree it serves."""
        ...

    def synced(self, sid: int, tree_zxid: int) -> None:
        """Learner `sid` took its leader's sync: its tree now stands at `tree_zxid`."""
        ...

    def serving(self, sid: int, tree_zxid: int) -> None:
        """Server `sid` starts serving clients (not read-only) from a tree at `tree_zxid`."""
        ...

    def point(self, sid: int, name: str) -> None:
        """Server `sid` reached a named protocol step (e.g. "leader sent syncdata:snap to 2"):
        a simulated scenario may crash servers right here to script a known-bad interleaving."""
        ...


def _urandom_rng() -> random.Random:
    return random.Random(int.from_bytes(os.urandom(16), "big"))


@dataclass
class Environment:
    network: Network = field(default_factory=TcpNetwork)
    wall_clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    rng: random.Random = field(default_factory=_urandom_rng)
    # Session passwords: the operating system's CSPRNG. `rng` is a Mersenne Twister, whose state 156
    # passwords give away; only the simulator (zkpy.testing) swaps in a seeded generator here.
    random_bytes: Callable[[int], bytes] = field(default=os.urandom)
    observer: Observer | None = None
