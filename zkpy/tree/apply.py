"""Applying transactions to the tree: ZooKeeper's checks, then the change, then the events.

`Applier.apply(txn)` is deterministic in the tree's state and the txn, so every replica
that applies the same log reaches the same tree and the same per-request outcome. A
failed check answers with its error code and changes nothing; a multi's ops apply in
turn and are undone if one fails, so it is all-or-nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from zkpy import paths
from zkpy.errors import (
    BadArgumentsError,
    BadVersionError,
    Code,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    SessionExpiredError,
    UnimplementedError,
    ZooKeeperError,
)
from zkpy.jute.codec import JuteError
from zkpy.jute.ops import (
    MULTI_WRITE_OPS,
    REQUEST_RECORDS,
    Create2Response,
    CreateResponse,
    EmptyRecord,
    ErrorResponse,
    MultiResponse,
    OpCode,
    StatResponse,
    decode_multi,
)
from zkpy.jute.records import ACL, PERM_ADMIN, PERM_CREATE, PERM_DELETE, PERM_READ, PERM_WRITE, Id
from zkpy.tree import acl as acls
from zkpy.tree.datatree import (
    CONTAINER_OWNER,
    MAX_TTL,
    OPEN_ACL,
    SPECIAL_PATHS,
    AclTuple,
    DataTree,
    is_normal_ephemeral,
    is_ttl_owner,
    ttl_of,
    ttl_owner,
)
from zkpy.tree.txn import Txn, parse_session_body
from zkpy.tree.watches import NODE_CHILDREN_CHANGED, NODE_CREATED, NODE_DATA_CHANGED, NODE_DELETED

log = logging.getLogger(__name__)

# (event type, path, the ACL its watchers must be able to READ: the node's, the parent's for
# NodeChildrenChanged, the deleted node's for NodeDeleted), as ZooKeeper's triggerWatch gets it.
Event = tuple[int, str, AclTuple]
Undo = Callable[[], None]

_CREATE_OPS = (OpCode.CREATE, OpCode.CREATE2, OpCode.CREATE_CONTAINER, OpCode.CREATE_TTL)


@dataclass(slots=True)
class Result:
    """The outcome of one transaction: what to answer and which watches it fires."""

    zxid: int
    err: int = 0
    response: Any = None
    events: list[Event] = field(default_factory=list)


def acl_to_tuple(acl: list[ACL]) -> AclTuple:
    return tuple((a.perms, a.id.scheme or "", a.id.id or "") for a in acl)


def checked_acl(acl: list[ACL] | None, auth: Iterable[tuple[str, str]]) -> AclTuple:
    """ZooKeeper's fixupACL, as the tree stores ACLs; the usual open ACL skips the general path."""
    if acl is not None and len(acl) == 1:
        only = acl[0]
        if only.perms == 31 and only.id.scheme == "world" and only.id.id == "anyone":
            return OPEN_ACL
    return acl_to_tuple(acls.fix_acl(acl, auth))


def tuple_to_acl(acl: AclTuple) -> list[ACL]:
    return [ACL(perms, Id(scheme, ident)) for perms, scheme, ident in acl]


def allowed(acl: AclTuple, perm: int, auth: Iterable[tuple[str, str]]) -> bool:
    """ZooKeeper's checkACL over the tree's ACL tuples, without building records: linear in the
    ACL, a set lookup per digest entry (a 4,000-entry ACL cost 47 ms per denied read as records
    checked against a list). The common world:anyone ACL stays the first, fastest case."""
    for perms, scheme, ident in acl:
        if scheme == "world" and ident == "anyone" and perms & perm:
            return True
    return acls.check_entries(acl, perm, auth)


def check_version(expected: int, actual: int, path: str) -> None:
    if expected != -1 and expected != actual:
        raise BadVersionError(path=path)


_NODE_PERMS: dict[int, int] = {OpCode.SET_DATA: PERM_WRITE, OpCode.CHECK: PERM_READ}


def checks_before_acl(op: int, req: Any, auth: Iterable[tuple[str, str]]) -> tuple[str, int, AclTuple | None]:
    """What a write checks before it looks at any node, in ZooKeeper's order, raising what apply answers:
    (the node whose ACL decides -- the parent for create and delete --, the permission it needs, the
    checked ACL a create or setACL sets). It depends only on the request and the session's ids, so the
    server can make the same checks before a write is ordered (zkpy.server.prep)."""
    if op in _CREATE_OPS:
        flags = req.flags
        if flags not in (0, 1, 2, 3, 4, 5, 6):
            raise BadArgumentsError(path=req.path)
        is_ttl = flags in (5, 6)
        # EphemeralType.validateTTL: a TTL mode needs a TTL in range, any other mode no TTL.
        if (is_ttl and not 0 < getattr(req, "ttl", -1) <= MAX_TTL) or (
            not is_ttl and op == OpCode.CREATE_TTL
        ):
            raise BadArgumentsError(path=req.path)
        path = req.path
        if path is None:  # ZooKeeper fails on it (NullPointerException) as a marshalling error
            raise JuteError("create without a path")
        slash = path.rfind("/")
        if slash < 0 or "\0" in path:
            raise BadArgumentsError(path=path)
        # ZooKeeper files the root under "" too.
        return path[:slash] or "/", PERM_CREATE, checked_acl(req.acl, auth)
    if op in (OpCode.DELETE, OpCode.DELETE_CONTAINER):
        path = req.path
        if path is None:
            raise JuteError("delete without a path")
        slash = path.rfind("/")
        if slash < 0 or "\0" in path or path in SPECIAL_PATHS:
            raise BadArgumentsError(path=path)
        return path[:slash] or "/", PERM_DELETE, None
    path = paths.validate(req.path)
    if op == OpCode.SET_ACL:
        return path, PERM_ADMIN, checked_acl(req.acl, auth)
    perm = _NODE_PERMS.get(op)
    if perm is None:
        raise UnimplementedError()
    return path, perm, None


class Applier:
    def __init__(self, tree: DataTree) -> None:
        self.tree = tree

    def apply(self, txn: Txn) -> Result:
        tree = self.tree
        tree.last_zxid = txn.zxid
        result = Result(txn.zxid)
        op = txn.op
        try:
            if op == OpCode.MULTI:
                self._multi(txn, result)
            elif op == OpCode.CREATE_SESSION:
                tree.sessions[txn.session_id] = parse_session_body(txn.body)
            elif op == OpCode.CLOSE_SESSION:
                self._close_session(txn, result)
            else:
                record_cls = REQUEST_RECORDS.get(op)
                if record_cls is None or op not in _WRITE_HANDLERS:
                    raise UnimplementedError()
                request, _ = record_cls.read(txn.body, 0)
                result.response, _undo = _WRITE_HANDLERS[op](self, op, request, txn, result)
        except ZooKeeperError as e:
            result.err = int(e.code)
            result.response = None
            result.events.clear()
        except JuteError:
            result.err = int(Code.MARSHALLING_ERROR)
            result.response = None
            result.events.clear()
        except Exception:
            # A bug, not a client error. Answer SystemError and keep serving: the same txn
            # replays to the same outcome, so replicas and restarts stay in step.
            log.exception("applying transaction 0x%x (op %d) failed", txn.zxid, op)
            result.err = int(Code.SYSTEM_ERROR)
            result.response = None
            result.events.clear()
        return result

    # -- sessions ---------------------------------------------------------------
    def _close_session(self, txn: Txn, result: Result) -> None:
        tree = self.tree
        for path in sorted(tree.ephemerals.get(txn.session_id, ()), reverse=True):
            if path in tree.nodes:
                node = tree.delete_node(path, txn.zxid)
                self._deleted(path, node.acl, result)
        tree.sessions.pop(txn.session_id, None)

    def _deleted(self, path: str, acl: AclTuple, result: Result) -> None:
        """The events of a deletion. An emptied container parent stays: only the server's
        periodic sweep deletes it (ZooKeeper's ContainerManager), because recipes re-use a
        container right after its last child goes."""
        parent_path = paths.parent(path)
        parent = self.tree.nodes.get(parent_path)
        result.events.append((NODE_DELETED, path, acl))
        result.events.append(
            (NODE_CHILDREN_CHANGED, parent_path, parent.acl if parent is not None else OPEN_ACL)
        )

    # -- writes -----------------------------------------------------------------
    def _create(self, op: int, req: Any, txn: Txn, result: Result) -> tuple[Any, Undo]:
        """ZooKeeper's PrepRequestProcessor.pRequest2TxnCreate, its checks in its order: the flags, the TTL,
        only a '/' and no NUL for the path, the ACL, the parent (NoNode), the parent's CREATE permission, and
        only then the whole path (with the sequence number appended, so "/" with sequential flags is
        "/0000000007"), NodeExists and an ephemeral parent."""
        tree = self.tree
        parent_path, _, acl = checks_before_acl(op, req, txn.auth)
        assert acl is not None
        flags = req.flags
        ttl = getattr(req, "ttl", -1)
        is_ttl = flags in (5, 6)
        path = req.path
        parent = tree.nodes.get(parent_path)
        if parent is None:
            raise NoNodeError(path=parent_path)
        if not allowed(parent.acl, PERM_CREATE, txn.auth):
            raise NoAuthError(path=path)
        parent_cversion = parent.cversion
        if flags in (2, 3, 6):
            path = f"{path}{parent_cversion:010d}"
        paths.validate(path)
        if path in tree.nodes:
            raise NodeExistsError(path=path)
        if is_normal_ephemeral(parent.ephemeral_owner):
            raise NoChildrenForEphemeralsError(path=path)
        # createContainer makes a container whatever its (non-TTL) flags say: ZooKeeper's CreateContainerTxn
        # carries no mode. Inside a multi the op comes from the flags instead (see _multi).
        if op == OpCode.CREATE_CONTAINER or flags == 4:
            owner = CONTAINER_OWNER
        elif is_ttl:
            owner = ttl_owner(ttl)
        elif flags in (1, 3):
            if txn.session_id == 0:
                raise BadArgumentsError(path=path)
            if txn.session_id not in tree.sessions:
                # The session closed (or expired) before this create was ordered: an ephemeral
                # owned by no session would never go. The servers refuse such a request before
                # ordering it (Apache's checkSession); this keeps replay and replicas honest too.
                raise SessionExpiredError(path=path)
            owner = txn.session_id
        else:
            owner = 0
        old_pzxid = parent.pzxid
        old_capacity = parent.child_capacity
        node = tree.create_node(path, req.data, acl, owner, parent_cversion + 1, txn.zxid, txn.time)
        result.events.append((NODE_CREATED, path, node.acl))
        result.events.append((NODE_CHILDREN_CHANGED, parent_path, parent.acl))

        def undo() -> None:
            tree.delete_node(path, txn.zxid)
            parent.cversion = parent_cversion
            parent.pzxid = old_pzxid
            parent.child_capacity = old_capacity  # ZooKeeper never applies a failed multi's ops

        if op == OpCode.CREATE:
            return CreateResponse(path), undo
        return Create2Response(path, node.stat()), undo

    def _delete(self, op: int, req: Any, txn: Txn, result: Result) -> tuple[Any, Undo]:
        """PrepRequestProcessor's delete: only a '/', no NUL and no special node for the path, then the parent
        (NoNode), its DELETE permission, the node (NoNode), the version and the children. The path itself is
        never validated: a malformed one names no node."""
        tree = self.tree
        parent_path, _, _ = checks_before_acl(op, req, txn.auth)
        path = req.path
        parent = tree.nodes.get(parent_path)
        if parent is None:
            raise NoNodeError(path=path)
        if op != OpCode.DELETE_CONTAINER and not allowed(parent.acl, PERM_DELETE, txn.auth):
            raise NoAuthError(path=path)
        node = tree.nodes.get(path)
        if node is None:
            raise NoNodeError(path=path)
        if op == OpCode.DELETE_CONTAINER and not self._collectable(
            node.ephemeral_owner, node.mtime, txn.time
        ):
            raise BadArgumentsError(path=path)
        check_version(req.version, node.version, path)
        if node.children:
            raise NotEmptyError(path=path)
        old_pzxid = parent.pzxid
        tree.delete_node(path, txn.zxid)
        self._deleted(path, node.acl, result)

        def undo() -> None:
            tree.relink(path, node, old_pzxid)

        return EmptyRecord(), undo

    @staticmethod
    def _collectable(owner: int, mtime: int, now: int) -> bool:
        """deleteContainer's rule: any container, or a TTL node whose TTL has run out since its last change."""
        if owner == CONTAINER_OWNER:
            return True
        return is_ttl_owner(owner) and now - mtime > ttl_of(owner)

    def _set_data(self, op: int, req: Any, txn: Txn, result: Result) -> tuple[Any, Undo]:
        tree = self.tree
        path, _, _ = checks_before_acl(op, req, txn.auth)
        node = tree.nodes.get(path)
        if node is None:
            raise NoNodeError(path=path)
        if not allowed(node.acl, PERM_WRITE, txn.auth):
            raise NoAuthError(path=path)
        check_version(req.version, node.version, path)
        old = (node.data, node.mzxid, node.mtime, node.version)
        tree.set_data(node, path, req.data, txn.zxid, txn.time)
        result.events.append((NODE_DATA_CHANGED, path, node.acl))

        def undo() -> None:
            tree.data_size += len(old[0] or b"") - len(node.data or b"")
            node.data, node.mzxid, node.mtime, node.version = old

        return StatResponse(node.stat()), undo

    def _set_acl(self, op: int, req: Any, txn: Txn, result: Result) -> tuple[Any, Undo]:
        tree = self.tree
        path, _, acl = checks_before_acl(op, req, txn.auth)
        assert acl is not None
        node = tree.nodes.get(path)
        if node is None:
            raise NoNodeError(path=path)
        if not allowed(node.acl, PERM_ADMIN, txn.auth):
            raise NoAuthError(path=path)
        check_version(req.version, node.aversion, path)
        old = (node.acl, node.aversion)
        node.acl = tree.intern_acl(acl)
        node.aversion += 1

        def undo() -> None:
            node.acl, node.aversion = old

        return StatResponse(node.stat()), undo

    def _check(self, op: int, req: Any, txn: Txn, result: Result) -> tuple[Any, Undo]:
        path, _, _ = checks_before_acl(op, req, txn.auth)
        node = self.tree.nodes.get(path)
        if node is None:
            raise NoNodeError(path=path)
        if not allowed(node.acl, PERM_READ, txn.auth):
            raise NoAuthError(path=path)
        check_version(req.version, node.version, path)
        return EmptyRecord(), _no_undo

    def _multi(self, txn: Txn, result: Result) -> None:
        ops = decode_multi(txn.body)  # decoded once where it was ordered (shared: never changed)
        undos: list[Undo] = []
        responses: list[tuple[int, int, Any]] = []
        failed_at = -1
        failed_code = 0
        for i, (op, req) in enumerate(ops):
            if op in _CREATE_OPS:
                op = multi_create_op(op, req.flags)
                if op < 0:  # ZooKeeper fails on it (ClassCastException): all of it is a MarshallingError
                    for undo in reversed(undos):
                        undo()
                    result.events.clear()
                    raise JuteError("a TTL create without a TTL in a multi")
            try:
                if op not in MULTI_WRITE_OPS:
                    raise UnimplementedError()
                response, undo = _WRITE_HANDLERS[op](self, op, req, txn, result)
            except ZooKeeperError as e:
                failed_at, failed_code = i, int(e.code)
                break
            except Exception:
                # A malformed op (a create without a path: MarshallingError) or a bug fails the whole
                # request: nothing of the multi may stay applied, nor fire its watches.
                for undo in reversed(undos):
                    undo()
                result.events.clear()
                raise
            undos.append(undo)
            responses.append(self._multi_result(op, req, response))
        if failed_at < 0:
            result.response = MultiResponse(responses)
            return
        for undo in reversed(undos):
            undo()
        result.events.clear()
        codes = (
            [0] * failed_at + [failed_code] + [int(Code.RUNTIME_INCONSISTENCY)] * (len(ops) - failed_at - 1)
        )
        result.response = MultiResponse([(OpCode.ERROR, c, ErrorResponse(c)) for c in codes])

    def _multi_result(self, op: int, req: Any, response: Any) -> tuple[int, int, Any]:
        """One successful op's multi result, shaped as ZooKeeper's: it rebuilds every create inside a
        multi from its flags, so a container or TTL create answers as create2 (path and the stat it was
        created with) and any other create, create2 included, as create (path only)."""
        if op not in _CREATE_OPS:
            return op, 0, response
        if req.flags in (4, 5, 6):
            stat = response.stat if op != OpCode.CREATE else self.tree.nodes[response.path].stat()
            return OpCode.CREATE2, 0, Create2Response(response.path, stat)
        return OpCode.CREATE, 0, CreateResponse(response.path)


def _no_undo() -> None:
    return None


def multi_create_op(op: int, flags: int) -> int:
    """The op ZooKeeper runs for a create inside a multi: MultiOperationRecord rebuilds every create from its
    flags (Op.create), so TTL flags make a createTTL (which a create's record cannot carry: -1), container
    flags a createContainer, and any other flags a plain create, whatever the op said."""
    if flags in (5, 6):
        return op if op == OpCode.CREATE_TTL else -1
    return OpCode.CREATE_CONTAINER if flags == 4 else OpCode.CREATE


_WRITE_HANDLERS: dict[int, Callable[[Applier, int, Any, Txn, Result], tuple[Any, Undo]]] = {
    OpCode.CREATE: Applier._create,
    OpCode.CREATE2: Applier._create,
    OpCode.CREATE_CONTAINER: Applier._create,
    OpCode.CREATE_TTL: Applier._create,
    OpCode.DELETE: Applier._delete,
    OpCode.DELETE_CONTAINER: Applier._delete,
    OpCode.SET_DATA: Applier._set_data,
    OpCode.SET_ACL: Applier._set_acl,
    OpCode.CHECK: Applier._check,
}
