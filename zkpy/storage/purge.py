"""Delete old snapshots and the log files no kept snapshot needs (ZooKeeper's autopurge).

Semantics of autopurge.snapRetainCount: keep the newest N complete snapshots (N >= 3) and every
log file that can hold a transaction after the oldest kept one (the last log file starting at
or before its zxid, and all later ones), so any kept snapshot can still be replayed to the end.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zkpy.storage.files import LOG_PREFIX, SNAP_PREFIX, TMP_SUFFIX, fsync_dir, list_zxid_files
from zkpy.storage.snapshot import looks_complete

log = logging.getLogger(__name__)

MIN_RETAIN = 3


def purge(snap_dir: Path, log_dir: Path, retain_count: int) -> list[Path]:
    """Delete what the newest `retain_count` snapshots do not need; return the deleted paths."""
    if retain_count < MIN_RETAIN:
        raise ValueError(f"snapRetainCount must be at least {MIN_RETAIN}, got {retain_count}")
    snap_dir, log_dir = Path(snap_dir), Path(log_dir)
    snaps = list_zxid_files(snap_dir, SNAP_PREFIX)
    valid = [(zxid, path) for zxid, path in snaps if looks_complete(path)]
    kept = valid[-retain_count:]
    if not kept:
        return []
    oldest_kept, newest_kept = kept[0][0], kept[-1][0]

    doomed = [path for zxid, path in snaps if zxid < oldest_kept]
    doomed += [
        path for zxid, path in list_zxid_files(snap_dir, SNAP_PREFIX, TMP_SUFFIX) if zxid < newest_kept
    ]
    logs = list_zxid_files(log_dir, LOG_PREFIX)
    first_needed = max((i for i, (zxid, _) in enumerate(logs) if zxid <= oldest_kept), default=0)
    doomed += [path for _, path in logs[:first_needed]]

    for path in doomed:
        log.info("purging %s", path)
        path.unlink(missing_ok=True)
    for directory in {path.parent for path in doomed}:
        fsync_dir(directory)
    return doomed
