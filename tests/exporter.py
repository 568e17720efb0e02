"""Stand-in HTTP servers on a free 127.0.0.1 port, served from a thread: any handler (a Ray node's
HTTP port for our tier's tests), or a Prometheus exporter's /metrics page for the tests that run a
real Prometheus without Ray."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serves `handler` on a free 127.0.0.1 port from a thread; yields the port, stops on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def exporter(page: Callable[[int], str]) -> Iterator[int]:
    """Serves `page(n)` at /metrics on the n-th scrape (from 1); yields the port, stops on exit."""
    scrapes = iter(range(1, 1_000_000))

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/metrics"
            body = page(next(scrapes)).encode() if found else b"not found\n"
            self.send_response(200 if found else 404)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Exporter) as port:
        yield port
