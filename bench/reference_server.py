"""A Ray-free deployment shaped like the echo app: for tests, and as a performance ceiling.

Owns: two processes on 127.0.0.1 ports the OS picks. `grpc` serves EchoService (Unary, Stream) and
RecsysService (Rank) for clients and for the ingress; `http` is a plain ASGI app under uvicorn that
speaks the echo/recsys HTTP API (docs/architecture.md) by calling the gRPC process, as Ray's ingress
deployment calls its model deployments. Streams honour a request's own `ttft_ms` / `tpot_ms`, as the
echo app does; 0 keeps the server's pacing (`--chunk-delay-ms`, none by default). `start()` launches both, writes a `smoke` outputs file and
returns a handle that stops them by PID. `--fail` modes break one behaviour on purpose, so tests
can watch `raygke smoke` fail its gates.
Does not own: anything Ray does (replicas, routing, HAProxy); recsys scores are seeded random.

    python bench/reference_server.py up --run-dir /tmp/ref    # both, until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import grpc
import grpc.aio

# Runs as a script from bench/: the repository root holds the `app` package with the stubs.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.protos import echo_pb2, echo_pb2_grpc, recsys_pb2, recsys_pb2_grpc

FAIL_MODES = (
    "unary-500",  # HTTP unary answers 500
    "stream-buffered",  # HTTP stream collects every chunk and sends them in one write
    "stream-short",  # HTTP stream sends one chunk, then ends without [DONE]
    "grpc-error",  # gRPC Unary aborts with INTERNAL (and HTTP unary through it fails)
    "bad-scores",  # Rank returns scores outside [0, 1]
)
DEFAULT_PAYLOAD = 1024
DEFAULT_CHUNKS = 20
DEFAULT_CHUNK_SIZE = 64
MAX_PAYLOAD = 1 << 20
MAX_CHUNKS = 10_000
MAX_ROWS = 4096
MAX_DELAY_MS = 5000  # the echo app's `max_delay_ms` default: the largest ttft_ms / tpot_ms asked
VERSION = "reference"


# gRPC process ------------------------------------------------------------------------------------


def _application(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "application":
            return str(value)
    return None


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, fail: set[str], chunk_delay_s: float) -> None:
        self.fail = fail
        self.chunk_delay_s = chunk_delay_s

    async def Unary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if _application(context) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing `application` metadata")
        if "grpc-error" in self.fail:
            await context.abort(grpc.StatusCode.INTERNAL, "reference server: --fail grpc-error")
        size = request.size or DEFAULT_PAYLOAD
        if not 0 < size <= MAX_PAYLOAD:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"size must be <= {MAX_PAYLOAD}")
        return echo_pb2.EchoReply(message=request.message, payload="x" * size, version=VERSION)

    async def Stream(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if _application(context) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing `application` metadata")
        chunks = request.chunks or DEFAULT_CHUNKS
        size = request.size or DEFAULT_CHUNK_SIZE
        if not 0 < chunks <= MAX_CHUNKS or not 0 < size <= MAX_PAYLOAD:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chunks or size out of range")
        if not (0 <= request.ttft_ms <= MAX_DELAY_MS and 0 <= request.tpot_ms <= MAX_DELAY_MS):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ttft_ms and tpot_ms must be in 0..{MAX_DELAY_MS}",
            )
        # As the echo app: a request's own pacing wins; 0 keeps the server's (no ttft, and
        # --chunk-delay-ms between chunks).
        ttft_s = request.ttft_ms / 1000
        tpot_s = request.tpot_ms / 1000 if request.tpot_ms else self.chunk_delay_s
        if ttft_s:
            await asyncio.sleep(ttft_s)
        payload = "x" * size
        for index in range(chunks):
            if index and tpot_s:
                await asyncio.sleep(tpot_s)
            yield echo_pb2.StreamChunk(index=index, payload=payload)


class RecsysServicer(recsys_pb2_grpc.RecsysServiceServicer):
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail

    async def Rank(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        rows = request.rows or (len(request.dense) // 13 if request.dense else 32)
        if not 0 < rows <= MAX_ROWS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rows must be <= {MAX_ROWS}")
        rng = random.Random(request.seed)
        scores = [rng.random() for _ in range(rows)]
        if "bad-scores" in self.fail:
            scores = [s + 1.5 for s in scores]
        return recsys_pb2.RankReply(scores=scores)


async def serve_grpc(port: int, fail: set[str], chunk_delay_s: float) -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(fail, chunk_delay_s), server)
    recsys_pb2_grpc.add_RecsysServiceServicer_to_server(RecsysServicer(fail), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


# HTTP ingress process ----------------------------------------------------------------------------


class BadRequest(Exception):
    """A client error: answered 400 with {"error": ...}, like the real apps."""


def _int_param(query: dict[str, list[str]], body: dict[str, Any], name: str, default: int) -> int:
    raw: Any = body.get(name, query.get(name, [default])[0])
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer; got {raw!r}") from None
    return value


class Ingress:
    """A plain ASGI app: the echo app's HTTP surface, forwarding to the gRPC process."""

    def __init__(self, upstream: str, fail: set[str]) -> None:
        self.upstream = upstream
        self.fail = fail
        self.channel: grpc.aio.Channel | None = None
        self.metadata = (("application", "echo"),)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The channel must be created on the server's event loop.
                self.channel = grpc.aio.insecure_channel(self.upstream)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.channel is not None:
                    await self.channel.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        try:
            query = parse_qs(scope.get("query_string", b"").decode())
            body = await self._body(scope, receive)
            if path == "/-/healthz":
                await _reply(send, 200, b"success", b"text/plain")
            elif path == "/echo/unary":
                await self._unary(send, query, body)
            elif path == "/echo/stream":
                await self._stream(send, query, body)
            elif path == "/recsys/rank":
                await self._rank(send, query, body)
            else:
                await _json(send, 404, {"error": f"no route {path}"})
        except BadRequest as exc:
            await _json(send, 400, {"error": str(exc)})
        except grpc.aio.AioRpcError as exc:
            status = 400 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 500
            await _json(send, status, {"error": f"{exc.code().name}: {exc.details()}"})

    @staticmethod
    async def _body(scope: dict[str, Any], receive: Any) -> dict[str, Any]:
        if scope["method"] != "POST":
            return {}
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    async def _unary(self, send: Any, query: dict[str, list[str]], body: dict[str, Any]) -> None:
        if "unary-500" in self.fail:
            await _json(send, 500, {"error": "reference server: --fail unary-500"})
            return
        size = _int_param(query, body, "size", DEFAULT_PAYLOAD)
        if not 0 < size <= MAX_PAYLOAD:
            raise BadRequest(f"size must be in 1..{MAX_PAYLOAD}; got {size}")
        assert self.channel is not None
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        reply = await stub.Unary(
            echo_pb2.EchoRequest(message=str(body.get("message", "hello")), size=size),
            metadata=self.metadata,
        )
        await _json(
            send,
            200,
            {"message": reply.message, "payload": reply.payload, "version": reply.version},
        )

    async def _stream(self, send: Any, query: dict[str, list[str]], body: dict[str, Any]) -> None:
        chunks = _int_param(query, body, "chunks", DEFAULT_CHUNKS)
        size = _int_param(query, body, "size", DEFAULT_CHUNK_SIZE)
        if not 0 < chunks <= MAX_CHUNKS:
            raise BadRequest(f"chunks must be in 1..{MAX_CHUNKS}; got {chunks}")
        if not 0 < size <= MAX_PAYLOAD:
            raise BadRequest(f"size must be in 1..{MAX_PAYLOAD}; got {size}")
        # Pacing is the gRPC process's job; the ingress only checks and forwards it.
        delays = {name: _int_param(query, body, name, 0) for name in ("ttft_ms", "tpot_ms")}
        for name, value in delays.items():
            if not 0 <= value <= MAX_DELAY_MS:
                raise BadRequest(f"{name} must be in 0..{MAX_DELAY_MS}; got {value}")
        assert self.channel is not None
        stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        request = echo_pb2.StreamRequest(chunks=chunks, size=size, **delays)
        call = stub.Stream(request, metadata=self.metadata)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        held: list[bytes] = []
        async for chunk in call:
            event = (
                b"data: " + json.dumps({"index": chunk.index, "payload": chunk.payload}).encode()
            )
            event += b"\n\n"
            if "stream-buffered" in self.fail:
                held.append(event)
                continue
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if "stream-short" in self.fail:
                call.cancel()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        held.append(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"".join(held), "more_body": False})

    async def _rank(self, send: Any, query: dict[str, list[str]], body: dict[str, Any]) -> None:
        dense = body.get("dense")
        rows = len(dense) if isinstance(dense, list) else _int_param(query, body, "rows", 32)
        seed = _int_param(query, body, "seed", 0)
        if not 0 < rows <= MAX_ROWS:
            raise BadRequest(f"rows must be in 1..{MAX_ROWS}; got {rows}")
        assert self.channel is not None
        stub = recsys_pb2_grpc.RecsysServiceStub(self.channel)
        reply = await stub.Rank(
            recsys_pb2.RankRequest(rows=rows, seed=seed), metadata=(("application", "recsys"),)
        )
        await _json(send, 200, {"scores": list(reply.scores), "rows": rows})


async def _reply(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, obj: Any) -> None:
    await _reply(send, status, json.dumps(obj).encode(), b"application/json")


def serve_http(port: int, upstream: str, fail: set[str]) -> None:
    import uvicorn

    # Bind first so the port is known (and printed) before uvicorn takes the socket over.
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it Nagle + delayed ACKs add 40 ms to every reply on a kept-alive connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(
        Ingress(upstream, fail),
        lifespan="on",
        log_level="warning",
        access_log=False,
        http="httptools",
        # asyncio, not uvloop: grpc.aio shares this loop and supports the stock one.
        loop="asyncio",
    )
    print(f"READY {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


# Launcher ----------------------------------------------------------------------------------------


@dataclass
class Reference:
    """A running reference deployment; `stop()` ends exactly the processes `start()` began."""

    http_url: str
    grpc_target: str
    outputs_path: Path
    procs: list[subprocess.Popen[bytes]] = field(repr=False, default_factory=list)
    tier_pid: int | None = None  # our HAProxy tier in front, when started with `tier=True`

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs] + ([self.tier_pid] if self.tier_pid else [])

    def stop(self) -> None:
        if self.tier_pid is not None:
            from raygke import tier

            tier.stop(self.tier_pid)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _launch(
    args: list[str], log: Path, timeout_s: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start one server process and wait for its `READY <port>` line."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode().strip()
            if line.startswith("READY "):
                return proc, line.split()[1]
        if proc.poll() is not None:
            break
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise RuntimeError(f"{args[0]} server did not start; see {log}")


def contract(
    http_url: str,
    grpc_target: str,
    slo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `smoke` outputs (schema_version 1) describing a reference deployment."""
    from infra.outputs import DEFAULT_SLO  # here: the servers themselves never load infra

    apps = [
        ("echo", "echo", "/echo", "raygke.echo.v1.EchoService"),
        ("recsys", "recsys", "/recsys", "raygke.recsys.v1.RecsysService"),
    ]
    return {
        "schema_version": 1,
        "source": "local",
        "stack": "reference",
        "http_url": http_url,
        "grpc_target": grpc_target,
        "health_path": "/-/healthz",
        "apps": [
            {"name": n, "kind": k, "route_prefix": p, "grpc_service": s, "grpc_application": n}
            for n, k, p, s in apps
        ],
        "ray_version": None,
        "image": "bench/reference_server.py (no Ray)",
        "serve_flags": {},
        "kuberay_version": None,
        "gpu": None,
        "slo": slo or dict(DEFAULT_SLO),
    }


def start(
    run_dir: Path,
    fail: tuple[str, ...] = (),
    chunk_delay_ms: float = 0.0,
    slo: dict[str, Any] | None = None,
    tier: bool = False,
) -> Reference:
    """Start the gRPC server, then the ingress pointing at it (and our HAProxy tier in front of
    both when `tier`); write `run_dir/outputs.json`."""
    unknown = set(fail) - set(FAIL_MODES)
    if unknown:
        raise ValueError(f"unknown fail modes {sorted(unknown)}; allowed: {', '.join(FAIL_MODES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    fail_args = [a for mode in fail for a in ("--fail", mode)]
    grpc_proc, grpc_port = _launch(
        ["grpc", "--chunk-delay-ms", str(chunk_delay_ms), *fail_args], run_dir / "grpc.log"
    )
    procs = [grpc_proc]
    try:
        grpc_target = f"127.0.0.1:{grpc_port}"
        http_proc, http_port = _launch(
            ["http", "--upstream", grpc_target, *fail_args], run_dir / "http.log"
        )
        procs.append(http_proc)
    except BaseException:
        Reference("", "", run_dir, procs).stop()
        raise
    http_url = f"http://127.0.0.1:{http_port}"
    reference = Reference(http_url, grpc_target, run_dir / "outputs.json", procs)
    if tier:
        try:
            reference.http_url, reference.grpc_target, reference.tier_pid = _start_tier(
                run_dir, int(http_port), int(grpc_port)
            )
        except BaseException:
            reference.stop()
            raise
    document = contract(reference.http_url, reference.grpc_target, slo)
    reference.outputs_path.write_text(json.dumps(document, indent=2) + "\n")
    return reference


def _start_tier(run_dir: Path, http_port: int, grpc_port: int) -> tuple[str, str, int]:
    """Our HAProxy tier (the same spec builder, binary and start as `raygke local`) in front of
    the ingress for HTTP and of the gRPC server for gRPC; returns its HTTP URL, gRPC target and
    PID. Imported here, not at the top: the server processes this file also runs need none of it."""
    from components.render.haproxy import (
        DEFAULT_DEADLINE_S,
        AppDeadline,
        StaticBackends,
        StaticServer,
        ingress_spec,
    )
    from raygke import host, tier

    http, grpc_, stats = host.free_ports(3)
    spec = ingress_spec(
        "127.0.0.1",
        StaticBackends((StaticServer("reference", "127.0.0.1", http_port, grpc_port),)),
        http=http,
        grpc=grpc_,
        stats=stats,
        routes=("/echo", "/recsys"),
        nbthread=None,
        pidfile=str(run_dir / "haproxy.pid"),
        # The local run's rules, its apps' default deadlines included, so the ceiling pays for them.
        deadlines=tuple(AppDeadline(a, DEFAULT_DEADLINE_S, f"/{a}") for a in ("echo", "recsys")),
    )
    pid = tier.start(spec, run_dir)
    try:
        tier.wait_serving(spec)
    except BaseException:
        tier.stop(pid)
        raise
    return f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_}", pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("grpc", "http", "up"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--fail", action="append", choices=FAIL_MODES, default=[])
        if name in ("grpc", "up"):
            cmd.add_argument("--chunk-delay-ms", type=float, default=0.0)
        if name in ("grpc", "http"):
            cmd.add_argument("--port", type=int, default=0)
        if name == "http":
            cmd.add_argument("--upstream", required=True, help="the gRPC process, HOST:PORT")
        if name == "up":
            cmd.add_argument("--run-dir", type=Path, default=Path("reference-run"))
    args = parser.parse_args(argv)
    fail = set(args.fail)
    if args.command == "grpc":
        asyncio.run(serve_grpc(args.port, fail, args.chunk_delay_ms / 1000))
    elif args.command == "http":
        serve_http(args.port, args.upstream, fail)
    else:
        ref = start(args.run_dir, tuple(args.fail), args.chunk_delay_ms)
        print(f"reference: {ref.http_url} {ref.grpc_target} outputs {ref.outputs_path}", flush=True)
        stopped = False

        def _stop(*_: object) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            while not stopped and all(p.poll() is None for p in ref.procs):
                time.sleep(0.5)
        finally:
            ref.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
