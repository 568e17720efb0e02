"""The echo and recsys apps on a real local Ray head with the flags ON (HAProxy ingress +
throughput-optimized), through Ray's own HAProxy: HTTP JSON, SSE, gRPC unary and streaming,
bad inputs, and a stop that leaves no process behind. One Ray session for the whole module."""

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from app import echo, recsys
from app.protos import echo_pb2, echo_pb2_grpc, recsys_pb2, recsys_pb2_grpc
from raygke import local_ray

pytestmark = pytest.mark.process

FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
TPOT_S = 0.1
CHUNKS = 5
SERVE_CONFIG: dict[str, Any] = {
    "http_options": {"host": "0.0.0.0", "port": 8000},
    "grpc_options": {"port": 9000, "grpc_servicer_functions": [echo.GRPC_SERVICER, recsys.GRPC_SERVICER]},
    "applications": [
        {
            "name": "echo",
            "import_path": "app.echo:build_app",
            "route_prefix": "/echo",
            "args": {"tpot_s": TPOT_S, "chunks": CHUNKS, "max_chunks": 50, "max_payload_size": 4096},
        },
        {
            "name": "recsys",
            "import_path": "app.recsys:build_app",
            "route_prefix": "/recsys",
            "args": {"cardinality": 1000, "max_rows": 64, "torch_threads": 1},
        },
    ],
}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_ray.LocalRay]:
    progress: list[str] = []
    head = local_ray.up(
        tmp_path_factory.mktemp("live"), SERVE_CONFIG, env=FLAGS, on_progress=progress.append
    )
    assert any("RUNNING" in line for line in progress)
    print(f"\nRay start {head.start_s:.1f}s, deploy {head.deploy_s:.1f}s")
    try:
        yield head
    finally:
        local_ray.stop(head, check=False)  # no-op when test_stop_leaves_nothing ran


def _get(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _meta(app: str) -> tuple[tuple[str, str], ...]:
    return (("application", app),)


def test_flags_and_haproxy_on_our_ports(ray: local_ray.LocalRay) -> None:
    assert ray.env == FLAGS
    cfgs = list(ray.haproxy_dir.glob("*/haproxy.cfg"))
    assert cfgs, "Ray's HAProxy wrote no config under our dir: HAProxy mode is off"
    text = cfgs[0].read_text()
    assert f":{ray.ports.haproxy_stats}" in text and ":8404" not in text
    assert f":{ray.ports.haproxy_metrics}" in text and ":9101" not in text
    assert f"127.0.0.1:{ray.ports.http}" in text


def test_http_unary_get_and_post(ray: local_ray.LocalRay) -> None:
    status, reply = _get(f"{ray.http_url}/echo/unary?size=10")
    assert status == 200 and reply == {"message": "", "payload": "x" * 10, "version": "v1"}
    status, reply = _get(f"{ray.http_url}/echo/unary", json.dumps({"message": "hi"}).encode())
    assert status == 200 and reply["message"] == "hi" and len(reply["payload"]) == 1024


def test_http_sse_streams_incrementally(ray: local_ray.LocalRay) -> None:
    arrivals: list[float] = []
    events: list[str] = []
    with urllib.request.urlopen(f"{ray.http_url}/echo/stream?size=4", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                events.append(line[len("data: ") :])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks == [{"index": i, "payload": "xxxx"} for i in range(CHUNKS)]
    # The streamer sleeps TPOT_S between chunks; buffered (non-incremental) delivery would make
    # every chunk arrive at once, so the spread between first and last is the proof.
    assert arrivals[CHUNKS - 1] - arrivals[0] >= 0.75 * (CHUNKS - 1) * TPOT_S


def test_grpc_unary_and_stream(ray: local_ray.LocalRay) -> None:
    with grpc.insecure_channel(ray.grpc_target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        reply = stub.Unary(echo_pb2.EchoRequest(message="m", size=3), metadata=_meta("echo"))
        assert (reply.message, reply.payload, reply.version) == ("m", "xxx", "v1")
        chunks = list(stub.Stream(echo_pb2.StreamRequest(chunks=3, size=2), metadata=_meta("echo")))
        assert [(c.index, c.payload) for c in chunks] == [(0, "xx"), (1, "xx"), (2, "xx")]


def test_recsys_http_and_grpc(ray: local_ray.LocalRay) -> None:
    status, reply = _get(f"{ray.http_url}/recsys/rank")
    assert status == 200 and reply["rows"] == 32 and len(reply["scores"]) == 32
    assert all(0.0 <= s <= 1.0 for s in reply["scores"])
    body = json.dumps({"dense": [[0.5] * 13] * 2, "sparse": [[7] * 26] * 2}).encode()
    status, reply = _get(f"{ray.http_url}/recsys/rank", body)
    assert status == 200 and reply["rows"] == 2 and reply["scores"][0] == reply["scores"][1]
    with grpc.insecure_channel(ray.grpc_target) as channel:
        stub = recsys_pb2_grpc.RecsysServiceStub(channel)
        ranked = stub.Rank(recsys_pb2.RankRequest(rows=4, seed=1), metadata=_meta("recsys"))
        assert len(ranked.scores) == 4 and all(0.0 <= s <= 1.0 for s in ranked.scores)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/echo/unary", b"{not json", "body"),
        ("/echo/unary", b"[1, 2]", "body"),
        ("/echo/unary?size=999999", None, "size"),
        ("/echo/unary", b'{"size": "big"}', "size"),
        ("/echo/unary", b'{"message": 3}', "message"),
        ("/echo/stream?chunks=51", None, "chunks"),
        ("/recsys/rank?rows=65", None, "rows"),
        ("/recsys/rank", b'{"dense": [[1]], "sparse": [[1]]}', "dense"),
        ("/recsys/rank", b"{oops", "body"),
    ],
)
def test_http_bad_input_is_400_naming_the_field(
    ray: local_ray.LocalRay, path: str, body: bytes | None, field: str
) -> None:
    status, reply = _get(f"{ray.http_url}{path}", body)
    assert status == 400 and field in reply["error"], reply


def test_grpc_bad_input_is_invalid_argument(ray: local_ray.LocalRay) -> None:
    with grpc.insecure_channel(ray.grpc_target) as channel:
        echo_stub = echo_pb2_grpc.EchoServiceStub(channel)
        recsys_stub = recsys_pb2_grpc.RecsysServiceStub(channel)
        calls = [
            (lambda: echo_stub.Unary(echo_pb2.EchoRequest(size=-1), metadata=_meta("echo")), "size"),
            (
                lambda: list(
                    echo_stub.Stream(echo_pb2.StreamRequest(chunks=51), metadata=_meta("echo"))
                ),
                "chunks",
            ),
            (
                lambda: recsys_stub.Rank(recsys_pb2.RankRequest(rows=65), metadata=_meta("recsys")),
                "rows",
            ),
        ]
        for call, field in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert field in info.value.details()  # type: ignore[attr-defined]
        # Still serving after the errors.
        reply = echo_stub.Unary(echo_pb2.EchoRequest(size=1), metadata=_meta("echo"))
        assert reply.payload == "x"
    status, _ = _get(f"{ray.http_url}/echo/unary?size=1")
    assert status == 200


def test_stop_leaves_nothing(ray: local_ray.LocalRay) -> None:
    before = local_ray.processes(ray)
    assert ray.pid in before and len(before) > 5
    haproxy = [p for p in before if "haproxy" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
    assert haproxy, "no HAProxy process found among the head's processes"
    stopped = local_ray.stop(ray)
    assert set(before) <= set(stopped)
    left = [pid for pid in stopped if _alive(pid)]
    assert left == [], f"still alive: {left}"
    assert not ray.temp_dir.exists()
    assert os.getpid() not in stopped
