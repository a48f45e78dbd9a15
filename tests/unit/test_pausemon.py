"""The pause monitor reports a stalled event loop with the code that held it."""

from __future__ import annotations

import logging
import time

import pytest
import trio

from zkpy.server.pausemon import PauseMonitor


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a long synchronous computation does to every other task


async def test_a_stall_is_reported_with_its_stack_and_its_length(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.pausemon")
    monitor = PauseMonitor(threshold=0.3, beat=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        await trio.sleep(0.3)
        assert monitor.stalls == 0  # an idle loop beats on time
        hold_the_loop(1.0)
        await trio.sleep(0.3)  # the loop runs again: the thread sees the beat
        nursery.cancel_scope.cancel()
    assert monitor.stalls == 1
    assert 0.8 < monitor.longest < 2.0
    assert "the event loop has not run for" in caplog.text and "hold_the_loop" in caplog.text
    assert "ran again after a stall of" in caplog.text
