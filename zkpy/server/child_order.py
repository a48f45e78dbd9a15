"""getChildren's order for nodes with many children, kept up to date as the children change.

ZooKeeper lists a node's children in its `HashSet<String>`'s iteration order: bucket by bucket
(`spread(hashCode) & (capacity - 1)`), each bucket in creation order (zkpy: by czxid), the table
growing with the children and never shrinking (`ZNode.child_capacity`). Working that out from
scratch hashes every name with Java's String.hashCode, in Python (100,000 children: ~0.3 s), then
sorts them all: far beyond the budget of one request (docs/hostile-clients.md).

So, for a node with many children, `ChildOrders` keeps the order it last answered with each name's
hash, and brings it up to date from the change since:

- the names added and removed are set differences (in C), each added name is hashed once and
  inserted at the end of its bucket (a creation is the newest child: its czxid is the largest);
  a removed name is found by bisecting the bucket list;
- when the table has doubled since, the kept order is stably sorted by the new buckets: a Java
  resize splits each bucket in two keeping the relative order, which is exactly that;
- a name deleted and created again in between moves to its bucket's end; the count of creations
  (`cversion` counts them in zkpy) tells when that happened, and then the order is built afresh.

Building afresh is the one costly step (the first getChildren of a big node after a restart, or
after more than an eighth of its children changed). `build_steps` does it in steps on a snapshot
of the names, for the connection to run with `zkpy.server.steps.run_in_steps` before it answers;
what changed while it ran is then an ordinary update.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from zkpy.jute import javaorder

ORDER_KEPT_MIN = 1024  # children from which a node's order is kept
ORDERS_KEPT = 16  # nodes whose order is kept (least recently asked for goes first)
_CHUNK = 512  # names between two chances to yield (build_steps)


class _Order:
    """One node's children in getChildren order, with what they were worked out from."""

    __slots__ = ("buckets", "capacity", "count", "cversion", "encoded", "hashes", "names", "node", "pzxid")

    def __init__(
        self, node: Any, names: list[str], buckets: list[int], encoded: list[bytes], hashes: dict[str, int]
    ) -> None:
        self.node = node
        self.names = names
        self.buckets = buckets  # names[i]'s bucket, ascending
        self.encoded = encoded  # names[i] as a jute buffer (length, UTF-8): an answer is one join
        self.hashes = hashes  # every name's spread Java hash
        self.capacity = node.child_capacity
        self.count = len(names)
        self.pzxid = node.pzxid
        self.cversion = node.cversion

    def vector(self) -> bytes:
        """The names as a jute vector of strings (getChildren's answer body)."""
        return len(self.names).to_bytes(4, "big") + b"".join(self.encoded)

    def current(self, node: Any) -> bool:
        return (
            node is self.node
            and node.pzxid == self.pzxid
            and len(node.children) == self.count
            and node.child_capacity == self.capacity
            and node.cversion == self.cversion
        )


def _prefix(path: str) -> str:
    return "/" if path in ("/", "") else path + "/"


def full_order(nodes: dict[str, Any], path: str, node: Any, hashes: dict[str, int]) -> _Order:
    """The order worked out from scratch, in one go (names missing from `hashes` are hashed into it)."""
    built: list[_Order] = []
    for _ in _build(nodes, path, node, list(node.children), hashes, built):
        pass
    return built[0]


_INDEX_BITS = 24  # a sort key's low bits: the name's index in the snapshot (up to 16M children)
_PARTS_LOG2 = 4  # the keys are sorted in 16 parts by bucket range, one part per step


def _encoded(name: str) -> bytes:
    raw = name.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _build(
    nodes: dict[str, Any], path: str, node: Any, names: list[str], hashes: dict[str, int], out: list[_Order]
) -> Iterator[None]:
    """Order `names` (the node's children, or a snapshot of them) by bucket, then czxid, yielding between
    chunks of work, and append the result to `out`. The tree may change between chunks: a name gone by
    the time its czxid is looked up is left out, and nothing is kept if the node was replaced or its
    table grew meanwhile."""
    spread = javaorder.spread_string_hash
    for start in range(0, len(names), _CHUNK):
        for name in names[start : start + _CHUNK]:
            if name not in hashes:
                hashes[name] = spread(name)
        yield
    prefix = _prefix(path)
    capacity = node.child_capacity
    mask = capacity - 1
    # Keys are bucket, then czxid (64 bits), then the index to find the name again; filed in parts by
    # bucket range, so that no single sort takes all of them.
    part_shift = max(capacity.bit_length() - 1 - _PARTS_LOG2, 0)
    parts: list[list[int]] = [[] for _ in range(1 << _PARTS_LOG2)]
    for start in range(0, len(names), _CHUNK):
        for index in range(start, min(start + _CHUNK, len(names))):
            name = names[index]
            child = nodes.get(prefix + name)
            if child is not None:
                bucket = hashes[name] & mask
                parts[bucket >> part_shift].append((bucket << 64 | child.czxid) << _INDEX_BITS | index)
        yield
    for part in parts:
        part.sort()
        yield
    index_mask = (1 << _INDEX_BITS) - 1
    ordered: list[str] = []
    buckets: list[int] = []
    encoded: list[bytes] = []
    for part in parts:
        for start in range(0, len(part), _CHUNK):
            for key in part[start : start + _CHUNK]:
                name = names[key & index_mask]
                ordered.append(name)
                buckets.append(key >> (64 + _INDEX_BITS))
                encoded.append(_encoded(name))
            yield
    if node.child_capacity != capacity or nodes.get(path) is not node:
        return  # replaced, or its table grew meanwhile: nothing to keep (the answer builds it afresh)
    kept = hashes if len(hashes) == len(ordered) else {name: hashes[name] for name in ordered}
    out.append(_Order(node, ordered, buckets, encoded, kept))


class ChildOrders:
    """The kept orders, by path (see the module docstring)."""

    def __init__(self) -> None:
        self._orders: OrderedDict[str, _Order] = OrderedDict()

    def order(self, nodes: dict[str, Any], path: str, node: Any) -> _Order:
        """`node`'s children in getChildren order (kept: do not change it)."""
        path = path or "/"  # the root is filed under "" too
        kept = self._orders.get(path)
        if kept is not None:
            self._orders.move_to_end(path)
            if kept.current(node) or (kept.node is node and _update(nodes, path, node, kept)):
                return kept
        fresh = full_order(nodes, path, node, kept.hashes if kept is not None else {})
        self._keep(path, fresh)
        return fresh

    def needs_build(self, path: str, node: Any) -> bool:
        """Would answering now mean building the order afresh (the costly case)?"""
        path = path or "/"
        if len(node.children) < ORDER_KEPT_MIN:
            return False
        kept = self._orders.get(path)
        if kept is None or kept.node is not node:
            return True
        return _too_different(kept, node)

    def build_steps(self, nodes: dict[str, Any], path: str, node: Any) -> Iterator[None]:
        """Build `node`'s order afresh from a snapshot of its names, in steps (see _build). The tree may
        change between steps: the result is kept as of the snapshot (names deleted since are left out),
        and the next `order` call brings it up to date like any other change."""
        path = path or "/"
        kept = self._orders.get(path)
        hashes = dict(kept.hashes) if kept is not None else {}
        names = list(node.children)
        pzxid, cversion = node.pzxid, node.cversion
        built: list[_Order] = []
        yield from _build(nodes, path, node, names, hashes, built)
        if not built:
            return
        order = built[0]
        # Counted as of the snapshot: the next order() sees what changed since as an update (a name deleted
        # since is not in the order; one created since, or deleted and created again, is an update's work).
        order.pzxid, order.cversion = pzxid, cversion
        order.count = len(order.names)
        self._keep(path, order)

    def _keep(self, path: str, order: _Order) -> None:
        self._orders[path] = order
        self._orders.move_to_end(path)
        while len(self._orders) > ORDERS_KEPT:
            self._orders.popitem(last=False)


def _too_different(kept: _Order, node: Any) -> bool:
    """An update would cost about as much as a fresh build (or cannot be made)."""
    n = len(node.children)
    return abs(n - kept.count) > max(64, n // 8) or node.cversion - kept.cversion > max(64, n // 8)


def _update(nodes: dict[str, Any], path: str, node: Any, kept: _Order) -> bool:
    """Bring `kept` up to date with `node`'s children in place; False when a fresh build is cheaper."""
    if _too_different(kept, node):
        return False
    children = node.children
    hashes = kept.hashes
    names, buckets = kept.names, kept.buckets
    prefix = _prefix(path)
    added = children.difference(hashes)
    moved: list[str] = []
    if node.cversion - kept.cversion != len(added):
        # More creations than new names: some were created and deleted again, or deleted and created
        # again (a new czxid: last in its bucket now). Only a name sharing its bucket can have moved.
        moved = [
            name
            for name in _sharing_a_bucket(names, buckets)
            if name in children and nodes[prefix + name].czxid > kept.pzxid
        ]
    encoded = kept.encoded
    if node.child_capacity != kept.capacity:  # the table grew: a stable sort by the new buckets
        mask = node.child_capacity - 1
        order = sorted(range(len(names)), key=[hashes[name] & mask for name in names].__getitem__)
        names[:] = [names[i] for i in order]
        encoded[:] = [encoded[i] for i in order]
        buckets[:] = [hashes[name] & mask for name in names]
        kept.capacity = node.child_capacity
    mask = kept.capacity - 1
    gone = (
        [name for name in hashes if name not in children] if len(hashes) + len(added) != len(children) else []
    )
    for name in [*gone, *moved]:
        bucket = hashes[name] & mask
        i = bisect_left(buckets, bucket)
        while names[i] != name:
            i += 1
        del names[i]
        del buckets[i]
        del encoded[i]
    for name in gone:
        del hashes[name]
    spread = javaorder.spread_string_hash
    for name in sorted([*added, *moved], key=lambda name: nodes[prefix + name].czxid):
        h = hashes.get(name)
        if h is None:
            h = hashes[name] = spread(name)
        bucket = h & mask
        czxid = nodes[prefix + name].czxid
        lo = bisect_left(buckets, bucket)
        i = bisect_right(buckets, bucket, lo)
        while i > lo and nodes[prefix + names[i - 1]].czxid > czxid:
            i -= 1  # a bucket is in creation order
        names.insert(i, name)
        buckets.insert(i, bucket)
        encoded.insert(i, _encoded(name))
    kept.count = len(names)
    kept.pzxid = node.pzxid
    kept.cversion = node.cversion
    return True


def _sharing_a_bucket(names: list[str], buckets: list[int]) -> list[str]:
    """The names whose bucket holds another name too."""
    shared = {a for a, b in pairwise(buckets) if a == b}
    return [name for name, bucket in zip(names, buckets, strict=True) if bucket in shared]


__all__ = ["ORDER_KEPT_MIN", "ChildOrders", "full_order"]
