"""Process entry: build a server from its config and run it until interrupted."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import trio

from zkpy.server.config import ServerConfig
from zkpy.server.durable import DurableStore
from zkpy.server.node import StartupError, ZooKeeperServer, open_client_listeners

log = logging.getLogger(__name__)


def prepare_directory(setting: str, path: Path) -> None:
    """Create dataDir or dataLogDir, or fail with the setting, its value and what to do.

    Checked up front because the OSError that mkdir and the lock raise later names only a path,
    and an operator then has to guess which setting it came from.
    """
    fix = f"point {setting} at a directory zkpy may create"
    if path.exists() and not path.is_dir():
        raise StartupError(f"{setting}={path} is a file, not a directory: {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise StartupError(
            f"{setting}={path} cannot be created: {e.filename} is not a directory: {fix}"
        ) from None
    except OSError as e:
        raise StartupError(
            f"{setting}={path} cannot be created ({e.strerror}: {e.filename}): {fix}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"{setting}={path} is not writable by this user: {fix}, or give it write access")


async def serve_until_signalled(config: ServerConfig) -> None:
    prepare_directory("dataDir", config.data_dir)
    if config.data_log_dir != config.data_dir:
        prepare_directory("dataLogDir", config.data_log_dir)
    # Bind first: a port in use or a bad TLS setup fails at once, before a long recovery.
    listeners = await open_client_listeners(config)
    store = DurableStore(config)
    tree = store.recover()
    server = ZooKeeperServer(config, persist=store.persist, tree=tree)
    server.pipeline.after_batch = lambda: store.maybe_snapshot(tree)
    server.metric_sources.append(store.metrics)
    try:
        await _serve(server, store, listeners)
    finally:
        store.close()


async def _serve(
    server: ZooKeeperServer, store: DurableStore, listeners: list[trio.abc.Listener[trio.abc.Stream]]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.reap_snapshots)
        nursery.start_soon(store.autopurge)
        await nursery.start(server.serve, listeners)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


def run_server(config: ServerConfig) -> None:
    trio.run(serve_until_signalled, config)
