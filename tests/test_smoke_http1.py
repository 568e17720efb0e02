"""The lean HTTP/1.1 client (raygke/smoke/http1.py): response parsing (httptools) on bytes alone,
then the pool against small asyncio servers in this process (keep-alive, reconnects, timeouts,
statuses).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.http1 import (
    MAX_HEAD,
    HttpPool,
    ProtocolError,
    Response,
    ResponseParser,
    ServerDisconnected,
)
from raygke.smoke.transport import Client, HttpUnary, Result, _message

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
)


def feed_all(parser: ResponseParser, data: bytes, step: int) -> list[Response]:
    """Every response `data` completes, fed `step` bytes at a time."""
    out: list[Response] = []
    for i in range(0, len(data), step):
        response = parser.feed(data[i : i + step])
        if response is not None:
            out.append(response)
    return out


# Heads: status, keep-alive, framing --------------------------------------------------------------

CHUNKED_X = b"1\r\nx\r\n0\r\n\r\n"  # a chunked body: b"x"


def parse(head: bytes, rest: bytes, until_close: bool) -> Response:
    """The response `head` (without its blank line) then `rest` make, whole at once; with
    `until_close`, its body must be ended by the connection's close."""
    parser = ResponseParser()
    response = parser.feed(head + b"\r\n\r\n" + rest)
    if until_close:
        assert response is None
        response = parser.feed_eof()
    assert response is not None
    return response


@pytest.mark.parametrize(
    ("head", "rest", "until_close", "expect"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5", b"hello", False, (200, True, b"hello")),
        (b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH:5", b"hello", False, (200, True, b"hello")),
        (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0", b"", False, (503, True, b"")),
        (b"HTTP/1.1 200\r\nContent-Length: 1", b"x", False, (200, True, b"x")),  # no reason
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1",
            b"x",
            False,
            (200, False, b"x"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 1",
            b"x",
            False,
            (200, False, b"x"),
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1", b"x", False, (200, False, b"x")),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1",
            b"x",
            False,
            (200, True, b"x"),
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", CHUNKED_X, False, (200, True, b"x")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
            CHUNKED_X,
            False,
            (200, True, b"x"),
        ),
        # A final coding other than chunked, or no length at all: the body ends with the close.
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", b"abc", True, (200, False, b"abc")),
        (b"HTTP/1.1 200 OK\r\nServer: x", b"abc", True, (200, False, b"abc")),
        (b"HTTP/1.0 200 OK", b"", True, (200, False, b"")),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 7", b"", False, (204, True, b"")),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7", b"", False, (304, True, b"")),
        (
            b"HTTP/1.1 200 OK\r\nX-Content-Length: 9\r\nContent-Length: 4",
            b"abcd",
            False,
            (200, True, b"abcd"),
        ),
    ],
)
def test_heads(
    head: bytes, rest: bytes, until_close: bool, expect: tuple[int, bool, bytes]
) -> None:
    response = parse(head, rest, until_close)
    assert (response.status, response.keep_alive, response.body) == expect


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\nContent-Length: 1",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 1",
        b"HTTP/1.1 20 OK",
        b"ICY 200 OK\r\nContent-Length: 1",
        b"<html>",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999",
        # llhttp refuses every ambiguous length, even a repeated equal one (RFC 9110 allows both).
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
    ],
)
def test_heads_refused(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(head + b"\r\n\r\nabcd")


# ResponseParser -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_content_length_in_any_pieces(step: int) -> None:
    parser = ResponseParser()
    (response,) = feed_all(parser, OK, step)
    assert (response.status, response.body, response.keep_alive) == (200, b"hello", True)
    assert not parser.started  # ready for the next response


@pytest.mark.parametrize("step", [1, 3, 16, 1000])
def test_chunked_in_any_pieces(step: int) -> None:
    (response,) = feed_all(ResponseParser(), CHUNKED_OK, step)
    assert response.status == 200 and response.body == b"hello" + b"z" * 26
    assert response.keep_alive


def test_chunked_without_trailers_and_empty_body() -> None:
    data = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    (response,) = feed_all(ResponseParser(), data, 1)
    assert (response.status, response.body, response.keep_alive) == (500, b"", True)


def test_responses_one_after_another_on_one_parser() -> None:
    parser = ResponseParser()
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    for data in (OK, no_content, CHUNKED_OK, OK):
        response = parser.feed(data)
        assert response is not None and response.keep_alive
    assert parser.feed(no_content[:10]) is None and parser.started


@pytest.mark.parametrize("step", [1, 1000])
def test_interim_responses_are_skipped(step: int) -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    (response,) = feed_all(ResponseParser(), data, step)
    assert (response.status, response.body) == (200, b"hello")


def test_body_until_close_ends_with_eof() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome ") is None
    assert parser.feed(b"body") is None
    response = parser.feed_eof()
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (200, b"some body", False)


def test_eof_between_responses_is_not_an_error() -> None:
    parser = ResponseParser()
    assert parser.feed(OK) is not None
    assert parser.feed_eof() is None


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",
        OK[:-1],
        CHUNKED_OK[:-3],
        CHUNKED_OK[:60],
        # Not to be reused, but framed: the close cuts it short, it does not end it.
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhel",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ],
)
def test_eof_in_the_middle_of_a_response(partial: bytes) -> None:
    parser = ResponseParser()
    assert parser.feed(partial) is None
    with pytest.raises(ProtocolError, match="closed in the middle"):
        parser.feed_eof()


@pytest.mark.parametrize(
    "after",
    [
        b"HTTP/1.1 200 OK\r\n",  # the start of another response
        OK,  # a whole one: the first is the answer
        b"garbage",
    ],
)
def test_bytes_after_a_response_spend_the_connection(after: bytes) -> None:
    response = ResponseParser().feed(OK + after)
    assert response is not None and response.body == b"hello" and not response.keep_alive


def test_bytes_after_a_closing_response_keep_it() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokEXTRA"
    response = ResponseParser().feed(data)
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (200, b"ok", False)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # not hex
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",  # empty size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",  # no CRLF after data
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_malformed_responses(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(data)


@pytest.mark.parametrize("switch", [b"", b"Connection: Upgrade\r\n"])
def test_nothing_here_upgrades(switch: bytes) -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" + switch + b"\r\n"
    with pytest.raises(ProtocolError, match="101 Switching Protocols"):
        ResponseParser().feed(data)


@pytest.mark.parametrize("step", [1000, 1 << 20])
def test_a_body_larger_than_a_head_may_be(step: int) -> None:
    body = b"b" * (4 * MAX_HEAD)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    (response,) = feed_all(ResponseParser(), data, step)
    assert response.body == body and response.keep_alive


def test_a_head_that_never_ends_is_refused() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError, match="head over"):
        for _ in range(100):
            parser.feed(b"X-Filler: " + b"y" * 1000 + b"\r\n")


# Requests ---------------------------------------------------------------------------------------


def test_request_bytes() -> None:
    pool = HttpPool("http://10.0.0.1:8000/base/", 1.0)
    assert pool.request("GET", "/echo/unary?size=3") == (
        b"GET /base/echo/unary?size=3 HTTP/1.1\r\nHost: 10.0.0.1:8000\r\n"
        b"User-Agent: raygke-smoke\r\nAccept: */*\r\n\r\n"
    )
    post = HttpPool("https://example.com", 1.0).request("POST", "/r", b"{}", "application/json")
    assert post.startswith(b"POST /r HTTP/1.1\r\nHost: example.com\r\n")
    assert post.endswith(b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(ValueError, match="not an http"):
        HttpPool("ftp://x", 1.0)


# The pool against a server in this process ----------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def _serve(handler: Handler, body: Callable[[HttpPool], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = HttpPool(f"http://127.0.0.1:{port}", 2.0)
        try:
            await body(pool)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _keep_alive(responses: list[bytes]) -> Handler:
    """Answers each request on a connection with the next of `responses` (the last repeats)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while await _read_request(reader) is not None:
            writer.write(responses[min(served, len(responses) - 1)])
            served += 1
            await writer.drain()
        writer.close()

    return handler


async def _answer_once_then_drop(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answers a connection's first request, keep-alive, then closes it when the next comes
    (unanswered: the race of a server's idle timeout)."""
    if await _read_request(reader) is not None:
        writer.write(OK)
        await writer.drain()
    await _read_request(reader)  # the next request, if it comes before the close, is dropped
    writer.close()


def test_one_connection_serves_every_request_in_turn() -> None:
    statuses = [OK, CHUNKED_OK, b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"]

    async def body(pool: HttpPool) -> None:
        request = pool.request("GET", "/")
        got = [await pool.fetch(request) for _ in range(5)]
        assert [r.status for r in got] == [200, 200, 503, 503, 503]
        assert got[1].body == b"hello" + b"z" * 26 and got[2].body == b"busy"
        assert pool.opened == 1

    _serve(_keep_alive(statuses), body)


def test_a_connection_the_server_closes_is_replaced_and_counted() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await _read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def body(pool: HttpPool) -> None:
        request = pool.request("GET", "/")
        for _ in range(4):
            assert (await pool.fetch(request)).body == b"ok"
        assert pool.opened == 4

    _serve(handler, body)


def test_an_idle_connection_closed_by_the_server_gets_one_retry() -> None:
    # The server answers once per connection, keep-alive, then closes it when the next request
    # comes, unanswered (the race of a server's idle timeout): that request is sent again, once,
    # on a new connection.
    async def body(pool: HttpPool) -> None:
        request = pool.request("GET", "/")
        for _ in range(3):
            assert (await pool.fetch(request)).status == 200
        assert pool.opened == 3

    _serve(_answer_once_then_drop, body)


def test_a_post_is_not_retried() -> None:
    async def body(pool: HttpPool) -> None:
        request = pool.request("POST", "/", b"{}", "application/json")
        assert (await pool.fetch(request, idempotent=False)).status == 200
        with pytest.raises(ServerDisconnected):
            await pool.fetch(request, idempotent=False)

    _serve(_answer_once_then_drop, body)


def test_a_response_that_never_comes_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def body(pool: HttpPool) -> None:
        pool.timeout_s = 0.3
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.fetch(pool.request("GET", "/"))
        assert 0.3 <= time.monotonic() - began < 1.0
        assert not pool._idle  # the connection is spent, not reused

    _serve(handler, body)


def test_a_truncated_response_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK[:-2])
        await writer.drain()
        writer.close()

    async def body(pool: HttpPool) -> None:
        with pytest.raises(ProtocolError, match="closed in the middle"):
            await pool.fetch(pool.request("GET", "/"))

    _serve(handler, body)


def test_client_results_count_statuses_and_errors_by_kind() -> None:
    app = AppEndpoint("echo", "echo", "/echo", None, None)
    replies = [OK, b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno route!"]
    paths: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while (head := await _read_request(reader)) is not None:
            paths.append(head.split(b" ")[1])
            writer.write(replies[min(served, 1)])
            served += 1
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoints = Endpoints(f"http://127.0.0.1:{port}", "127.0.0.1:1")
        async with Client(endpoints, 2.0, grpc_channels=0) as client:
            request = client.http_unary(app, "/unary?size=5", None)
            assert isinstance(request, HttpUnary)
            first = await request(time.perf_counter())
            assert first.ok and first.error is None and first.latency_s > 0
            second = await request(time.perf_counter())
            assert (second.ok, second.error, second.message) == (False, "http_404", "no route!")
            done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            request.send(time.perf_counter(), done.set_result)
            assert (await done).error == "http_404"
            assert client.http_connections == 1
        server.close()
        await server.wait_closed()
        # Nothing listens there any more: refused, a connection error.
        async with Client(endpoints, 2.0, grpc_channels=0) as client:
            refused = await client.http_unary(app, "/unary", None)(time.perf_counter())
            assert (refused.ok, refused.error) == (False, "conn_error")
            assert client.http_connections == 0

    asyncio.run(main())
    assert paths == [b"/echo/unary?size=5"] * 3


def test_error_message_is_the_first_line_or_nothing() -> None:
    assert _message(ConnectionError("first\nsecond")) == "first"
    assert _message(ConnectionError("x" * 300)) == "x" * 200
    # A blank message has no first line: "" (it was an IndexError inside an `except` block).
    assert _message(ConnectionError("  \n ")) == ""
    assert _message(TimeoutError()) == ""
