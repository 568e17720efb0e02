"""A lean HTTP/1.1 keep-alive client for unary load: as little Python per request as honest timing allows.

Owns: parsing responses (`ResponseParser`: status line, `Connection`, bodies framed by
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
import re
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import cast
from urllib.parse import urlsplit

# A head larger than this (status line and header fields) is refused, not buffered forever.
MAX_HEAD = 64 * 1024
# Body framing, besides a Content-Length (>= 0).
CHUNKED = -1
UNTIL_CLOSE = -2
_HEX = b"0123456789abcdefABCDEF"
# "HTTP/1.1 200 OK"; the reason phrase may be empty, and its space too.
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?:[ \r]|\Z)")


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


def _field(fields: bytes, name: bytes) -> bytes | None:
    """The value of header `name` in lower-cased `fields`; repeated fields joined by `,`.

    `name` is `\r\n<name>:`, so it only matches at the start of a line.
    """
    at = fields.find(name)
    if at < 0:
        return None
    start = at + len(name)
    end = fields.find(b"\r\n", start)
    if end < 0:
        end = len(fields)
    value = fields[start:end].strip()
    at = fields.find(name, end)
    while at >= 0:  # rare: the field repeated
        start = at + len(name)
        end = fields.find(b"\r\n", start)
        if end < 0:
            end = len(fields)
        value += b"," + fields[start:end].strip()
        at = fields.find(name, end)
    return value


def parse_head(head: bytes) -> tuple[int, bool, int]:
    """(status, keep_alive, framing) from a response head without its final blank line.

    framing: the Content-Length, or `CHUNKED`, or `UNTIL_CLOSE` (no length: the body ends with
    the connection, which cannot then be reused).
    """
    line = _STATUS_LINE.match(head)
    if line is None:
        first = head.split(b"\r", 1)[0][:80]
        raise ProtocolError(f"bad status line {first!r}")
    status = int(line[2])
    keep_alive = line[1] != b"0"  # HTTP/1.1 persists unless told; 1.0 only when told
    fields = head.lower()  # names are matched with their `\r\n`: never in the status line
    if b"\r\nconnection:" in fields:
        connection = _field(fields, b"\r\nconnection:") or b""
        tokens = {token.strip() for token in connection.split(b",")}
        if b"close" in tokens:
            keep_alive = False
        elif b"keep-alive" in tokens:
            keep_alive = True
    if status < 200 or status == 204 or status == 304:
        return status, keep_alive, 0
    length = _field(fields, b"\r\ncontent-length:")
    if b"\r\ntransfer-encoding:" in fields:
        coding = _field(fields, b"\r\ntransfer-encoding:") or b""
        if coding.rsplit(b",", 1)[-1].strip() != b"chunked":
            return status, False, UNTIL_CLOSE
        # Both headers: chunked wins, and the connection is not to be trusted afterwards.
        return status, keep_alive and length is None, CHUNKED
    if length is None:
        return status, False, UNTIL_CLOSE
    if not length.isdigit():
        # `n, n` (a repeated field) is allowed when every value is the same.
        values = {value.strip() for value in length.split(b",")}
        if len(values) != 1:
            raise ProtocolError(f"conflicting Content-Length {length[:80]!r}")
        length = values.pop()
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length {length[:80]!r}")
    if len(length) > 18:
        raise ProtocolError(f"Content-Length too large {length[:80]!r}")
    return status, keep_alive, int(length)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
    if not size or size.strip(_HEX) or len(size) > 15:
        raise ProtocolError(f"bad chunk size line {line[:80]!r}")
    return int(size, 16)


class ResponseParser:
    """Incremental: `feed` each piece the connection delivers; a complete response comes back once.

    Bytes after a complete response (a server that answers what was not asked) make that response
    not `keep_alive`, so its connection is dropped rather than misread later.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = b""  # bytes not consumed yet: a partial head or chunked framing
        self._status = 0
        self._keep_alive = False
        self._framing: int | None = None  # None: still reading the head
        self._need = 0  # Content-Length bytes still to come
        self._parts: list[bytes] = []
        self.started = False  # any byte of the current response received

    def feed(self, data: bytes) -> Response | None:
        if not data:
            return None
        self.started = True
        if self._buf:
            buf = self._buf + data
            self._buf = b""
        else:
            buf = data
        pos = 0
        while self._framing is None:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_HEAD:
                    raise ProtocolError(f"response head over {MAX_HEAD} bytes")
                self._buf = buf[pos:]
                return None
            status, keep_alive, framing = parse_head(buf[pos:end])
            pos = end + 4
            if status < 200:
                if status == 101:
                    raise ProtocolError("101 Switching Protocols: nothing here upgrades")
                continue  # an interim response (100 Continue, 103 Early Hints): no body
            self._status, self._keep_alive, self._framing = status, keep_alive, framing
            self._need = max(framing, 0)
        framing = self._framing
        if framing >= 0:
            stop = pos + self._need
            if len(buf) < stop:
                self._parts.append(buf[pos:])
                self._need = stop - len(buf)
                return None
            if self._parts:
                self._parts.append(buf[pos:stop])
                return self._done(b"".join(self._parts), len(buf) > stop)
            return self._done(buf[pos:stop], len(buf) > stop)  # the common case: one piece
        if framing == CHUNKED:
            return self._chunked(buf[pos:] if pos else buf)
        self._parts.append(buf[pos:])  # UNTIL_CLOSE
        return None

    def _chunked(self, buf: bytes) -> Response | None:
        # Only a whole chunk (size line, data, CRLF) is consumed; the rest waits for more bytes.
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > MAX_HEAD:
                    raise ProtocolError("chunk size line too long")
                break
            size = _chunk_size(buf[pos:eol])
            if size == 0:  # the last chunk, then trailer fields (ignored) up to a blank line
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    end = eol + 4
                else:
                    found = buf.find(b"\r\n\r\n", eol + 2)
                    if found < 0:
                        if len(buf) - eol > MAX_HEAD:
                            raise ProtocolError(f"trailers over {MAX_HEAD} bytes")
                        break
                    end = found + 4
                return self._done(b"".join(self._parts), len(buf) > end)
            start = eol + 2
            stop = start + size
            if len(buf) < stop + 2:
                break
            if buf[stop : stop + 2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
            self._parts.append(buf[start:stop])
            pos = stop + 2
        self._buf = buf[pos:]
        return None

    def _done(self, body: bytes, more: bool) -> Response:
        """The response complete; `more`: bytes came after it."""
        response = Response(self._status, body, self._keep_alive and not more)
        self._framing = None
        self.started = False
        if self._parts:
            self._parts = []
        return response

    def feed_eof(self) -> Response | None:
        """The server closed: the response it ends, or None when none had begun."""
        if not self.started:
            return None
        if self._framing == UNTIL_CLOSE:
            response = Response(self._status, b"".join(self._parts), False)
            self._reset()
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
