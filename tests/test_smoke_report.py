"""The report (schema, Markdown), plots, progress and the checks' timing and score rules: synthetic data
(the gates and the load plan have their own tests: test_smoke_gates.py, test_smoke_profiles.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from smoke_levels import CONTRACT, closed_spec, level_result, passing_checks

from raygke.smoke.checks import scores_problem, stream_timing_problem
from raygke.smoke.cli import Progress
from raygke.smoke.contract import EXAMPLE, AppEndpoint, SmokeContract, parse_contract
from raygke.smoke.gates import compare_ratios, evaluate
from raygke.smoke.llm import LlmLevelResult, LlmLoadSpec, LlmResult
from raygke.smoke.load import LevelResult
from raygke.smoke.plot import (
    plot_latency_distribution,
    plot_llm_tradeoff,
    plot_throughput_vs_p99,
)
from raygke.smoke.profiles import QUICK
from raygke.smoke.report import REPORT_SCHEMA, build_report, render_markdown

pytestmark = pytest.mark.pure


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


def _report(
    levels: list[LevelResult],
    compare: bool,
    exit_code: int,
    llm_levels: list[LlmLevelResult] | None = None,
) -> dict:  # type: ignore[type-arg]
    gates = evaluate(CONTRACT.slo, passing_checks(), levels)
    contracts = {"A": CONTRACT} | ({"B": CONTRACT} if compare else {})
    return build_report(
        profile=QUICK,
        contracts=contracts,
        checks={k: passing_checks() for k in contracts},
        levels=levels,
        llm_levels=llm_levels or [],
        gates=gates,
        warnings=["example warning"],
        ratios=compare_ratios(levels) if compare else None,
        plots=["throughput_p99.png"],
        started=dt.datetime.now(dt.UTC),
        exit_code=exit_code,
    )


def test_report_matches_its_schema_and_renders() -> None:
    open_spec = replace(closed_spec(), loop="open", rate=100.0)
    levels = [
        level_result(closed_spec(), [10.0] * 100, deployment="A"),
        level_result(closed_spec(), [30.0] * 50, deployment="B"),
        level_result(closed_spec(mode="stream"), [200.0] * 20, ttft_ms=[5.0] * 20),
        level_result(open_spec, [12.0] * 100, errors={"timeout": 1}),
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


def test_the_llm_phase_is_in_the_report_and_its_table() -> None:
    app = AppEndpoint("llm", "llm", "/llm", None, None, model="tiny")
    stream = LlmResult(
        ok=True, ttft_s=0.05, latency_s=0.35, chunk_times=[0.05, 0.2, 0.35], output_tokens=4
    )
    spec = LlmLoadSpec(app=app, model="tiny", loop="closed", concurrency=8, num_prompts=2)
    failed = LlmResult(error="http_400", message="max_tokens is too large")
    level = LlmLevelResult(spec, 1.0, [stream, failed], 0.2, CONTRACT.slo.llm)
    report = json.loads(json.dumps(_report([], False, 1, llm_levels=[level])))
    jsonschema.validate(report, REPORT_SCHEMA)
    [row] = report["llm"]
    assert (row["ok"], row["errors"], row["output_tok_s"]) == (1, {"http_400": 1}, 4.0)
    assert row["tpot_ms"]["p50"] == pytest.approx(100.0)
    md = render_markdown(report)
    assert "| A | 0 | llm c=8 (32/32 tok) | 1/2 | 4 | 10.0 | 1.00 | 1.00 | 50.0 / 50.0 |" in md
    assert "http_400: 1" in md


def test_schema_rejects_a_report_missing_gates() -> None:
    report = json.loads(json.dumps(_report([level_result(closed_spec(), [1.0])], False, 0)))
    jsonschema.validate(report, REPORT_SCHEMA)
    del report["gates"]
    with pytest.raises(jsonschema.ValidationError, match="'gates' is a required property"):
        jsonschema.validate(report, REPORT_SCHEMA)


def test_plots_are_written(tmp_path: Path) -> None:
    levels = [
        level_result(closed_spec(c=c), [float(c + i % 7) for i in range(200)], deployment=d)
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


# ------------------------------------------------------------------------- gating, SLO, LLM figures
LOCAL = parse_contract(
    EXAMPLE | {"source": "local", "local_slo": {"p99_ms": 900, "llm": {"ttft_ms": 3000}}}
)
LLM_APP = AppEndpoint("llm", "llm", "/llm", None, None, model="tiny")


def _llm(ttft_s: float, tpot_s: float, **spec: object) -> LlmLevelResult:
    runs = [
        LlmResult(
            ok=True,
            ttft_s=ttft_s,
            latency_s=ttft_s + 3 * tpot_s,
            chunk_times=[ttft_s + i * tpot_s for i in range(4)],
            output_tokens=4,
            input_tokens=32,
            turn=i % 2 if spec.get("workload") == "multi-turn" else None,
        )
        for i in range(8)
    ]
    shaped = LlmLoadSpec(app=LLM_APP, model="tiny", loop="closed", concurrency=8, num_prompts=8)
    return LlmLevelResult(replace(shaped, **spec), 1.0, runs, 0.1, LOCAL.slo.llm)  # type: ignore[arg-type]


def _local_report(contract: SmokeContract = LOCAL) -> dict:  # type: ignore[type-arg]
    levels = [
        level_result(closed_spec(), [10.0] * 50),
        level_result(replace(closed_spec(), loop="open", rate=100.0), [12.0] * 50),
    ]
    llm_levels = [
        _llm(0.1, 0.01),
        _llm(0.05, 0.01, workload="shared-prefix"),
        _llm(0.2, 0.01, workload="multi-turn"),
        _llm(0.1, 0.01, loop="open", rate=2.0, fraction=0.5),
        _llm(5.0, 0.01, loop="open", rate=4.0, fraction=1.0),
    ]
    report = build_report(
        profile=QUICK,
        contracts={"A": contract},
        checks={"A": passing_checks()},
        levels=levels,
        llm_levels=llm_levels,
        gates=evaluate(contract.slo, passing_checks(), levels),
        warnings=[],
        ratios=None,
        plots=[],
        started=dt.datetime.now(dt.UTC),
        exit_code=0,
    )
    return json.loads(json.dumps(report))


def test_the_report_says_which_slo_gated_the_run_and_each_levels_gating() -> None:
    report = _local_report()
    jsonschema.validate(report, REPORT_SCHEMA)
    dep = report["deployments"]["A"]
    assert (dep["slo"]["origin"], dep["slo"]["source"]) == ("localSlo", "local SLO")
    assert dep["slo"]["local_keys"] == ["llm.ttft_ms", "p99_ms"]
    assert dep["cluster_slo"]["p99_ms"] == 500.0 and dep["cluster_slo"]["origin"] == "slo"
    closed, opened = report["load"]
    assert closed["gating"]["latency"] == "gated" and closed["gating"]["slo"] == "localSlo"
    assert opened["gating"]["latency"] == "reported, not gated"
    md = render_markdown(report)
    assert (
        "Gated on the **local SLO** (the stack's `smoke.localSlo`, which sets llm.ttft_ms, p99_ms"
        in md
    )
    assert "p99 <= 900 ms at c=8" in md and "llm TTFT p99 <= 3000 ms" in md
    assert "The cluster SLO (`smoke`), not applied here: p99 <= 500 ms at c=8" in md
    assert "| local SLO: errors, latency |" in md
    assert "| local SLO: errors; latency reported, not gated |" in md
    assert "Reported, not gated:" in md
    assert (
        "- A echo/http/unary open rate=100/s: open loop at 100/s: its p99 is reported, not gated"
        in md
    )
    assert "- A llm c=8 multi-turn (32/32 tok): the multi-turn workload" in md


def test_a_local_run_on_the_cluster_slo_and_a_cluster_say_so() -> None:
    doc = EXAMPLE | {"source": "local"}
    md = render_markdown(_local_report(parse_contract(doc)))
    assert "Gated on the **cluster SLO** (the stack's `smoke`): p99 <= 500 ms" in md
    assert "This local run's stack sets no `smoke.localSlo`." in md
    assert "sets no" not in render_markdown(_local_report(CONTRACT))


def test_the_llm_figures_sweep_and_workloads_are_reported() -> None:
    report = _local_report()
    rows = {(lv["workload"], lv["loop"], lv["rate"]): lv for lv in report["llm"]}
    synthetic = rows[("synthetic", "closed", 0.0)]
    assert synthetic["output_tok_s_per_user"] == pytest.approx(100.0)  # TPOT 10 ms
    assert synthetic["attainment"] == 1.0 and synthetic["vllm"]["completed"] == 8
    assert rows[("multi-turn", "closed", 0.0)]["ttft_ms_by_turn"] == pytest.approx([200.0, 200.0])
    assert rows[("shared-prefix", "closed", 0.0)]["workload_shape"] == {
        "groups": 4,
        "prefix_tokens": 24,
    }
    [sweep] = report["llm_sweeps"]
    assert [p["rate"] for p in sweep["points"]] == [2.0, 4.0]
    assert (sweep["knee_rps"], sweep["bounded"]) == (2.0, True)  # 5 s TTFT at 4/s misses 3 s
    md = render_markdown(report)
    assert "#### Request-rate sweep: A llm" in md
    assert "| 2 | 50% | 8.00 | 100% | 100 | 10.0 | yes |" in md
    assert "Knee: 2/s; the highest offered rate" in md
    assert "TTFT p50 by turn (ms): 200, 200" in md


def test_the_tradeoff_plot_has_a_point_per_level(tmp_path: Path) -> None:
    levels = [_llm(0.1, t, concurrency=c) for c, t in ((1, 0.005), (8, 0.01), (32, 0.03))]
    levels += [_llm(0.1, 0.02, loop="open", rate=3.0, fraction=0.5)]
    path = plot_llm_tradeoff(levels, tmp_path / "tradeoff.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_a_busy_machine_is_said_to_be_busy() -> None:
    from raygke.smoke.cli import busy_warnings

    assert busy_warnings(14.3, 2) == [] and busy_warnings(7.9, 1) == []
    [line] = busy_warnings(17.1, 2)
    assert line.startswith("the machine was busy: load average 17.1 over the last minute on 2")
    report = _local_report()
    assert len(report["client"]["load_average"]) == 3
    assert ", load average " in render_markdown(report)
