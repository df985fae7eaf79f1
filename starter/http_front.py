"""The Slack bridge's HTTP front: one Starlette app on uvicorn, bounded against slow and oversized clients.

Routes of the one app (`make_asgi_app`):
- `POST /slack/events`: Slack's events, interactivity (button clicks) and slash commands, to Bolt;
- `GET /healthz`: `ok`, answered on the event loop, touching neither Bolt nor Temporal;
- whatever `extra_routes` the caller mounts, as Starlette routes, for instance webhooks:
  `make_asgi_app(bolt_app, extra_routes=[Route("/webhooks/x", handler, methods=["POST"])])`.
  They get the same bounds; a route on `/slack/events` or `/healthz` is refused (ValueError).

Bolt's sync `App` is kept, so its middleware (signature check, the bridge's replay guard) and the bridge's
listeners and Temporal runner work as they did. Bolt's Starlette adapter
(`slack_bolt.adapter.starlette.handler`) gives the response conversion; its `SlackRequestHandler.handle`
would call the blocking `App.dispatch` on the event loop (dispatch waits for the listener's `ack()`), so
the front runs `dispatch` in Starlette's thread pool instead. Listeners run in Bolt's own executor, and
Temporal calls on the bridge's Temporal loop: nothing long runs on uvicorn's loop.

Bounds, on every route:
- **Request line and headers** must arrive within `READ_TIMEOUT` seconds of the connection opening (or of
  its previous response), else the connection is closed unanswered (`_HeaderDeadline`: uvicorn has no
  such timeout, and an idle or dribbling connection counts against `LIMIT_CONCURRENCY`). At most
  `MAX_HEADER` bytes of them (h11's incomplete-event limit): more is answered 400.
- **Body**: a declared `Content-Length` over `MAX_BODY` is answered 413 at once, unread, and the connection
  closed; a chunked body is cut off with 413 when it passes `MAX_BODY`. The whole body must arrive within
  `READ_TIMEOUT` seconds of the headers, else 408 and the connection closed (`RequestBounds`).
- **Connections**: uvicorn's `limit_concurrency`: a request that arrives while `LIMIT_CONCURRENCY`
  connections (itself included) are open, or that many requests are being handled, is answered 503.
- **Keep-alive**: an idle kept-alive connection is closed after `KEEP_ALIVE` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.starlette.handler import to_starlette_response
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("deployctl.slack.http")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
MAX_BODY = 1 << 20  # Slack's payloads are far smaller; anything bigger is not Slack
MAX_HEADER = 16 * 1024  # the request line and headers, in bytes (Slack sends well under 2 KiB)
READ_TIMEOUT = 10.0  # seconds for the request line and headers, and again for the body; then cut off
LIMIT_CONCURRENCY = 64  # open connections (or requests in hand) at most; past it, 503
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open
GRACEFUL_SHUTDOWN = 10  # seconds requests in hand get to finish on stop (compose waits 30 s)


# ----------------------------------------------------------------------------------------- the app


def make_asgi_app(
    bolt_app: App,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    max_body: int = MAX_BODY,
    read_timeout: float = READ_TIMEOUT,
) -> ASGIApp:
    """The one ASGI app: Bolt on POST /slack/events, GET /healthz, then `extra_routes`, all bounded by
    `RequestBounds`."""
    for route in extra_routes:
        if getattr(route, "path", None) in (EVENTS_PATH, HEALTH_PATH):
            raise ValueError(f"{getattr(route, 'path', '')} is the front's own route; mount another path")

    async def slack_events(request: Request) -> Response:
        body = await request.body()  # already read whole by RequestBounds, within its bounds
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return PlainTextResponse("not UTF-8\n", status_code=400)
        headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():  # every value of a repeated header, as Bolt takes them
            headers.setdefault(key.lower(), []).append(value)
        bolt_headers: dict[str, str | Sequence[str]] = dict(headers.items())
        try:  # Bolt parses the body first (form, `payload=` JSON or JSON), before it checks the signature
            bolt_request = BoltRequest(body=text, query=request.url.query, headers=bolt_headers)
        except ValueError:
            return PlainTextResponse("not a Slack request body\n", status_code=400)
        # Blocking: the signature check, the replay guard and the wait for the listener's ack().
        bolt_response = await run_in_threadpool(bolt_app.dispatch, bolt_request)
        return to_starlette_response(bolt_response)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes: list[BaseRoute] = [
        Route(EVENTS_PATH, slack_events, methods=["POST"]),
        Route(HEALTH_PATH, healthz, methods=["GET"]),
        *extra_routes,
    ]
    middleware = [Middleware(RequestBounds, max_body=max_body, read_timeout=read_timeout)]
    return Starlette(routes=routes, middleware=middleware)


class RequestBounds:
    """ASGI middleware: the request's body is read whole, within `read_timeout` seconds and `max_body`
    bytes, before the app sees the request; the app then gets it in one message.

    Over `max_body` by its Content-Length: 413 at once, the body unread. Over it while reading (chunked):
    413. Not whole within `read_timeout`: 408. Each closes the connection (`Connection: close`), so
    nothing more is read from it. A client that disconnects while sending gets nothing."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY, read_timeout: float = READ_TIMEOUT) -> None:
        self.app, self.max_body, self.read_timeout = app, max_body, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = {v.strip() for k, v in scope["headers"] if k.lower() == b"content-length"}
        if any(v.isdigit() and int(v) > self.max_body for v in lengths):  # h11 refused bad values already
            await _refuse(send, 413, f"request too large (at most {self.max_body} bytes)")
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await self._read(receive)
        except TimeoutError:
            log.info("%s: no whole body within %gs; answered 408", _client(scope), self.read_timeout)
            await _refuse(send, 408, f"the request body did not arrive within {self.read_timeout:g}s")
            return
        except _TooLarge:
            await _refuse(send, 413, f"request too large (at most {self.max_body} bytes)")
            return
        except _Gone:
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect comes

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # uvicorn closes after the response: the rest stays unread
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"


# ---------------------------------------------------------------------------------------- the server


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request's line and headers: from the connection's
    opening, and from each response's end, `header_timeout` seconds until a whole request head is in; then
    the connection is closed unanswered. (uvicorn times only the idle wait after a response.)"""

    header_timeout: float = READ_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a whole request head came in
            self._disarm()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # may start a pipelined request
        if self.cycle is cycle and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("%s: no whole request head within %gs; closed", self.client, self.header_timeout)
            self.transport.close()


class _NoColour(logging.Filter):
    """uvicorn adds an ANSI-coloured copy of some messages (`color_message`); the JSON logs want none."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def _quiet_colours() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoColour) for f in logger.filters):
            logger.addFilter(_NoColour())


@dataclass(frozen=True)
class Limits:
    """The front's bounds (module docstring); the defaults are what `deployctl slack` runs with."""

    read_timeout: float = READ_TIMEOUT
    max_body: int = MAX_BODY
    max_header: int = MAX_HEADER
    limit_concurrency: int = LIMIT_CONCURRENCY
    keep_alive: int = KEEP_ALIVE
    graceful_shutdown: int = GRACEFUL_SHUTDOWN


class HttpFront:
    """uvicorn serving `app` on host:port, in a thread of its own, so the caller keeps the signals.

    The socket is bound here (an OSError when the port is taken); `start()` serves, `stop()` stops
    listening, lets requests in hand finish (up to `graceful_shutdown` seconds) and returns."""

    def __init__(self, app: ASGIApp, host: str, port: int, limits: Limits = Limits()) -> None:
        self.limits = limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        protocol = type("BoundedH11Protocol", (_HeaderDeadline,), {"header_timeout": limits.read_timeout})
        self.config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
            log_config=None,  # the bridge's own logging (starter/logs.py) stays as it is
            server_header=False,
            limit_concurrency=limits.limit_concurrency,
            timeout_keep_alive=limits.keep_alive,
            h11_max_incomplete_event_size=limits.max_header,
            timeout_graceful_shutdown=limits.graceful_shutdown,
        )
        self.server = uvicorn.Server(self.config)
        _quiet_colours()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="deployctl-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP front did not start (see the log)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.limits.graceful_shutdown + 5)
        self._socket.close()

    def __enter__(self) -> HttpFront:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def make_front(
    bolt_app: App, host: str, port: int, *, extra_routes: Sequence[BaseRoute] = (), limits: Limits = Limits()
) -> HttpFront:
    """The bridge's front for `bolt_app` on host:port (not started yet), with `extra_routes` mounted."""
    app = make_asgi_app(
        bolt_app, extra_routes=extra_routes, max_body=limits.max_body, read_timeout=limits.read_timeout
    )
    return HttpFront(app, host, port, limits)
