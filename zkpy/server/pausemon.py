"""Stalls of the event loop, reported with where it was (the spirit of Apache's JvmPauseMonitor).

One trio task notes the time every BEAT; a thread checks the note and, when the loop has not run
for THRESHOLD, logs once per stall the main thread's stack at that moment, and how long the stall
lasted when the loop runs again. A stack inside trio's I/O wait means the process itself was not
scheduled (a starved CPU, SIGSTOP, swapping); any other stack is the code that held the loop.
A stalled loop is what clients see as a stall and peers as silence, so an operator wants both.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback

import trio

log = logging.getLogger(__name__)

BEAT = 0.1
THRESHOLD = 1.0
# A benchmark may ask for shorter stalls to be reported (milliseconds).
THRESHOLD_ENV = "ZKPY_PAUSE_THRESHOLD_MS"


def threshold_from_env() -> float:
    try:
        return max(0.05, float(os.environ[THRESHOLD_ENV]) / 1000)
    except (KeyError, ValueError):
        return THRESHOLD
# Frames of trio's I/O wait: a loop stalled there was not scheduled at all.
IO_WAIT = ("get_events", "epoll", "select", "kqueue")


class PauseMonitor:
    def __init__(self, threshold: float | None = None, beat: float = BEAT) -> None:
        self.threshold = threshold_from_env() if threshold is None else threshold
        self.beat = beat
        self.stalls = 0
        self.longest = 0.0
        self._last_beat = time.monotonic()

    async def run(self) -> None:
        """Beat until cancelled, with the watching thread alongside."""
        stop = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(threading.get_ident(), stop), name="zkpy-pause-monitor", daemon=True
        )
        self._last_beat = time.monotonic()
        watcher.start()
        try:
            while True:
                self._last_beat = time.monotonic()
                await trio.sleep(self.beat)
        finally:
            stop.set()

    def _watch(self, loop_thread: int, stop: threading.Event) -> None:
        stalled_since: float | None = None
        while not stop.wait(self.beat):
            last = self._last_beat
            late = time.monotonic() - last
            if stalled_since is None and late > self.threshold:
                stalled_since = last
                self.stalls += 1
                log.warning("the event loop has not run for %.1f s; %s", late, self._where(loop_thread))
            elif stalled_since is not None and last > stalled_since:
                took = last - stalled_since
                self.longest = max(self.longest, took)
                log.warning("the event loop ran again after a stall of %.1f s", took)
                stalled_since = None

    @staticmethod
    def _where(loop_thread: int) -> str:
        frame = sys._current_frames().get(loop_thread)
        if frame is None:
            return "its thread is gone"
        stack = traceback.extract_stack(frame)
        if stack and any(name in stack[-1].name for name in IO_WAIT):
            return "it is in its I/O wait: this process was not scheduled (CPU starved, stopped or swapped)"
        return "it is in:\n" + "".join(traceback.format_list(stack[-12:])).rstrip()
