"""ACL schemes and checks, against vectors and behaviour observed on Apache ZooKeeper 3.8."""

from __future__ import annotations

import pytest

from zkpy.errors import AuthFailedError, InvalidACLError
from zkpy.jute.records import (
    ACL,
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    PERM_ADMIN,
    PERM_ALL,
    PERM_CREATE,
    PERM_DELETE,
    PERM_READ,
    PERM_WRITE,
    Id,
)
from zkpy.tree.acl import authenticate, check, digest, fix_acl, ip_matches

SUPER = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="


def test_digest_matches_zookeeper_generate_digest() -> None:
    assert digest("super:test") == SUPER
    # Seen on Apache ZooKeeper 3.8 after addauth digest a:b and a create with the auth scheme.
    assert digest("a:b") == "a:3OptnM09ILoVSfbZtd3mB0IViII="
    # Without a colon ZooKeeper still accepts it; the whole text is the user part.
    assert digest("nocolon") == "nocolon:Ra+cHr2ZoHvBjtNArFGNGlVie4g="


def test_digest_keeps_colons_in_password() -> None:
    assert digest("u:p:q").startswith("u:")
    assert digest("u:p:q") != digest("u:p")


def test_authenticate_digest_and_super() -> None:
    assert authenticate("digest", b"a:b", None) == [Id("digest", "a:3OptnM09ILoVSfbZtd3mB0IViII=")]
    assert authenticate("digest", b"super:test", SUPER) == [Id("digest", SUPER), Id("super", "")]
    assert authenticate("digest", b"super:wrong", SUPER) == [Id("digest", digest("super:wrong"))]


def test_authenticate_ip_uses_the_connection_address() -> None:
    assert authenticate("ip", b"whatever", None, client_ip="10.1.2.3") == [Id("ip", "10.1.2.3")]


@pytest.mark.parametrize("scheme", ["world", "auth", "sasl", "nosuch", ""])
def test_authenticate_unknown_scheme_fails(scheme: str) -> None:
    with pytest.raises(AuthFailedError):
        authenticate(scheme, b"anyone", None)


def test_check_world_and_empty_acl() -> None:
    assert check(OPEN_ACL_UNSAFE, PERM_WRITE, [])
    assert check([], PERM_ADMIN, [])
    read_only = [ACL(PERM_READ, Id("world", "anyone"))]
    assert check(read_only, PERM_READ, [])
    assert not check(read_only, PERM_WRITE, [])
    assert not check([ACL(PERM_ALL, Id("world", "someone"))], PERM_READ, [])


def test_check_digest_needs_the_exact_id() -> None:
    acl = [ACL(PERM_READ | PERM_WRITE, Id("digest", digest("bob:pw")))]
    assert check(acl, PERM_WRITE, [("ip", "127.0.0.1"), ("digest", digest("bob:pw"))])
    assert not check(acl, PERM_WRITE, [("digest", digest("bob:other"))])
    assert not check(acl, PERM_DELETE, [("digest", digest("bob:pw"))])
    # The scheme must match too: an ip id equal to the digest text does not count.
    assert not check(acl, PERM_READ, [("ip", digest("bob:pw"))])


def test_check_super_passes_everything() -> None:
    acl = [ACL(PERM_READ, Id("digest", digest("bob:pw")))]
    assert check(acl, PERM_ADMIN, [("super", "")])


@pytest.mark.parametrize(
    ("client", "expr", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.2", "127.0.0.1", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("192.168.1.77", "192.168.1.64/26", True),
        ("192.168.1.128", "192.168.1.64/26", False),
        ("8.8.8.8", "1.2.3.4/0", True),
        ("1.2.3.4", "1.2.3.4/32", True),
        ("1.2.3.4", "1.2.3.4/33", False),
        ("1.2.3.4", "1.2.3/24", False),
        ("10.1.1.1", "010.1.1.1", True),
        ("::1", "::1", True),
        ("0:0:0:0:0:0:0:1", "::1", True),
        ("2001:db8::5", "2001:db8::/32", True),
        ("2001:db9::5", "2001:db8::/32", False),
        ("::1", "127.0.0.1", False),
        ("127.0.0.1", "::1/0", False),
        ("not-an-ip", "0.0.0.0/0", False),
    ],
)
def test_ip_matching(client: str, expr: str, expected: bool) -> None:
    assert ip_matches(client, expr) is expected
    acl = [ACL(PERM_READ, Id("ip", expr))]
    assert check(acl, PERM_READ, [("ip", client)]) is expected


def test_fix_acl_keeps_valid_entries_and_drops_duplicates() -> None:
    acl = [
        ACL(PERM_READ, Id("world", "anyone")),
        ACL(PERM_ALL, Id("ip", "10.0.0.0/8")),
        ACL(PERM_READ, Id("world", "anyone")),
        ACL(PERM_CREATE, Id("digest", digest("a:b"))),
    ]
    assert fix_acl(acl, []) == [acl[0], acl[1], acl[3]]


def test_fix_acl_expands_auth_to_the_sessions_digest_ids() -> None:
    ids = [("ip", "127.0.0.1"), ("digest", digest("a:b")), ("super", ""), ("digest", digest("c:d"))]
    assert fix_acl([ACL(PERM_READ | PERM_ADMIN, Id("auth", ""))], ids) == [
        ACL(PERM_READ | PERM_ADMIN, Id("digest", digest("a:b"))),
        ACL(PERM_READ | PERM_ADMIN, Id("digest", digest("c:d"))),
    ]


def test_fix_acl_auth_without_authenticated_id_is_invalid() -> None:
    # Seen on ZooKeeper 3.8: after `addauth ip`, CREATOR_ALL_ACL is still InvalidACL.
    with pytest.raises(InvalidACLError):
        fix_acl(CREATOR_ALL_ACL, [("ip", "127.0.0.1")])
    with pytest.raises(InvalidACLError):
        fix_acl(CREATOR_ALL_ACL, [("super", "")])


@pytest.mark.parametrize(
    "acl",
    [
        None,
        [],
        [ACL(PERM_ALL, Id("world", "other"))],
        [ACL(PERM_ALL, Id("nosuch", "x"))],
        [ACL(PERM_ALL, Id("super", ""))],
        [ACL(PERM_ALL, Id("digest", "x"))],
        [ACL(PERM_ALL, Id("digest", "x:y:z"))],
        [ACL(PERM_ALL, Id("ip", "10.0.0.0/33"))],
        [ACL(PERM_ALL, Id("ip", "10.0.0.0,10.1.0.0"))],
        [ACL(PERM_ALL, Id("ip", "256.0.0.1"))],
        [ACL(PERM_ALL, Id("ip", "host.example"))],
        [ACL(PERM_ALL, Id("ip", None))],
        [ACL(PERM_READ, Id("world", "anyone")), ACL(PERM_ALL, Id("digest", "bad"))],
    ],
)
def test_fix_acl_rejects(acl: list[ACL] | None) -> None:
    with pytest.raises(InvalidACLError):
        fix_acl(acl, [("digest", digest("a:b"))])


def test_fix_acl_error_carries_the_path() -> None:
    with pytest.raises(InvalidACLError) as info:
        fix_acl([], [], path="/app")
    assert info.value.path == "/app"
    assert info.value.code == -114
