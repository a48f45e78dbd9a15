"""zkpy: a ZooKeeper-compatible coordination service and client, in pure Python on trio."""

__version__ = "0.1.0"
