"""raygke/smoke/gates.py: the gates (functional checks, error rate, the SLO's p99), the client-bottleneck
warnings and the A/B ratios, on synthetic levels."""

from __future__ import annotations

from dataclasses import replace

import pytest
from smoke_levels import CONTRACT, closed_spec, level_result, passing_checks

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import AppEndpoint
from raygke.smoke.gates import (
    Gate,
    Ratio,
    Spread,
    client_warnings,
    compare_ratios,
    evaluate,
    evaluate_llm,
    slo_p99,
    spread,
)
from raygke.smoke.llm import LlmLevelResult, LlmLoadSpec, LlmResult
from raygke.smoke.load import LevelResult

pytestmark = pytest.mark.pure


def _gate(gates: list[Gate], prefix: str) -> Gate:
    found = [g for g in gates if g.name.startswith(prefix)]
    assert len(found) == 1, [g.name for g in gates]
    return found[0]


# ---------------------------------------------------------------------------------------------- evaluate
def test_all_gates_pass_within_slo() -> None:
    levels = [
        level_result(closed_spec(), [10.0] * 100),
        level_result(closed_spec("grpc"), [5.0] * 100),
    ]
    gates = evaluate(CONTRACT.slo, passing_checks(), levels)
    assert all(g.passed for g in gates), gates
    assert {g.name for g in gates} >= {"p99 echo/http/unary c=8", "p99 echo/grpc/unary c=8"}


def test_p99_over_slo_fails_its_gate() -> None:
    slow = [10.0] * 95 + [900.0] * 5
    gates = evaluate(CONTRACT.slo, passing_checks(), [level_result(closed_spec(), slow)])
    gate = _gate(gates, "p99 echo/http/unary")
    assert not gate.passed
    assert "max 500 ms" in gate.detail


def test_stream_gate_uses_time_to_first_chunk() -> None:
    # Long streams (e2e 2 s) with a fast first chunk meet a 500 ms p99 on TTFT.
    level = level_result(closed_spec(mode="stream"), [2000.0] * 50, ttft_ms=[20.0] * 50)
    gate = _gate(evaluate(CONTRACT.slo, passing_checks(), [level]), "TTFT p99 echo/http/stream")
    assert gate.passed
    late = level_result(closed_spec(mode="stream"), [2000.0] * 50, ttft_ms=[900.0] * 50)
    assert not _gate(evaluate(CONTRACT.slo, passing_checks(), [late]), "TTFT p99").passed


def test_error_rate_over_slo_fails() -> None:
    level = level_result(closed_spec(), [10.0] * 98, errors={"http_500": 2})
    gate = _gate(evaluate(CONTRACT.slo, passing_checks(), [level]), "error rate echo/http/unary")
    assert not gate.passed
    assert "http_500" in gate.detail
    assert level.error_rate == pytest.approx(0.02)


def test_level_with_only_errors_fails_p99_gate() -> None:
    level = level_result(closed_spec(), [], errors={"conn_error": 50})
    gates = evaluate(CONTRACT.slo, passing_checks(), [level])
    gate = _gate(gates, "p99 echo/http/unary")
    assert not gate.passed and gate.detail == "no successful requests to measure"
    assert level.error_rate == 1.0


def test_failed_check_fails_functional_gate() -> None:
    checks = [
        *passing_checks(),
        CheckOutcome("echo stream", "echo", "http", False, "buffered", 3.0),
    ]
    gate = _gate(evaluate(CONTRACT.slo, checks, []), "functional checks")
    assert not gate.passed and "buffered" in gate.detail
    assert not _gate(evaluate(CONTRACT.slo, [], []), "functional checks").passed


def test_p99_gate_takes_the_median_of_repeats_and_ignores_baseline() -> None:
    runs = [
        level_result(closed_spec(), [10.0] * 100, repeat=0),
        level_result(closed_spec(), [900.0] * 100, repeat=1),
        level_result(closed_spec(), [20.0] * 100, repeat=2),
        # the baseline is measured, not gated
        level_result(closed_spec(), [5000.0] * 100, deployment="B"),
    ]
    gate = _gate(evaluate(CONTRACT.slo, passing_checks(), runs), "p99 echo/http/unary")
    assert gate.passed and gate.detail.startswith("20.0 ms")


def test_p99_is_gated_only_at_the_slo_concurrency_in_closed_loop() -> None:
    # Slow levels away from the SLO's c=8 (other concurrencies, an open loop) are measured and
    # gated on their errors only.
    slow = [900.0] * 100
    levels = [
        level_result(closed_spec(c=1), slow),
        level_result(closed_spec(c=32), slow),
        level_result(replace(closed_spec(), loop="open", rate=100.0), slow),
    ]
    gates = evaluate(CONTRACT.slo, passing_checks(), levels)
    assert [g.name for g in gates] == [
        "functional checks",
        "error rate echo/http/unary closed c=1",
        "error rate echo/http/unary closed c=32",
        "error rate echo/http/unary open rate=100/s",
    ]
    assert all(g.passed for g in gates)


def test_slo_p99_is_end_to_end_for_unary_and_first_chunk_for_streams() -> None:
    unary = level_result(closed_spec(), [10.0] * 100)
    stream = level_result(closed_spec(mode="stream"), [2000.0] * 50, ttft_ms=[20.0] * 50)
    failed = level_result(closed_spec(), [], errors={"timeout": 3})
    assert slo_p99(unary) == pytest.approx(10.0)
    assert slo_p99(stream) == pytest.approx(20.0)
    assert slo_p99(failed) is None


# ---------------------------------------------------------------------------------------------- warnings
def test_client_bound_warning() -> None:
    busy = level_result(closed_spec(), [10.0] * 10, cpu=0.97)
    calm = level_result(closed_spec(), [10.0] * 10, cpu=0.2)
    warnings = client_warnings([busy, calm])
    assert len(warnings) == 1 and "client may be the bottleneck" in warnings[0]
    assert "--processes 2" in warnings[0]


def test_an_open_loop_that_sends_late_is_client_bound_and_says_by_how_much() -> None:
    spec = replace(closed_spec(), loop="open", rate=100.0)
    late = level_result(spec, [10.0] * 100, cpu=0.2, send_lags_ms=[20.0] * 100)
    on_time = level_result(spec, [10.0] * 100, cpu=0.2, send_lags_ms=[0.1] * 100)
    (warning,) = client_warnings([late, on_time])
    assert warning.startswith("A echo/http/unary open rate=100/s: the client may be the bottleneck")
    assert "client CPU 20% of a core, open-loop send lag p99 20.0 ms" in warning


# ---------------------------------------------------------------------------------------------- A/B
def test_spread_of_values() -> None:
    assert spread([]) is None
    assert spread([3.0, 1.0, 2.0, 10.0]) == Spread(min=1.0, median=2.5, max=10.0, n=4)


def test_compare_ratios_with_spread() -> None:
    levels: list[LevelResult] = []
    for repeat, (a_n, b_n) in enumerate([(500, 100), (400, 100), (600, 100)]):
        levels.append(level_result(closed_spec(), [10.0] * a_n, deployment="A", repeat=repeat))
        levels.append(level_result(closed_spec(), [40.0] * b_n, deployment="B", repeat=repeat))
    (ratio,) = compare_ratios(levels)
    assert ratio.throughput is not None and ratio.p99 is not None
    assert (ratio.throughput.min, ratio.throughput.median, ratio.throughput.max) == (4.0, 5.0, 6.0)
    assert ratio.throughput.n == 3
    assert ratio.p99.median == pytest.approx(0.25)


def test_compare_ratios_skip_unpaired_repeats_and_a_baseline_without_successes() -> None:
    levels = [
        level_result(closed_spec(), [10.0] * 100, deployment="A", repeat=0),  # no B in repeat 0
        level_result(closed_spec(), [10.0] * 100, deployment="A", repeat=1),
        level_result(closed_spec(), [], errors={"timeout": 5}, deployment="B", repeat=1),
        level_result(closed_spec(c=32), [10.0] * 100, deployment="A", repeat=0),
        level_result(closed_spec(c=32), [20.0] * 50, deployment="B", repeat=0),
    ]
    assert compare_ratios(levels) == [
        Ratio("echo/http/unary closed c=8", None, None),
        Ratio(
            "echo/http/unary closed c=32",
            Spread(2.0, 2.0, 2.0, 1),
            Spread(0.5, 0.5, 0.5, 1),
        ),
    ]


# --- the LLM phase ---------------------------------------------------------------------------------
LLM_APP = AppEndpoint("llm", "llm", "/llm", None, None, model="tiny")


def llm_level(
    ttft_s: float, tpot_s: float, c: int, errors: int = 0, deployment: str = "A"
) -> LlmLevelResult:
    """`c` streams of 11 tokens, each with this TTFT and TPOT, and `errors` failed requests."""
    last = ttft_s + 10 * tpot_s
    ok = [
        LlmResult(
            ok=True, ttft_s=ttft_s, latency_s=last, chunk_times=[ttft_s, last], output_tokens=11
        )
        for _ in range(c)
    ]
    failed = [LlmResult(error="http_500") for _ in range(errors)]
    spec = LlmLoadSpec(app=LLM_APP, model="tiny", loop="closed", concurrency=c)
    level = LlmLevelResult(spec, 1.0, ok + failed, 0.1, CONTRACT.slo.llm)
    level.deployment = deployment
    return level


def test_llm_gates_hold_ttft_and_tpot_p99_at_the_slo_concurrency() -> None:
    llm = CONTRACT.slo.llm
    assert llm is not None
    c = llm.concurrency
    fast = llm_level(llm.ttft_ms / 2000, llm.tpot_ms / 2000, c)
    slow_first = llm_level(llm.ttft_ms * 2 / 1000, llm.tpot_ms / 2000, c)
    elsewhere = llm_level(10.0, 10.0, c + 1)  # not at the SLO's concurrency: no latency gate
    gates = evaluate_llm(CONTRACT.slo, [fast, elsewhere], {})
    assert all(g.passed for g in gates if "p99" in g.name)
    assert {g.name for g in gates if "p99" in g.name} == {
        f"TTFT p99 llm llm c={c}",
        f"TPOT p99 llm llm c={c}",
    }
    gates = evaluate_llm(CONTRACT.slo, [slow_first], {})
    assert not _gate(gates, "TTFT p99").passed and _gate(gates, "TPOT p99").passed
    assert f"(max {llm.ttft_ms:g} ms)" in _gate(gates, "TTFT p99").detail


def test_llm_errors_and_an_unusable_endpoint_fail_their_gates() -> None:
    llm = CONTRACT.slo.llm
    assert llm is not None
    gates = evaluate_llm(CONTRACT.slo, [llm_level(0.01, 0.001, llm.concurrency, errors=1)], {})
    assert not _gate(gates, "error rate llm").passed
    assert "http_500" in _gate(gates, "error rate llm").detail
    why = "RuntimeError: the LLM endpoint did not report prompt tokens: http_503"
    [gate] = evaluate_llm(CONTRACT.slo, [], {"llm": why})
    assert (gate.name, gate.passed, gate.detail) == ("llm load llm", False, why)


def test_a_baseline_is_not_gated() -> None:
    assert (
        evaluate_llm(CONTRACT.slo, [llm_level(10.0, 10.0, 8, errors=3, deployment="B")], {}) == []
    )
