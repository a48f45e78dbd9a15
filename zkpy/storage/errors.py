"""Storage failures, kept apart from ZooKeeper's wire error codes: these never reach a client as such."""

from __future__ import annotations


class StorageError(Exception):
    """The disk refused a write or a sync. The server should stop accepting writes: what is on disk
    after a failed fsync is unknown, so nothing in the failed batch may be acknowledged."""


class CorruptLogError(StorageError):
    """Damage in the transaction log that is not a torn tail: loading past it would leave a hole."""


class CorruptSnapshotError(StorageError):
    """A snapshot fails its checksums (or every snapshot does, when raised by the loader)."""
