"""Retry an idempotent operation across connection losses, as long as the session lives."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from zkpy.errors import ConnectionLossError, OperationTimeoutError

T = TypeVar("T")


async def retry(func: Callable[..., Awaitable[T]], *args: Any, limit: float = 30.0, **kwargs: Any) -> T:
    """Call `func(*args, **kwargs)` again after ConnectionLoss, for up to `limit` seconds.

    Only for operations that are safe to repeat (reads, versioned writes, creates of known paths
    whose NodeExists the caller handles). SessionExpired and every other error pass through.
    """
    deadline = trio.current_time() + limit
    delay = 0.02
    while True:
        try:
            return await func(*args, **kwargs)
        except (ConnectionLossError, OperationTimeoutError):
            if trio.current_time() + delay > deadline:
                raise
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.5)
