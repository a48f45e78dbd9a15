"""The blocking facade, used from plain threads."""

from __future__ import annotations

import threading

import pytest
import trio

from zkpy import errors
from zkpy.client import EventType, State, WatchedEvent
from zkpy.client.sync import SyncClient


def run_in_thread(fn: object) -> object:
    return trio.to_thread.run_sync(fn)  # type: ignore[arg-type]


async def test_blocking_facade_has_the_same_methods_and_runs_callbacks_in_a_thread(hosts: str) -> None:
    def scenario() -> None:
        with SyncClient(hosts, timeout=2.0) as zk:
            assert zk.state is State.CONNECTED
            assert zk.create("/a/b", b"x", makepath=True) == "/a/b"
            data, stat = zk.get("/a/b")
            assert data == b"x" and stat.version == 0
            fired: list[WatchedEvent] = []
            done = threading.Event()

            def on_change(event: WatchedEvent) -> None:
                # a callback may use the blocking API itself
                fired.append(event)
                fired.append(zk.get("/a/b")[0])  # type: ignore[arg-type]
                done.set()

            zk.get("/a/b", watch=on_change)
            zk.set("/a/b", b"y")
            assert done.wait(5)
            assert fired == [WatchedEvent(EventType.CHANGED, "/a/b"), b"y"]
            assert zk.transaction().create("/a/c").check("/a/b", 1).commit() == ["/a/c", True]
            with pytest.raises(errors.NoNodeError):
                zk.delete("/nope")
            zk.delete("/a", recursive=True)
            assert zk.exists("/a") is None

    await trio.to_thread.run_sync(scenario)


async def test_blocking_facade_reports_a_failed_connect() -> None:
    def scenario() -> None:
        with pytest.raises(errors.ConnectionLossError):
            SyncClient("127.0.0.1:1", timeout=1.0, start_timeout=0.5)

    await trio.to_thread.run_sync(scenario)
