"""Znode path rules, as ZooKeeper's PathUtils enforces them."""

from __future__ import annotations

import re

from zkpy.errors import BadArgumentsError

# Characters ZooKeeper's PathUtils.validatePath rejects anywhere in a path.
_BAD_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")


def validate(path: object, sequential: bool = False) -> str:
    """Return `path` if it is a valid znode path, else raise BadArgumentsError.

    A sequential create may end in '/' because the server appends the counter.
    """
    if not isinstance(path, str) or not path:
        raise BadArgumentsError("path must be a non-empty string", path if isinstance(path, str) else None)
    if path[0] != "/":
        raise BadArgumentsError("path must start with /", path)
    if path == "/":
        if sequential:
            raise BadArgumentsError("cannot create sequential node at /", path)
        return path
    check = path + "1" if sequential else path
    if check.endswith("/"):
        raise BadArgumentsError("path must not end with /", path)
    if _BAD_CHARS.search(check):
        raise BadArgumentsError("invalid character in path", path)
    if "//" in check or "/." in check:  # else no segment is empty, ".", or ".." (every write comes here)
        for segment in check[1:].split("/"):
            if not segment:
                raise BadArgumentsError("empty path segment", path)
            if segment in (".", ".."):
                raise BadArgumentsError("relative path segment", path)
    return path


def is_valid(path: object, sequential: bool = False) -> bool:
    try:
        validate(path, sequential)
    except BadArgumentsError:
        return False
    return True


def parent(path: str) -> str:
    """The parent of an absolute path ('/' for a top-level node)."""
    i = path.rfind("/")
    return "/" if i == 0 else path[:i]


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def join(parent_path: str, name: str) -> str:
    return "/" + name if parent_path == "/" else f"{parent_path}/{name}"


def is_descendant(path: str, ancestor: str) -> bool:
    """True when `path` is `ancestor` or below it."""
    if ancestor == "/":
        return True
    return path == ancestor or path.startswith(ancestor + "/")


def ancestors(path: str) -> list[str]:
    """Every ancestor of `path`, nearest first, ending at '/'; empty for '/'."""
    out = []
    while path != "/":
        path = parent(path)
        out.append(path)
    return out
