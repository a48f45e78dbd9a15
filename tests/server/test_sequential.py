"""Sequential nodes: a 10-digit suffix taken from the parent's cversion."""

from __future__ import annotations

from kazoo.client import KazooClient
from zkraw import RawClient

from zkpy.jute.ops import PERSISTENT_SEQUENTIAL, CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import ServerProcess


def test_suffix_counts_up_from_zero(zk: KazooClient, base: str) -> None:
    names = [zk.create(f"{base}/job-", sequence=True) for _ in range(3)]
    assert names == [f"{base}/job-0000000000", f"{base}/job-0000000001", f"{base}/job-0000000002"]
    assert sorted(zk.get_children(base)) == ["job-0000000000", "job-0000000001", "job-0000000002"]


def test_suffix_counts_child_creations_and_cversion_counts_deletes_too(zk: KazooClient, base: str) -> None:
    """Apache keeps a per-parent count of child creations: it names sequential nodes, and the cversion
    clients see is derived from it as creations + deletions (2 * creations - live children)."""
    zk.create(f"{base}/plain")
    first = zk.create(f"{base}/s-", sequence=True)
    assert first == f"{base}/s-0000000001"
    zk.delete(f"{base}/plain")
    zk.delete(first)
    assert zk.exists(base).cversion == 4
    assert zk.create(f"{base}/s-", sequence=True) == f"{base}/s-0000000002"
    assert zk.exists(base).cversion == 5
    # Different prefixes share the one counter; deletes never free or consume a number.
    zk.create(f"{base}/x")
    zk.delete(f"{base}/x")
    assert zk.create(f"{base}/other-", sequence=True) == f"{base}/other-0000000004"
    stat = zk.exists(base)
    assert (stat.cversion, stat.numChildren) == (8, 2)


def test_failed_creates_do_not_consume_numbers(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/a")
    t = zk.transaction()
    t.create(f"{base}/s-", sequence=True)
    t.create(f"{base}/a")  # fails: rolls the sequential create back
    t.commit()
    assert zk.create(f"{base}/s-", sequence=True) == f"{base}/s-0000000001"


def test_ephemeral_sequential(zk: KazooClient, base: str) -> None:
    path, stat = zk.create(f"{base}/lock-", ephemeral=True, sequence=True, include_data=True)
    assert path == f"{base}/lock-0000000000"
    assert stat.ephemeralOwner == zk.client_id[0]


def test_sequential_name_can_be_only_the_suffix(server: ServerProcess, base: str) -> None:
    """A path ending in '/' is valid for a sequential create: the name is just the counter."""
    raw = RawClient(server.host, server.port)
    try:
        resp = raw.call(OpCode.CREATE, CreateRequest(f"{base}/", b"", OPEN_ACL_UNSAFE, PERSISTENT_SEQUENTIAL))
        assert resp.path == f"{base}/0000000000"
    finally:
        raw.close()
