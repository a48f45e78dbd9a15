"""paths.validate: ZooKeeper's path rules, and its fast path (no segment loop for a path without
"//" or "/.") answering exactly as the rules do. Passes before and after that fast path: it guards
the refactor, it does not reproduce a bug."""

from __future__ import annotations

import random

import pytest

from zkpy.errors import BadArgumentsError
from zkpy.paths import _BAD_CHARS, validate


def reference(path: str, sequential: bool = False) -> str | None:
    """The rules spelled out, segment by segment: the error message, or None when valid."""
    if not path:
        return "path must be a non-empty string"
    if path[0] != "/":
        return "path must start with /"
    if path == "/":
        return "cannot create sequential node at /" if sequential else None
    check = path + "1" if sequential else path
    if check.endswith("/"):
        return "path must not end with /"
    if _BAD_CHARS.search(check):
        return "invalid character in path"
    for segment in check[1:].split("/"):
        if not segment:
            return "empty path segment"
        if segment in (".", ".."):
            return "relative path segment"
    return None


@pytest.mark.parametrize(
    ("path", "sequential", "error"),
    [
        ("/a/b", False, None),
        ("/a/", True, None),  # the server appends the counter
        ("/a/", False, "path must not end with /"),
        ("/a//b", False, "empty path segment"),
        ("/a/./b", False, "relative path segment"),
        ("/a/..", False, "relative path segment"),
        ("/a/.b", False, None),
        ("/a/..b/c.", False, None),
        ("/a\x00", False, "invalid character in path"),
        ("a/b", False, "path must start with /"),
        ("/", True, "cannot create sequential node at /"),
    ],
)
def test_the_rules(path: str, sequential: bool, error: str | None) -> None:
    if error is None:
        assert validate(path, sequential) == path
    else:
        with pytest.raises(BadArgumentsError, match=error):
            validate(path, sequential)
    assert reference(path, sequential) == error


def test_the_fast_path_answers_as_the_rules_on_random_paths() -> None:
    rng = random.Random(17)
    pieces = ["/", "/", ".", "..", "a", "zz", "\x00", "\ud800", "\uf8ff", "/."]
    for _ in range(20_000):
        path = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 7)))
        for sequential in (False, True):
            try:
                got = None if validate(path, sequential) == path else "changed"
            except BadArgumentsError as e:
                got = str(e).rsplit(": ", 1)[0]  # the message, then ": <path>"
            assert got == reference(path, sequential), (path, sequential)
