"""What every fake shares: a threaded HTTP server on 127.0.0.1 in a daemon thread, and its lifecycle;
a quiet HTTP/1.1 request handler that reads the body and answers; the request as the fakes see it; the
scripted faults (`fail_next`) and the chaos (`chaos`) of the GitHub and Jenkins fakes."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

JSON_TYPE = "application/json; charset=utf-8"

_Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(headers: _Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


class Request:
    """One request: method, path (no query), query (the last value of each name), raw body, headers;
    `user` is set once the fake has authenticated it."""

    def __init__(self, method: str, path: str, query: dict[str, str], body: bytes, headers: Any) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.headers = headers
        self.user: str | None = None

    def recorded(self) -> tuple[str, str, dict[str, str], str]:
        """What the fakes keep in `requests`: (method, path, query, body as text)."""
        return (self.method, self.path, dict(self.query), self.body.decode("utf-8", "replace"))


_R = TypeVar("_R", bound=Request)


@dataclass
class FailRule:
    """Answer the next `times` requests with `method` (None: any) whose path holds `path_contains` with
    `status`; with `after_effect` the request is served first and only its answer is lost."""

    status: int
    method: str | None
    path_contains: str
    times: int
    after_effect: bool


_F = TypeVar("_F", bound=FailRule)


def take_fail_rule(rules: list[_F], req: Request) -> _F | None:
    """The first of `rules` that matches `req`, used once (removed from `rules` when its times are up)."""
    for rule in rules:
        if rule.method is not None and rule.method.upper() != req.method:
            continue
        if rule.path_contains not in req.path:
            continue
        rule.times -= 1
        if rule.times <= 0:
            rules.remove(rule)
        return rule
    return None


#: What `chaos(rate, seed, path_contains)` keeps: the share of requests, its generator, the paths it hits.
Chaos = tuple[float, random.Random, str]


def chaos_strikes(chaos: Chaos | None, req: Request) -> random.Random | None:
    """The chaos' generator when it strikes `req` (a path it hits, and a draw under its rate); else None."""
    if chaos and chaos[0] > 0 and chaos[2] in req.path and chaos[1].random() < chaos[0]:
        return chaos[1]
    return None


def chaos_failure(cls: type[_F], rng: random.Random) -> _F:
    """The 5xx chaos answers with once: 500, 502 or 503, after doing the work half the time."""
    return cls(rng.choice([500, 502, 503]), None, "", 1, rng.random() < 0.5)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 and no log lines; subclasses set `server_version` and the `do_*` methods."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_request(self, cls: type[_R]) -> _R:
        """Read the body and build `cls(method, path, query, body, headers)` from this request."""
        body = self.read_body()
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(self.command, parts.path, query, body, self.headers)

    def reply(
        self,
        status: int,
        payload: bytes,
        content_type: str | None,
        before: _Headers = (),
        after: _Headers = (),
    ) -> None:
        """Answer `status` with the headers `before`, Content-Type (unless None), Content-Length, the
        headers `after`, in that order; then `payload`, unless the request is a HEAD."""
        self.send_response(status)
        for k, v in _pairs(before):
            self.send_header(k, v)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in _pairs(after):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def reply_json(self, status: int, obj: Any, after: _Headers = ()) -> None:
        self.reply(status, json.dumps(obj).encode(), JSON_TYPE, after=after)


class LocalServer:
    """Subclasses build their request handler in `start()` and hand it to `_listen`."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __init__(self, port: int = 0) -> None:
        self._port = port

    def start(self) -> Self:
        raise NotImplementedError

    def _listen(self, handler: type[BaseHTTPRequestHandler], name: str) -> Self:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()
        return self

    def _before_stop(self) -> None:
        """Close what the server's threads hold open (websockets), before it shuts down."""

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._before_stop()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None and not self._port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port
