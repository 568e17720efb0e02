"""raygke/smoke/gates.py: the gates (functional checks, error rate, the SLO's p99), the client-bottleneck
warnings and the A/B ratios, on synthetic levels."""

from __future__ import annotations

from dataclasses import replace

import pytest
from smoke_levels import CONTRACT, closed_spec, level_result, passing_checks

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import EXAMPLE, AppEndpoint, parse_contract
from raygke.smoke.gates import (
    NOT_GATED,
    Gate,
    Ratio,
    Spread,
    client_warnings,
    compare_ratios,
    evaluate,
    evaluate_llm,
    llm_gating,
    load_gating,
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
    assert (
        f"(max {llm.ttft_ms:g} ms, cluster SLO smoke.llm.ttftMs)" in _gate(gates, "TTFT p99").detail
    )


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


# --- which SLO, and which levels it gates ---------------------------------------------------------
LOCAL = parse_contract(
    EXAMPLE | {"source": "local", "local_slo": {"p99_ms": 900, "llm": {"ttft_ms": 3000}}}
)


def test_a_gate_cites_the_slo_and_the_stack_key_it_held() -> None:
    stream = level_result(closed_spec(mode="stream"), [50.0] * 20, ttft_ms=[950.0] * 20)
    gates = evaluate(LOCAL.slo, passing_checks(), [stream])
    ttft = _gate(gates, "TTFT p99 echo/http/stream")
    assert not ttft.passed
    assert ttft.detail == "950.0 ms (max 900 ms, local SLO smoke.localSlo.p99Ms)"
    # the local block sets no maxErrorRate: the cluster's applies, named as the cluster's key
    assert "(local SLO smoke.maxErrorRate)" in _gate(gates, "error rate").detail
    llm = LOCAL.slo.llm
    assert llm is not None and llm.ttft_ms == 3000
    level = llm_level(2.5, llm.tpot_ms / 500, llm.concurrency)
    llm_gates = evaluate_llm(LOCAL.slo, [level], {})
    assert _gate(llm_gates, "TTFT p99").passed  # 2.5 s: within the local 3 s, not the cluster's 2 s
    assert "local SLO smoke.localSlo.llm.ttftMs" in _gate(llm_gates, "TTFT p99").detail
    assert "local SLO smoke.llm.tpotMs" in _gate(llm_gates, "TPOT p99").detail
    cluster = evaluate_llm(CONTRACT.slo, [level], {})
    assert not _gate(cluster, "TTFT p99").passed
    assert "cluster SLO smoke.llm.ttftMs" in _gate(cluster, "TTFT p99").detail


def test_each_load_level_says_whether_it_is_gated_and_why_not() -> None:
    slo = LOCAL.slo
    at_slo = level_result(closed_spec(mode="stream"), [5.0] * 10, ttft_ms=[1.0] * 10)
    elsewhere = level_result(closed_spec(c=1), [5.0] * 10)
    opened = level_result(replace(closed_spec(), loop="open", rate=40.0), [5.0] * 10)
    baseline = level_result(closed_spec(), [5.0] * 10, deployment="B")
    gates = {g.name for g in evaluate(slo, passing_checks(), [at_slo, elsewhere, opened])}
    gated = load_gating(at_slo, slo)
    assert (gated["slo"], gated["slo_source"], gated["latency"], gated["reason"]) == (
        "localSlo",
        "local SLO",
        "gated",
        None,
    )
    assert gated["gates"] == [
        "error rate echo/http/stream closed c=8",
        "TTFT p99 echo/http/stream c=8",
    ]
    for level, where in ((elsewhere, "c=1: its p99"), (opened, "open loop at 40/s: its p99")):
        info = load_gating(level, slo)
        assert info["latency"] == NOT_GATED and info["gates"] == [f"error rate {level.spec.label}"]
        assert info["reason"].startswith(f"{where} is reported, not gated")
        assert "holds it at c=8, closed loop (smoke.concurrency)" in info["reason"]
    for level in (at_slo, elsewhere, opened):  # every gate a level names is one evaluate made
        assert set(load_gating(level, slo)["gates"]) <= gates
    base = load_gating(baseline, slo)
    assert (base["slo"], base["gates"]) == (None, []) and "baseline" in base["reason"]


def _llm_variant(level: LlmLevelResult, **changes: object) -> LlmLevelResult:
    return LlmLevelResult(replace(level.spec, **changes), 1.0, level.results, 0.1, level.slo)


def test_each_llm_level_says_whether_it_is_gated_and_why_not() -> None:
    slo = LOCAL.slo
    assert slo.llm is not None
    c = slo.llm.concurrency
    base = llm_level(0.1, 0.01, c)
    levels = {
        "closed": base,
        "other c": _llm_variant(base, concurrency=c * 4),
        "sweep": _llm_variant(base, loop="open", rate=2.0, fraction=0.5),
        "overload": _llm_variant(base, loop="open", rate=5.0, fraction=1.25),
        "shared-prefix": _llm_variant(base, workload="shared-prefix"),
        "multi-turn": _llm_variant(base, workload="multi-turn"),
    }
    info = {name: llm_gating(level, slo) for name, level in levels.items()}
    assert info["closed"]["latency"] == "gated" and info["closed"]["gates"][1:] == [
        f"TTFT p99 llm llm c={c}",
        f"TPOT p99 llm llm c={c}",
    ]
    for name in ("other c", "sweep", "overload", "shared-prefix", "multi-turn"):
        assert info[name]["latency"] == NOT_GATED and info[name]["slo"] == "localSlo"
        assert "reported, not gated" in info[name]["reason"]
    assert info["sweep"]["gates"] == [f"error rate llm {levels['sweep'].label}"]
    assert "50% of the closed-loop peak" in info["sweep"]["reason"]
    assert info["overload"]["gates"] == []  # past the peak on purpose: errors not gated either
    assert "125% of the closed-loop peak" in info["overload"]["reason"]
    assert "the multi-turn workload" in info["multi-turn"]["reason"]
    assert f"synthetic prompts at c={c}, closed loop" in info["shared-prefix"]["reason"]
    gates = evaluate_llm(slo, list(levels.values()), {})
    names = [g.name for g in gates]
    # the workloads at the SLO's concurrency never join its latency gates, each read once
    assert names.count(f"TTFT p99 llm llm c={c}") == 1
    assert all(set(i["gates"]) <= set(names) for i in info.values())
    assert not any("open 5/s" in n for n in names)
