"""Durable storage: the transaction log, snapshots, purging and a dump tool.

The server owns when to write; these modules own how bytes reach the disk safely and how
they are read back after a crash. Nothing here knows what a transaction means (except the
dump tool, which is for humans).
"""

from zkpy.storage.errors import CorruptLogError, CorruptSnapshotError, StorageError
from zkpy.storage.purge import purge
from zkpy.storage.snapshot import load_latest_snapshot, write_snapshot
from zkpy.storage.txnlog import TxnLog, recover

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "StorageError",
    "TxnLog",
    "load_latest_snapshot",
    "purge",
    "recover",
    "write_snapshot",
]
