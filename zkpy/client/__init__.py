"""zkpy.client: a trio-native ZooKeeper client.

    async with zkpy.client.connect("127.0.0.1:2181/app", timeout=10) as zk:
        await zk.create("/jobs/job-", b"...", sequence=True, makepath=True)

One IO task owns the socket (pings, reconnects, xid matching); one event task delivers watch events
and state changes in server order. `zkpy.client.sync.SyncClient` is the blocking facade.
"""

from zkpy.client.client import Client, ClientInfo, RolledBackError, Transaction, connect
from zkpy.client.connection import ConnectionClosedError, parse_hosts
from zkpy.client.events import EventStream, EventType, State, WatchedEvent
from zkpy.client.retry import retry
from zkpy.jute.records import ACL, OPEN_ACL_UNSAFE, Id, Stat

__all__ = [
    "ACL",
    "OPEN_ACL_UNSAFE",
    "Client",
    "ClientInfo",
    "ConnectionClosedError",
    "EventStream",
    "EventType",
    "Id",
    "RolledBackError",
    "Stat",
    "State",
    "Transaction",
    "WatchedEvent",
    "connect",
    "parse_hosts",
    "retry",
]
