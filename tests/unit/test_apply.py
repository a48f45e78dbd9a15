"""The tree's transaction semantics, without sockets: what ZooKeeper 3.8 answers, byte for byte."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.errors import Code
from zkpy.jute.codec import encode
from zkpy.jute.ops import (
    CheckVersionRequest,
    CreateRequest,
    CreateTTLRequest,
    DeleteRequest,
    MultiRequest,
    OpCode,
    SetACLRequest,
    SetDataRequest,
)
from zkpy.jute.records import ACL, OPEN_ACL_UNSAFE, PERM_READ, Id
from zkpy.tree.acl import digest
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import CONTAINER_OWNER, DataTree, ttl_owner
from zkpy.tree.txn import Txn, session_body

SESSION = 0x1234


class Harness:
    def __init__(self) -> None:
        self.tree = DataTree()
        self.applier = Applier(self.tree)
        self.tree.sessions[SESSION] = (30000, b"\x00" * 16)  # as its createSession would
        self.zxid = 0
        self.time = 1_000_000

    def run(self, op: int, record: object, session: int = SESSION, auth=(("ip", "127.0.0.1"),), time=None):
        self.zxid += 1
        body = encode(record) if record is not None else b""
        return self.applier.apply(Txn(self.zxid, time or self.time, session, 1, op, body, tuple(auth)))

    def create(self, path: str, data: bytes = b"", flags: int = 0, acl=None, **kw):
        return self.run(OpCode.CREATE2, CreateRequest(path, data, acl or OPEN_ACL_UNSAFE, flags), **kw)


def test_create_sets_every_stat_field_and_parent_bookkeeping():
    h = Harness()
    r = h.create("/a", b"hello")
    assert r.err == 0
    stat = r.response.stat
    assert (stat.czxid, stat.mzxid, stat.pzxid) == (1, 1, 1)
    assert (stat.version, stat.cversion, stat.aversion, stat.dataLength, stat.numChildren) == (0, 0, 0, 5, 0)
    assert stat.ctime == stat.mtime == h.time
    root = h.tree.nodes["/"]
    assert root.pzxid == 1 and root.cversion == 1


def test_errors_match_zookeeper():
    h = Harness()
    assert h.create("/a/b").err == Code.NO_NODE
    assert h.create("/a").err == 0
    assert h.create("/a").err == Code.NODE_EXISTS
    assert h.create("bad").err == Code.BAD_ARGUMENTS
    assert h.create("/a/").err == Code.BAD_ARGUMENTS
    # PrepRequestProcessor's order: the parent first (NoNode), the whole path only once the parent exists
    assert h.create("/a/./b").err == Code.NO_NODE
    assert h.create("/a/.").err == Code.BAD_ARGUMENTS
    assert h.create("/a//b").err == Code.NO_NODE
    assert h.create("/a/\0").err == Code.BAD_ARGUMENTS
    assert h.create("/").err == Code.NODE_EXISTS
    assert h.create("/", acl=[ACL(31, Id("nope", "x"))]).err == Code.INVALID_ACL  # the ACL comes first
    assert h.run(OpCode.DELETE, DeleteRequest("/a/", -1)).err == Code.NO_NODE  # a delete never validates
    assert h.run(OpCode.DELETE, DeleteRequest("/a//b", -1)).err == Code.NO_NODE
    assert h.run(OpCode.DELETE, DeleteRequest("a", -1)).err == Code.BAD_ARGUMENTS
    assert h.create("/a/b").err == 0
    assert h.run(OpCode.DELETE, DeleteRequest("/a", -1)).err == Code.NOT_EMPTY
    assert h.run(OpCode.DELETE, DeleteRequest("/a/b", 3)).err == Code.BAD_VERSION
    assert h.run(OpCode.SET_DATA, SetDataRequest("/nope", b"", -1)).err == Code.NO_NODE
    assert h.run(OpCode.CHECK, CheckVersionRequest("/a", 1)).err == Code.BAD_VERSION
    assert h.create("/eph", flags=1).err == 0
    assert h.create("/eph/child").err == Code.NO_CHILDREN_FOR_EPHEMERALS
    assert h.create("/x", flags=9).err == Code.BAD_ARGUMENTS


def test_sequential_nodes_at_the_root_and_below_a_trailing_slash():
    h = Harness()
    assert h.create("/", flags=2).response.path == "/0000000000"
    assert h.create("/q").err == 0
    assert h.create("/q/", flags=2).response.path == "/q/0000000000"
    assert h.create("/q/.", flags=2).response.path == "/q/.0000000001"


def test_create_container_makes_a_container_whatever_its_flags_except_in_a_multi():
    h = Harness()
    h.create("/b")
    for flags in (0, 1, 2, 3, 4):
        r = h.run(OpCode.CREATE_CONTAINER, CreateRequest(f"/b/c{flags}-", b"", OPEN_ACL_UNSAFE, flags))
        assert r.err == 0 and h.tree.nodes[r.response.path].ephemeral_owner == CONTAINER_OWNER
        assert r.response.path.endswith("-" if flags in (0, 1, 4) else f"-{flags:010d}")
    for flags in (5, 6, 7):
        r = h.run(OpCode.CREATE_CONTAINER, CreateRequest(f"/b/x{flags}", b"", OPEN_ACL_UNSAFE, flags))
        assert r.err == Code.BAD_ARGUMENTS
    # In a multi, ZooKeeper rebuilds each create from its flags: createContainer with flags 1 is ephemeral.
    r = h.run(
        OpCode.MULTI,
        MultiRequest(
            [
                (OpCode.CREATE_CONTAINER, CreateRequest("/b/m0", b"", OPEN_ACL_UNSAFE, 0)),
                (OpCode.CREATE_CONTAINER, CreateRequest("/b/m1", b"", OPEN_ACL_UNSAFE, 1)),
                (OpCode.CREATE_TTL, CreateTTLRequest("/b/t0", b"", OPEN_ACL_UNSAFE, 0, 600)),
                (OpCode.CREATE2, CreateRequest("/b/m4", b"", OPEN_ACL_UNSAFE, 4)),
            ]
        ),
    )
    assert [op for op, _err, _ in r.response.results] == [OpCode.CREATE, OpCode.CREATE, OpCode.CREATE, 15]
    owners = [h.tree.nodes[f"/b/{n}"].ephemeral_owner for n in ("m0", "m1", "t0", "m4")]
    assert owners == [0, SESSION, 0, CONTAINER_OWNER]
    # a TTL create carried by a plain create's record: ZooKeeper fails the whole multi (MarshallingError)
    r = h.run(
        OpCode.MULTI,
        MultiRequest(
            [
                (OpCode.CREATE, CreateRequest("/b/ok", b"", OPEN_ACL_UNSAFE, 0)),
                (OpCode.CREATE, CreateRequest("/b/t5", b"", OPEN_ACL_UNSAFE, 5)),
            ]
        ),
    )
    assert r.err == Code.MARSHALLING_ERROR and "/b/ok" not in h.tree.nodes and not r.events


def test_children_table_never_shrinks_and_a_failed_multi_leaves_it_alone():
    h = Harness()
    h.create("/p")
    node = h.tree.nodes["/p"]
    for i in range(7):
        h.create(f"/p/n{i}")
    assert node.child_capacity == 16  # the 7th child passed 8 * 3/4
    for i in range(7):
        h.run(OpCode.DELETE, DeleteRequest(f"/p/n{i}", -1))
    assert node.child_capacity == 16
    h.create("/q")
    q = h.tree.nodes["/q"]
    for i in range(6):
        h.create(f"/q/n{i}")
    r = h.run(
        OpCode.MULTI,
        MultiRequest(
            [
                (OpCode.CREATE, CreateRequest("/q/x", b"", OPEN_ACL_UNSAFE, 0)),
                (OpCode.CHECK, CheckVersionRequest("/q", 99)),
            ]
        ),
    )
    assert r.response.results[1][1] == Code.BAD_VERSION and q.child_capacity == 8


def test_sequential_suffix_is_parent_cversion():
    h = Harness()
    h.create("/q")
    names = [h.create("/q/n-", flags=2).response.path for _ in range(3)]
    assert names == ["/q/n-0000000000", "/q/n-0000000001", "/q/n-0000000002"]
    h.run(OpCode.DELETE, DeleteRequest(names[2], -1))
    # the suffix counts creations (never reused); the cversion clients see counts deletions too
    assert h.tree.nodes["/q"].stat().cversion == 4
    assert h.create("/q/n-", flags=2).response.path == "/q/n-0000000003"


def test_close_session_deletes_its_ephemerals_and_reports_events():
    h = Harness()
    h.applier.apply(Txn(99, 0, SESSION, 0, OpCode.CREATE_SESSION, session_body(4000, b"p" * 16)))
    h.create("/e", flags=1)
    h.create("/p")
    assert h.tree.ephemerals == {SESSION: {"/e"}}
    r = h.run(OpCode.CLOSE_SESSION, None)
    assert "/e" not in h.tree.nodes and "/p" in h.tree.nodes
    assert (2, "/e") in r.events and (4, "/") in r.events
    assert SESSION not in h.tree.sessions


def test_multi_is_all_or_nothing_with_zookeepers_result_codes():
    h = Harness()
    h.create("/m", b"v")
    before = copy.deepcopy({p: n.stat() for p, n in h.tree.nodes.items()})
    ops = [
        (OpCode.CREATE, CreateRequest("/m/a", b"", OPEN_ACL_UNSAFE, 0)),
        (OpCode.SET_DATA, SetDataRequest("/m", b"new", -1)),
        (OpCode.CHECK, CheckVersionRequest("/m", 0)),  # fails: the set above made it version 1
        (OpCode.DELETE, DeleteRequest("/m/a", -1)),
    ]
    r = h.run(OpCode.MULTI, MultiRequest(ops))
    assert r.err == 0
    assert [(t, e) for t, e, _ in r.response.results] == [(-1, 0), (-1, 0), (-1, -103), (-1, -2)]
    assert {p: n.stat() for p, n in h.tree.nodes.items()} == before
    assert h.tree.nodes["/m"].data == b"v"
    assert r.events == []


def test_multi_success_sees_its_own_earlier_ops():
    h = Harness()
    ops = [
        (OpCode.CREATE, CreateRequest("/n", b"", OPEN_ACL_UNSAFE, 0)),
        (OpCode.CREATE, CreateRequest("/n/c", b"", OPEN_ACL_UNSAFE, 0)),
        (OpCode.SET_DATA, SetDataRequest("/n", b"x", 0)),
    ]
    r = h.run(OpCode.MULTI, MultiRequest(ops))
    assert [t for t, _, _ in r.response.results] == [OpCode.CREATE, OpCode.CREATE, OpCode.SET_DATA]
    assert h.tree.nodes["/n"].version == 1


def test_acls_are_enforced_with_digest_auth():
    h = Harness()
    alice = ("digest", digest("alice:secret"))
    acl = [ACL(31, Id("digest", alice[1])), ACL(PERM_READ, Id("world", "anyone"))]
    assert h.create("/s", b"x", acl=acl).err == 0
    assert h.run(OpCode.SET_DATA, SetDataRequest("/s", b"y", -1)).err == Code.NO_AUTH
    assert h.run(OpCode.SET_DATA, SetDataRequest("/s", b"y", -1), auth=[alice]).err == 0
    assert h.create("/s/child").err == Code.NO_AUTH
    assert (
        h.run(OpCode.SET_ACL, SetACLRequest("/s", OPEN_ACL_UNSAFE, 5), auth=[alice]).err == Code.BAD_VERSION
    )
    assert h.run(OpCode.SET_ACL, SetACLRequest("/s", OPEN_ACL_UNSAFE, 0), auth=[alice]).err == 0
    assert h.tree.nodes["/s"].aversion == 1
    assert h.run(OpCode.SET_DATA, SetDataRequest("/s", b"z", -1), auth=[("super", "")]).err == 0


def test_container_and_ttl_owners_and_collection():
    h = Harness()
    r = h.run(OpCode.CREATE_CONTAINER, CreateRequest("/c", b"", OPEN_ACL_UNSAFE, 4))
    assert r.err == 0 and h.tree.nodes["/c"].ephemeral_owner == CONTAINER_OWNER
    assert r.response.stat.ephemeralOwner == 0  # the marker is internal, as in ZooKeeper
    h.create("/c/kid")
    r = h.run(OpCode.DELETE, DeleteRequest("/c/kid", -1))
    assert r.err == 0 and "/c" in h.tree.nodes  # an emptied container waits for the sweep
    r = h.run(OpCode.CREATE_TTL, CreateTTLRequest("/t", b"", OPEN_ACL_UNSAFE, 5, 500))
    assert r.err == 0 and h.tree.nodes["/t"].ephemeral_owner == ttl_owner(500)
    assert r.response.stat.ephemeralOwner == 0
    assert (
        h.run(OpCode.CREATE_TTL, CreateTTLRequest("/t2", b"", OPEN_ACL_UNSAFE, 5, 0)).err
        == Code.BAD_ARGUMENTS
    )
    assert h.create("/t3", flags=5).err == Code.BAD_ARGUMENTS  # TTL mode needs the createTTL op
    # deleteContainer on a TTL node only once its TTL has passed since its last change
    assert (
        h.run(OpCode.DELETE_CONTAINER, DeleteRequest("/t", -1), time=h.time + 100).err == Code.BAD_ARGUMENTS
    )
    assert h.run(OpCode.DELETE_CONTAINER, DeleteRequest("/t", -1), time=h.time + 501).err == 0
    assert h.run(OpCode.DELETE_CONTAINER, DeleteRequest("/c", -1)).err == 0
    assert h.tree.containers == set() and h.tree.ttls == set()


# -- a model check: any sequence of operations keeps the tree's bookkeeping consistent --------

names = st.sampled_from(["a", "b", "c"])
tree_paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
single_ops = st.one_of(
    st.tuples(st.just(OpCode.CREATE), tree_paths, st.sampled_from([0, 1, 2, 4])),
    st.tuples(st.just(OpCode.DELETE), tree_paths, st.sampled_from([-1, 0, 1])),
    st.tuples(st.just(OpCode.SET_DATA), tree_paths, st.sampled_from([-1, 0, 1])),
    st.tuples(st.just(OpCode.CHECK), tree_paths, st.sampled_from([-1, 0, 1])),
)


def _record(op, path, arg):
    if op == OpCode.CREATE:
        code = OpCode.CREATE_CONTAINER if arg == 4 else OpCode.CREATE
        return code, CreateRequest(path, b"d", OPEN_ACL_UNSAFE, arg)
    if op == OpCode.DELETE:
        return op, DeleteRequest(path, arg)
    if op == OpCode.SET_DATA:
        return op, SetDataRequest(path, b"xy", arg)
    return op, CheckVersionRequest(path, arg)


def _snapshot(tree: DataTree):
    return {p: (n.stat(), n.data, frozenset(n.children)) for p, n in tree.nodes.items()}


def _check_consistent(tree: DataTree) -> None:
    for path, node in tree.nodes.items():
        for name in node.children:
            child = (path.rstrip("/") + "/" + name) if path != "/" else "/" + name
            assert child in tree.nodes
        if path != "/":
            parent = path.rsplit("/", 1)[0] or "/"
            assert path.rsplit("/", 1)[1] in tree.nodes[parent].children
        assert node.mzxid >= node.czxid and node.pzxid >= node.czxid
    owned = {p for ps in tree.ephemerals.values() for p in ps}
    assert owned == {p for p, n in tree.nodes.items() if n.ephemeral_owner > 0}
    assert tree.containers == {p for p, n in tree.nodes.items() if n.ephemeral_owner == CONTAINER_OWNER}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(single_ops, min_size=1, max_size=4)), max_size=25))
def test_any_operation_sequence_keeps_the_tree_consistent_and_multis_atomic(steps):
    h = Harness()
    for as_multi, ops in steps:
        records = [_record(*op) for op in ops]
        if as_multi:
            before = _snapshot(h.tree)
            r = h.run(OpCode.MULTI, MultiRequest(records))
            failed = any(t == OpCode.ERROR for t, _, _ in r.response.results)
            if failed:
                assert _snapshot(h.tree) == before
        else:
            for code, rec in records:
                h.run(code, rec)
        _check_consistent(h.tree)


def test_an_ephemeral_for_a_session_that_is_gone_is_refused():
    """Sessions issue item 1: a create(ephemeral) ordered after its session's closeSession made a
    node owned by no session, which no expiry ever removed (it survived restarts). Apply refuses it
    (the servers also refuse it before ordering, as Apache's checkSession). Fails before this change."""
    h = Harness()
    assert h.run(OpCode.CLOSE_SESSION, None).err == 0
    r = h.create("/late", flags=1)
    assert r.err == Code.SESSION_EXPIRED and r.events == []
    assert "/late" not in h.tree.nodes and SESSION not in h.tree.ephemerals


def test_a_multi_with_a_null_path_changes_nothing_and_fires_nothing():
    """Sessions issue item 4: an op with a null path raised JuteError mid-multi; the ops before it
    stayed applied and their watches fired while the client was answered MarshallingError.
    Fails before this change (/first existed after the multi)."""
    h = Harness()
    ops = [
        (OpCode.CREATE, CreateRequest("/first", b"", OPEN_ACL_UNSAFE, 0)),
        (OpCode.CREATE, CreateRequest(None, b"", OPEN_ACL_UNSAFE, 0)),
    ]
    r = h.run(OpCode.MULTI, MultiRequest(ops))
    assert r.err == Code.MARSHALLING_ERROR
    assert r.events == []
    assert "/first" not in h.tree.nodes
    assert h.tree.nodes["/"].cversion == 0
