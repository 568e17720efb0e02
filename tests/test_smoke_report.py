"""Gates, A/B ratios, the plan's budget, the report schema, Markdown and plots: synthetic data."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from raygke.smoke.checks import CheckOutcome, scores_problem, stream_timing_problem
from raygke.smoke.cli import Progress
from raygke.smoke.contract import EXAMPLE, parse_contract
from raygke.smoke.gates import client_warnings, compare_ratios, evaluate
from raygke.smoke.load import LevelResult, LoadSpec, Mode, Transport, WorkerSamples, merge_samples
from raygke.smoke.plan import (
    FULL,
    QUICK,
    auto_processes,
    closed_specs,
    open_specs,
    targets,
    with_overrides,
)
from raygke.smoke.plot import plot_latency_distribution, plot_throughput_vs_p99
from raygke.smoke.report import REPORT_SCHEMA, build_report, render_markdown

pytestmark = pytest.mark.pure

CONTRACT = parse_contract(EXAMPLE)
ECHO = CONTRACT.apps[0]


def _spec(transport: Transport = "http", mode: Mode = "unary", c: int = 8) -> LoadSpec:
    return LoadSpec(
        app=ECHO, transport=transport, mode=mode, loop="closed", concurrency=c, duration_s=10.0
    )


def _level(
    spec: LoadSpec,
    latencies_ms: list[float],
    errors: dict[str, int] | None = None,
    deployment: str = "A",
    repeat: int = 0,
    cpu: float = 0.3,
    ttft_ms: list[float] | None = None,
) -> LevelResult:
    part = WorkerSamples(
        latencies=[v / 1000 for v in latencies_ms],
        ttfts=[v / 1000 for v in (ttft_ms or [])],
        ok=len(latencies_ms),
        sent=len(latencies_ms) + sum((errors or {}).values()),
        sent_in_window=len(latencies_ms) + sum((errors or {}).values()),
        errors=Counter(errors or {}),
        cpu_s=cpu * 10,
        wall_s=10.0,
    )
    level = merge_samples(spec, [part])
    level.deployment, level.repeat = deployment, repeat
    return level


def _ok_checks() -> list[CheckOutcome]:
    return [CheckOutcome("health", None, "http", True, "GET /-/healthz: 200", 1.0)]


def _gate(gates: list, prefix: str):  # type: ignore[no-untyped-def]
    found = [g for g in gates if g.name.startswith(prefix)]
    assert len(found) == 1, [g.name for g in gates]
    return found[0]


def test_all_gates_pass_within_slo() -> None:
    levels = [_level(_spec(), [10.0] * 100), _level(_spec("grpc"), [5.0] * 100)]
    gates = evaluate(CONTRACT.slo, _ok_checks(), levels)
    assert all(g.passed for g in gates), gates
    assert {g.name for g in gates} >= {"p99 echo/http/unary c=8", "p99 echo/grpc/unary c=8"}


def test_p99_over_slo_fails_its_gate() -> None:
    slow = [10.0] * 95 + [900.0] * 5
    gates = evaluate(CONTRACT.slo, _ok_checks(), [_level(_spec(), slow)])
    gate = _gate(gates, "p99 echo/http/unary")
    assert not gate.passed
    assert "max 500 ms" in gate.detail


def test_stream_gate_uses_time_to_first_chunk() -> None:
    # Long streams (e2e 2 s) with a fast first chunk meet a 500 ms p99 on TTFT.
    level = _level(_spec(mode="stream"), [2000.0] * 50, ttft_ms=[20.0] * 50)
    gate = _gate(evaluate(CONTRACT.slo, _ok_checks(), [level]), "TTFT p99 echo/http/stream")
    assert gate.passed
    late = _level(_spec(mode="stream"), [2000.0] * 50, ttft_ms=[900.0] * 50)
    assert not _gate(evaluate(CONTRACT.slo, _ok_checks(), [late]), "TTFT p99").passed


def test_error_rate_over_slo_fails() -> None:
    level = _level(_spec(), [10.0] * 98, errors={"http_500": 2})
    gate = _gate(evaluate(CONTRACT.slo, _ok_checks(), [level]), "error rate echo/http/unary")
    assert not gate.passed
    assert "http_500" in gate.detail
    assert level.error_rate == pytest.approx(0.02)


def test_level_with_only_errors_fails_p99_gate() -> None:
    level = _level(_spec(), [], errors={"conn_error": 50})
    gates = evaluate(CONTRACT.slo, _ok_checks(), [level])
    assert not _gate(gates, "p99 echo/http/unary").passed
    assert level.error_rate == 1.0


def test_failed_check_fails_functional_gate() -> None:
    checks = [*_ok_checks(), CheckOutcome("echo stream", "echo", "http", False, "buffered", 3.0)]
    gate = _gate(evaluate(CONTRACT.slo, checks, []), "functional checks")
    assert not gate.passed and "buffered" in gate.detail
    assert not _gate(evaluate(CONTRACT.slo, [], []), "functional checks").passed


def test_p99_gate_takes_the_median_of_repeats_and_ignores_baseline() -> None:
    runs = [
        _level(_spec(), [10.0] * 100, repeat=0),
        _level(_spec(), [900.0] * 100, repeat=1),
        _level(_spec(), [20.0] * 100, repeat=2),
        _level(_spec(), [5000.0] * 100, deployment="B"),  # the baseline is measured, not gated
    ]
    gate = _gate(evaluate(CONTRACT.slo, _ok_checks(), runs), "p99 echo/http/unary")
    assert gate.passed and gate.detail.startswith("20.0 ms")


def test_compare_ratios_with_spread() -> None:
    levels: list[LevelResult] = []
    for repeat, (a_n, b_n) in enumerate([(500, 100), (400, 100), (600, 100)]):
        levels.append(_level(_spec(), [10.0] * a_n, deployment="A", repeat=repeat))
        levels.append(_level(_spec(), [40.0] * b_n, deployment="B", repeat=repeat))
    (ratio,) = compare_ratios(levels)
    assert ratio.throughput is not None and ratio.p99 is not None
    assert (ratio.throughput.min, ratio.throughput.median, ratio.throughput.max) == (4.0, 5.0, 6.0)
    assert ratio.throughput.n == 3
    assert ratio.p99.median == pytest.approx(0.25)


def test_client_bound_warning() -> None:
    busy = _level(_spec(), [10.0] * 10, cpu=0.97)
    calm = _level(_spec(), [10.0] * 10, cpu=0.2)
    warnings = client_warnings([busy, calm])
    assert len(warnings) == 1 and "client may be the bottleneck" in warnings[0]
    assert "--processes 2" in warnings[0]


@pytest.mark.parametrize(
    ("ttft", "last", "chunks", "problem"),
    [
        (0.001, 0.020, 16, None),
        (0.0199, 0.020, 16, "looks buffered"),
        (0.001, 0.001, 16, "looks buffered"),
        (0.001, 0.001, 1, ">= 2 chunks"),
        (None, None, 0, ">= 2 chunks"),
    ],
)
def test_stream_timing(
    ttft: float | None, last: float | None, chunks: int, problem: str | None
) -> None:
    found = stream_timing_problem(ttft, last, chunks)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        ([0.0, 0.5, 1.0], None),
        ([0.1, 0.2], "2 scores for 3 rows"),
        ([0.1, 1.2, 0.3], "outside [0, 1]"),
        ([0.1, float("nan"), 0.3], "outside [0, 1]"),
        ([0.1, "0.2", 0.3], "not a number"),
        (None, "not a list"),
    ],
)
def test_scores_validity(scores: object, problem: str | None) -> None:
    found = scores_problem(scores, 3)
    assert found is None if problem is None else problem in (found or "")


def test_quick_profile_fits_two_minutes() -> None:
    # Levels are run back to back: the plan's own seconds must leave room for checks and startup.
    specs = closed_specs(CONTRACT, QUICK)
    opened = open_specs(CONTRACT, QUICK, {s.target: 1000.0 for s in specs})
    planned = sum(s.warmup_s + s.duration_s for s in specs + opened) * QUICK.repeats
    assert planned <= 60
    assert {s.concurrency for s in specs} == {CONTRACT.slo.concurrency}
    assert len(opened) == 1 and opened[0].rate == 500.0


def test_full_profile_covers_every_target_and_level() -> None:
    specs = closed_specs(CONTRACT, FULL)
    assert len(targets(CONTRACT)) == 6  # echo: 4 shapes, recsys: 2
    assert len(specs) == 6 * 4  # levels 1, 8, 32, 128 (the SLO's 8 included once)
    opened = open_specs(CONTRACT, FULL, {s.target: 800.0 for s in specs})
    assert sorted({(s.transport, s.rate) for s in opened}) == [
        ("grpc", 200.0),
        ("grpc", 400.0),
        ("grpc", 600.0),
        ("http", 200.0),
        ("http", 400.0),
        ("http", 600.0),
    ]
    assert open_specs(CONTRACT, FULL, {}) == []  # no peak (all failed): no open loop


def test_overrides_and_auto_processes() -> None:
    p = with_overrides(QUICK, duration_s=1.5, levels=(2, 4), processes=3)
    assert (p.duration_s, p.levels, p.processes, p.warmup_s) == (1.5, (2, 4), 3, QUICK.warmup_s)
    assert {s.processes for s in closed_specs(CONTRACT, p)} == {3}
    assert auto_processes(8, cpus=16) == 1
    assert auto_processes(128, cpus=16) == 4
    assert auto_processes(128, cpus=2) == 1


def _report(levels: list[LevelResult], compare: bool, exit_code: int) -> dict:  # type: ignore[type-arg]
    gates = evaluate(CONTRACT.slo, _ok_checks(), levels)
    contracts = {"A": CONTRACT} | ({"B": CONTRACT} if compare else {})
    return build_report(
        profile=QUICK,
        contracts=contracts,
        checks={k: _ok_checks() for k in contracts},
        levels=levels,
        gates=gates,
        warnings=["example warning"],
        ratios=compare_ratios(levels) if compare else None,
        plots=["throughput_p99.png"],
        started=dt.datetime.now(dt.UTC),
        exit_code=exit_code,
    )


def test_report_matches_its_schema_and_renders() -> None:
    open_spec = replace(_spec(), loop="open", rate=100.0)
    levels = [
        _level(_spec(), [10.0] * 100, deployment="A"),
        _level(_spec(), [30.0] * 50, deployment="B"),
        _level(_spec(mode="stream"), [200.0] * 20, ttft_ms=[5.0] * 20),
        _level(open_spec, [12.0] * 100, errors={"timeout": 1}),
    ]
    report = json.loads(json.dumps(_report(levels, compare=True, exit_code=1)))
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["load"][0]["latency_ms"]["p99"] == pytest.approx(10.0)
    assert report["load"][3]["rate"] == 100.0 and report["load"][3]["errors"] == {"timeout": 1}
    assert sum(report["load"][0]["histogram_ms"]["counts"]) == 100
    md = render_markdown(report)
    assert md.startswith("## raygke smoke: FAIL (dev, profile quick)")
    assert "| p99 echo/http/unary c=8 | pass |" in md
    assert "echo/http/unary closed c=8" in md
    assert "### A/B" in md and "2.00x (2.00-2.00, n=1)" in md
    assert "- example warning" in md
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in md


def test_schema_rejects_a_report_missing_gates() -> None:
    report = json.loads(json.dumps(_report([_level(_spec(), [1.0])], False, 0)))
    jsonschema.validate(report, REPORT_SCHEMA)
    del report["gates"]
    with pytest.raises(jsonschema.ValidationError, match="'gates' is a required property"):
        jsonschema.validate(report, REPORT_SCHEMA)


def test_plots_are_written(tmp_path: Path) -> None:
    levels = [
        _level(_spec(c=c), [float(c + i % 7) for i in range(200)], deployment=d)
        for c in (1, 8, 32)
        for d in ("A", "B")
    ]
    for path in (
        plot_throughput_vs_p99(levels, tmp_path / "t.png"),
        plot_latency_distribution(levels, 8, tmp_path / "l.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000


def test_progress_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(2, out)
    progress.step("first")
    progress.step("second")
    progress.step("unplanned")
    assert out.getvalue().splitlines() == [
        "smoke: [1/2] first",
        "smoke: [2/2] second",
        "smoke: [3/3] unplanned",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    out = _Terminal()
    progress = Progress(4, out)
    progress.step("one")
    progress.step("two")
    text = out.getvalue()
    assert "\r\x1b[2K[" + "#" * 7 + "." * 23 + "] 1/4 one" in text
    assert "] 2/4 two" in text and "\n" not in text  # one line, redrawn in place
