"""A TCP proxy for tests: cut every connection through it, or freeze them (a server that hangs)."""

from __future__ import annotations

import trio

from zkpy.testing.faultproxy import Listening


class Proxy(Listening):
    """Forwards 127.0.0.1:port to a target; `cut()` drops connections, `frozen` stops the bytes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.frozen = False
        self.refuse = False
        self.connections = 0
        self.upstream = bytearray()  # every byte clients sent through us, for counting pings
        self._scopes: list[trio.CancelScope] = []

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refuse:
            await client.aclose()
            return
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                server = await trio.open_tcp_stream(*self.target)
            except OSError:
                await client.aclose()
                return
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server, nursery.cancel_scope, self.upstream)
                nursery.start_soon(self._pump, server, client, nursery.cancel_scope, None)
        if scope in self._scopes:
            self._scopes.remove(scope)

    async def _pump(
        self,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        scope: trio.CancelScope,
        record: bytearray | None,
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                if record is not None:
                    record += data
                while self.frozen:
                    await trio.sleep(0.01)
                await dst.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()
