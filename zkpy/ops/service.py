"""Start the operator endpoints beside a server: the Prometheus endpoint and the AdminServer.

Both run in the server's own nursery and stop with it. Binding happens before the server is
announced, with Apache's behaviour on failure:

- metricsProvider.httpPort in use: the server does not start (Apache's metrics provider fails its
  start, and ZooKeeper exits), one StartupError line naming the setting;
- admin.serverPort in use: an error is logged and the server runs without an AdminServer (Apache's
  "Problem starting AdminServer"); kazoo's test harness sets admin.serverPort on every server.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from zkpy.ops.http import HttpServer, open_listeners
from zkpy.ops.source import Source
from zkpy.server.node import StartupError

if TYPE_CHECKING:
    from zkpy.server.config import ServerConfig

log = logging.getLogger(__name__)


@dataclass
class OpsListeners:
    """The bound metrics and admin sockets, ready to serve once the server exists."""

    metrics: list[trio.SocketListener] = field(default_factory=list)
    admin: list[trio.SocketListener] = field(default_factory=list)

    def urls(self) -> list[str]:
        """Banner lines: where an operator finds the endpoints."""
        lines = []
        if self.metrics:
            lines.append(f"metrics:    http://{_bound(self.metrics)}/metrics")
        if self.admin:
            lines.append(f"admin:      http://{_bound(self.admin)}/ (Apache's JSON under /commands)")
        return lines

    async def serve(self, source: Source) -> None:
        async with trio.open_nursery() as nursery:
            if self.metrics:
                from zkpy.ops import metrics  # prometheus_client is imported only when it is used

                nursery.start_soon(HttpServer("metrics", metrics.handler(source)).serve, self.metrics)
            if self.admin:
                from zkpy.ops import admin

                nursery.start_soon(HttpServer("AdminServer", admin.handler(source)).serve, self.admin)

    async def aclose(self) -> None:
        for listener in [*self.metrics, *self.admin]:
            await listener.aclose()


async def bind_ops(config: ServerConfig) -> OpsListeners:
    """Bind what zoo.cfg asks for, before the server starts (see the module docstring)."""
    ops = OpsListeners()
    if config.metrics_port is not None:
        try:
            ops.metrics = await open_listeners(config.metrics_host, config.metrics_port)
        except OSError as e:
            busy = e.errno == errno.EADDRINUSE
            raise StartupError(
                f"metricsProvider.httpPort={config.metrics_port} on {config.metrics_host} "
                + (
                    "is already in use: stop what uses it or choose another port"
                    if busy
                    else f"cannot be bound: {e}"
                )
            ) from None
    if config.admin_server_wanted:
        try:
            ops.admin = await open_listeners(config.admin_server_address, config.admin_server_port)
        except OSError as e:
            log.error(
                "AdminServer not started: admin.serverPort=%d on %s: %s (the server runs without it)",
                config.admin_server_port, config.admin_server_address, e.strerror or e,
            )  # fmt: skip
    return ops


def _bound(listeners: list[trio.SocketListener]) -> str:
    host, port = listeners[0].socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
