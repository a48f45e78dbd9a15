"""What a write is checked for before it is ordered, and which auth ids its transaction carries.

zkpy checks every write where it is applied (zkpy.tree.apply), against the state all replicas
share, so replay never depends on anything else. Some things still have to be decided before the
transaction exists, where the write is ordered (a standalone server, an ensemble's leader), as
Apache's PrepRequestProcessor decides them:

- `refuse_early`: a write certain to be refused (NoAuth, a missing node, a malformed request) is
  answered at once and never logged, so a client that may write nothing cannot fill the disk with
  1 MB refused writes. The checks are the ones apply makes, in apply's order. The tree can change
  between here and apply; apply checks again, so the worst case is a logged refusal, rare and harmless.
- `compact_failing_multi`: a multi certain to fail cannot be answered early (its answer is a whole
  multi response), so it is logged as a small multi that apply answers the same.
- `deciding_auth`: the auth ids the transaction carries are the ones that can decide it: those
  named by the ACLs of the nodes the write checks (digest ids present there, the session's ip ids,
  super), and the authenticated ids when an `auth` ACL entry is expanded. A session with 8,000
  ids no longer writes all of them into every transaction. When a checked node's ACL or existence
  may still change before this write is applied (an ACL-changing write to it is in flight, see
  InFlight), or a multi creates it first, the ids the multi's own ACLs name are added, and for a
  node in flight the whole set is carried: the outcome must not depend on what prep saw.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from zkpy.errors import Code, InvalidACLError, ZooKeeperError
from zkpy.jute.codec import JuteError, encode, read_buffer
from zkpy.jute.ops import REQUEST_RECORDS, CheckVersionRequest, MultiRequest, OpCode, decode_multi
from zkpy.jute.records import (
    ACL,
    OPEN_ACL_UNSAFE,
    PERM_ADMIN,
    PERM_CREATE,
    PERM_DELETE,
    PERM_READ,
    PERM_WRITE,
)
from zkpy.tree import acl as acls
from zkpy.tree.apply import allowed, checks_before_acl, multi_create_op
from zkpy.tree.datatree import DataTree

AuthTuple = tuple[tuple[str, str], ...]

_CREATE_OPS = frozenset({OpCode.CREATE, OpCode.CREATE2, OpCode.CREATE_CONTAINER, OpCode.CREATE_TTL})
_SEQUENTIAL_FLAGS = frozenset({2, 3, 6})
_PREP_OPS = _CREATE_OPS | {OpCode.DELETE, OpCode.SET_DATA, OpCode.SET_ACL, OpCode.CHECK}
# The encoded scheme "auth" (a jute ustring): a request without these bytes has no `auth` ACL entry.
_AUTH_SCHEME_BYTES = b"\x00\x00\x00\x04auth"


_NODE_PERMS: dict[int, int] = {
    OpCode.SET_DATA: PERM_WRITE,
    OpCode.SET_ACL: PERM_ADMIN,
    OpCode.CHECK: PERM_READ,
}


def _parent(path: str) -> str:
    return path[: path.rfind("/")] or "/"


def target(op: int, req: Any) -> tuple[str, int] | None:
    """(the node whose ACL the write checks, the permission) or None (no ACL check, or a
    malformed path that apply refuses before any ACL check)."""
    return target_of_path(op, getattr(req, "path", None))


def target_of_path(op: int, path: object) -> tuple[str, int] | None:
    """target() from the op and its path alone, so a single write needs no decoding for it."""
    if not isinstance(path, str) or "/" not in path:
        return None
    if op in _CREATE_OPS:
        return _parent(path), PERM_CREATE
    if op == OpCode.DELETE:
        return _parent(path), PERM_DELETE
    perm = _NODE_PERMS.get(op)
    return None if perm is None else (path, perm)


def changed_path(op: int, req: Any) -> str | None:
    """The path whose existence or ACL this write changes (a sequential create's is not known)."""
    path = getattr(req, "path", None)
    if not isinstance(path, str):
        return None
    if op in _CREATE_OPS:
        return None if getattr(req, "flags", 0) in _SEQUENTIAL_FLAGS else path
    if op in (OpCode.DELETE, OpCode.DELETE_CONTAINER, OpCode.SET_ACL):
        return path
    return None


def multi_ops(body: bytes) -> list[tuple[int, Any]] | None:
    """A multi's (op, request) pairs, in turn (decoded once for prep and apply: decode_multi; shared, never
    changed); None when it does not parse (apply answers that)."""
    try:
        return decode_multi(body)
    except (JuteError, ZooKeeperError, ValueError, IndexError, UnicodeDecodeError):
        return None


def first_path(op: int, body: bytes) -> str | None:
    """The path a single write names (its first field), read without decoding the rest."""
    if op == OpCode.MULTI:
        return None
    try:
        raw, _ = read_buffer(body, 0)
        return None if raw is None else bytes(raw).decode("utf-8")
    except (JuteError, ValueError, IndexError, UnicodeDecodeError):
        return None


def refuse_early(
    tree: DataTree, op: int, body: bytes, auth: acls.AuthIds, in_flight: Counter[str] | None = None
) -> int:
    """The error a single write is certain to get, answered before it is ordered (never logged), else 0.

    Certain are: NoAuth; and the answers apply gives before it looks at the ACL: a request that does not
    parse (MarshallingError), a malformed path or flags, an invalid ACL (BadArguments, InvalidACL: they
    depend on the request alone), and a missing node (NoNode) -- the same checks, in the same order
    (zkpy.tree.apply.checks_before_acl). So a client that may write nothing cannot grow the log at all:
    what is still logged and refused at apply (BadVersion, NodeExists, NotEmpty) needs a permission.

    Only single writes: a multi's answer depends on every op before the refused one, and its refusal is
    a whole multi response, so apply answers it (its transaction carries only the deciding ids). The
    caller makes sure this session has no write in flight (its own earlier setACL or create could change
    the answer); `in_flight` (InFlight.paths) names the nodes an ordered, unapplied write may still create,
    delete or re-ACL, which are left to apply."""
    if op not in _PREP_OPS:
        return 0
    # Cheap first, without decoding the request (a 1 MB setData, a 9,000-entry ACL): most writes are to an
    # existing node the session may write, and then there is nothing to refuse here.
    found = target_of_path(op, first_path(op, body))
    if found is not None:
        checked, perm = found
        if in_flight is not None and checked in in_flight:
            return 0  # an ordered write may still change this node: apply decides
        node = tree.nodes.get(checked)
        if node is not None and allowed(node.acl, perm, auth):
            return 0
    try:
        request, _ = REQUEST_RECORDS[op].read(body, 0)
        checked, perm, _acl = checks_before_acl(op, request, auth)
    except ZooKeeperError as e:
        return int(e.code)
    except JuteError:
        return int(Code.MARSHALLING_ERROR)
    except Exception:  # a bug, not a client error: apply answers it as it always has
        return 0
    if in_flight is not None and checked in in_flight:
        return 0
    node = tree.nodes.get(checked)
    if node is None:
        return int(Code.NO_NODE)
    if not allowed(node.acl, perm, auth):
        return int(Code.NO_AUTH)
    return 0


_PLACEHOLDER = (OpCode.CHECK, CheckVersionRequest("/", -1))  # stands for an op a failed multi never reaches


def compact_failing_multi(
    tree: DataTree, body: bytes, auth: acls.AuthIds, in_flight: Counter[str] | None = None
) -> bytes | None:
    """A small multi that apply will answer exactly as it would `body`, when `body` is certain to fail;
    else None. A multi is still ordered and logged when it fails (its answer is a whole multi response,
    which the leader's refusal to a learner cannot carry), but then only as a small error record: a
    client that may write nothing cannot grow the log with 1 MB multis.

    Certain, on the tree as it stands (the caller makes sure this session has nothing in flight): leading
    check ops at version -1 on existing nodes the session may read pass and change nothing; the first
    other op fails if it is refused before any ACL, if its node is missing, or if its ACL denies it, with
    no ordered write in flight to that node (`in_flight`, InFlight.paths). The small multi keeps those
    checks, that op without its data (and with only the ACL entry that makes an ACL invalid), and a
    placeholder for each op after it: a failed multi answers [0 before, the code, RuntimeInconsistency
    after], whatever those ops were."""
    ops = multi_ops(body)
    if ops is None:
        return None
    for i, (op, req) in enumerate(ops):
        kind = multi_create_op(op, req.flags) if op in _CREATE_OPS else op
        if kind < 0:
            return None  # apply fails the whole request (MarshallingError): leave it to apply
        try:
            checked, perm, _acl = checks_before_acl(kind, req, auth)
        except InvalidACLError:
            return _compacted(ops, i, _with_acl(req, _offending_entry(req.acl, auth)))
        except ZooKeeperError:
            return _compacted(ops, i, _with_acl(req, OPEN_ACL_UNSAFE) if hasattr(req, "acl") else req)
        except Exception:
            return None  # malformed or a bug: apply answers it
        if in_flight is not None and checked in in_flight:
            return None
        node = tree.nodes.get(checked)
        if node is not None and allowed(node.acl, perm, auth):
            if kind == OpCode.CHECK and req.version == -1:
                continue  # passes for certain and changes nothing
            return None  # may succeed: apply decides
        return _compacted(ops, i, _with_acl(req, OPEN_ACL_UNSAFE) if hasattr(req, "acl") else req)
    return None


def _with_acl(req: Any, acl: list[ACL]) -> Any:
    return dataclasses.replace(req, acl=acl)


def _offending_entry(acl: list[ACL] | None, auth: acls.AuthIds) -> list[ACL]:
    """The first entry of an invalid ACL that is invalid on its own (fix_acl fails on the same one)."""
    for entry in acl or []:
        try:
            acls.fix_acl([entry], auth)
        except InvalidACLError:
            return [entry]
    return list(acl or [])


def _compacted(ops: list[tuple[int, Any]], failing: int, failing_req: Any) -> bytes:
    op, _ = ops[failing]
    if hasattr(failing_req, "data"):
        failing_req = dataclasses.replace(failing_req, data=b"")
    rest = [_PLACEHOLDER] * (len(ops) - failing - 1)
    return encode(MultiRequest([*ops[:failing], (op, failing_req), *rest]))


class InFlight:
    """Paths whose existence or ACL an ordered but not yet applied write changes, so that prep
    knows when what it sees of a node may not be what apply will see."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        self.sessions: Counter[int] = Counter()

    def add(self, session_id: int, op: int, body: bytes) -> tuple[str, ...]:
        """Note a write entering the pipeline; returns what `done` needs to forget it."""
        self.sessions[session_id] += 1
        changed: tuple[str, ...] = ()
        if op in _CREATE_OPS or op in (OpCode.DELETE, OpCode.DELETE_CONTAINER, OpCode.SET_ACL):
            path = first_path(op, body)
            if path is not None:
                changed = (path,)  # a sequential create's final name differs; its parent is not changed
        elif op == OpCode.MULTI:
            changed = tuple(p for sub_op, req in multi_ops(body) or () if (p := changed_path(sub_op, req)))
        for path in changed:
            self.paths[path] += 1
        return changed

    def done(self, session_id: int, changed: tuple[str, ...]) -> None:
        _decrement(self.sessions, session_id)
        for path in changed:
            _decrement(self.paths, path)


def _decrement(counter: Counter[Any], key: Any) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]


class _PathOnly:
    """A single write's request as far as deciding_auth needs it: its path."""

    __slots__ = ("path",)

    def __init__(self, path: str | None) -> None:
        self.path = path


def _ids_named(acl: Any, auth: acls.AuthIds, out: dict[tuple[str, str], None]) -> None:
    """The session's ids an ACL (tree tuples or (perms, scheme, id) triples) names."""
    for _perms, scheme, ident in acl:
        if scheme == "digest" and ("digest", ident) in auth:
            out[("digest", ident)] = None


def deciding_auth(
    tree: DataTree, op: int, body: bytes, auth: acls.AuthIds, in_flight: InFlight | None = None
) -> AuthTuple:
    """The auth ids a write's transaction carries (see the module docstring).

    Deterministic replay needs nothing more: apply decides with these ids only, so a replica or a
    restart decides the same. Order: the session's ip ids and super first, then digest ids in the
    session's Java hash-set order when an `auth` entry is expanded (the ACL it yields lists them in
    that order), else in the order the ACLs name them."""
    if op == OpCode.MULTI:
        requests = multi_ops(body)
        if requests is None:  # apply answers MarshallingError, whatever the ids
            return _base(auth)
    else:  # one write: its path is all it takes (no decoding of a 1 MB body or a 9,000-entry ACL)
        requests = [(op, _PathOnly(first_path(op, body)))]
    chosen: dict[tuple[str, str], None] = {}
    own_acls: dict[str, list[tuple[int, str, str]]] = {}  # ACLs this multi sets, by path
    nodes = tree.nodes
    for sub_op, req in requests:
        found = target(sub_op, req)
        if found is not None:
            checked = found[0]
            if in_flight is not None and checked in in_flight.paths:
                return tuple(auth.java_order())  # its ACL may change before apply: carry them all
            if checked in own_acls:
                _ids_named(own_acls[checked], auth, chosen)
            node = nodes.get(checked)
            if node is not None:
                _ids_named(node.acl, auth, chosen)
        changed = changed_path(sub_op, req)
        request_acl = getattr(req, "acl", None)
        if changed is not None and request_acl is not None:
            own_acls[changed] = [
                (a.perms, a.id.scheme or "", a.id.id or "") for a in request_acl if a and a.id
            ]
    carries_acl = op in _CREATE_OPS or op in (OpCode.SET_ACL, OpCode.MULTI)
    if (
        carries_acl and _AUTH_SCHEME_BYTES in body
    ):  # an `auth` ACL entry expands to every authenticated id, in order
        digests = [pair for pair in auth.java_order() if pair[0] == "digest"]
    else:
        digests = list(chosen)
    return _base(auth) + tuple(digests)


def _base(auth: acls.AuthIds) -> AuthTuple:
    """The ids every transaction carries: the ip ids (matched by range, few) and super."""
    base = tuple(("ip", ip) for ip in auth.ips)
    return (*base, acls.SUPER_ID) if auth.has_super else base


__all__ = ["InFlight", "compact_failing_multi", "deciding_auth", "refuse_early"]
