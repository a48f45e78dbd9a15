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
from collections.abc import Iterable

from zkpy.errors import AuthFailedError, InvalidACLError
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


def _matches(scheme: str, auth_id: str, acl_id: str) -> bool:
    if scheme == "digest":
        return auth_id == acl_id
    if scheme == "ip":
        return ip_matches(auth_id, acl_id)
    return False


def check(acl: list[ACL] | None, perm: int, auth_ids: Iterable[AuthId]) -> bool:
    """ZooKeeper's checkACL: may a session holding `auth_ids` do `perm` on a node with `acl`?

    A super id passes everything and an empty ACL lets everyone in. Otherwise some entry must
    include `perm` and name world:anyone or an id of the session (the client's address is one,
    as an ("ip", address) auth id).
    """
    if not acl:
        return True
    ids = list(auth_ids)
    if any(scheme == "super" for scheme, _ in ids):
        return True
    for entry in acl:
        if not entry.perms & perm:
            continue
        scheme, ident = entry.id.scheme, entry.id.id
        if scheme == "world" and ident == "anyone":
            return True
        if scheme in AUTH_SCHEMES and ident is not None:
            for auth_scheme, auth_ident in ids:
                if auth_scheme == scheme and _matches(scheme, auth_ident, ident):
                    return True
    return False


def fix_acl(acl: list[ACL] | None, auth_ids: Iterable[AuthId], path: str | None = None) -> list[ACL]:
    """Validate and expand a create/setACL ACL as PrepRequestProcessor.fixupACL does.

    Duplicates in the request are dropped (first one kept); `auth` entries become one entry
    per authenticated digest id of the session with the same perms; anything else must be
    world:anyone or a well-formed digest/ip id. Raises InvalidACLError otherwise.
    """
    unique: list[ACL] = []
    for entry in acl or []:
        if entry not in unique:
            unique.append(entry)
    if not unique:
        raise InvalidACLError("empty ACL", path)
    ids = list(auth_ids)
    result: list[ACL] = []
    for entry in unique:
        if entry is None or entry.id is None or entry.id.scheme is None:
            raise InvalidACLError("ACL entry without an id", path)
        scheme, ident = entry.id.scheme, entry.id.id
        if scheme == "world" and ident == "anyone":
            result.append(entry)
        elif scheme == "auth":
            expanded = [ACL(entry.perms, Id(s, i)) for s, i in ids if s in _AUTHENTICATED_SCHEMES]
            if not expanded:
                raise InvalidACLError("auth ACL but the session has no authenticated id", path)
            result.extend(expanded)
        elif _valid_id(scheme, ident):
            result.append(entry)
        else:
            raise InvalidACLError(f"invalid ACL id {scheme}:{ident}", path)
    return result


__all__ = [
    "AUTH_SCHEMES",
    "SUPER_ID",
    "AuthId",
    "authenticate",
    "check",
    "digest",
    "fix_acl",
    "ip_matches",
]
