"""The tree as a stream of snapshot items, and back.

Items are plain msgpack-able values, streamed so neither side holds a second copy of
the tree: first a header, then the ACL table, then nodes in chunks. Children sets are
rebuilt from the paths on load, so node order in the stream does not matter.

    ["zkpy-tree", 2, last_zxid, [[session_id, timeout_ms, password], ...]]
    ["acls", [[[perms, scheme, id], ...], ...]]
    ["nodes", [[path, data, acl_index, czxid, mzxid, ctime, mtime, version, cversion, aversion,
                ephemeral_owner, pzxid], ...]]

A node's children table size (ZNode.child_capacity, which orders getChildren) is not stored: as ZooKeeper
rebuilds its children sets when it loads a snapshot (DataTree.deserialize adds each child to a fresh
`HashSet<>(8)`), a loaded node's table is sized for the children it has, however many it once had.

Format 1 differs only in what it means: it was written while zkpy made /zookeeper/config with world:anyone
ALL and aversion 0. Loading one gives that node ZooKeeper's own READ-only ACL and aversion -1 unless a
setACL had changed it, so an upgraded server does not keep the system node writable by anyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from zkpy.tree.datatree import (
    CHILD_TABLE_INITIAL,
    CONFIG_NODE,
    NO_CHILDREN,
    OPEN_ACL,
    DataTree,
    ZNode,
    make_config_node,
)

FORMAT = "zkpy-tree"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CHUNK = 4096


class SnapshotFormatError(ValueError):
    """The items do not describe a tree this version can load."""


def tree_items(tree: DataTree) -> Iterator[Any]:
    yield [FORMAT, VERSION, tree.last_zxid, [[sid, t, pw] for sid, (t, pw) in tree.sessions.items()]]
    acl_index: dict[tuple[tuple[int, str, str], ...], int] = {}
    for node in tree.nodes.values():
        if node.acl not in acl_index:
            acl_index[node.acl] = len(acl_index)
    yield ["acls", [[list(entry) for entry in acl] for acl in acl_index]]
    chunk: list[list[Any]] = []
    for path, n in tree.nodes.items():
        chunk.append(
            [path, n.data, acl_index[n.acl], n.czxid, n.mzxid, n.ctime, n.mtime,
             n.version, n.cversion, n.aversion, n.ephemeral_owner, n.pzxid]
        )  # fmt: skip
        if len(chunk) >= CHUNK:
            yield ["nodes", chunk]
            chunk = []
    if chunk:
        yield ["nodes", chunk]


def load_tree(items: Iterable[Any]) -> DataTree:
    it = iter(items)
    header = next(it, None)
    if (
        not isinstance(header, list)
        or len(header) != 4
        or header[0] != FORMAT
        or header[1] not in READABLE_VERSIONS
    ):
        raise SnapshotFormatError(f"not a zkpy tree snapshot (header {header!r:.80})")
    tree = DataTree()
    tree.nodes.clear()
    tree.last_zxid = header[2]
    tree.sessions = {sid: (t, bytes(pw)) for sid, t, pw in header[3]}
    acls: list[tuple[tuple[int, str, str], ...]] = []
    nodes = tree.nodes
    for item in it:
        kind = item[0]
        if kind == "acls":
            acls = [tree.intern_acl(tuple((p, s, i) for p, s, i in acl)) for acl in item[1]]
        elif kind == "nodes":
            for (
                path,
                data,
                acl,
                czxid,
                mzxid,
                ctime,
                mtime,
                version,
                cversion,
                aversion,
                owner,
                pzxid,
            ) in item[1]:
                node = ZNode.__new__(ZNode)
                node.data = data
                node.acl = acls[acl]
                node.czxid, node.mzxid, node.ctime, node.mtime = czxid, mzxid, ctime, mtime
                node.version, node.cversion, node.aversion = version, cversion, aversion
                node.ephemeral_owner, node.pzxid = owner, pzxid
                node.children = NO_CHILDREN
                node.child_capacity = CHILD_TABLE_INITIAL
                nodes[path] = node
        else:
            raise SnapshotFormatError(f"unknown snapshot item {kind!r}")
    if "/" not in nodes:
        raise SnapshotFormatError("snapshot has no root node")
    if header[1] == 1:
        _upgrade_config_node(tree)
    size = 0
    for path, node in nodes.items():  # the hot loop of a restart: keep it to plain operations
        size += len(node.data or b"") + len(path)
        if path == "/":
            continue
        parent_path, _, name = path.rpartition("/")
        parent = nodes.get(parent_path or "/")
        if parent is None:
            raise SnapshotFormatError(f"snapshot node {path} has no parent")
        children = parent.children
        if children is NO_CHILDREN:
            parent.children = {name}
        else:
            children.add(name)  # type: ignore[union-attr]
            if len(children) > parent.child_capacity * 3 // 4:
                parent.child_capacity *= 2
        if node.ephemeral_owner:
            tree.index_owner(path, node.ephemeral_owner)
    tree.data_size = size
    return tree


def _upgrade_config_node(tree: DataTree) -> None:
    """A format-1 tree's /zookeeper/config still has the ACL zkpy used to give it: put ZooKeeper's in its
    place (see the module docstring), keeping the node's data and zxids. An ACL someone set is kept."""
    old = tree.nodes.get(CONFIG_NODE)
    if old is None or old.acl != OPEN_ACL or old.aversion != 0:
        return
    fresh = make_config_node()
    old.acl, old.aversion = tree.intern_acl(fresh.acl), fresh.aversion


def describe_items(items: Iterable[Any]) -> Iterator[str]:
    """Readable lines for `zkpy dump`: sessions (never their passwords), then one line per znode."""
    it = iter(items)
    header = next(it, None)
    if not isinstance(header, list) or len(header) != 4 or header[0] != FORMAT:
        raise SnapshotFormatError(f"not a zkpy tree snapshot (header {header!r:.80})")
    yield f"tree format {header[1]}, last zxid {header[2]:#x}, {len(header[3])} sessions"
    for sid, timeout, _password in header[3]:
        yield f"session {sid:#x} timeout {timeout}ms"
    acls: list[Any] = []
    for item in it:
        if item[0] == "acls":
            acls = item[1]
            continue
        for path, data, acl, czxid, mzxid, _ct, _mt, version, cversion, aversion, owner, pzxid in item[1]:
            acl_text = ",".join(f"{s}:{i}:{p}" for p, s, i in acls[acl]) if acl < len(acls) else "?"
            yield (
                f"{path} czxid={czxid:#x} mzxid={mzxid:#x} pzxid={pzxid:#x} version={version} "
                f"cversion={cversion} aversion={aversion} owner={owner:#x} "
                f"dataLength={len(data or b'')} acl={acl_text}"
            )
