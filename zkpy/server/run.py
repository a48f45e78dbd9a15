"""Process entry: build a server from its config and run it until interrupted."""

from __future__ import annotations

import logging
import signal

import trio

from zkpy.server.config import ServerConfig
from zkpy.server.durable import DurableStore
from zkpy.server.node import ZooKeeperServer, open_client_listeners

log = logging.getLogger(__name__)


async def serve_until_signalled(config: ServerConfig) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
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
