"""The znode tree: nodes with ZooKeeper's Stat bookkeeping, and nothing else.

Pure and synchronous. Checks (existence, versions, ACLs) live in `apply`; this module
keeps the structure consistent: parent/child links, cversion/pzxid, the ephemeral,
container and TTL indexes, and the node count and data size that `mntr` reports.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

from zkpy import paths
from zkpy.jute.records import STAT_STRUCT, Stat

# ZooKeeper's EphemeralType encoding of ephemeralOwner for the extended node types.
CONTAINER_OWNER = -(1 << 63)  # Long.MIN_VALUE
TTL_MASK = -(1 << 56)  # 0xff00000000000000 as a signed long
MAX_TTL = (1 << 40) - 1

AclTuple = tuple[tuple[int, str, str], ...]  # (perms, scheme, id) per entry


def ttl_owner(ttl: int) -> int:
    return TTL_MASK | ttl


def is_ttl_owner(owner: int) -> bool:
    return owner != CONTAINER_OWNER and owner < 0 and (owner & TTL_MASK) == TTL_MASK


def ttl_of(owner: int) -> int:
    return owner & MAX_TTL


def is_normal_ephemeral(owner: int) -> bool:
    return owner > 0


# DataNode.addChild makes a node's children set as `new HashSet<>(8)`.
CHILD_TABLE_INITIAL = 8

# Most znodes are leaves: sharing one empty frozenset saves an empty set (216 bytes) per node.
NO_CHILDREN: frozenset[str] = frozenset()


def _gc_untracker() -> Callable[[object], None] | None:
    """CPython's PyObject_GC_UnTrack (None on other interpreters).

    Why a znode made by a write is taken out of the cycle collector's lists: each full collection
    walks every tracked object, and a tree grown by writes is millions of them (0.5 s of pause
    per million znodes, measured; a tree loaded from a snapshot is frozen instead, run.py and
    durable.py). Untracking is safe for ZNode alone: its fields hold bytes, ints, an interned
    tuple of (int, str, str) and a set of names, none of which can refer to a ZNode, so a znode
    is never part of a reference cycle and the collector could never free one; reference
    counting frees it as before. Its children set stays tracked (it is its own object), and an
    untracked referrer counts for the collector as a reference from outside, which keeps it."""
    if sys.implementation.name != "cpython":
        return None
    untrack = getattr(ctypes.pythonapi, "PyObject_GC_UnTrack", None)
    if untrack is None:
        return None
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    return untrack  # type: ignore[no-any-return]


_untrack = _gc_untracker()


class ZNode:
    __slots__ = (
        "acl",
        "aversion",
        "child_capacity",
        "children",
        "ctime",
        "cversion",
        "czxid",
        "data",
        "ephemeral_owner",
        "mtime",
        "mzxid",
        "pzxid",
        "version",
    )

    def __init__(self, data: bytes | None, acl: AclTuple, zxid: int, time: int, ephemeral_owner: int) -> None:
        self.data = data
        self.acl = acl
        self.czxid = self.mzxid = self.pzxid = zxid
        self.ctime = self.mtime = time
        self.version = self.cversion = self.aversion = 0
        self.ephemeral_owner = ephemeral_owner
        self.children: set[str] | frozenset[str] = NO_CHILDREN  # a real set once it has a child
        # The table size of ZooKeeper's HashSet of this node's children, which orders getChildren: created
        # with 8 buckets, doubled whenever the count passes three quarters of it, and never shrunk.
        self.child_capacity = CHILD_TABLE_INITIAL

    def add_child(self, name: str) -> None:
        if self.children is NO_CHILDREN:
            self.children = {name}
        else:
            children = self.children
            children.add(name)  # type: ignore[union-attr]
            if len(children) > self.child_capacity * 3 // 4:
                self.child_capacity *= 2

    def stat(self) -> Stat:
        return Stat(*self._stat_fields())

    def stat_bytes(self) -> bytes:
        """The 68-byte wire Stat, packed directly (the read hot path)."""
        return STAT_STRUCT.pack(*self._stat_fields())

    def _stat_fields(self) -> tuple[int, ...]:
        # ZooKeeper 3.8 stores the number of child creations in cversion (it names sequential
        # children) and shows clients creations + deletions = 2 * creations - live children.
        # Container and TTL markers stay internal: clients see ephemeralOwner 0 for them.
        owner = self.ephemeral_owner
        if owner < 0 and (owner == CONTAINER_OWNER or owner & TTL_MASK == TTL_MASK):
            owner = 0
        n = len(self.children)
        return (
            self.czxid,
            self.mzxid,
            self.ctime,
            self.mtime,
            self.version,
            2 * self.cversion - n,
            self.aversion,
            owner,
            len(self.data or b""),
            n,
            self.pzxid,
        )


OPEN_ACL: AclTuple = ((31, "world", "anyone"),)
READ_ACL: AclTuple = ((1, "world", "anyone"),)  # ZooDefs.Ids.READ_ACL_UNSAFE

CONFIG_NODE = "/zookeeper/config"
# The nodes ZooKeeper's DataTree.isSpecialPath names: deleting one is BADARGUMENTS before any other check.
SPECIAL_PATHS = frozenset(("/", "/zookeeper", "/zookeeper/quota", CONFIG_NODE))


def make_config_node() -> ZNode:
    """/zookeeper/config as ZooKeeper's DataTree.addConfigNode makes it: empty data, and world:anyone READ
    only (ZOOKEEPER-2014: reconfiguration is access controlled, so a plain client may neither setData nor
    setACL it), set through setACL with version -1, which leaves its aversion at -1."""
    node = ZNode(b"", READ_ACL, 0, 0, 0)
    node.aversion = -1
    return node


class DataTree:
    """Path -> ZNode map plus the indexes ZooKeeper keeps beside it."""

    def __init__(self) -> None:
        self.nodes: dict[str, ZNode] = {}
        self.ephemerals: dict[int, set[str]] = {}
        self.containers: set[str] = set()
        self.ttls: set[str] = set()
        self.sessions: dict[int, tuple[int, bytes]] = {}  # session id -> (timeout ms, password)
        self.last_zxid = 0
        self._acl_cache: dict[AclTuple, AclTuple] = {OPEN_ACL: OPEN_ACL, READ_ACL: READ_ACL}
        self.data_size = 0
        root = ZNode(b"", OPEN_ACL, 0, 0, 0)
        self.nodes["/"] = root
        for path in ("/zookeeper", "/zookeeper/quota"):
            self._link(path, ZNode(b"", OPEN_ACL, 0, 0, 0))
        self._link(CONFIG_NODE, make_config_node())

    def _link(self, path: str, node: ZNode) -> None:
        self.nodes[path] = node
        self.nodes[paths.parent(path)].add_child(paths.basename(path))

    def intern_acl(self, acl: AclTuple) -> AclTuple:
        """Share one tuple between the many nodes that carry the same ACL."""
        return self._acl_cache.setdefault(acl, acl)

    def get(self, path: str) -> ZNode | None:
        return self.nodes.get(path)

    def node_count(self) -> int:
        return len(self.nodes)

    def create_node(
        self,
        path: str,
        data: bytes | None,
        acl: AclTuple,
        ephemeral_owner: int,
        parent_cversion: int,
        zxid: int,
        time: int,
    ) -> ZNode:
        parent_path = paths.parent(path)
        parent = self.nodes[parent_path]
        node = ZNode(data, self.intern_acl(acl), zxid, time, ephemeral_owner)
        if _untrack is not None:
            _untrack(node)
        self.nodes[path] = node
        parent.add_child(paths.basename(path))
        parent.cversion = parent_cversion
        parent.pzxid = zxid
        self.data_size += len(data or b"") + len(path)
        if ephemeral_owner:
            self.index_owner(path, ephemeral_owner)
        return node

    def index_owner(self, path: str, owner: int) -> None:
        """File a node with a non-zero ephemeralOwner under the container, TTL or session index."""
        if owner == CONTAINER_OWNER:
            self.containers.add(path)
        elif is_ttl_owner(owner):
            self.ttls.add(path)
        elif owner:
            self.ephemerals.setdefault(owner, set()).add(path)

    def delete_node(self, path: str, zxid: int) -> ZNode:
        node = self.nodes.pop(path)
        parent = self.nodes[paths.parent(path)]
        parent.children.discard(paths.basename(path))  # type: ignore[union-attr]
        parent.pzxid = zxid
        self.data_size -= len(node.data or b"") + len(path)
        owner = node.ephemeral_owner
        if owner:
            if owner == CONTAINER_OWNER:
                self.containers.discard(path)
            elif is_ttl_owner(owner):
                self.ttls.discard(path)
            else:
                owned = self.ephemerals.get(owner)
                if owned is not None:
                    owned.discard(path)
                    if not owned:
                        del self.ephemerals[owner]
        return node

    def drop_orphan_ephemerals(self) -> list[str]:
        """Delete ephemerals whose owner is no session of the tree, as Apache's loadData does at
        start-up (its killSession of sessions without a timeout): data written before sessions
        were checked could hold such nodes, and nothing else would ever remove them."""
        orphans = sorted(
            (
                path
                for owner, owned in self.ephemerals.items()
                if owner not in self.sessions
                for path in owned
            ),
            reverse=True,
        )
        for path in orphans:
            self.delete_node(path, self.last_zxid)
        return orphans

    def relink(self, path: str, node: ZNode, parent_pzxid: int) -> None:
        """Put back a node that `delete_node` removed (multi rollback)."""
        self.nodes[path] = node
        parent = self.nodes[paths.parent(path)]
        parent.add_child(paths.basename(path))
        parent.pzxid = parent_pzxid
        self.data_size += len(node.data or b"") + len(path)
        self.index_owner(path, node.ephemeral_owner)

    def set_data(self, node: ZNode, path: str, data: bytes | None, zxid: int, time: int) -> None:
        self.data_size += len(data or b"") - len(node.data or b"")
        node.data = data
        node.mzxid = zxid
        node.mtime = time
        node.version += 1

    def count_descendants(self, path: str) -> int:
        total = 0
        stack = [path]
        nodes = self.nodes
        while stack:
            p = stack.pop()
            for name in nodes[p].children:
                total += 1
                stack.append(paths.join(p, name))
        return total
