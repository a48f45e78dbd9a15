"""The slow-fsync LD_PRELOAD shim (zkpy/testing/slowfsync.c) does what the slow-disk tests rely
on: a sync sleeps the latency plus the bytes written since that file's last sync over the
bandwidth; the control file is read at each sync and during the sleep (a process is made fast
mid-sync); without the shim's settings nothing sleeps. A child Python process carries the shim
and reports how long its syncs took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zkpy.testing import slowfsync

CHILD = r"""
import json, os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
out = {}
for name, size, sync in [("small", 4096, os.fdatasync), ("large", 400_000, os.fsync)]:
    os.pwrite(fd, b"x" * size, 0)
    started = time.monotonic()
    sync(fd)
    out[name] = time.monotonic() - started
started = time.monotonic()
os.fdatasync(fd)  # nothing written since the last sync: the latency alone
out["empty"] = time.monotonic() - started
os.close(fd)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = slowfsync.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    yield slowfsync.build(tmp_path_factory.mktemp("slowfsync"))


def run_child(env: dict[str, str], tmp: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp / "data")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_each_sync_sleeps_its_latency_plus_what_was_written_over_the_bandwidth(
    library: Path, tmp_path: Path
) -> None:
    disk = slowfsync.SlowDisk(library, tmp_path / "control")
    disk.slow(ms=100, bytes_per_s=1_000_000)
    took = run_child(disk.env(), tmp_path)
    assert 0.10 <= took["small"] < 0.10 + 0.5, took  # 100 ms + 4 kB at 1 MB/s
    assert 0.50 <= took["large"] < 0.50 + 0.5, took  # 100 ms + 400 kB at 1 MB/s
    assert 0.10 <= took["empty"] < 0.10 + 0.5, took


def test_fast_or_absent_settings_do_not_sleep(library: Path, tmp_path: Path) -> None:
    disk = slowfsync.SlowDisk(library, tmp_path / "control")
    disk.fast()
    assert max(run_child(disk.env(), tmp_path).values()) < 0.09
    missing = slowfsync.SlowDisk(library, tmp_path / "no-such-control")
    assert max(run_child(missing.env(), tmp_path).values()) < 0.09


def test_fixed_settings_from_the_environment(library: Path, tmp_path: Path) -> None:
    env = {"LD_PRELOAD": str(library), "ZKPY_SLOW_FSYNC_MS": "150"}
    took = run_child(env, tmp_path)
    assert min(took.values()) >= 0.15, took


LONG_SYNC = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
os.pwrite(fd, b"x" * 400_000, 0)
print("syncing", flush=True)
started = time.monotonic()
os.fdatasync(fd)
print(time.monotonic() - started, flush=True)
"""


def test_a_sync_in_its_sleep_ends_soon_after_the_disk_is_made_fast(library: Path, tmp_path: Path) -> None:
    """400 kB at 20 kB/s sleeps 20 s; made fast 0.3 s into it, the sync returns within 50 ms or so."""
    disk = slowfsync.SlowDisk(library, tmp_path / "control")
    disk.slow(ms=0, bytes_per_s=20_000)
    child = subprocess.Popen(
        [sys.executable, "-c", LONG_SYNC, str(tmp_path / "data")],
        env={**os.environ, **disk.env()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "syncing"
        time.sleep(0.3)
        disk.fast()
        out, _ = child.communicate(timeout=10)
    finally:
        child.kill()
        child.wait()
    took = float(out)
    assert 0.3 <= took < 3.0, took
