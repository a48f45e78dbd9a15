"""A short run of scripts/jepsen.py against a 3-server zkpy ensemble: faults (kill -9, restart,
SIGSTOP/SIGCONT, held peer links, held client links, clients moved off a server with their
requests in flight and, where nftables and root are available, silent packet drops) under
compare-and-set, sequential-create and read load; the script exits 0 only when no acknowledged
write was lost, every server agrees and the history checks (with reply zxids: FIFO client order
and monotonic reads included). Its nftables table is gone afterwards. About 40 s; deselect with
`-k "not jepsen"`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zkpy.testing.nftdrop import unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "jepsen.py"


@pytest.mark.timeout(300)
def test_jepsen_smoke_zkpy_3_servers() -> None:
    proc = subprocess.Popen(
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
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"jepsen.py exited {proc.returncode}:\n{stdout[-6000:]}\n{stderr[-3000:]}"
    assert "problems: none" in stdout
    assert "faults hold, move" in stdout
    if unavailable() is None:
        assert "faults hold, move, silent" in stdout
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
        assert f"zkpy_jepsen_{proc.pid}" not in tables
