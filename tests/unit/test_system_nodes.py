"""The /zookeeper system nodes in the tree, as ZooKeeper 3.8's DataTree makes and guards them, and the
config node of a tree loaded from a snapshot written before zkpy did so."""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.errors import Code
from zkpy.jute.codec import encode
from zkpy.jute.ops import DeleteRequest, MultiRequest, OpCode, SetACLRequest, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import CONFIG_NODE, OPEN_ACL, READ_ACL, DataTree
from zkpy.tree.serialize import SnapshotFormatError, load_tree, tree_items
from zkpy.tree.txn import Txn

PLAIN = (("ip", "127.0.0.1"),)
SUPER = (("super", ""),)


def run(tree: DataTree, zxid: int, op: int, record: Any, auth: tuple[tuple[str, str], ...] = PLAIN) -> Any:
    return Applier(tree).apply(Txn(zxid, 1000, 0x1234, 1, op, encode(record), auth))


def test_config_node_is_world_read_with_aversion_minus_one() -> None:
    node = DataTree().nodes[CONFIG_NODE]
    assert node.acl == READ_ACL
    assert (node.data, node.stat().aversion, node.stat().version) == (b"", -1, 0)


def test_plain_client_cannot_set_data_or_acl_on_config() -> None:
    tree = DataTree()
    assert run(tree, 1, OpCode.SET_DATA, SetDataRequest(CONFIG_NODE, b"x", -1)).err == Code.NO_AUTH
    assert run(tree, 2, OpCode.SET_ACL, SetACLRequest(CONFIG_NODE, OPEN_ACL_UNSAFE, -1)).err == Code.NO_AUTH
    assert tree.nodes[CONFIG_NODE].acl == READ_ACL


@pytest.mark.parametrize("path", ["/", "/zookeeper", "/zookeeper/quota", CONFIG_NODE])
@pytest.mark.parametrize("version", [-1, 7])
def test_special_paths_are_bad_arguments_to_delete(path: str, version: int) -> None:
    tree = DataTree()
    assert run(tree, 1, OpCode.DELETE, DeleteRequest(path, version), auth=SUPER).err == Code.BAD_ARGUMENTS
    multi = run(tree, 2, OpCode.MULTI, MultiRequest([(OpCode.DELETE, DeleteRequest(path, version))]))
    assert [code for _op, code, _r in multi.response.results] == [Code.BAD_ARGUMENTS]
    assert path in tree.nodes


def format_1_items(tree: DataTree) -> list[Any]:
    """`tree`'s snapshot items as zkpy wrote them before this change: format 1, config node world ALL."""
    node = tree.nodes[CONFIG_NODE]
    node.acl, node.aversion = OPEN_ACL, 0
    items = list(tree_items(tree))
    items[0][1] = 1
    return items


def test_format_1_snapshot_gets_zookeepers_config_acl() -> None:
    loaded = load_tree(format_1_items(DataTree()))
    node = loaded.nodes[CONFIG_NODE]
    assert (node.acl, node.aversion) == (READ_ACL, -1)


def test_format_1_snapshot_keeps_a_config_acl_someone_set() -> None:
    tree = DataTree()
    items = format_1_items(tree)
    # aversion 1: a setACL had changed the node since it was made.
    for item in items[2:]:
        for row in item[1]:
            if row[0] == CONFIG_NODE:
                row[9] = 1
    node = load_tree(items).nodes[CONFIG_NODE]
    assert (node.acl, node.aversion) == (OPEN_ACL, 1)


def test_current_snapshot_keeps_the_config_node_as_it_is() -> None:
    tree = DataTree()
    assert run(tree, 1, OpCode.SET_ACL, SetACLRequest(CONFIG_NODE, OPEN_ACL_UNSAFE, -1), auth=SUPER).err == 0
    assert tree.nodes[CONFIG_NODE].aversion == 0  # -1 then one setACL, as ZooKeeper counts it
    node = load_tree(tree_items(tree)).nodes[CONFIG_NODE]
    assert (node.acl, node.aversion) == (OPEN_ACL, 0)


def test_unknown_format_is_refused() -> None:
    items = list(tree_items(DataTree()))
    items[0][1] = 3
    with pytest.raises(SnapshotFormatError):
        load_tree(items)
