"""`raygke smoke` against the Ray-free reference server: real processes on 127.0.0.1.

The reference server's processes are started by `bench/reference_server.py:start` on ports the OS
picks, and stopped by PID in every fixture's teardown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from bounds import REQUEST_S
from conftest import load_bench

from raygke.smoke.checks import STREAM_TPOT_MS
from raygke.smoke.cli import main
from raygke.smoke.contract import load_contract
from raygke.smoke.load import LoadSpec, run_level
from raygke.smoke.report import REPORT_SCHEMA

pytestmark = pytest.mark.process

# Short levels: these tests prove behaviour, not speed.
FAST = ["--duration", "0.5", "--warmup", "0.2", "--no-plots"]


reference = load_bench("reference_server", "reference_server")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # The server's default pacing is none: the stream checks must ask for their own.
    ref = reference.start(tmp_path_factory.mktemp("ref"))
    try:
        yield ref
    finally:
        ref.stop()
    assert all(_gone(pid) for pid in ref.pids)


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def test_quick_profile_passes_on_the_reference(healthy: Any, tmp_path: Path) -> None:
    out = tmp_path / "report"
    argv = ["--outputs", str(healthy.outputs_path), "--out", str(out)]
    code = main([*argv, "--profile", "quick", "--duration", "1", "--warmup", "0.3"])
    report = _report(out)
    failed = [g for g in report["gates"] if not g["passed"]]
    assert code == 0, failed
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["passed"] is True
    checks = report["checks"]["A"]
    assert len(checks) == 7 and all(c["passed"] for c in checks)
    streamed = [c for c in checks if c["name"] == "echo stream"]
    assert len(streamed) == 2
    assert all(f"asked {STREAM_TPOT_MS} ms apart" in c["detail"] for c in streamed)
    closed = {lv["label"] for lv in report["load"] if lv["loop"] == "closed"}
    assert closed == {
        f"{t} closed c=8"
        for t in (
            "echo/http/unary",
            "echo/grpc/unary",
            "echo/http/stream",
            "echo/grpc/stream",
            "recsys/http/unary",
            "recsys/grpc/unary",
        )
    }
    opened = [lv for lv in report["load"] if lv["loop"] == "open"]
    assert len(opened) == 1 and opened[0]["rate"] > 0
    for level in report["load"]:
        assert level["ok"] > 0 and level["errors"] == {}
        assert level["latency_ms"]["count"] == level["ok"]
    streams = [lv for lv in report["load"] if lv["mode"] == "stream"]
    for level in streams:
        assert level["ttft_ms"]["p50"] < level["latency_ms"]["p50"]
        assert level["chunks_per_s"] == pytest.approx(20 * level["throughput_rps"])
    assert report["deployments"]["A"]["stack"] == "reference"
    md = (out / "report.md").read_text()
    assert md.startswith("## raygke smoke: PASS (reference, profile quick)")
    for png in ("throughput_p99.png", "latency_cdf.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("processes", [1, 2])
def test_open_loop_holds_its_rate(healthy: Any, processes: int) -> None:
    contract = load_contract(healthy.outputs_path)
    spec = LoadSpec(
        app=contract.apps[0],
        transport="http",
        mode="unary",
        loop="open",
        rate=300.0,
        duration_s=3.0,
        warmup_s=0.5,
        processes=processes,
    )
    level = run_level(spec, contract.endpoints)
    assert level.error_count == 0, level.errors
    assert len(level.client_cpu) == processes
    # 900 arrivals were due in the window; the rate counts those actually sent inside it.
    assert level.sent == 900
    assert level.achieved_rate == pytest.approx(300.0, rel=0.03)
    assert level.ok == 900
    assert level.send_lag_ms is not None and level.send_lag_ms.count == 900


def test_http_unary_load_counts_requests_statuses_and_connections(healthy: Any) -> None:
    """The lean HTTP client under load: every request counted once, by status, on one
    keep-alive connection per closed-loop user; open loop the same for every arrival."""
    contract = load_contract(healthy.outputs_path)
    echo = contract.apps[0]
    closed = LoadSpec(
        app=echo,
        transport="http",
        mode="unary",
        loop="closed",
        concurrency=4,
        duration_s=1.0,
        warmup_s=0.3,
    )
    level = run_level(closed, contract.endpoints)
    assert level.errors == {} and level.ok == level.sent > 50
    assert level.latency_ms is not None and level.latency_ms.count == level.ok
    assert level.connections == 4
    # The reference answers 400 to a size over its limit, 404 to an unknown route.
    too_big = run_level(replace(closed, payload_size=2 << 20), contract.endpoints)
    assert too_big.ok == 0 and too_big.errors == {"http_400": too_big.sent} and too_big.sent > 0
    missing = replace(echo, route_prefix="/nothere")
    unknown = run_level(replace(closed, app=missing), contract.endpoints)
    assert unknown.errors == {"http_404": unknown.sent} and unknown.connections == 4
    opened = replace(closed, loop="open", rate=200.0, payload_size=2 << 20)
    level = run_level(opened, contract.endpoints)
    assert level.sent == 200 and level.errors == {"http_400": 200}
    recsys = next(app for app in contract.apps if app.kind == "recsys")
    level = run_level(replace(closed, app=recsys, loop="open", rate=200.0), contract.endpoints)
    assert level.errors == {} and level.ok == level.sent == 200
    assert level.connections is not None and level.connections >= 1


def test_closed_loop_over_several_client_processes(healthy: Any) -> None:
    contract = load_contract(healthy.outputs_path)
    spec = LoadSpec(
        app=contract.apps[0],
        transport="grpc",
        mode="stream",
        loop="closed",
        concurrency=5,
        duration_s=1.0,
        warmup_s=0.2,
        processes=2,
        chunks=8,
    )
    level = run_level(spec, contract.endpoints)
    assert level.error_count == 0, level.errors
    assert len(level.client_cpu) == 2
    assert level.latency_ms is not None and level.latency_ms.count == level.ok > 0
    assert level.per_chunk_ms is not None and level.per_chunk_ms.p50 > 0


def test_compare_interleaves_and_reports_ratios(healthy: Any, tmp_path: Path) -> None:
    doc = json.loads(healthy.outputs_path.read_text())
    doc["apps"] = [app for app in doc["apps"] if app["kind"] == "echo"]  # a shorter plan
    outputs = str(tmp_path / "echo.json")
    Path(outputs).write_text(json.dumps(doc))
    out = tmp_path / "ab"
    fast = ["--duration", "0.3", "--warmup", "0.1", "--no-plots"]
    code = main(
        ["--outputs", outputs, "--compare", outputs, "--out", str(out), "--repeats", "2", *fast]
    )
    report = _report(out)
    assert code == 0, [g for g in report["gates"] if not g["passed"]]
    order = [(lv["repeat"], lv["label"], lv["deployment"]) for lv in report["load"]]
    first = report["load"][0]["label"]
    assert order[:4] == [
        (0, first, "A"),
        (0, first, "B"),
        (0, order[2][1], "A"),
        (0, order[2][1], "B"),
    ]
    assert {r for r, _, _ in order} == {0, 1}
    ratios = report["compare"]
    assert len(ratios) == 5  # 4 closed-loop targets, 1 open-loop rate
    for ratio in ratios:
        assert ratio["throughput"]["n"] == 2
        assert (
            ratio["throughput"]["min"]
            <= ratio["throughput"]["median"]
            <= ratio["throughput"]["max"]
        )
    assert "### A/B" in (out / "report.md").read_text()


def test_tight_slo_fails_the_p99_gate(healthy: Any, tmp_path: Path) -> None:
    doc = json.loads(healthy.outputs_path.read_text())
    doc["slo"]["p99_ms"] = 0.001
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(doc))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "r"), *FAST]) == 1
    failed = {g["name"] for g in _report(tmp_path / "r")["gates"] if not g["passed"]}
    assert "p99 echo/http/unary c=8" in failed
    assert "functional checks" not in failed


@pytest.mark.parametrize(
    ("fail", "expect"),
    [
        ("unary-500", "echo unary echo/http: request failed: http_500"),
        ("stream-buffered", "looks buffered"),
        ("stream-short", "request failed: stream_incomplete"),
        ("grpc-error", "echo unary echo/grpc: request failed: grpc_INTERNAL"),
        ("bad-scores", "outside [0, 1]"),
    ],
)
def test_failing_deployment_fails_the_gate(tmp_path: Path, fail: str, expect: str) -> None:
    ref = reference.start(tmp_path / "ref", fail=(fail,))
    try:
        out = tmp_path / "report"
        code = main(["--outputs", str(ref.outputs_path), "--out", str(out), *FAST])
    finally:
        ref.stop()
    assert all(_gone(pid) for pid in ref.pids)
    assert code == 1
    report = _report(out)
    functional = next(g for g in report["gates"] if g["name"] == "functional checks")
    assert not functional["passed"]
    assert expect in functional["detail"]
    assert "**FAIL**" in (out / "report.md").read_text()


def test_unreachable_deployment_fails_without_load(tmp_path: Path) -> None:
    import socket

    # A port that was free a moment ago and has no listener: connections are refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = reference.contract(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(doc))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "r"), *FAST]) == 1
    report = _report(tmp_path / "r")
    assert report["load"] == []
    assert any("load skipped: health check failed" in w for w in report["warnings"])
    assert all(not c["passed"] for c in report["checks"]["A"])


def test_reference_rejects_bad_input_and_keeps_serving(healthy: Any) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{healthy.http_url}/echo/unary?size=lots", timeout=REQUEST_S)
    assert bad.value.code == 400
    assert "size must be an integer" in json.loads(bad.value.read())["error"]
    with urllib.request.urlopen(f"{healthy.http_url}/echo/unary?size=5", timeout=REQUEST_S) as ok:
        assert json.loads(ok.read())["payload"] == "xxxxx"


def test_buffered_stream_fails_though_the_server_does_not_pace(tmp_path: Path) -> None:
    # The server's own pacing is none (as Ray's echo app's default): the check asks for a gap
    # between chunks, so buffering by the ingress is caught, not excused as "chunks too fast".
    ref = reference.start(tmp_path / "ref", fail=("stream-buffered",), chunk_delay_ms=0.0)
    try:
        assert "stream_tpot_ms" not in json.loads(ref.outputs_path.read_text())["apps"][0]
        out = tmp_path / "report"
        code = main(["--outputs", str(ref.outputs_path), "--out", str(out), *FAST])
    finally:
        ref.stop()
    report = _report(out)
    assert code == 1
    streams = {c["transport"]: c for c in report["checks"]["A"] if c["name"] == "echo stream"}
    # Only the HTTP ingress buffers; gRPC goes to the (unbroken) stream server directly.
    assert not streams["http"]["passed"] and "looks buffered" in streams["http"]["detail"]
    assert streams["grpc"]["passed"], streams["grpc"]["detail"]
    assert not any("not verified" in w for w in report["warnings"])


def test_reference_honours_per_request_pacing_and_bounds_it(healthy: Any) -> None:
    import urllib.error
    import urllib.request

    url = f"{healthy.http_url}/echo/stream?chunks=3&size=4&tpot_ms={reference.MAX_DELAY_MS + 1}"
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(url, timeout=REQUEST_S)
    assert bad.value.code == 400
    assert "tpot_ms must be in 0.." in json.loads(bad.value.read())["error"]
    paced = f"{healthy.http_url}/echo/stream?chunks=3&size=4&ttft_ms=1&tpot_ms=1"
    with urllib.request.urlopen(paced, timeout=REQUEST_S) as ok:
        events = [line for line in ok.read().split(b"\n") if line.startswith(b"data:")]
    assert len(events) == 4 and events[-1] == b"data: [DONE]"


def test_the_ceiling_runs_behind_our_haproxy_tier(tmp_path: Path) -> None:
    """bench/ab.py's ceiling: the reference's shape behind the same tier as the local run."""
    ref = reference.start(tmp_path / "ref", tier=True)
    try:
        assert ref.tier_pid is not None and len(ref.pids) == 3
        contract = load_contract(ref.outputs_path)
        assert contract.http_url == ref.http_url and ref.http_url.startswith("http://127.0.0.1:")
        echo = next(app for app in contract.apps if app.kind == "echo")
        for transport in ("http", "grpc"):
            spec = LoadSpec(
                app=echo,
                transport=transport,
                mode="unary",
                loop="closed",
                concurrency=2,
                duration_s=0.5,
                warmup_s=0.1,
            )
            level = run_level(spec, contract.endpoints)
            assert level.ok > 0 and not level.errors, (transport, dict(level.errors))
        assert "reference" in (tmp_path / "ref" / "haproxy.cfg").read_text()
    finally:
        ref.stop()
    assert all(_gone(pid) for pid in ref.pids)
