"""A short run of scripts/jepsen.py against a 3-server zkpy ensemble: faults (kill -9, restart,
SIGSTOP/SIGCONT, cut peer links) under compare-and-set, sequential-create and read load; the
script exits 0 only when no acknowledged write was lost, every server agrees and the history
checks. About 40 s; deselect with `-k "not jepsen"`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "jepsen.py"


@pytest.mark.timeout(300)
def test_jepsen_smoke_zkpy_3_servers() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--server",
            "zkpy",
            "--servers",
            "3",
            "--duration",
            "20",
            "--clients",
            "3",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, (
        f"jepsen.py exited {run.returncode}:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    )
    assert "problems: none" in run.stdout
