"""One request to an app, over HTTP (aiohttp, or http1.py for unary load) or gRPC (grpc.aio),
timed from a given start instant.

Owns: the request shapes of the serving API (docs/architecture.md) from the client side, error
classification (`http_503`, `grpc_UNAVAILABLE`, `timeout`, ...), and per-request timings.
Does not own: how many requests run or when (load.py), or what counts as a pass (checks.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import grpc.aio

from app.protos import echo_pb2, echo_pb2_grpc, recsys_pb2, recsys_pb2_grpc
from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.http1 import HttpPool, ProtocolError, Response

_GRPC_OPTIONS = [
    # The apps' 4 MiB default would cap large-payload probes.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Without a local pool, channels to one target share one connection, and a load balancer
    # that balances connections (not requests) would send every request to one replica.
    ("grpc.use_local_subchannel_pool", 1),
]
# Closed loop: one gRPC connection per this many users.
USERS_PER_GRPC_CHANNEL = 8


SSE_DONE = b"[DONE]"  # the event that ends an SSE stream (the apps' and OpenAI's)


async def sse_events(
    resp: aiohttp.ClientResponse, start: float
) -> AsyncIterator[tuple[float, bytes]]:
    """(seconds since `start` at arrival, payload) for each `data:` line of an SSE response."""
    async for line in resp.content:
        if line.startswith(b"data:"):
            yield time.perf_counter() - start, line[5:].strip()


@dataclass
class Result:
    """Timings are seconds since the request's start instant (its scheduled time in open loop)."""

    ok: bool
    latency_s: float
    error: str | None = None
    ttft_s: float | None = None
    last_chunk_s: float | None = None
    chunks: int = 0
    body: Any = None
    chunk_bodies: list[Any] = field(default_factory=list)
    message: str | None = None  # what the server or the client library said, for check details

    def add_chunk(self, now: float, body: Any, keep_body: bool) -> None:
        """One streamed chunk, received `now` seconds after the start."""
        if self.ttft_s is None:
            self.ttft_s = now
        self.last_chunk_s = now
        self.chunks += 1
        if keep_body:
            self.chunk_bodies.append(body)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc_{exc.code().name}"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return "conn_error"
    if isinstance(exc, aiohttp.ClientError | ProtocolError):
        return "http_client_error"
    return f"client_{type(exc).__name__}"


def _message(exc: BaseException) -> str:
    text = (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)) or ""
    text = text.strip()  # all whitespace: no first line to take
    return text.splitlines()[0][:200] if text else ""


def _failed(exc: BaseException, start: float, result: Result | None = None) -> Result:
    """`result` (a stream's, keeping the chunks it got) or a new one, failed by `exc`."""
    if result is None:
        result = Result(False, 0.0)
    result.latency_s = time.perf_counter() - start
    result.error, result.message = _error_name(exc), _message(exc)
    return result


def _http_status_error(status: int, body: bytes, elapsed: float) -> Result:
    said = body[:200].decode(errors="replace")
    return Result(False, elapsed, f"http_{status}", message=said)


def _prefix(app: AppEndpoint | None) -> str:
    return "" if app is None or app.route_prefix == "/" else app.route_prefix


def app_url(endpoints: Endpoints, app: AppEndpoint | None, path: str) -> str:
    """`path` under `app`'s route prefix (the root without an app) at the HTTP endpoint."""
    return f"{endpoints.http_url}{_prefix(app)}{path}"


def _http_result(outcome: Response | BaseException, start: float) -> Result:
    if isinstance(outcome, BaseException):
        return _failed(outcome, start)
    elapsed = time.perf_counter() - start
    if outcome.status != 200:
        return _http_status_error(outcome.status, outcome.body, elapsed)
    return Result(True, elapsed)


class HttpUnary:
    """One unary HTTP request of the load, on the lean client; measured as `http_json` measures:
    from `start` to the whole response read, 200 or `http_<status>`, errors by kind.

    `await request(start)` gives its Result; `request.send(start, done)` calls `done(result)`
    from the event loop instead, so a closed-loop user can send its next request from there
    without a Future or a task switch per request.
    """

    def __init__(self, pool: HttpPool, request: bytes, idempotent: bool) -> None:
        self.pool = pool
        self.request = request
        self.idempotent = idempotent

    async def __call__(self, start: float) -> Result:
        try:
            response = await self.pool.fetch(self.request, self.idempotent)
        except Exception as exc:
            return _failed(exc, start)
        return _http_result(response, start)

    def send(self, start: float, done: Callable[[Result], None]) -> None:
        self.pool.submit(
            self.request, lambda outcome: done(_http_result(outcome, start)), self.idempotent
        )


class Client:
    """Connections to one deployment, shared by every request a worker sends.

    `grpc_channels=0`: no gRPC at all (an HTTP-only load worker, whose loop may then be uvloop,
    which grpc.aio does not support).
    """

    def __init__(
        self, endpoints: Endpoints, timeout_s: float, pool_size: int = 0, grpc_channels: int = 1
    ) -> None:
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._pool_size = pool_size
        self._grpc_channels = max(0, grpc_channels)
        self._session: aiohttp.ClientSession | None = None
        self._channels: list[grpc.aio.Channel] = []
        self._next = 0
        self._pool: HttpPool | None = None

    async def __aenter__(self) -> Client:
        # limit=0 means unbounded: open loop must never queue inside the client's pool.
        connector = aiohttp.TCPConnector(limit=self._pool_size, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        self._channels = [
            grpc.aio.insecure_channel(self.endpoints.grpc_target, options=_GRPC_OPTIONS)
            for _ in range(self._grpc_channels)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            await self._session.close()
        for channel in self._channels:
            await channel.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Client as an async context manager"
        return self._session

    @property
    def http_pool(self) -> HttpPool:
        """The lean keep-alive connections for unary load (made on first use)."""
        if self._pool is None:
            self._pool = HttpPool(self.endpoints.http_url, self.timeout_s)
        return self._pool

    @property
    def http_connections(self) -> int | None:
        """Connections the lean pool opened (None: it was not used)."""
        return None if self._pool is None else self._pool.opened

    @property
    def channel(self) -> grpc.aio.Channel:
        """The next gRPC channel, round-robin: requests spread over the client's connections."""
        assert self._channels, "use Client as an async context manager, with grpc_channels >= 1"
        self._next = (self._next + 1) % len(self._channels)
        return self._channels[self._next]

    def url(self, app: AppEndpoint | None, path: str) -> str:
        return app_url(self.endpoints, app, path)

    @staticmethod
    def metadata(app: AppEndpoint) -> tuple[tuple[str, str], ...]:
        return (("application", app.grpc_application or app.name),)

    # HTTP ---------------------------------------------------------------------------------------

    async def http_get(self, path: str, start: float, keep_body: bool = False) -> Result:
        """A plain GET on the deployment's root (health, /v1/models)."""
        try:
            async with self.session.get(f"{self.endpoints.http_url}{path}") as resp:
                text = await resp.text()
                elapsed = time.perf_counter() - start
                if resp.status != 200:
                    return Result(False, elapsed, f"http_{resp.status}", message=text[:200])
                return Result(True, elapsed, body=text if keep_body else None)
        except Exception as exc:
            return _failed(exc, start)

    async def http_json(
        self,
        app: AppEndpoint,
        path: str,
        payload: dict[str, Any] | None,
        start: float,
        keep_body: bool = False,
    ) -> Result:
        """GET (no payload) or POST JSON; the reply must be JSON with status 200."""
        url = self.url(app, path)
        try:
            request = (
                self.session.get(url) if payload is None else self.session.post(url, json=payload)
            )
            async with request as resp:
                raw = await resp.read()
                elapsed = time.perf_counter() - start
                if resp.status != 200:
                    return _http_status_error(resp.status, raw, elapsed)
                body = json.loads(raw) if keep_body else None
                return Result(True, elapsed, body=body)
        except Exception as exc:
            return _failed(exc, start)

    def http_unary(self, app: AppEndpoint, path: str, payload: dict[str, Any] | None) -> HttpUnary:
        """`http_json` without `keep_body`, for load: GET (no payload) or POST JSON on the lean
        client (http1.py), the request's bytes built here once for every send."""
        prefix = _prefix(app)
        pool = self.http_pool
        if payload is None:
            return HttpUnary(pool, pool.request("GET", f"{prefix}{path}"), idempotent=True)
        body = json.dumps(payload).encode()
        request = pool.request("POST", f"{prefix}{path}", body, "application/json")
        return HttpUnary(pool, request, idempotent=False)

    async def http_stream(
        self,
        app: AppEndpoint,
        chunks: int,
        size: int,
        start: float,
        keep_body: bool = False,
        ttft_ms: int = 0,
        tpot_ms: int = 0,
    ) -> Result:
        """SSE: counts `data:` events until `data: [DONE]`; a stream without it is an error.

        `ttft_ms` / `tpot_ms` ask the app for its pacing; 0 leaves the app's default (and is not
        sent, so the URL stays what apps without per-request pacing accept).
        """
        query = f"chunks={chunks}&size={size}"
        if ttft_ms:
            query += f"&ttft_ms={ttft_ms}"
        if tpot_ms:
            query += f"&tpot_ms={tpot_ms}"
        url = self.url(app, f"/stream?{query}")
        result = Result(False, 0.0)
        try:
            async with self.session.get(url) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    return _http_status_error(resp.status, raw, time.perf_counter() - start)
                done = False
                async for now, data in sse_events(resp, start):
                    if data == SSE_DONE:
                        done = True
                        break
                    result.add_chunk(now, json.loads(data) if keep_body else None, keep_body)
                result.latency_s = time.perf_counter() - start
                if not done:
                    result.error = "stream_incomplete"
                elif result.chunks != chunks:
                    result.error = "stream_wrong_chunks"
                else:
                    result.ok = True
                return result
        except Exception as exc:
            return _failed(exc, start, result)

    # gRPC ---------------------------------------------------------------------------------------

    async def grpc_unary(
        self, app: AppEndpoint, size: int, start: float, keep_body: bool = False
    ) -> Result:
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        try:
            reply = await stub.Unary(
                echo_pb2.EchoRequest(message="smoke", size=size),
                metadata=self.metadata(app),
                timeout=self.timeout_s,
            )
            return Result(True, time.perf_counter() - start, body=reply if keep_body else None)
        except Exception as exc:
            return _failed(exc, start)

    async def grpc_stream(
        self,
        app: AppEndpoint,
        chunks: int,
        size: int,
        start: float,
        keep_body: bool = False,
        ttft_ms: int = 0,
        tpot_ms: int = 0,
    ) -> Result:
        """Server streaming; `ttft_ms` / `tpot_ms` as in `http_stream` (proto3: 0 is the default)."""
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        result = Result(False, 0.0)
        try:
            call = stub.Stream(
                echo_pb2.StreamRequest(chunks=chunks, size=size, ttft_ms=ttft_ms, tpot_ms=tpot_ms),
                metadata=self.metadata(app),
                timeout=self.timeout_s,
            )
            async for chunk in call:
                result.add_chunk(time.perf_counter() - start, chunk, keep_body)
            result.latency_s = time.perf_counter() - start
            if result.chunks != chunks:
                result.error = "stream_wrong_chunks"
            else:
                result.ok = True
            return result
        except Exception as exc:
            return _failed(exc, start, result)

    async def grpc_rank(
        self, app: AppEndpoint, rows: int, seed: int, start: float, keep_body: bool = False
    ) -> Result:
        stub = recsys_pb2_grpc.RecsysServiceStub(self.channel)
        try:
            reply = await stub.Rank(
                recsys_pb2.RankRequest(rows=rows, seed=seed),
                metadata=self.metadata(app),
                timeout=self.timeout_s,
            )
            elapsed = time.perf_counter() - start
            if len(reply.scores) != rows:
                return Result(False, elapsed, "rank_wrong_rows")
            return Result(True, elapsed, body=reply if keep_body else None)
        except Exception as exc:
            return _failed(exc, start)
