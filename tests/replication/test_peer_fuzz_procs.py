"""scripts/fuzz_peer_ports.py for a few seconds against a real 3-server ensemble: hostile input on
every quorum and election port, and the ensemble notices nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_peer_ports.py"

pytestmark = pytest.mark.timeout(60)


def test_hostile_peers_do_not_disturb_a_running_ensemble() -> None:
    args = "--duration 6 --frames 20000 --connections 4 --slow-loris 4 --loris-hold 10 --hoarders 2 --seed 3"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args.split(), "--json"], capture_output=True, text=True, timeout=55
    )
    result = json.loads(out.stdout)
    assert result["crashed_servers"] == []
    assert result["good_errors"] == []
    assert result["good_round_trips"] > 0
    assert result["leader_after"] == result["leader_before"]
    assert result["epoch_after"] == result["epoch_before"]
    assert sum(result["frames"].values()) >= 5000
    assert out.returncode == 0, result["failures"]
