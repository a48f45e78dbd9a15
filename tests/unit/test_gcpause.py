"""The GC pause monitor logs long collections and only those."""

from __future__ import annotations

import gc
import logging

import pytest

from zkpy.server.gcpause import GcPauses


def test_a_long_collection_is_logged_and_a_short_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    monitor = GcPauses(threshold=0.05)
    gc.callbacks.append(monitor)
    try:
        caplog.set_level(logging.WARNING, logger="zkpy.server.gcpause")
        gc.collect(0)  # a young collection of a quiet test process: well under 50 ms
        assert monitor.long_pauses == 0 and not caplog.records
        gc.disable()  # no automatic collection while the hoard is built
        hoard = [[i] for i in range(2_000_000)]  # two million tracked lists: a full walk is slow
        gc.collect()
        del hoard
    finally:
        gc.enable()
        gc.callbacks.remove(monitor)
    assert monitor.long_pauses == 1, monitor.longest
    assert "garbage collection of generation 2 held this server for" in caplog.text
