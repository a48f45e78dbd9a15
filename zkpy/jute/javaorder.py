"""The iteration orders of Java's hash collections, where ZooKeeper's answers show them.

ZooKeeper keeps a znode's children in a `HashSet<String>` and a connection's auth ids in a hash set of `Id`,
and answers getChildren, whoAmI and the ACL an `auth` id expands to in those sets' iteration order. Java's
HashMap iterates its table from bucket 0 up, each bucket in insertion order (a resize splits buckets without
reordering them); the bucket is `(h ^ (h >>> 16)) & (capacity - 1)` for the key's `hashCode()`, and the
capacity doubles once the size passes three quarters of it.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TypeVar

T = TypeVar("T")

_MASK = 0xFFFFFFFF


def _to_int32(h: int) -> int:
    h &= _MASK
    return h - (1 << 32) if h & 0x80000000 else h


# 31**k mod 2**32: String.hashCode is sum(unit[n-1-k] * 31**k) mod 2**32, and summing the products with
# map and operator.mul runs in C instead of a Python loop per character (about 1.5x faster; every child
# name getChildren orders and every auth id whoAmI lists goes through here).
_POWERS_MAX = 4096
_POWERS = [pow(31, k, 1 << 32) for k in range(_POWERS_MAX)]
_mul = operator.mul


@lru_cache(maxsize=65536)
def string_hash(s: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    if len(s) <= _POWERS_MAX // 2:  # at most _POWERS_MAX UTF-16 code units
        if s.isascii():
            return _to_int32(sum(map(_mul, reversed(s.encode("ascii")), _POWERS)))
        units = memoryview(s.encode("utf-16-be" if sys.byteorder == "big" else "utf-16-le")).cast("H")
        return _to_int32(sum(map(_mul, reversed(units), _POWERS)))
    h = 0
    raw = s.encode("utf-16-be")
    for i in range(0, len(raw), 2):
        h = (31 * h + (raw[i] << 8 | raw[i + 1])) & _MASK
    return _to_int32(h)


def id_hash(scheme: str, ident: str) -> int:
    """hashCode() of a jute-generated `Id` record: 37 * (37 * 17 + scheme) + id."""
    return _to_int32(37 * (37 * 17 + string_hash(scheme)) + string_hash(ident))


def capacity(size: int, initial: int) -> int:
    """The table size a Java HashMap created with `initial` buckets has grown to when holding `size` keys
    (assuming it never held more: tables never shrink)."""
    cap = initial
    while size > cap * 3 // 4:
        cap *= 2
    return cap


def bucket(h: int, cap: int) -> int:
    h &= _MASK
    return (h ^ (h >> 16)) & (cap - 1)


@lru_cache(maxsize=65536)
def spread_string_hash(s: str) -> int:
    """HashMap's spread of a String key's hashCode (unsigned): its bucket is this & (capacity - 1)."""
    h = string_hash(s) & _MASK
    return h ^ (h >> 16)


def hash_order(items: Iterable[T], hash_of: Callable[[T], int], initial: int = 16) -> list[T]:
    """`items` (given in insertion order) in the order a Java HashSet holding them iterates."""
    seq = list(items)
    cap = capacity(len(seq), initial)
    return sorted(seq, key=lambda item: bucket(hash_of(item), cap))  # stable: insertion order per bucket
