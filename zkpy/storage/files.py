"""File naming and the few syscalls that make a write durable.

Files are named like ZooKeeper's, `<prefix><zxid in lowercase hex>` (`log.100000001`,
`snapshot.2a`), so they sort by zxid once parsed (never by name: the hex is not padded).
"""

from __future__ import annotations

import os
from pathlib import Path

LOG_PREFIX = "log."
SNAP_PREFIX = "snapshot."
TMP_SUFFIX = ".tmp"


def zxid_name(prefix: str, zxid: int) -> str:
    return f"{prefix}{zxid:x}"


def parse_zxid_name(name: str, prefix: str, suffix: str = "") -> int | None:
    """The zxid a file name carries, or None if the name is not `<prefix><hex><suffix>`."""
    if not name.startswith(prefix) or not name.endswith(suffix):
        return None
    hex_part = name[len(prefix) : len(name) - len(suffix)]
    if not hex_part or any(c not in "0123456789abcdefABCDEF" for c in hex_part):
        return None
    return int(hex_part, 16)


def list_zxid_files(directory: Path, prefix: str, suffix: str = "") -> list[tuple[int, Path]]:
    """(zxid, path) of every `<prefix><hex><suffix>` file in `directory`, oldest zxid first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        zxid = parse_zxid_name(entry.name, prefix, suffix)
        if zxid is not None and entry.is_file():
            found.append((zxid, entry))
    found.sort()
    return found


def sync_data(fd: int) -> None:
    """fdatasync where the platform has it: the log's size only changes when it preallocates, so
    the data sync is all a commit needs. Looked up at call time so tests can make it fail."""
    getattr(os, "fdatasync", os.fsync)(fd)


def fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink in `directory` durable (POSIX needs the directory synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
