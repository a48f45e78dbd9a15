"""A real writer process killed with SIGKILL mid-stream: every acknowledged batch survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.storage.logtools import recovered
from zkpy.storage import TxnLog

# The writer's plan, shared with the test so it knows where every batch ends.
PLAN = textwrap.dedent(
    """
    import random

    def plan(seed):
        rng = random.Random(seed)
        zxid = 0
        while True:
            n = rng.randint(1, 50)
            yield [(zxid + i + 1, b"%d" % (zxid + i + 1) * rng.randint(1, 40)) for i in range(n)], rng.random() < 0.05
            zxid += n
    """
)
# Writes the plan's batches, rolling now and then, and reports each batch's last zxid on stdout
# only after write_batch returned (that is the acknowledgement).
WRITER = PLAN + textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from zkpy.storage import TxnLog

    log = TxnLog(Path(sys.argv[1]), prealloc_size=64 * 1024)
    for batch, roll in plan(int(sys.argv[2])):
        log.write_batch(batch)
        print(batch[-1][0], flush=True)
        if roll:
            log.roll()
    """
)


def batch_ends(seed: int, up_to: int) -> set[int]:
    namespace: dict[str, Any] = {}
    exec(PLAN, namespace)
    ends = {0}
    for batch, _ in namespace["plan"](seed):
        ends.add(batch[-1][0])
        if batch[-1][0] > up_to:
            return ends
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_loses_no_acknowledged_batch(tmp_path: Path, seed: int) -> None:
    acked: list[int] = []
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(seed)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 100 + 37 * seed:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert acked, "the writer died before acknowledging anything"
    records = recovered(tmp_path)
    zxids = [z for z, _ in records]
    assert zxids == list(range(1, len(zxids) + 1))  # in order, no hole
    assert len(zxids) >= acked[-1]  # everything acknowledged is there
    assert len(zxids) in batch_ends(seed, len(zxids))  # whole batches only
    assert all(payload.startswith(b"%d" % z) for z, payload in records)
    with TxnLog(tmp_path) as log:  # and the log goes on
        log.write_batch([(len(zxids) + 1, b"next")])
    assert recovered(tmp_path)[-1] == (len(zxids) + 1, b"next")
