"""ZooKeeper's ACL schemes (world, auth, digest, ip, super) and permission checks.

Pure functions with no server state, so the request pipeline, the tests and any
offline tool share one definition of who may do what. The behaviour follows Apache
ZooKeeper 3.8: DigestAuthenticationProvider, IPAuthenticationProvider,
ZooKeeperServer.checkACL and PrepRequestProcessor.fixupACL.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from zkpy.errors import AuthFailedError, InvalidACLError
from zkpy.jute import javaorder
from zkpy.jute.records import ACL, Id

AuthId = tuple[str, str]

SUPER_ID: AuthId = ("super", "")

# Schemes a client may `addauth` with. ZooKeeper registers ip and digest by default; any
# other scheme (world and auth included) fails with AUTH_FAILED and the server closes.
AUTH_SCHEMES = frozenset({"digest", "ip"})

# Schemes whose ids are "authenticated" identities, i.e. what the `auth` ACL scheme expands
# to at create/setACL time (ZooKeeper's ServerAuthenticationProvider.isAuthenticated()).
_AUTHENTICATED_SCHEMES = frozenset({"digest"})

_DECIMAL = re.compile(r"[+-]?[0-9]+")


def digest(user_password: str) -> str:
    """`user:base64(sha1("user:password"))`, the id a digest ACL names (generateDigest).

    Only the part before the first ':' is kept in clear; the hash covers the whole string,
    so a digest ACL can be written without knowing the password in the server's config.
    """
    user = user_password.split(":", 1)[0]
    hashed = hashlib.sha1(user_password.encode("utf-8")).digest()
    return f"{user}:{base64.b64encode(hashed).decode('ascii')}"


def authenticate(
    scheme: str, auth: bytes, super_digest: str | None = None, client_ip: str | None = None
) -> list[Id]:
    """The ids an `addauth scheme auth` adds to a session, or AuthFailedError.

    digest: always succeeds, as in ZooKeeper (even without a ':'; the id is then
    "text:hash"); it also grants `super` when the digest equals the configured superDigest.
    ip: adds the connection's own address (`client_ip`), whatever the auth bytes say.
    """
    if scheme == "digest":
        text = auth.decode("utf-8", errors="replace")
        ident = digest(text)
        ids = [Id("digest", ident)]
        if super_digest and ident == super_digest:
            ids.append(Id(*SUPER_ID))
        return ids
    if scheme == "ip" and client_ip:
        return [Id("ip", client_ip)]
    raise AuthFailedError(f"no authentication provider for scheme {scheme!r}")


def _ip_bytes(text: str) -> bytes | None:
    """The address bytes for an IPv4 (ZooKeeper's lenient dotted decimal) or IPv6 literal."""
    parts = text.split(".")
    if len(parts) == 4 and all(_DECIMAL.fullmatch(p) for p in parts):
        values = [int(p) for p in parts]
        if all(0 <= v <= 255 for v in values):
            return bytes(values)
        return None
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0]).packed
        except ValueError:
            return None
    return None


@lru_cache(maxsize=65536)  # an ACL's ip entries, parsed once however often it is checked
def _parse_ip_expr(expr: str) -> tuple[bytes, int] | None:
    """(address bytes, prefix bits) of an ip ACL id `addr` or `addr/bits`, None when malformed."""
    addr_text, slash, bits_text = expr.partition("/")
    addr = _ip_bytes(addr_text)
    if addr is None:
        return None
    bits = len(addr) * 8
    if slash:
        if not _DECIMAL.fullmatch(bits_text):
            return None
        bits = int(bits_text)
        if not 0 <= bits <= len(addr) * 8:
            return None
    return addr, bits


def _masked(addr: bytes, bits: int) -> int:
    total = len(addr) * 8
    value = int.from_bytes(addr, "big")
    return value >> (total - bits) if bits else 0


def ip_matches(client_ip: str, expr: str) -> bool:
    """Whether a client address falls inside an ip ACL expression (exact address or CIDR)."""
    parsed = _parse_ip_expr(expr)
    client = _ip_bytes(client_ip)
    if parsed is None or client is None:
        return False
    addr, bits = parsed
    if len(client) != len(addr):
        return False
    return _masked(client, bits) == _masked(addr, bits)


def _valid_id(scheme: str, ident: str | None) -> bool:
    """ServerAuthenticationProvider.isValid for the registered schemes."""
    if ident is None:
        return False
    if scheme == "digest":
        return len(ident.split(":")) == 2
    if scheme == "ip":
        return _parse_ip_expr(ident) is not None
    return False


class AuthIds(Iterable[AuthId]):
    """A session's auth ids: a set for the checks, Java's hash-set order on demand.

    ZooKeeper keeps them in a HashSet<Id>: adding is O(1), a check looks ids up, and whoAmI and
    the ACL an `auth` entry expands to list them in that set's iteration order. That order
    (a sort by Java's hash buckets) is built only when something iterates the ids, and kept
    until the next addauth, so an addauth flood costs O(1) per id, not a sort each.
    """

    __slots__ = ("_eager", "_ids", "_ip_bytes", "_ordered", "has_super", "ips")

    def __init__(self, ids: Iterable[AuthId] = (), eager_hash: bool = False) -> None:
        """`eager_hash`: work out each id's Java hash as it is added (a connection's ids, which whoAmI may
        list after any addauth: the cost is spread over the addauths instead of falling on one whoAmI)."""
        self._eager = eager_hash
        # Insertion order, what the Java order is built from; each id's Java hashCode once worked out.
        self._ids: dict[AuthId, int | None] = {}
        self._ordered: list[AuthId] | None = None
        self.ips: list[str] = []  # the ip ids, matched by address range rather than looked up
        self._ip_bytes: list[bytes] | None = None
        self.has_super = False
        for pair in ids:
            self.add(pair)

    def add(self, pair: AuthId) -> bool:
        """Add one id; False when the session already had it."""
        if pair in self._ids:
            return False
        self._ids[pair] = javaorder.id_hash(*pair) if self._eager else None
        self._ordered = None
        if pair[0] == "ip":
            self.ips.append(pair[1])
            self._ip_bytes = None
        elif pair[0] == "super":
            self.has_super = True
        return True

    def ip_bytes(self) -> list[bytes]:
        """The ip ids as address bytes (parsed once, not once per ACL entry)."""
        if self._ip_bytes is None:
            parsed = (_ip_bytes(ip) for ip in self.ips)
            self._ip_bytes = [b for b in parsed if b is not None]
        return self._ip_bytes

    def __contains__(self, pair: object) -> bool:
        return pair in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[AuthId]:
        """The ids in ZooKeeper's HashSet<Id> order (what whoAmI answers)."""
        return iter(self.java_order())

    def java_order(self) -> list[AuthId]:
        """The ids as ZooKeeper's HashSet<Id> iterates them. Each id's hash is worked out once (a Python
        loop over its characters), so whoAmI after each of many addauths costs a sort, not a rehash."""
        if self._ordered is None:
            ids = self._ids
            for pair, h in ids.items():
                if h is None:
                    ids[pair] = javaorder.id_hash(*pair)
            cap = javaorder.capacity(len(ids), 16)
            bucket = javaorder.bucket
            # sorted() is stable: ids sharing a bucket keep their insertion order, as in Java.
            self._ordered = sorted(ids, key=lambda pair: bucket(ids[pair] or 0, cap))
        return self._ordered


def as_auth_ids(auth_ids: Iterable[AuthId]) -> AuthIds:
    """`auth_ids` as an AuthIds (itself when it already is one): O(n) once, O(1) per lookup after."""
    return auth_ids if isinstance(auth_ids, AuthIds) else AuthIds(auth_ids)


def entry_matches(scheme: str, ident: str | None, ids: AuthIds) -> bool:
    """Whether one ACL entry's id names the session (world:anyone names everyone): a lookup for
    digest, an address-range test against the session's few ip ids."""
    if scheme == "world":
        return ident == "anyone"
    if ident is None:
        return False
    if scheme == "digest":
        return (scheme, ident) in ids
    if scheme == "ip" and ids.ips:
        parsed = _parse_ip_expr(ident)
        if parsed is None:
            return False
        addr, bits = parsed
        want = _masked(addr, bits)
        return any(len(client) == len(addr) and _masked(client, bits) == want for client in ids.ip_bytes())
    return False


def check_entries(
    entries: Iterable[tuple[int, str, str | None]], perm: int, auth_ids: Iterable[AuthId]
) -> bool:
    """checkACL over (perms, scheme, id) triples: linear in the ACL, O(1) per entry for digest ids.

    A super id passes everything and an empty ACL lets everyone in. Otherwise some entry must
    include `perm` and name world:anyone or an id of the session (the client's address is one,
    as an ("ip", address) auth id).
    """
    ids = as_auth_ids(auth_ids)
    if ids.has_super:
        return True
    empty = True
    for perms, scheme, ident in entries:
        empty = False
        if perms & perm and entry_matches(scheme, ident, ids):
            return True
    return empty


def check(acl: list[ACL] | None, perm: int, auth_ids: Iterable[AuthId]) -> bool:
    """ZooKeeper's checkACL: may a session holding `auth_ids` do `perm` on a node with `acl`?

    See check_entries; this is the same check over jute ACL records.
    """
    if not acl:
        return True
    return check_entries(((a.perms, a.id.scheme or "", a.id.id) for a in acl), perm, auth_ids)


def _dedupe_key(entry: ACL | None) -> object:
    if entry is None or entry.id is None:
        return (None if entry is None else entry.perms, None, None)
    return (entry.perms, entry.id.scheme, entry.id.id)


def fix_acl(acl: list[ACL] | None, auth_ids: Iterable[AuthId], path: str | None = None) -> list[ACL]:
    """Validate and expand a create/setACL ACL as PrepRequestProcessor.fixupACL does.

    Duplicates in the request are dropped (first one kept, as Apache's removeDuplicates) with a
    dict keyed by (perms, scheme, id): linear, where a list scan made a 9,000-entry ACL cost
    seconds on the event loop. `auth` entries become one entry per authenticated digest id of
    the session (in its Java hash-set order) with the same perms; anything else must be
    world:anyone or a well-formed digest/ip id. Raises InvalidACLError otherwise.
    """
    seen: set[object] = set()
    unique: list[ACL] = []
    for entry in acl or []:
        key = _dedupe_key(entry)
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    if not unique:
        raise InvalidACLError("empty ACL", path)
    authenticated: list[AuthId] | None = None
    result: list[ACL] = []
    for entry in unique:
        if entry is None or entry.id is None or entry.id.scheme is None:
            raise InvalidACLError("ACL entry without an id", path)
        scheme, ident = entry.id.scheme, entry.id.id
        if scheme == "world" and ident == "anyone":
            result.append(entry)
        elif scheme == "auth":
            if authenticated is None:
                authenticated = [(s, i) for s, i in auth_ids if s in _AUTHENTICATED_SCHEMES]
            if not authenticated:
                raise InvalidACLError("auth ACL but the session has no authenticated id", path)
            result.extend(ACL(entry.perms, Id(s, i)) for s, i in authenticated)
        elif _valid_id(scheme, ident):
            result.append(entry)
        else:
            raise InvalidACLError(f"invalid ACL id {scheme}:{ident}", path)
    return result


__all__ = [
    "AUTH_SCHEMES",
    "SUPER_ID",
    "AuthId",
    "AuthIds",
    "as_auth_ids",
    "authenticate",
    "check",
    "check_entries",
    "digest",
    "fix_acl",
    "ip_matches",
]
