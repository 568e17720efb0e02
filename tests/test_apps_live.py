"""The echo and recsys apps on the shared local run of the dev stack, through both ingresses: our HAProxy
tier and Ray's own HAProxy behind it. HTTP JSON, SSE, gRPC unary and server-streaming, bad inputs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from bounds import REQUEST_S
from conftest import LocalRun

from app.protos import echo_pb2, echo_pb2_grpc, recsys_pb2, recsys_pb2_grpc

pytestmark = pytest.mark.process

INGRESSES = ["tier", "ray"]  # our HAProxy tier; Ray's HAProxy, bypassing the tier
TPOT_MS = 100
CHUNKS = 5
MAX_PAYLOAD = 1 << 20  # EchoArgs.max_payload_size default; the gRPC message limit is 4 MiB


def _endpoints(run: LocalRun, ingress: str) -> tuple[str, str]:
    if ingress == "tier":
        return run.http_url, run.grpc_target
    return run.direct_http_url, run.direct_grpc_target


def _call(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _meta(app: str) -> tuple[tuple[str, str], ...]:
    return (("application", app),)


@pytest.mark.parametrize("ingress", INGRESSES)
def test_http_unary_get_and_post(local_run: LocalRun, ingress: str) -> None:
    http, _ = _endpoints(local_run, ingress)
    status, reply = _call(f"{http}/echo/unary?size=10")
    assert status == 200 and reply == {"message": "", "payload": "x" * 10, "version": "v1"}
    status, reply = _call(f"{http}/echo/unary", json.dumps({"message": "hi"}).encode())
    assert status == 200 and reply["message"] == "hi" and len(reply["payload"]) == 1024


@pytest.mark.parametrize("ingress", INGRESSES)
def test_http_sse_streams_incrementally(local_run: LocalRun, ingress: str) -> None:
    http, _ = _endpoints(local_run, ingress)
    arrivals: list[float] = []
    events: list[str] = []
    url = f"{http}/echo/stream?size=4&chunks={CHUNKS}&tpot_ms={TPOT_MS}"
    with urllib.request.urlopen(url, timeout=REQUEST_S) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                events.append(line[len("data: ") :])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks == [{"index": i, "payload": "xxxx"} for i in range(CHUNKS)]
    # Buffered delivery would land every chunk at once: the spread between first and last is the proof.
    assert arrivals[CHUNKS - 1] - arrivals[0] >= 0.75 * (CHUNKS - 1) * TPOT_MS / 1000


@pytest.mark.parametrize("ingress", INGRESSES)
def test_grpc_unary_and_incremental_stream(local_run: LocalRun, ingress: str) -> None:
    _, target = _endpoints(local_run, ingress)
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        reply = stub.Unary(echo_pb2.EchoRequest(message="m", size=3), metadata=_meta("echo"))
        assert (reply.message, reply.payload, reply.version) == ("m", "xxx", "v1")
        request = echo_pb2.StreamRequest(chunks=CHUNKS, size=2, tpot_ms=TPOT_MS)
        arrivals, chunks = [], []
        for chunk in stub.Stream(request, metadata=_meta("echo")):
            arrivals.append(time.monotonic())
            chunks.append((chunk.index, chunk.payload))
        assert chunks == [(i, "xx") for i in range(CHUNKS)]
        assert arrivals[-1] - arrivals[0] >= 0.75 * (CHUNKS - 1) * TPOT_MS / 1000


@pytest.mark.parametrize("ingress", INGRESSES)
def test_recsys_returns_32_scores_in_unit_range(local_run: LocalRun, ingress: str) -> None:
    http, target = _endpoints(local_run, ingress)
    status, reply = _call(f"{http}/recsys/rank")
    assert status == 200 and reply["rows"] == 32 and len(reply["scores"]) == 32
    assert all(0.0 <= s <= 1.0 for s in reply["scores"])
    body = json.dumps({"dense": [[0.5] * 13] * 2, "sparse": [[7] * 26] * 2}).encode()
    status, reply = _call(f"{http}/recsys/rank", body)
    # Two identical rows in one batch: equal up to float32 rounding, which differs across CPUs
    # (an AMD EPYC host differed in the 7th digit), so compare with a tolerance.
    assert status == 200 and reply["rows"] == 2
    assert reply["scores"][0] == pytest.approx(reply["scores"][1], rel=1e-5, abs=1e-6)
    with grpc.insecure_channel(target) as channel:
        stub = recsys_pb2_grpc.RecsysServiceStub(channel)
        ranked = stub.Rank(recsys_pb2.RankRequest(), metadata=_meta("recsys"))
        assert len(ranked.scores) == 32 and all(0.0 <= s <= 1.0 for s in ranked.scores)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/echo/unary", b"{not json", "body"),
        ("/echo/unary", b"[1, 2]", "body"),
        (f"/echo/unary?size={MAX_PAYLOAD + 1}", None, "size"),
        ("/echo/unary", b'{"size": "big"}', "size"),
        ("/echo/unary", b'{"message": 3}', "message"),
        ("/echo/stream?chunks=1001", None, "chunks"),
        ("/recsys/rank?rows=1025", None, "rows"),
        ("/recsys/rank", b'{"rows": "x"}', "rows"),
        ("/recsys/rank", b'{"dense": [[1]], "sparse": [[1]]}', "dense"),
        ("/recsys/rank", b"{oops", "body"),
    ],
)
def test_http_bad_input_is_400_naming_the_field(
    local_run: LocalRun, path: str, body: bytes | None, field: str
) -> None:
    status, reply = _call(f"{local_run.http_url}{path}", body)
    assert status == 400 and field in reply["error"], reply


def test_grpc_bad_input_is_invalid_argument_and_the_app_keeps_serving(local_run: LocalRun) -> None:
    with grpc.insecure_channel(local_run.grpc_target) as channel:
        echo_stub = echo_pb2_grpc.EchoServiceStub(channel)
        recsys_stub = recsys_pb2_grpc.RecsysServiceStub(channel)
        calls = [
            (
                lambda: echo_stub.Unary(echo_pb2.EchoRequest(size=-1), metadata=_meta("echo")),
                "size",
            ),
            # a reply over the gRPC message limit (4 MiB) is refused up front, by name
            (
                lambda: echo_stub.Unary(echo_pb2.EchoRequest(size=5 << 20), metadata=_meta("echo")),
                f"size must be <= {MAX_PAYLOAD}",
            ),
            (
                lambda: list(
                    echo_stub.Stream(echo_pb2.StreamRequest(chunks=1001), metadata=_meta("echo"))
                ),
                "chunks",
            ),
            (
                lambda: recsys_stub.Rank(
                    recsys_pb2.RankRequest(rows=1025), metadata=_meta("recsys")
                ),
                "rows",
            ),
        ]
        for call, message in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert message in info.value.details()  # type: ignore[attr-defined]
        reply = echo_stub.Unary(echo_pb2.EchoRequest(size=1), metadata=_meta("echo"))
        assert reply.payload == "x"
    status, _ = _call(f"{local_run.http_url}/echo/unary?size=1")
    assert status == 200
