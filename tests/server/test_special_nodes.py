"""The /zookeeper namespace, container nodes and TTL nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import BadArgumentsError as KazooBadArguments
from kazoo.exceptions import (
    NoAuthError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.security import OPEN_ACL_UNSAFE as KAZOO_OPEN_ACL
from suite_settings import CONTAINER_CHECK_MS, CONTAINER_WAIT_S
from zkraw import RawClient

from zkpy.errors import BadArgumentsError
from zkpy.jute.ops import (
    CONTAINER,
    PERSISTENT,
    PERSISTENT_SEQUENTIAL_WITH_TTL,
    PERSISTENT_WITH_TTL,
    CreateRequest,
    CreateTTLRequest,
    OpCode,
)
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import ServerProcess


@pytest.fixture
def raw(server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(server.host, server.port)
    try:
        yield client
    finally:
        client.close()


def wait_deleted(zk: KazooClient, path: str, timeout: float = CONTAINER_WAIT_S) -> float:
    """Seconds until `path` is deleted; fails after `timeout` (set ZKPY_TEST_CONTAINER_WAIT to change it)."""
    gone = threading.Event()
    start = time.monotonic()
    if zk.exists(path, watch=lambda e: gone.set() if e.type == "DELETED" else None) is None:
        return 0.0
    assert gone.wait(timeout), f"{path} still exists after {timeout}s"
    return time.monotonic() - start


def test_zookeeper_namespace_is_listed(zk: KazooClient) -> None:
    assert "zookeeper" in zk.get_children("/")
    assert "quota" in zk.get_children("/zookeeper")
    assert zk.exists("/zookeeper/quota") is not None


def test_container_and_ttl_markers_are_not_shown_to_clients(
    raw: RawClient, zk: KazooClient, base: str
) -> None:
    """Apache keeps the container/TTL marker in ephemeralOwner internally but reports 0 in every Stat."""
    container = raw.call(OpCode.CREATE_CONTAINER, CreateRequest(f"{base}/c", b"", OPEN_ACL_UNSAFE, CONTAINER))
    ttl_req = CreateTTLRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 3_600_000)
    ttl = raw.call(OpCode.CREATE_TTL, ttl_req)
    assert (container.stat.ephemeralOwner, ttl.stat.ephemeralOwner) == (0, 0)
    assert (zk.exists(f"{base}/c").ephemeralOwner, zk.exists(f"{base}/t").ephemeralOwner) == (0, 0)


def test_container_removed_after_its_last_child_goes(raw: RawClient, zk: KazooClient, base: str) -> None:
    resp = raw.call(OpCode.CREATE_CONTAINER, CreateRequest(f"{base}/c", b"", OPEN_ACL_UNSAFE, CONTAINER))
    assert resp.path == f"{base}/c"
    raw.call(OpCode.CREATE_CONTAINER, CreateRequest(f"{base}/never-used", b"", OPEN_ACL_UNSAFE, CONTAINER))
    zk.create(f"{base}/c/a")
    zk.create(f"{base}/c/b")
    zk.delete(f"{base}/c/a")
    time.sleep(0.5)
    assert zk.exists(f"{base}/c") is not None  # still has a child

    zk.delete(f"{base}/c/b")
    wait_deleted(zk, f"{base}/c")
    assert zk.exists(f"{base}/c") is None
    # A container that never had a child is left alone.
    assert zk.exists(f"{base}/never-used") is not None


def test_ttl_node_removed_after_ttl_without_change(raw: RawClient, zk: KazooClient, base: str) -> None:
    resp = raw.call(
        OpCode.CREATE_TTL, CreateTTLRequest(f"{base}/t", b"x", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 300)
    )
    assert resp.path == f"{base}/t"
    assert zk.get(f"{base}/t")[0] == b"x"
    seq = raw.call(
        OpCode.CREATE_TTL,
        CreateTTLRequest(f"{base}/s-", b"", OPEN_ACL_UNSAFE, PERSISTENT_SEQUENTIAL_WITH_TTL, 300),
    )
    assert seq.path == f"{base}/s-0000000001"
    long_lived = CreateTTLRequest(f"{base}/long", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 3_600_000)
    raw.call(OpCode.CREATE_TTL, long_lived)

    wait_deleted(zk, f"{base}/t")
    wait_deleted(zk, seq.path)
    assert zk.exists(f"{base}/long") is not None


def test_ttl_node_with_children_is_kept(raw: RawClient, zk: KazooClient, base: str) -> None:
    raw.call(OpCode.CREATE_TTL, CreateTTLRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 200))
    zk.create(f"{base}/t/child")
    time.sleep(1.5)
    assert zk.exists(f"{base}/t") is not None
    zk.delete(f"{base}/t/child")
    wait_deleted(zk, f"{base}/t")


@pytest.mark.parametrize("ttl", [0, -5])
def test_ttl_must_be_positive(raw: RawClient, base: str, ttl: int) -> None:
    with pytest.raises(BadArgumentsError):
        raw.call(
            OpCode.CREATE_TTL, CreateTTLRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, ttl)
        )


def test_ttl_needs_a_ttl_mode(raw: RawClient, base: str) -> None:
    with pytest.raises(BadArgumentsError):
        raw.call(OpCode.CREATE_TTL, CreateTTLRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT, 500))
    with pytest.raises(BadArgumentsError):  # a TTL mode through plain create carries no TTL
        raw.call(OpCode.CREATE, CreateRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL))


def test_writes_keep_a_ttl_node_alive(raw: RawClient, zk: KazooClient, base: str) -> None:
    """A TTL counts from the last modification (mtime), so a node that keeps being written stays.

    The TTL is several sweep intervals long and the writes come far more often than it, so only a
    stall of most of a TTL between two writes could lose the node; expiry is then waited for.
    """
    ttl_ms = max(2000, 6 * CONTAINER_CHECK_MS)
    raw.call(
        OpCode.CREATE_TTL, CreateTTLRequest(f"{base}/t", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, ttl_ms)
    )
    deadline = time.monotonic() + 1.5 * ttl_ms / 1000  # outlive the TTL by half of it again
    i = 0
    while time.monotonic() < deadline:
        time.sleep(ttl_ms / 8000)
        zk.set(f"{base}/t", str(i).encode())  # NoNodeError here: expired although written
        i += 1
    assert zk.exists(f"{base}/t") is not None
    wait_deleted(zk, f"{base}/t", timeout=CONTAINER_WAIT_S + ttl_ms / 1000)


def test_emptied_container_survives_until_the_sweep(raw: RawClient, zk: KazooClient, base: str) -> None:
    """Apache deletes an emptied container only in its periodic sweep, never with its last child:
    a recipe may create the next child under the same parent right away.

    The create follows the delete by one round trip; a sweep can still land in that gap (about
    RTT / checkInterval of the time), so the exchange is retried a few times before it fails.
    A server that deletes the container with its last child fails every attempt.
    """
    parent = f"{base}/c"
    create_parent = CreateRequest(parent, b"", OPEN_ACL_UNSAFE, CONTAINER)
    raw.call(OpCode.CREATE_CONTAINER, create_parent)
    for _attempt in range(3):
        zk.create(f"{parent}/first")
        zk.delete(f"{parent}/first")
        try:
            zk.create(f"{parent}/next")
        except NoNodeError:
            raw.call(OpCode.CREATE_CONTAINER, create_parent)
            continue
        break
    else:
        pytest.fail(f"{parent} was deleted with its last child, before any sweep")
    assert zk.exists(parent).numChildren == 1
    zk.delete(f"{parent}/next")
    wait_deleted(zk, parent)
    assert zk.exists(parent) is None


def test_container_deletion_fires_watches(raw: RawClient, zk: KazooClient, base: str) -> None:
    raw.call(OpCode.CREATE_CONTAINER, CreateRequest(f"{base}/c", b"", OPEN_ACL_UNSAFE, CONTAINER))
    zk.create(f"{base}/c/kid")
    on_parent, on_node = threading.Event(), threading.Event()
    zk.get_children(base, watch=lambda e: on_parent.set() if e.type == "CHILD" else None)
    zk.exists(f"{base}/c", watch=lambda e: on_node.set() if e.type == "DELETED" else None)
    zk.delete(f"{base}/c/kid")
    assert on_node.wait(CONTAINER_WAIT_S), "no NodeDeleted for the swept container"
    assert on_parent.wait(5), "no NodeChildrenChanged on the swept container's parent"
    assert zk.get_children(base) == []


# /zookeeper/config, as ZooKeeper's DataTree.addConfigNode makes it: world:anyone READ only, set with version
# -1, so a plain client can read it but neither change its data nor its ACL.
def test_config_node_is_read_only_with_aversion_minus_one(zk: KazooClient) -> None:
    acl, stat = zk.get_acls("/zookeeper/config")
    assert [(a.perms, a.id.scheme, a.id.id) for a in acl] == [(1, "world", "anyone")]
    assert (stat.aversion, stat.version, stat.cversion) == (-1, 0, 0)
    data, stat = zk.get("/zookeeper/config")  # what getConfig reads: '' on a standalone server, not null
    assert data == b""
    assert stat.aversion == -1


def test_plain_client_cannot_write_the_config_node(zk: KazooClient) -> None:
    with pytest.raises(NoAuthError):
        zk.set("/zookeeper/config", b"x")
    with pytest.raises(NoAuthError):
        zk.set_acls("/zookeeper/config", KAZOO_OPEN_ACL)
    data, stat = zk.get("/zookeeper/config")
    assert (data, stat.version, stat.aversion) == (b"", 0, -1)


@pytest.mark.parametrize("path", ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"])
def test_special_paths_cannot_be_deleted(zk: KazooClient, path: str) -> None:
    """BADARGUMENTS comes before the version, ACL and children checks (PrepRequestProcessor)."""
    for version in (-1, 12345):
        with pytest.raises(KazooBadArguments):
            zk.delete(path, version=version)
    assert zk.exists(path) is not None


@pytest.mark.parametrize("path", ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"])
def test_special_path_delete_fails_a_multi(zk: KazooClient, base: str, path: str) -> None:
    t = zk.transaction()
    t.create(f"{base}/before")
    t.delete(path)
    t.create(f"{base}/after")
    results = t.commit()
    assert [type(r) for r in results] == [RolledBackError, KazooBadArguments, RuntimeInconsistency]
    assert zk.exists(f"{base}/before") is None
    assert zk.exists(path) is not None
