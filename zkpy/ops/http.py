"""A small HTTP/1.1 server on trio for the metrics endpoint and the AdminServer.

h11 does the protocol (request parsing, keep-alive, framing); this module only moves bytes between
it and a trio stream and routes each GET to a handler. Both endpoints answer from what the server
already holds in memory, so a handler is a plain function: no request body, no streaming.

Each connection is bounded: a request head larger than h11's limit, a client that sends nothing
for IDLE_TIMEOUT, or a protocol error closes it, and the server keeps serving everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may wait for its next request
MAX_CONNECTIONS = 64  # at once; more are closed at once (a scraper or a browser needs a few)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, list[str]] = field(default_factory=dict)

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


def parse_target(method: str, target: bytes) -> Request:
    parts = urlsplit(target.decode("ascii", "replace"))
    return Request(method, unquote(parts.path) or "/", parse_qs(parts.query))


class HttpServer:
    """Serve `handler` on listeners; `name` is what the logs call it (metrics, AdminServer)."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self._open = 0

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self._open >= MAX_CONNECTIONS:
            await stream.aclose()
            return
        self._open += 1
        try:
            await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as e:
            log.debug("%s connection ended: %s", self.name, e)
        finally:
            self._open -= 1
            await stream.aclose()

    async def _converse(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                event = await self._next_event(conn, stream)
            except h11.RemoteProtocolError as e:
                # Not HTTP, or a head too large: say so (h11 lets a server answer then) and close.
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = e.error_status_hint
                    await self._send(conn, stream, Response(status, f"bad request: {e}\n".encode()), False)
                return
            if event is None:
                return
            if isinstance(event, h11.Request):
                request = parse_target(event.method.decode("ascii", "replace"), event.target)
                response = self._respond(request)
                await self._send(conn, stream, response, head_only=request.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> h11.Event | None:
        """The next request (its body, if any, is read and ignored); None when the peer is done."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_after(IDLE_TIMEOUT):
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                return None
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                return event
            # Data and EndOfMessage of a request body: GET-only endpoints ignore it.

    def _respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET\n", headers=[("Allow", "GET, HEAD")])
        try:
            return self.handler(request)
        except Exception:  # a bug in one page must not take the endpoint down
            log.exception("%s failed on %s", self.name, request.path)
            return Response(500, b"internal error\n")

    async def _send(
        self, conn: h11.Connection, stream: trio.SocketStream, response: Response, head_only: bool
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        out = conn.send(h11.Response(status_code=response.status, headers=headers))
        if not head_only and response.body:
            out += conn.send(h11.Data(data=response.body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    return list(await trio.open_tcp_listeners(port, host=host))
