"""examples/master_worker.py: kill the master, another is elected, every task is done."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "master_worker.py"


async def test_master_worker_demo_survives_the_master_being_killed(hosts: str) -> None:
    result = await trio.run_process(
        [sys.executable, str(EXAMPLE), "demo", "--hosts", hosts], capture_stdout=True, check=False
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "new master" in out and "all 20 tasks done exactly once" in out
