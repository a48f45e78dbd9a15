"""ACLs: digest identities, the auth scheme, world read-only, setACL versions and the super user."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError, BadVersionError, InvalidACLError, NoAuthError
from kazoo.protocol.states import KazooState
from kazoo.security import ACL, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, Id, make_acl, make_digest_acl
from suite_settings import SUPER_AUTH
from zkwait import wait_until

Clients = Callable[..., KazooClient]


def digest_id(user: str, password: str) -> str:
    return f"{user}:{base64.b64encode(hashlib.sha1(f'{user}:{password}'.encode()).digest()).decode()}"


def test_digest_acl_denies_others(zk: KazooClient, make_client: Clients, base: str) -> None:
    owner = make_client(auth_data=[("digest", "user1:pw1")])
    path = f"{base}/secret"
    owner.create(path, b"s3cret", acl=[make_digest_acl("user1", "pw1", all=True)])
    assert owner.get(path)[0] == b"s3cret"

    for op in (
        lambda: zk.get(path),
        lambda: zk.get_children(path),
        lambda: zk.set(path, b"x"),
        lambda: zk.create(f"{path}/child"),
        lambda: zk.get_acls(path),
        lambda: zk.set_acls(path, OPEN_ACL_UNSAFE),
    ):
        with pytest.raises(NoAuthError):
            op()
    assert zk.exists(path).dataLength == 6  # exists checks no ACL

    zk.add_auth("digest", "user1:wrong")  # accepted, but it is a different identity
    with pytest.raises(NoAuthError):
        zk.get(path)
    zk.add_auth("digest", "user1:pw1")
    assert zk.get(path)[0] == b"s3cret"


def test_digest_acl_entry_is_user_and_base64_sha1(zk: KazooClient, make_client: Clients, base: str) -> None:
    owner = make_client(auth_data=[("digest", "user1:pw1")])
    owner.create(f"{base}/n", acl=[make_digest_acl("user1", "pw1", all=True), *READ_ACL_UNSAFE])
    acls, stat = owner.get_acls(f"{base}/n")
    assert acls == [ACL(31, Id("digest", digest_id("user1", "pw1"))), ACL(1, Id("world", "anyone"))]
    assert stat.aversion == 0


def test_get_acl_hides_digest_hashes_from_non_admins(zk: KazooClient, base: str) -> None:
    """Since CVE-2019-0201 a caller without ADMIN on the node sees "user:x" instead of the hash."""
    zk.create(f"{base}/n", acl=[make_digest_acl("user1", "pw1", read=True, write=True), *READ_ACL_UNSAFE])
    acls, _ = zk.get_acls(f"{base}/n")
    assert acls == [ACL(3, Id("digest", "user1:x")), ACL(1, Id("world", "anyone"))]


def test_auth_scheme_acl_becomes_the_callers_digest(zk: KazooClient, make_client: Clients, base: str) -> None:
    with pytest.raises(InvalidACLError):
        zk.create(f"{base}/noauth", acl=[make_acl("auth", "", all=True)])  # no identity to use

    owner = make_client(auth_data=[("digest", "user2:pw2")])
    owner.create(f"{base}/mine", acl=[make_acl("auth", "", all=True)])
    acls, _ = owner.get_acls(f"{base}/mine")
    assert acls == [ACL(31, Id("digest", digest_id("user2", "pw2")))]
    with pytest.raises(NoAuthError):
        zk.get(f"{base}/mine")


def test_unknown_auth_scheme_fails_and_drops_the_session(
    zk: KazooClient, make_client: Clients, base: str
) -> None:
    victim = make_client()
    states: list[str] = []
    victim.add_listener(states.append)
    with pytest.raises(AuthFailedError):
        victim.add_auth("nosuchscheme", "whatever")
    wait_until(lambda: KazooState.LOST in states, what="the client to lose its session after AuthFailed")
    zk.create(f"{base}/still-fine")  # other clients are unaffected


def test_world_read_only_node(zk: KazooClient, base: str) -> None:
    path = f"{base}/ro"
    zk.create(path, b"v", acl=READ_ACL_UNSAFE)
    assert zk.get(path)[0] == b"v"
    assert zk.get_children(path) == []
    with pytest.raises(NoAuthError):
        zk.set(path, b"w")
    with pytest.raises(NoAuthError):
        zk.create(f"{path}/child")
    with pytest.raises(NoAuthError):
        zk.set_acls(path, OPEN_ACL_UNSAFE)
    zk.delete(path)  # deleting needs DELETE on the parent, not on the node
    assert zk.exists(path) is None


def test_set_acl_bumps_aversion_and_checks_it(zk: KazooClient, base: str) -> None:
    path = f"{base}/a"
    created = zk.create(path, b"d", include_data=True)[1]
    assert zk.get_acls(path) == ([ACL(31, Id("world", "anyone"))], created)

    read_admin = [make_acl("world", "anyone", read=True, admin=True)]
    stat = zk.set_acls(path, read_admin, version=0)
    assert stat.aversion == 1
    assert (stat.version, stat.mzxid, stat.cversion) == (0, created.mzxid, 0)
    assert zk.get_acls(path)[0] == [ACL(17, Id("world", "anyone"))]
    with pytest.raises(BadVersionError):
        zk.set_acls(path, READ_ACL_UNSAFE, version=0)
    assert zk.set_acls(path, READ_ACL_UNSAFE, version=1).aversion == 2
    with pytest.raises(NoAuthError):  # no ADMIN left: the ACL check comes before the version check
        zk.set_acls(path, OPEN_ACL_UNSAFE, version=2)
    with pytest.raises(NoAuthError):
        zk.set(path, b"x")


def test_admin_permission_alone_allows_set_acl(zk: KazooClient, make_client: Clients, base: str) -> None:
    path = f"{base}/adm"
    zk.create(path, acl=[make_acl("world", "anyone", admin=True)])
    with pytest.raises(NoAuthError):
        zk.get(path)
    assert zk.set_acls(path, OPEN_ACL_UNSAFE).aversion == 1
    assert zk.get(path)[0] == b""


def test_super_digest_user_reads_everything(zk: KazooClient, make_client: Clients, base: str) -> None:
    owner = make_client(auth_data=[("digest", "user3:pw3")])
    path = f"{base}/locked"
    owner.create(path, b"top", acl=[make_digest_acl("user3", "pw3", all=True)])
    with pytest.raises(NoAuthError):
        zk.get(path)
    root = make_client(auth_data=[("digest", SUPER_AUTH)])
    assert root.get(path)[0] == b"top"
    root.set(path, b"changed")
    root.delete(path)
    assert zk.exists(path) is None


def test_ip_scheme(zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/mine", b"v", acl=[make_acl("ip", "127.0.0.1", read=True)])
    zk.create(f"{base}/net", b"v", acl=[make_acl("ip", "127.0.0.0/8", read=True)])
    zk.create(f"{base}/elsewhere", b"v", acl=[make_acl("ip", "10.0.0.1", all=True)])
    assert zk.get(f"{base}/mine")[0] == b"v"
    assert zk.get(f"{base}/net")[0] == b"v"
    with pytest.raises(NoAuthError):
        zk.set(f"{base}/mine", b"w")  # READ only
    with pytest.raises(NoAuthError):
        zk.get(f"{base}/elsewhere")


@pytest.mark.parametrize(
    ("scheme", "ident"),
    [("ip", "bogus"), ("digest", "nocolon"), ("world", "someone"), ("nosuchscheme", "x")],
)
def test_malformed_acl_ids_are_invalid(zk: KazooClient, base: str, scheme: str, ident: str) -> None:
    with pytest.raises(InvalidACLError):
        zk.create(f"{base}/n", acl=[make_acl(scheme, ident, all=True)])
    with pytest.raises(InvalidACLError):
        zk.set_acls(base, [make_acl(scheme, ident, all=True)])
    assert zk.exists(f"{base}/n") is None


def test_auth_scheme_takes_every_digest_identity_of_the_session(make_client: Clients, base: str) -> None:
    both = make_client(auth_data=[("digest", "user1:pw1"), ("digest", "user2:pw2")])
    both.create(f"{base}/n", acl=[make_acl("auth", "", read=True, write=True, admin=True)])
    acls, _ = both.get_acls(f"{base}/n")
    assert sorted(acls) == sorted(
        [ACL(19, Id("digest", digest_id("user1", "pw1"))), ACL(19, Id("digest", digest_id("user2", "pw2")))]
    )
    only_two = make_client(auth_data=[("digest", "user2:pw2")])
    only_two.set(f"{base}/n", b"by user2")
    assert only_two.get(f"{base}/n")[0] == b"by user2"


def test_super_user_sees_full_digest_ids(make_client: Clients, base: str) -> None:
    owner = make_client(auth_data=[("digest", "user1:pw1")])
    owner.create(f"{base}/n", acl=[make_digest_acl("user1", "pw1", read=True)])
    root = make_client(auth_data=[("digest", SUPER_AUTH)])
    assert root.get_acls(f"{base}/n")[0] == [ACL(1, Id("digest", digest_id("user1", "pw1")))]
