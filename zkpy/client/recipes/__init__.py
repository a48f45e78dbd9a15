"""Coordination recipes built on zkpy.client: election, service registry, locks, barrier, counter, queue."""

from zkpy.client.recipes.barrier import DoubleBarrier
from zkpy.client.recipes.counter import Counter
from zkpy.client.recipes.election import Election, LeadershipLost
from zkpy.client.recipes.lock import Lock, ReadLock, ReadWriteLock, WriteLock
from zkpy.client.recipes.queue import Queue, QueueItem
from zkpy.client.recipes.registry import Instance, ServiceRegistry

__all__ = [
    "Counter",
    "DoubleBarrier",
    "Election",
    "Instance",
    "LeadershipLost",
    "Lock",
    "Queue",
    "QueueItem",
    "ReadLock",
    "ReadWriteLock",
    "ServiceRegistry",
    "WriteLock",
]
