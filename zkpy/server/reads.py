"""Read operations, served from the local tree: (tree, watches, caller, request) -> reply body.

Reads never go through the log. They run in the caller's request order (the
connection holds a read back until its earlier writes are applied), so a client
always reads its own writes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any, Protocol

from zkpy.errors import (
    BadArgumentsError,
    MarshallingError,
    NoAuthError,
    NoNodeError,
    NoWatcherError,
    ReconfigDisabledError,
    UnimplementedError,
    ZooKeeperError,
)
from zkpy.jute import javaorder
from zkpy.jute.codec import JuteError, encode, read_ustring, write_buffer
from zkpy.jute.ops import (
    ADD_WATCH_PERSISTENT,
    ADD_WATCH_PERSISTENT_RECURSIVE,
    REQUEST_RECORDS,
    ClientInfo,
    CountResponse,
    ErrorResponse,
    GetACLResponse,
    GetChildrenResponse,
    GetDataResponse,
    MultiResponse,
    OpCode,
    PathListResponse,
    WhoAmIResponse,
)
from zkpy.jute.records import ACL, PERM_ADMIN, PERM_READ, Id
from zkpy.server.child_order import ORDER_KEPT_MIN, ChildOrders
from zkpy.server.limits import DEFAULT_MULTI_MAX_OPS, too_many_ops
from zkpy.tree.apply import allowed, tuple_to_acl
from zkpy.tree.datatree import OPEN_ACL, DataTree
from zkpy.tree.watches import (
    NODE_CHILDREN_CHANGED,
    NODE_CREATED,
    NODE_DATA_CHANGED,
    NODE_DELETED,
    WatchManager,
)

_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")
SET_WATCHES_CHUNK = 256  # paths between two looks at the clock (zkpy.server.steps decides when to yield)
_ADD_WATCH_OK = encode(ErrorResponse(0))


class Caller(Protocol):
    """What a read needs to know about who asks: its session, auth ids, and where to send events."""

    session_id: int

    @property
    def auth(self) -> Iterable[tuple[str, str]]:
        """The session's ids, iterated in ZooKeeper's hash-set order (whoAmI)."""
        ...

    def notify(self, event_type: int, path: str) -> None: ...


_SET_WATCHES_FIELDS: dict[int, tuple[str, ...]] = {
    OpCode.SET_WATCHES: ("dataWatches", "existWatches", "childWatches"),
    OpCode.SET_WATCHES2: (
        "dataWatches",
        "existWatches",
        "childWatches",
        "persistentWatches",
        "persistentRecursiveWatches",
    ),
}


class SetWatchesParse:
    """A setWatches/setWatches2 body decoded in steps (the same rules as the jute record's reader), so a
    1 MB frame of 75,000 paths is never decoded in one go on the event loop: `steps()` yields after every
    `chunk` paths; `request` has the fields once it is exhausted. Raises JuteError as the reader would."""

    def __init__(self, op: int, body: bytes, chunk: int = SET_WATCHES_CHUNK) -> None:
        self.op = op
        self.body = body
        self.chunk = chunk
        self.request = SimpleNamespace(relativeZxid=0)

    def steps(self) -> Iterator[None]:
        body = self.body
        try:
            (self.request.relativeZxid,) = _LONG.unpack_from(body, 0)
        except struct.error:
            raise JuteError("truncated setWatches") from None
        off = 8
        done = 0
        for name in _SET_WATCHES_FIELDS[self.op]:
            try:
                (n,) = _INT.unpack_from(body, off)
            except struct.error:
                raise JuteError("truncated vector count") from None
            off += 4
            if n < 0:
                if n != -1:
                    raise JuteError(f"negative vector count {n}")
                setattr(self.request, name, None)
                continue
            if n > len(body) - off:
                raise JuteError(f"vector count {n} larger than the frame")
            items: list[str | None] = []
            for _ in range(n):
                item, off = read_ustring(body, off)
                items.append(item)
                done += 1
                if done % self.chunk == 0:
                    yield
            setattr(self.request, name, items)


def _vector_of_strings(out: bytearray, items: list[str]) -> None:
    out += len(items).to_bytes(4, "big", signed=True)
    for item in items:
        write_buffer(out, item.encode("utf-8"))


def _node_key(path: str | None) -> str | None:
    """ZooKeeper's tree also files the root under "" (its parent-less key), so reads of "" see the root."""
    return "/" if path == "" else path


# WatcherTypes ZooKeeper 3.8 knows (Children, Data, Any), and 3.9's Persistent and PersistentRecursive,
# which zkpy's own client uses. Any other type fails the request as ZooKeeper's does: MarshallingError.
_WATCHER_TYPES = frozenset({1, 2, 3, 4, 5})

# Valid request types zkpy refuses, with ZooKeeper's answers: reconfig is disabled by default, only the
# server itself deletes containers, and a session is created by the handshake only.
_REFUSED: dict[int, type[ZooKeeperError]] = {
    OpCode.RECONFIG: ReconfigDisabledError,
    OpCode.DELETE_CONTAINER: BadArgumentsError,
    OpCode.CREATE_SESSION: MarshallingError,
}


def _table_size_for(n: int) -> int:
    """Java's HashMap.tableSizeFor: the power of two at or above n."""
    return 1 << max(n - 1, 0).bit_length()


def _mask_digest(ident: str | None) -> str:
    return (ident or "").split(":", 1)[0] + ":x"


class Reads:
    def __init__(
        self, tree: DataTree, watches: WatchManager, multi_max_ops: int = DEFAULT_MULTI_MAX_OPS
    ) -> None:
        self.tree = tree
        self.watches = watches
        self.multi_max_ops = multi_max_ops  # a multiRead of more ops is refused (zkpy.server.limits)
        # getChildren orders of nodes with many children (see _children_in_java_order).
        self._orders = ChildOrders()
        self.handlers: dict[int, Callable[[Any, Caller], bytes]] = {
            OpCode.EXISTS: self.exists,
            OpCode.GET_CHILDREN: self.get_children,
            OpCode.GET_CHILDREN2: lambda req, caller: self.get_children(req, caller, with_stat=True),
            OpCode.GET_ACL: self.get_acl,
            OpCode.GET_ALL_CHILDREN_NUMBER: self.get_all_children_number,
            OpCode.GET_EPHEMERALS: self.get_ephemerals,
            OpCode.MULTI_READ: self.multi_read,
            OpCode.SYNC: self.sync,
            OpCode.CHECK_WATCHES: self.check_watches,
            OpCode.REMOVE_WATCHES: self.remove_watches,
            OpCode.ADD_WATCH: self.add_watch,
            OpCode.SET_WATCHES: self.set_watches,
            OpCode.SET_WATCHES2: self.set_watches,
            OpCode.WHO_AM_I: self.who_am_i,
        }

    def handle(self, op: int, body: bytes, caller: Caller) -> bytes:
        """The reply body for a read op; raises ZooKeeperError for an error reply."""
        if op == OpCode.GET_DATA:  # the hot path: no request record
            return self.get_data_fast(body, caller)
        handler = self.handlers.get(op)
        if handler is None:
            raise _REFUSED.get(op, UnimplementedError)()
        if op == OpCode.MULTI_READ and too_many_ops(body, self.multi_max_ops, read=True):
            raise BadArgumentsError()  # as a multi's: zkpy's bound (zkpy.server.limits)
        request, _ = REQUEST_RECORDS[op].read(body, 0)
        return handler(request, caller)

    def _readable(self, path: str | None, caller: Caller) -> Any:
        # Reads never validate the path (ZooKeeper's don't): a path no znode has is simply NoNode.
        node = self.tree.nodes.get(_node_key(path))  # type: ignore[arg-type]
        if node is None:
            raise NoNodeError(path=path)
        if node.acl is not OPEN_ACL and not allowed(node.acl, PERM_READ, caller.auth):
            raise NoAuthError(path=path)
        return node

    def get_data_fast(self, body: bytes, caller: Caller) -> bytes:
        """getData without building a request record: the read hot path."""
        try:
            (n,) = _INT.unpack_from(body, 0)
            path = body[4 : 4 + n].decode("utf-8")
            watch = body[4 + n]
        except (struct.error, IndexError, UnicodeDecodeError):
            raise JuteError("malformed getData request") from None
        node = self._readable(path, caller)
        if watch:
            self.watches.add_data_watch(path, caller)
        data = node.data
        if data is None:
            return b"\xff\xff\xff\xff" + node.stat_bytes()
        return _INT.pack(len(data)) + data + node.stat_bytes()

    def exists(self, req: Any, caller: Caller) -> bytes:
        path = req.path or ""
        if "\0" in path:  # the one check ZooKeeper makes on a read's path
            raise BadArgumentsError(path=path)
        if req.watch:
            self.watches.add_data_watch(path, caller)
        node = self.tree.nodes.get(_node_key(path))  # type: ignore[arg-type]
        if node is None:
            raise NoNodeError(path=path)
        return node.stat_bytes()

    def get_children(self, req: Any, caller: Caller, with_stat: bool = False) -> bytes:
        node = self._readable(req.path, caller)
        if req.watch:
            self.watches.add_child_watch(req.path, caller)
        if len(node.children) >= ORDER_KEPT_MIN:  # kept, with each name encoded: the answer is one join
            vector = self._orders.order(self.tree.nodes, req.path, node).vector()
            return vector + node.stat_bytes() if with_stat else vector
        out = bytearray()
        _vector_of_strings(out, self._children_in_java_order(req.path, node))
        if with_stat:  # getChildren2
            out += node.stat_bytes()
        return bytes(out)

    def _children_in_java_order(self, path: str, node: Any) -> list[str]:
        """A node's children as ZooKeeper lists them: its HashSet's order, each bucket in creation order. The
        table size is the node's child_capacity (grown with the children, never shrunk, as Java's).

        Working the order out is O(n log n) with a Java string hash per name (100,000 children: ~0.6 s), so
        for a node with many children it is kept and brought up to date as they change (ChildOrders)."""
        children = node.children
        if len(children) < 2:
            return list(children)
        if len(children) < ORDER_KEPT_MIN:
            return self._java_order(path, node)
        return self._orders.order(self.tree.nodes, path, node).names

    def children_order_steps(self, op: int, body: bytes) -> Iterator[None] | None:
        """For a getChildren whose answer would build a big node's order afresh: that work, in steps, for
        the connection to run before it answers (then the answer costs an update). None otherwise."""
        if op not in (OpCode.GET_CHILDREN, OpCode.GET_CHILDREN2):
            return None
        try:
            path, _ = read_ustring(body, 0)
        except (JuteError, ValueError, IndexError, UnicodeDecodeError):
            return None
        node = self.tree.nodes.get(_node_key(path))  # type: ignore[arg-type]
        if node is None or not self._orders.needs_build(path, node):  # type: ignore[arg-type]
            return None
        return self._orders.build_steps(self.tree.nodes, path, node)  # type: ignore[arg-type]

    def _java_order(self, path: str, node: Any) -> list[str]:
        children = node.children
        mask = node.child_capacity - 1
        spread = javaorder.spread_string_hash
        keyed = sorted([(spread(name) & mask, name) for name in children])
        ordered = [name for _, name in keyed]
        # Names sharing a bucket keep their insertion (creation) order there.
        nodes = self.tree.nodes
        prefix = "/" if path in ("/", "") else path + "/"
        i, n = 0, len(keyed)
        while i < n:
            b = keyed[i][0]
            j = i + 1
            while j < n and keyed[j][0] == b:
                j += 1
            if j - i > 1:
                ordered[i:j] = sorted(ordered[i:j], key=lambda name: nodes[prefix + name].czxid)
            i = j
        return ordered

    def get_acl(self, req: Any, caller: Caller) -> bytes:
        path = req.path
        node = self.tree.nodes.get(_node_key(path))  # type: ignore[arg-type]
        if node is None:
            raise NoNodeError(path=path)
        can_admin = allowed(node.acl, PERM_ADMIN, caller.auth)
        if not can_admin and not allowed(node.acl, PERM_READ, caller.auth):
            raise NoAuthError(path=path)
        acl = tuple_to_acl(node.acl)
        if not can_admin:  # ZooKeeper hides digest hashes ("user:x") from readers without ADMIN
            acl = [
                ACL(a.perms, Id(a.id.scheme, _mask_digest(a.id.id))) if a.id.scheme == "digest" else a
                for a in acl
            ]
        return encode(GetACLResponse(acl, node.stat()))

    def get_all_children_number(self, req: Any, caller: Caller) -> bytes:
        self._readable(req.path, caller)
        # ZooKeeper counts the keys of its node map under path + "/"; "" (the root's other key) sees
        # every node but itself, the root included.
        if req.path == "":
            return encode(CountResponse(self.tree.count_descendants("/") + 1))
        return encode(CountResponse(self.tree.count_descendants(req.path)))

    def get_ephemerals(self, req: Any, caller: Caller) -> bytes:
        nodes = self.tree.nodes
        owned = sorted(self.tree.ephemerals.get(caller.session_id, ()), key=lambda p: nodes[p].czxid)
        # ZooKeeper lists a copy of the session's HashSet of paths: sized for its count, at least 16
        # buckets, each bucket in creation order.
        cap = max(16, _table_size_for(len(owned) * 4 // 3 + 1))
        owned = sorted(owned, key=lambda p: javaorder.spread_string_hash(p) & (cap - 1))
        prefix = req.path or ""
        if prefix.strip() not in ("", "/"):  # a blank prefix or "/" lists them all
            owned = [p for p in owned if p.startswith(prefix)]
        return encode(PathListResponse(owned))

    def multi_read(self, req: Any, caller: Caller) -> bytes:
        results: list[tuple[int, int, Any]] = []
        for op, sub in req.ops:
            try:
                node = self._readable(sub.path, caller)
            except (NoNodeError, NoAuthError) as e:
                results.append((OpCode.ERROR, int(e.code), ErrorResponse(int(e.code))))
                continue
            if op == OpCode.GET_DATA:
                results.append((op, 0, GetDataResponse(node.data, node.stat())))
            else:
                results.append((op, 0, GetChildrenResponse(self._children_in_java_order(sub.path, node))))
        return encode(MultiResponse(results))

    def who_am_i(self, req: Any, caller: Caller) -> bytes:
        # As ZooKeeper's providers name users: a digest id shows only its user part.
        return encode(
            WhoAmIResponse(
                [ClientInfo(s, i.split(":", 1)[0] if s == "digest" else i) for s, i in caller.auth]
            )
        )

    def sync(self, req: Any, caller: Caller) -> bytes:
        out = bytearray()
        write_buffer(out, (req.path or "").encode("utf-8"))
        return bytes(out)

    def check_watches(self, req: Any, caller: Caller) -> bytes:
        path = req.path or ""
        if req.type not in _WATCHER_TYPES:
            raise MarshallingError(path=path)
        # ZooKeeper's containsWatcher per half (see WatchManager.remove_watches): it may fail with
        # MarshallingError on a path without '/', and finds any watch on the path itself in that half.
        if not self.watches.remove_watches(path, req.type, caller, dry_run=True):
            raise NoWatcherError(path=path)
        return b""

    def remove_watches(self, req: Any, caller: Caller) -> bytes:
        path = req.path or ""
        if req.type not in _WATCHER_TYPES:
            raise MarshallingError(path=path)
        # A persistent watch is a data half and a child half: removing Data or Children removes only that one.
        if not self.watches.remove_watches(path, req.type, caller):
            raise NoWatcherError(path=path)
        return b""

    def add_watch(self, req: Any, caller: Caller) -> bytes:
        path = req.path or ""
        if req.mode not in (ADD_WATCH_PERSISTENT, ADD_WATCH_PERSISTENT_RECURSIVE):
            raise MarshallingError(path=path)  # ZooKeeper's WatcherMode.fromZooDef throws on other modes
        self.watches.add_persistent_watch(path, caller, recursive=req.mode == ADD_WATCH_PERSISTENT_RECURSIVE)
        return _ADD_WATCH_OK  # ZooKeeper answers addWatch with an ErrorResponse(0), not an empty body

    def set_watches(self, req: Any, caller: Caller) -> bytes:
        """Re-arm a reconnecting client's watches, firing at once for what changed since it last saw."""
        for _ in self.set_watches_steps(req, caller):
            pass
        return b""

    def set_watches_steps(self, req: Any, caller: Caller, chunk: int = SET_WATCHES_CHUNK) -> Iterator[None]:
        """set_watches in steps of `chunk` paths: a connection runs it with zkpy.server.steps.run_in_steps,
        so a 1 MB setWatches (tens of thousands of paths) never holds the loop for more than a few ms.

        Events fire at once for what changed since relativeZxid, without an ACL check: ZooKeeper's
        DataTree.setWatches calls Watcher.process(event) there, not the ACL-checking variant."""
        nodes = self.tree.nodes
        since = req.relativeZxid
        watches = self.watches
        done = 0
        for path in req.dataWatches or ():
            node = nodes.get(path)
            if node is None:
                caller.notify(NODE_DELETED, path)
            elif node.mzxid > since:
                caller.notify(NODE_DATA_CHANGED, path)
            else:
                watches.add_data_watch(path, caller)
            done += 1
            if done % chunk == 0:
                yield
        for path in req.existWatches or ():
            if path in nodes:
                caller.notify(NODE_CREATED, path)
            else:
                watches.add_data_watch(path, caller)
            done += 1
            if done % chunk == 0:
                yield
        for path in req.childWatches or ():
            node = nodes.get(path)
            if node is None:
                caller.notify(NODE_DELETED, path)
            elif node.pzxid > since:
                caller.notify(NODE_CHILDREN_CHANGED, path)
            else:
                watches.add_child_watch(path, caller)
            done += 1
            if done % chunk == 0:
                yield
        for recursive, name in ((False, "persistentWatches"), (True, "persistentRecursiveWatches")):
            for path in getattr(req, name, None) or ():
                watches.add_persistent_watch(path, caller, recursive=recursive)
                done += 1
                if done % chunk == 0:
                    yield
