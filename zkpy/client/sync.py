"""A blocking facade for threaded programs: the same methods, with trio running in a background thread.

    with SyncClient("127.0.0.1:2181") as zk:
        zk.create("/jobs/a", b"x", makepath=True)
        data, stat = zk.get("/jobs/a", watch=print)

Watch callbacks and state listeners run in a worker thread, one at a time and in order (the event
task waits for each), so they may call the blocking methods themselves.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import trio

from zkpy.client.client import Client, Transaction, connect

_BLOCKING = frozenset(
    {
        "create",
        "ensure_path",
        "get",
        "get_config",
        "exists",
        "set",
        "delete",
        "get_children",
        "sync",
        "get_acls",
        "set_acls",
        "get_all_children_number",
        "whoami",
        "add_watch",
        "remove_watches",
        "add_auth",
        "wait_connected",
        "multi",
    }
)


class SyncTransaction:
    def __init__(self, client: SyncClient, txn: Transaction) -> None:
        self._client = client
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._txn, name)

        @functools.wraps(method)
        def chained(*args: Any, **kwargs: Any) -> SyncTransaction:
            method(*args, **kwargs)
            return self

        return chained

    def commit(self) -> list[Any]:
        return self._client._run(self._txn.commit)


class SyncClient:
    """Connects on construction; `close()` (or leaving the `with` block) ends the session."""

    def __init__(self, hosts: str, timeout: float = 10.0, **options: Any) -> None:
        self._client: Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._wrapped: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, hosts, timeout, options), name="zkpy-client", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def _main(self, hosts: str, timeout: float, options: dict[str, Any]) -> None:
        self._stop = trio.Event()
        try:
            async with connect(hosts, timeout, **options) as client:
                self._client = client
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # hand the failure to the constructor's thread
            self._error = exc
        finally:
            self._ready.set()

    def _run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return trio.from_thread.run(functools.partial(func, *args, **kwargs), trio_token=self._token)

    def _in_thread(self, callback: Callable[..., Any]) -> Any:
        """The same user callback always maps to the same wrapper, so watches dedupe and remove."""
        wrapper = self._wrapped.get(callback)
        if wrapper is None:

            async def wrapper(item: Any) -> None:
                await trio.to_thread.run_sync(callback, item)

            self._wrapped[callback] = wrapper
        return wrapper

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("_client")
        if client is None:
            raise AttributeError(name)
        if name not in _BLOCKING:
            return getattr(client, name)
        method = getattr(client, name)

        @functools.wraps(method)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("watch") is not None:
                kwargs["watch"] = self._in_thread(kwargs["watch"])
            if name == "add_watch":
                args = (args[0], self._in_thread(args[1]), *args[2:])
            if name == "remove_watches" and kwargs.get("callback") is not None:
                kwargs["callback"] = self._in_thread(kwargs["callback"])
            return self._run(method, *args, **kwargs)

        return blocking

    def add_listener(self, callback: Callable[[Any], Any]) -> None:
        assert self._client is not None
        self._client.add_listener(self._in_thread(callback))

    def remove_listener(self, callback: Callable[[Any], Any]) -> None:
        assert self._client is not None
        self._client.remove_listener(self._in_thread(callback))

    def restart(self) -> None:
        """After EXPIRED: open a fresh session."""
        assert self._client is not None
        trio.from_thread.run_sync(self._client.restart, trio_token=self._token)

    def transaction(self) -> SyncTransaction:
        assert self._client is not None
        return SyncTransaction(self, self._client.transaction())

    def close(self) -> None:
        if self._thread.is_alive() and self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
