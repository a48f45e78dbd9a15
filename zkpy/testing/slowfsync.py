"""A slow disk for a real server process: the LD_PRELOAD shim in slowfsync.c, built with gcc.

Why a shim: there is no device-mapper (dm-delay) on a test machine without root, and both zkpy
(os.fsync/os.fdatasync) and Apache ZooKeeper (FileChannel.force) sync their logs through libc's
fsync/fdatasync, which a preloaded library can wrap. The shim syncs for real, then sleeps a fixed
latency plus the bytes written since that file's last sync divided by a bandwidth. Each process
reads its own control file at every sync, so a test starts every member with the shim and makes
one of them slow once it knows which one follows, and fast again to watch it catch up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("slowfsync.c")

# This machine's disk (2026-12-07): a 4 kB fdatasync takes 2.8 ms (median), 176 MB/s written with
# syncs. 100x slower is about 300 ms a sync and 1.5 MB/s: what tests and the benchmark use.
SLOW_MS = 300.0
SLOW_BYTES_PER_S = 1_500_000.0


class ShimUnavailable(RuntimeError):
    """The shim cannot be built here (no gcc, or it failed): say why, so a test can skip."""


def unavailable_reason() -> str | None:
    if shutil.which("gcc") is None:
        return "no gcc on PATH to build the slow-fsync LD_PRELOAD shim (zkpy/testing/slowfsync.c)"
    if not SOURCE.exists():
        return f"{SOURCE} is missing"
    return None


def build(directory: Path) -> Path:
    """Compile the shim into `directory` and return the shared library's path."""
    reason = unavailable_reason()
    if reason is not None:
        raise ShimUnavailable(reason)
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "slowfsync.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ShimUnavailable(f"gcc could not build the slow-fsync shim: {done.stderr.strip()}")
    return library


@dataclass
class SlowDisk:
    """One process's switch: `env()` goes into its environment at start, `slow()` and `fast()`
    change its syncs while it runs (the next sync reads the control file)."""

    library: Path
    control: Path

    def env(self) -> dict[str, str]:
        preload = os.environ.get("LD_PRELOAD")
        return {
            "LD_PRELOAD": f"{self.library} {preload}" if preload else str(self.library),
            "ZKPY_SLOW_FSYNC_CONTROL": str(self.control),
        }

    def slow(self, ms: float = SLOW_MS, bytes_per_s: float = SLOW_BYTES_PER_S) -> None:
        self._write(f"{ms:g} {bytes_per_s:g}\n")

    def fast(self) -> None:
        self._write("0 0\n")

    def _write(self, text: str) -> None:
        tmp = self.control.with_name(self.control.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.control)  # a sync reads the old or the new setting, never half


def slow_disks(directory: Path, names: list[str]) -> dict[str, SlowDisk]:
    """Build the shim once into `directory` and give each name its own control file, fast."""
    library = build(directory)
    disks = {name: SlowDisk(library, directory / f"{name}.control") for name in names}
    for disk in disks.values():
        disk.fast()
    return disks
