"""The echo app: the serving-overhead reference (unary and streaming, HTTP and gRPC).

Owns: the echo Serve application (`build_app(EchoArgs)`), its request parsing and validation, and
the serving API of `kind: echo` in docs/architecture.md. It imitates an LLM's streaming shape
(time to first token, time per token) without doing any model work, so what a benchmark measures
is Ray Serve, HAProxy and gRPC, not compute.
Does not own: replica counts or resources (the stack config overrides them per deployment name),
ports, route prefixes or env flags (the serve config and `ray start` set those).

Its args model and deployment names live in app/contracts.py (the contract with the stack config).
"""

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import grpc
from fastapi import FastAPI
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.contracts import (
    ECHO_DEPLOYMENT,
    ECHO_DEPLOYMENTS,
    ECHO_INGRESS_DEPLOYMENT,
    STREAMER_DEPLOYMENT,
    EchoArgs,
)
from app.protos import echo_pb2
from app.requests import (
    BadRequest,
    bad_request,
    int_param,
    json_object,
    subpath,
)

INGRESS_DEPLOYMENT = ECHO_INGRESS_DEPLOYMENT
DEPLOYMENTS = ECHO_DEPLOYMENTS
GRPC_SERVICER = "app.protos.echo_pb2_grpc.add_EchoServiceServicer_to_server"


def _int_field(params: Mapping[str, Any], name: str, default: int, limit: int) -> int:
    """Reads one non-negative int field; 0 or absent means the app's default (as in the proto)."""
    value = int_param(params, name, 0)  # the limits check what a request asks, not the default
    if value < 0:
        raise BadRequest(f"{name} must be >= 0; got {value}")
    if value > limit:
        raise BadRequest(f"{name} must be <= {limit}; got {value}")
    return value or default


def parse_unary(params: Mapping[str, Any], args: EchoArgs) -> tuple[str, int]:
    """(message, size) from query parameters or a JSON object."""
    message = params.get("message", "")
    if not isinstance(message, str):
        raise BadRequest(f"message must be a string; got {type(message).__name__}")
    return message, _int_field(params, "size", args.payload_size, args.max_payload_size)


def parse_stream(params: Mapping[str, Any], args: EchoArgs) -> tuple[int, int, float, float]:
    """(chunks, size per chunk, ttft_s, tpot_s) from query parameters or a JSON object.

    A request may ask for its own pacing (`ttft_ms`, `tpot_ms`) to imitate an LLM's shape; 0 or
    absent keeps the app's."""
    chunks = _int_field(params, "chunks", args.chunks, args.max_chunks)
    size = _int_field(params, "size", args.payload_size, args.max_payload_size)
    ttft_ms = _int_field(params, "ttft_ms", round(args.ttft_s * 1000), args.max_delay_ms)
    tpot_ms = _int_field(params, "tpot_ms", round(args.tpot_s * 1000), args.max_delay_ms)
    return chunks, size, ttft_ms / 1000, tpot_ms / 1000


def sse_event(data: Mapping[str, Any] | str) -> bytes:
    """One Server-Sent Event; compact JSON keeps chunks small and on one line."""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {body}\n\n".encode()


@serve.deployment(name=ECHO_DEPLOYMENT)
class Echo:
    """Builds the unary reply: a separate deployment so each request crosses one handle call."""

    def __init__(self, version: str) -> None:
        self._version = version

    async def __call__(self, message: str, size: int) -> dict[str, str]:
        return {"message": message, "payload": "x" * size, "version": self._version}


@serve.deployment(name=STREAMER_DEPLOYMENT)
class Streamer:
    """Yields chunks with LLM-like pacing, through a streaming handle."""

    async def __call__(
        self, chunks: int, size: int, ttft_s: float, tpot_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        payload = "x" * size
        if ttft_s:
            await asyncio.sleep(ttft_s)
        for index in range(chunks):
            if index and tpot_s:
                await asyncio.sleep(tpot_s)
            yield {"index": index, "payload": payload}


class EchoHandlers:
    """The ingress's HTTP and gRPC `EchoService` handlers, behind either routing below."""

    def __init__(self, echo: DeploymentHandle, streamer: DeploymentHandle, args: EchoArgs) -> None:
        codec = args.handle_serialization
        self._echo = echo.options(request_serialization=codec, response_serialization=codec)
        self._streamer = streamer.options(
            stream=True, request_serialization=codec, response_serialization=codec
        )
        self._args = args

    async def http(self, request: Request) -> Response:
        path = subpath(request)
        try:
            params: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                params.update(await json_object(request))
            if path == "/unary" and request.method in ("GET", "POST"):
                message, size = parse_unary(params, self._args)
                return JSONResponse(await self._echo.remote(message, size))
            if path == "/stream" and request.method in ("GET", "POST"):
                plan = parse_stream(params, self._args)
                return StreamingResponse(
                    self._sse(*plan),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
        except BadRequest as e:
            return bad_request(e)
        return JSONResponse({"error": f"no route {request.method} {path}"}, status_code=404)

    def _stream(
        self, chunks: int, size: int, ttft_s: float, tpot_s: float
    ) -> DeploymentResponseGenerator:
        # A handle with stream=True returns a generator; the stubs type every call as unary.
        generator = self._streamer.remote(chunks, size, ttft_s, tpot_s)
        return cast(DeploymentResponseGenerator, generator)

    async def _sse(
        self, chunks: int, size: int, ttft_s: float, tpot_s: float
    ) -> AsyncIterator[bytes]:
        async for chunk in self._stream(chunks, size, ttft_s, tpot_s):
            yield sse_event(chunk)
        yield sse_event("[DONE]")

    # gRPC method names must match the RPC names: Serve dispatches on them.
    async def Unary(
        self, request: echo_pb2.EchoRequest, grpc_context: RayServegRPCContext
    ) -> echo_pb2.EchoReply:
        try:
            message, size = parse_unary(
                {"message": request.message, "size": request.size}, self._args
            )
        except BadRequest as e:
            # Serve sends the code and details set here once the method returns.
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(e))
            return echo_pb2.EchoReply()
        reply = await self._echo.remote(message, size)
        return echo_pb2.EchoReply(**reply)

    async def Stream(
        self, request: echo_pb2.StreamRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[echo_pb2.StreamChunk]:
        try:
            plan = parse_stream(
                {
                    "chunks": request.chunks,
                    "size": request.size,
                    "ttft_ms": request.ttft_ms,
                    "tpot_ms": request.tpot_ms,
                },
                self._args,
            )
        except BadRequest as e:
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(e))
            return
        async for chunk in self._stream(*plan):
            yield echo_pb2.StreamChunk(index=chunk["index"], payload=chunk["payload"])


@serve.deployment(name=INGRESS_DEPLOYMENT)
class EchoIngress(EchoHandlers):
    """Plain ASGI: no FastAPI routing on the hot path (bench/ablation.py measures what it costs)."""

    async def __call__(self, request: Request) -> Response:
        return await self.http(request)


# The same ingress with FastAPI routing in front of the same handlers: the framework most Serve
# users write, kept so the ablation can measure it (docs/performance.md); not a package default.
echo_api = FastAPI()


@serve.deployment(name=INGRESS_DEPLOYMENT)
@serve.ingress(echo_api)
class EchoFastAPIIngress(EchoHandlers):
    @echo_api.api_route("/unary", methods=["GET", "POST"])
    async def unary(self, request: Request) -> Response:
        return await self.http(request)

    @echo_api.api_route("/stream", methods=["GET", "POST"])
    async def stream(self, request: Request) -> Response:
        return await self.http(request)


# No `from __future__ import annotations` in app modules: Serve reads the builder's annotation
# at runtime (it must be the class, not a string) to validate `args` into the pydantic model.
def build_app(args: EchoArgs) -> serve.Application:
    """The echo application from the serve config's `args`."""
    return EchoIngress.bind(Echo.bind(args.version), Streamer.bind(), args)


def build_fastapi_app(args: EchoArgs) -> serve.Application:
    """The echo application with a FastAPI ingress (`importPath: app.echo:build_fastapi_app`)."""
    return EchoFastAPIIngress.bind(Echo.bind(args.version), Streamer.bind(), args)
