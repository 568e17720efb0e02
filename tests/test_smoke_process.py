"""`raygke smoke` against the Ray-free reference server: real processes on 127.0.0.1.

The reference server's processes are started by `bench/reference_server.py:start` on ports the OS
picks, and stopped by PID in every fixture's teardown.
"""

from __future__ import annotations

import json
import os
import re
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


def test_tight_slo_fails_the_p99_gate(
    healthy: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(healthy.outputs_path.read_text())
    doc["slo"]["p99_ms"] = 0.001
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(doc))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "r"), *FAST]) == 1
    failed = {g["name"] for g in _report(tmp_path / "r")["gates"] if not g["passed"]}
    assert "p99 echo/http/unary c=8" in failed
    assert "functional checks" not in failed
    # the failing gate's line names the objective: its SLO and the key to change
    out = capsys.readouterr().out
    assert re.search(
        r"  p99 echo/http/unary c=8: [\d.]+ ms \(max 0.001 ms, cluster SLO smoke.p99Ms\)", out
    )


def test_a_local_slo_gates_a_local_run_and_the_report_says_so(
    healthy: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(healthy.outputs_path.read_text())
    doc |= {"schema_version": 3, "source": "local", "local_slo": {"p99_ms": 0.001}}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(doc))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "r"), *FAST]) == 1
    assert "local SLO smoke.localSlo.p99Ms)" in capsys.readouterr().out
    report = _report(tmp_path / "r")
    assert report["deployments"]["A"]["slo"]["source"] == "local SLO"
    opened = [lv for lv in report["load"] if lv["loop"] == "open"]
    assert opened and all(lv["gating"]["latency"] == "reported, not gated" for lv in opened)
    assert "Gated on the **local SLO**" in (tmp_path / "r" / "report.md").read_text()


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


# --- the LLM phase's workloads, sweep and records against a server that keeps time -------------
PACED_TTFT_MS, PACED_TPOT_MS = 20.0, 2.0


@pytest.fixture(scope="module")
def paced() -> Iterator[str]:
    """bench/llm_paced.py's server (first token after PACED_TTFT_MS, then one every
    PACED_TPOT_MS; usage counts a prompt's words); yields its base URL, stopped by PID."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from raygke.host import free_ports

    port = free_ports(1)[0]
    script = Path(__file__).resolve().parents[1] / "bench" / "llm_paced.py"
    server = subprocess.Popen(
        [sys.executable, str(script), "--serve", str(port), "--ttft-ms", str(PACED_TTFT_MS),
         "--tpot-ms", str(PACED_TPOT_MS)],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + REQUEST_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/llm/v1/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=REQUEST_S)


def test_the_llm_workloads_sweep_and_records_against_a_paced_server(
    paced: str, tmp_path: Path
) -> None:
    """Shapes and bookkeeping, never timing thresholds: every workload's requests succeed, a
    conversation's prompts grow as its turns resend it, the sweep gets a knee verdict, and the
    report carries each level's vLLM records and the trade-off plot."""
    import datetime as dt

    from raygke.smoke.checks import CheckOutcome
    from raygke.smoke.contract import parse_contract
    from raygke.smoke.gates import evaluate_llm
    from raygke.smoke.llm import calibrate, run_llm_level
    from raygke.smoke.plot import plot_llm_tradeoff
    from raygke.smoke.profiles import (
        QUICK,
        llm_open_specs,
        llm_specs,
        llm_workload_specs,
        with_overrides,
    )
    from raygke.smoke.report import build_report, render_markdown

    doc = {
        "schema_version": 3, "source": "local", "stack": "paced", "http_url": paced,
        "grpc_target": "127.0.0.1:1",
        "apps": [{"name": "llm", "kind": "llm", "route_prefix": "/llm", "grpc_service": None,
                  "model": "paced"}],
        "slo": {"concurrency": 4, "p99_ms": 100, "max_error_rate": 0.0,
                "llm": {"concurrency": 4, "ttft_ms": 60_000, "tpot_ms": 1_000,
                        "input_tokens": 24, "output_tokens": 8}},
        "local_slo": {"llm": {"tpot_ms": 500}},
    }  # fmt: skip
    contract = parse_contract(doc)
    app = contract.apps[0]
    assert contract.slo.llm is not None
    profile = with_overrides(
        QUICK, llm_rate_fractions=(0.5, 2.0), llm_workloads=("shared-prefix", "multi-turn")
    )
    words_per_token = calibrate(contract.endpoints, app, "paced")
    assert words_per_token == 1.0  # the paced server counts words
    closed = llm_specs(contract, profile, {"llm": "paced"})
    levels = [run_llm_level(s, contract.endpoints, 1.0, contract.slo.llm) for s in closed]
    workloads = llm_workload_specs(closed, profile, contract.slo.llm.concurrency)
    levels += [run_llm_level(s, contract.endpoints, 1.0, contract.slo.llm) for s in workloads]
    peak = levels[0].requests_per_s  # the synthetic closed level's
    opened = llm_open_specs(closed, profile, {"llm": peak})
    levels += [run_llm_level(s, contract.endpoints, 1.0, contract.slo.llm) for s in opened]
    assert [lv.spec.workload for lv in levels] == [
        "synthetic", "shared-prefix", "multi-turn", "synthetic", "synthetic"
    ]  # fmt: skip
    for level in levels:
        assert level.errors == {}, level.label
        assert all(r.output_tokens == 8 for r in level.results if r.turn is None)
    multi = levels[2]
    turns = max(r.turn or 0 for r in multi.results) + 1
    by_turn = [sorted({r.input_tokens for r in multi.results if r.turn == t}) for t in range(turns)]
    assert all(len(lengths) == 1 for lengths in by_turn)  # every conversation alike
    assert [lengths[0] for lengths in by_turn] == sorted(lengths[0] for lengths in by_turn)
    assert by_turn[-1][0] <= 24 < by_turn[-1][0] + 8  # the last turn's prompt: the synthetic one
    assert all(r.input_tokens == 24 for r in levels[1].results)  # shared prefix, same length
    gates = evaluate_llm(contract.slo, levels, {})
    assert any("local SLO smoke.localSlo.llm.tpotMs" in g.detail for g in gates)
    report = build_report(
        profile=profile,
        contracts={"A": contract},
        checks={"A": [CheckOutcome("health", None, "http", True, "ok", 1.0)]},
        levels=[],
        llm_levels=levels,
        gates=gates,
        warnings=[],
        ratios=None,
        plots=[str(plot_llm_tradeoff(levels, tmp_path / "llm_tradeoff.png"))],
        started=dt.datetime.now(dt.UTC),
        exit_code=0,
    )
    report = json.loads(json.dumps(report))
    jsonschema.validate(report, REPORT_SCHEMA)
    [sweep] = report["llm_sweeps"]
    assert [p["fraction"] for p in sweep["points"]] == [0.5, 2.0]
    for row in report["llm"]:
        record = row["vllm"]
        n = record["completed"] + record["failed"]
        assert len(record["ttfts"]) == len(record["itls"]) == len(record["start_times"]) == n
        if row["workload"] != "multi-turn":  # a turn asks for its share of the tokens
            assert record["output_lens"] == [8] * n
        if row["loop"] == "open":  # arrivals in the order they were due
            assert record["start_times"] == sorted(record["start_times"])
    assert "#### Request-rate sweep: A llm" in render_markdown(report)
    assert (tmp_path / "llm_tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_the_cold_start_reads_a_local_up_and_times_the_first_token(
    paced: str, tmp_path: Path
) -> None:
    """A stand-in for `raygke local up`: its progress lines, 0.2 s apart, then the outputs of a
    run whose llm app is the paced server; and a `down` that leaves a mark."""
    import sys

    from raygke.smoke.coldstart import measure

    outputs, marker = tmp_path / "outputs.json", tmp_path / "down"
    contract = {
        "schema_version": 3, "source": "local", "stack": "paced", "http_url": paced,
        "grpc_target": "127.0.0.1:1",
        "apps": [{"name": "llm", "kind": "llm", "route_prefix": "/llm", "grpc_service": None,
                  "model": "paced"}],
        "slo": {"concurrency": 1, "p99_ms": 100, "max_error_rate": 0.0},
    }  # fmt: skip
    up = (
        "import json, sys, time\n"
        "for line in ('Ray up in 0.1s', 'connected to x; submitting 1 apps', 'llm=DEPLOYING',\n"
        "             'llm=RUNNING', 'up in 0.5 s'):\n"
        "    print('[raygke local]', line, flush=True); time.sleep(0.2)\n"
        f"open({str(outputs)!r}, 'w').write(json.dumps({contract!r}))\n"
    )
    down = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('down')"]
    seen: list[str] = []
    figures = measure([sys.executable, "-c", up], down, outputs, "paced", echo=seen.append)
    assert marker.read_text() == "down" and len(seen) == 5
    assert figures.first_request["ok"] and figures.first_request["output_tokens"] == 16
    assert figures.first_ttft_s is not None and figures.cold_start_s is not None
    assert figures.submit_to_running_s is not None and figures.running_to_serving_s is not None
    # the parts add up: submit -> RUNNING -> serving -> the first request's first token
    assert figures.cold_start_s >= (
        figures.submit_to_running_s + figures.running_to_serving_s + figures.first_ttft_s
    )
