"""What every fake shares: a threaded HTTP server on 127.0.0.1 in a daemon thread, and its lifecycle."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


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
