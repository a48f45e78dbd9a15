"""Process entry: build a server from its config and run it until interrupted."""

from __future__ import annotations

import signal

import trio

from zkpy.server.config import ServerConfig
from zkpy.server.node import ZooKeeperServer


async def serve_until_signalled(config: ServerConfig) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    server = ZooKeeperServer(config)
    listeners = await server.open_listeners()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def run_server(config: ServerConfig) -> None:
    trio.run(serve_until_signalled, config)
