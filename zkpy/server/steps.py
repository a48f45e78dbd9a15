"""Long work in steps: how a request that grows with its input keeps within the event loop's budget.

Work that is proportional to what a client sent (the paths of a setWatches, the watches of a closing
connection) is written as a generator that yields every few hundred items; `run_in_steps` runs it and
lets the other tasks run whenever STEP_BUDGET has passed since they last could. Yielding by time,
not by count, keeps the stall bounded on a loaded machine too, and costs nothing when the work is small.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import trio

STEP_BUDGET = 0.005  # seconds of work between two chances for the other tasks to run


async def run_in_steps(steps: Iterable[None], budget: float = STEP_BUDGET) -> None:
    """Exhaust `steps`, checkpointing whenever `budget` seconds of it have run."""
    clock = time.perf_counter
    last = clock()
    for _ in steps:
        now = clock()
        if now - last >= budget:
            await trio.sleep(0)
            last = clock()
