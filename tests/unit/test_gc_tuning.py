"""The server's cycle-collector settings (zkpy.server.run._freeze_startup_heap)."""

from __future__ import annotations

import gc

from zkpy.server import run


def test_the_server_collects_the_young_generation_rarely() -> None:
    """Fails before the threshold was raised: with Python's default (700) and 10,000 idle sessions pinging,
    young collections walked ~60k live objects each and full collections of the whole heap followed every
    few seconds (pings unanswered for 1.5-6.6 s; one run lost every session). scripts/bench_idle_sessions.py
    measures it; this checks the setting the server starts with."""
    before = gc.get_threshold()
    try:
        run._freeze_startup_heap()
        assert gc.get_threshold() == (run.GC_YOUNG_THRESHOLD, *before[1:])
        assert run.GC_YOUNG_THRESHOLD >= 50_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
