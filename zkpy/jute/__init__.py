"""Apache ZooKeeper's client wire protocol (jute), sans-IO: bytes in, records out."""
