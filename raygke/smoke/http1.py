"""A lean HTTP/1.1 keep-alive client for unary load: as little Python per request as honest timing allows.

Owns: reading responses (`ResponseParser`, on httptools' C parser, llhttp: bodies framed by
`Content-Length`, `Transfer-Encoding: chunked` or the end of the connection, interim 1xx responses
skipped), and a pool of persistent connections (`HttpPool`) on asyncio Protocols: a request is
bytes built once, written to an idle connection (or a new one), and answered by one Future.
A closed-loop user keeps reusing one connection; open loop opens one per request in flight.
Does not own: error names, timings or what a status means (transport.py), or SSE streams (those go
through aiohttp in transport.py).

Not supported, because the load never sends them: pipelining, HEAD, `Expect: 100-continue`,
content codings (no `Accept-Encoding` is sent, so a compliant server answers with identity).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import cast
from urllib.parse import urlsplit

import httptools

# A head larger than this (status line and header fields) is refused, not buffered forever.
MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response this client can read."""


class ServerDisconnected(ConnectionError):
    """The server closed the connection before any byte of the response came."""


class Response:
    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.body = body
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes, keep_alive={self.keep_alive})"


def _ends_with_close(fields: dict[bytes, bytes]) -> bool:
    """Whether a response with these header fields has its body ended by the connection's close
    (llhttp's rule: neither a Content-Length nor a final `chunked` coding)."""
    lower = {name.lower(): value for name, value in fields.items()}
    coding = lower.get(b"transfer-encoding")
    if coding is not None:
        return coding.rsplit(b",", 1)[-1].strip().lower() != b"chunked"
    return b"content-length" not in lower


class ResponseParser:
    """Incremental: `feed` each piece the connection delivers; a complete response comes back once.

    httptools (llhttp) does the parsing and calls back here. Bytes after a complete response (a
    server that answers what was not asked) stop the parser and make that response not
    `keep_alive`, so its connection is dropped rather than misread later. llhttp is strict where
    a response is ambiguous: a repeated Content-Length, or one beside Transfer-Encoding, is a
    ProtocolError.
    """

    def __init__(self) -> None:
        self._fields: dict[bytes, bytes] = {}  # the current head's fields, for `feed_eof` only
        self._parts: list[bytes] = []  # the current body's pieces
        # Called from C with C callables: no Python frame per header field or body piece.
        self.on_header = self._fields.__setitem__
        self.on_body = self._parts.append
        self._status = 0
        self._keep_alive = False
        self._in_body = False  # the current response's head is complete, its body is not
        self._head_bytes = 0  # fed while a head was incomplete
        self._response: Response | None = None  # completed by the `feed_data` in progress
        self.started = False  # any byte of the current response received
        self._parser = httptools.HttpResponseParser(self)

    # httptools' callbacks, from inside `feed_data`.

    def on_message_begin(self) -> None:
        if self._response is not None:
            raise ProtocolError("bytes after a complete response")  # ends `feed_data`
        self._fields.clear()

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        self._in_body = True
        self._head_bytes = 0

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): no body, not the answer
        self._response = Response(self._status, b"".join(self._parts), self._keep_alive)
        self._parts.clear()
        self.started = False

    def feed(self, data: bytes) -> Response | None:
        if not data:
            return None
        self.started = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._response is None:
                raise ProtocolError(self._why(exc)) from exc
            self._response.keep_alive = False  # what came after it is not to be read
        response = self._response
        if response is None:
            if not self._in_body:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    raise ProtocolError(f"response head over {MAX_HEAD} bytes")
            return None
        self._response = None
        return response

    def _why(self, exc: Exception) -> str:
        if self._status == 101:
            return "101 Switching Protocols: nothing here upgrades"
        return str(exc) or type(exc).__name__

    def feed_eof(self) -> Response | None:
        """The server closed: the response it ends, or None when none had begun."""
        if not self.started:
            return None
        if self._in_body and _ends_with_close(self._fields):
            response = Response(self._status, b"".join(self._parts), False)
            self._parts.clear()
            self._in_body = self.started = False
            return response
        raise ProtocolError("connection closed in the middle of a response")


Outcome = Response | BaseException
# Gets a request's response, or the exception that ended it (TimeoutError, ConnectionError,
# ProtocolError, OSError), always from an event-loop callback, never from inside `submit`.
Callback = Callable[[Outcome], None]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; at most one request in flight on it."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.closed = False
        # The request in flight: its callback (None when idle), bytes, and what a retry needs.
        self.callback: Callback | None = None
        self.request = b""
        self.idempotent = False
        self.reused = False
        self.deadline = 0.0  # time.monotonic() by which its response must be read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.connections.add(self)

    def send(
        self, request: bytes, idempotent: bool, reused: bool, deadline: float, callback: Callback
    ) -> None:
        self.callback = callback
        self.request = request
        self.idempotent = idempotent
        self.reused = reused
        self.deadline = deadline
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            response = self.parser.feed(data)
        except ProtocolError as exc:
            self.fail(exc)
            return
        if response is not None:
            if not response.keep_alive:
                self.close()
            if self.callback is None:  # nothing was asked: the connection cannot be trusted
                self.fail(ProtocolError(f"unsolicited {response!r}"))
            else:
                self._finish(response)

    def eof_received(self) -> bool:
        try:
            response = self.parser.feed_eof()
        except ProtocolError as exc:
            self.fail(exc)
            return False
        self.close()
        if response is not None and self.callback is not None:  # a body ended by the close
            self._finish(response)
        self.fail(ServerDisconnected("the server closed the connection"))
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ServerDisconnected("the connection was closed"))
        self.pool.connections.discard(self)

    def fail(self, exc: BaseException) -> None:
        """Close the connection; a request in flight on it gets `exc`."""
        self.close()
        if self.callback is not None:
            self._finish(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, outcome: Outcome) -> None:
        callback = self.callback
        assert callback is not None
        self.callback = None
        self.pool.finished(self, callback, outcome)


def _resolve(waiter: asyncio.Future[Response], outcome: Outcome) -> None:
    if waiter.done():  # the caller stopped waiting (cancelled)
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)


class HttpPool:
    """Persistent connections to one origin; an idle one serves the next request (LIFO).

    `submit` takes a callback (a closed-loop user chains its next request from it: no Future and
    no task switch per request); `fetch` is the same as a coroutine.
    `opened` counts connections made: above the number of concurrent requests when the server
    closed some (each reconnect is one more). Timeouts: one watchdog per pool, every
    `timeout_s / 20` (50 ms at most), fails requests past their deadline: a timer per request
    would cost as much as the rest of the client's Python per request.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._authority = host if default_port else f"{host}:{self.port}"
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.timeout_s = timeout_s
        self.opened = 0
        self.connections: set[_Connection] = set()  # open ones, idle or busy
        self._idle: list[_Connection] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._tick = min(0.05, timeout_s / 20)
        self._watchdog: asyncio.TimerHandle | None = None

    def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> bytes:
        """The bytes of one request, built once and sent as they are every time."""
        lines = [
            f"{method} {self.base}{target} HTTP/1.1",
            f"Host: {self._authority}",
            "User-Agent: raygke-smoke",
            "Accept: */*",
        ]
        if body is not None:
            if content_type:
                lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def submit(self, request: bytes, callback: Callback, idempotent: bool = True) -> None:
        """Send `request`; `callback` gets the whole response, within `timeout_s`, or the error.

        A reused connection the server closed before answering (a keep-alive race) gets one more
        try on a new connection, for an idempotent request, as browsers and aiohttp do.
        """
        deadline = time.monotonic() + self.timeout_s
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.send(request, idempotent, True, deadline, callback)
                return
        self._connect_then_send(request, idempotent, deadline, callback)

    async def fetch(self, request: bytes, idempotent: bool = True) -> Response:
        """`submit` as a coroutine: the response, or the error raised."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.submit(request, partial(_resolve, waiter), idempotent)
        return await waiter

    def finished(self, conn: _Connection, callback: Callback, outcome: Outcome) -> None:
        """From a connection: its request's outcome."""
        if isinstance(outcome, Response):
            if outcome.keep_alive and not conn.closed:
                self._idle.append(conn)
        elif (
            isinstance(outcome, ConnectionError)
            and conn.reused
            and conn.idempotent
            and not conn.parser.started
        ):
            self._connect_then_send(conn.request, True, conn.deadline, callback)
            return
        callback(outcome)

    def _connect_then_send(
        self, request: bytes, idempotent: bool, deadline: float, callback: Callback
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._tick, self._watch, loop)
        task = loop.create_task(self._open(request, idempotent, deadline, callback))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(
        self, request: bytes, idempotent: bool, deadline: float, callback: Callback
    ) -> None:
        loop = asyncio.get_running_loop()
        connect = loop.create_connection(
            lambda: _Connection(self),
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
        )
        try:
            _, conn = await asyncio.wait_for(connect, max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # refused, unreachable, timed out
            callback(exc)
            return
        self.opened += 1
        conn.send(request, idempotent, False, deadline, callback)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        for conn in [c for c in self.connections if c.callback is not None and c.deadline <= now]:
            conn.fail(TimeoutError())
        self._watchdog = loop.call_later(self._tick, self._watch, loop)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
        self._idle.clear()
