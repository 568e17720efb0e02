"""Pass/fail: functional checks, error rates and the SLO's p99, from the objectives the contract
gates on (`SmokeContract.slo`: the cluster's, or a local run's `local_slo`).

Owns: which levels each gate reads and why the others are reported, not gated (`load_gating`,
`llm_gating`); turning check outcomes and level results into named gates whose detail cites the
objective they held (its SLO and stack key), client-bottleneck warnings, and A/B ratios with their
spread. Does not own: measuring (load.py, llm.py) or rendering (report.py).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import Slo
from raygke.smoke.llm import LlmLevelResult, Measure
from raygke.smoke.load import LevelResult

NOT_GATED = "reported, not gated"


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str


def slo_p99(level: LevelResult) -> float | None:
    """The latency the SLO's p99 applies to: end-to-end (unary) or time to first chunk (streams)."""
    summary = level.ttft_ms if level.spec.mode == "stream" else level.latency_ms
    return None if summary is None else summary.p99


def _error_rate(label: str, errors: dict[str, int], total: int, slo: Slo) -> Gate:
    rate = sum(errors.values()) / total if total else 1.0
    return Gate(
        f"error rate {label}",
        passed=rate <= slo.max_error_rate,
        detail=f"{rate:.2%} of {total}, max {slo.max_error_rate:.2%} "
        f"({slo.cite('max_error_rate')})" + (f": {errors}" if errors else ""),
    )


# ------------------------------------------------------------------------------ which levels gate
def latency_gated(level: LevelResult, slo: Slo) -> bool:
    """The SLO's p99 reads deployment A's closed-loop levels at its concurrency."""
    spec = level.spec
    return level.deployment == "A" and spec.loop == "closed" and spec.concurrency == slo.concurrency


def p99_gate_name(level: LevelResult, slo: Slo) -> str:
    what = "TTFT p99" if level.spec.mode == "stream" else "p99"
    return f"{what} {level.spec.target} c={slo.concurrency}"


def _baseline() -> dict[str, Any]:
    return {
        "slo": None,
        "slo_source": None,
        "gates": [],
        "latency": NOT_GATED,
        "reason": "the --compare baseline (B): measured beside A, never gated",
    }


def _gating(slo: Slo, gates: list[str], reason: str | None) -> dict[str, Any]:
    return {
        "slo": slo.origin,
        "slo_source": slo.source,
        "gates": gates,
        "latency": NOT_GATED if reason else "gated",
        "reason": reason,
    }


def load_gating(level: LevelResult, slo: Slo) -> dict[str, Any]:
    """How a load level is gated, for the report: by which SLO, the gates that read it, and why
    its latency is reported, not gated (None when it is gated)."""
    if level.deployment != "A":
        return _baseline()
    gates = [f"error rate {level.spec.label}"]
    if latency_gated(level, slo):
        return _gating(slo, [*gates, p99_gate_name(level, slo)], None)
    spec = level.spec
    where = f"open loop at {spec.rate:g}/s" if spec.loop == "open" else f"c={spec.concurrency}"
    what = "TTFT p99" if spec.mode == "stream" else "p99"
    reason = (
        f"{where}: its {what} is {NOT_GATED}; the SLO holds it at c={slo.concurrency}, closed "
        f"loop ({slo.key('concurrency')})"
    )
    return _gating(slo, gates, reason)


def llm_errors_gated(level: LlmLevelResult) -> bool:
    """Deployment A's error rate is gated at every LLM level but the rates a sweep offers at or
    past the measured peak, which overload the app on purpose."""
    spec = level.spec
    overload = spec.loop == "open" and spec.fraction is not None and spec.fraction >= 1.0
    return level.deployment == "A" and not overload


def llm_latency_gated(level: LlmLevelResult, slo: Slo) -> bool:
    """The TTFT and TPOT p99 gates read A's synthetic closed-loop levels at slo.llm's
    concurrency."""
    spec = level.spec
    return (
        slo.llm is not None
        and level.deployment == "A"
        and spec.loop == "closed"
        and spec.workload == "synthetic"
        and spec.concurrency == slo.llm.concurrency
    )


def llm_gate_name(measure: Measure, app: str, concurrency: int) -> str:
    return f"{measure.upper()} p99 llm {app} c={concurrency}"


def llm_gating(level: LlmLevelResult, slo: Slo) -> dict[str, Any]:
    """`load_gating` for an LLM level: the sweep's rates and the workloads are reported, not
    gated, each with its reason."""
    if level.deployment != "A":
        return _baseline()
    spec = level.spec
    gates = [f"error rate llm {level.label}"] if llm_errors_gated(level) else []
    llm = slo.llm
    if llm is None:
        return _gating(slo, gates, "a version 1 contract has no slo.llm: no TTFT or TPOT objective")
    if llm_latency_gated(level, slo):
        names = [llm_gate_name(m, spec.app.name, llm.concurrency) for m in ("ttft", "tpot")]
        return _gating(slo, [*gates, *names], None)
    held = (
        f"the SLO holds their p99 on synthetic prompts at c={llm.concurrency}, closed loop "
        f"({slo.key('llm.concurrency')})"
    )
    if spec.workload != "synthetic":
        reason = f"the {spec.workload} workload: TTFT and TPOT {NOT_GATED}; {held}"
    elif spec.loop == "open" and not gates:
        reason = (
            f"the rate sweep at {spec.fraction:.0%} of the closed-loop peak ({spec.rate:g}/s), "
            f"overloading on purpose: errors, TTFT and TPOT {NOT_GATED}; they place the knee"
        )
    elif spec.loop == "open":
        share = "" if spec.fraction is None else f" ({spec.fraction:.0%} of the closed-loop peak)"
        reason = (
            f"open loop at {spec.rate:g}/s{share}: TTFT and TPOT {NOT_GATED}, they place the "
            f"knee; {held}"
        )
    else:
        reason = f"c={spec.concurrency}: TTFT and TPOT {NOT_GATED}; {held}"
    return _gating(slo, gates, reason)


def evaluate(slo: Slo, checks: list[CheckOutcome], levels: list[LevelResult]) -> list[Gate]:
    """Gates for the deployment under test (deployment "A"; a --compare baseline is not gated)."""
    gates: list[Gate] = []
    failed = [c for c in checks if not c.passed]
    gates.append(
        Gate(
            "functional checks",
            passed=bool(checks) and not failed,
            detail=(
                f"{len(checks)} passed"
                if checks and not failed
                else "; ".join(f"{c.name} {c.app or ''}/{c.transport}: {c.detail}" for c in failed)
                or "no checks ran"
            ),
        )
    )
    mine = [lv for lv in levels if lv.deployment == "A"]
    for level in mine:
        total = level.ok + level.error_count
        gates.append(_error_rate(level.spec.label, level.errors, total, slo))
    at_slo: dict[str, list[LevelResult]] = {}
    for level in mine:
        if latency_gated(level, slo):
            at_slo.setdefault(level.spec.target, []).append(level)
    for runs in at_slo.values():
        values = [slo_p99(run) for run in runs]
        measured = [v for v in values if v is not None]
        name = p99_gate_name(runs[0], slo)
        if len(measured) != len(values):
            gates.append(Gate(name, False, "no successful requests to measure"))
            continue
        # Median over repeats: one noisy repeat neither passes nor fails a deployment alone.
        p99 = statistics.median(measured)
        gates.append(
            Gate(
                name,
                p99 <= slo.p99_ms,
                f"{p99:.1f} ms (max {slo.p99_ms:g} ms, {slo.cite('p99_ms')})",
            )
        )
    return gates


def evaluate_llm(slo: Slo, levels: list[LlmLevelResult], problems: dict[str, str]) -> list[Gate]:
    """The LLM phase's gates for deployment A: errors at every level, and the p99 of TTFT and TPOT
    at `slo.llm.concurrency` (median over repeats); `problems` (app name -> why its load could not
    run) fail a gate each."""
    gates = [Gate(f"llm load {app}", False, why) for app, why in problems.items()]
    llm = slo.llm
    for level in levels:
        if llm_errors_gated(level):
            total = len(level.results)
            gates.append(_error_rate(f"llm {level.label}", level.errors, total, slo))
    if llm is None:
        return gates
    at_slo: dict[str, list[LlmLevelResult]] = {}
    for level in levels:
        if llm_latency_gated(level, slo):
            at_slo.setdefault(level.spec.app.name, []).append(level)
    for app, runs in at_slo.items():
        objectives: tuple[tuple[Measure, float, str], ...] = (
            ("ttft", llm.ttft_ms, "llm.ttft_ms"),
            ("tpot", llm.tpot_ms, "llm.tpot_ms"),
        )
        for measure, limit, field in objectives:
            name = llm_gate_name(measure, app, llm.concurrency)
            summaries = [run.summary_ms(measure) for run in runs]
            if any(s is None for s in summaries):
                gates.append(Gate(name, False, "no successful streams to measure"))
                continue
            p99 = statistics.median(s.p99 for s in summaries if s is not None)
            gates.append(
                Gate(name, p99 <= limit, f"{p99:.1f} ms (max {limit:g} ms, {slo.cite(field)})")
            )
    return gates


def client_warnings(levels: list[LevelResult]) -> list[str]:
    """A line per level where the client, not the server, may have set the pace."""
    warnings: list[str] = []
    for level in levels:
        if not level.client_bound:
            continue
        cpu = max(level.client_cpu, default=0.0)
        lag = level.send_lag_ms
        why = f"client CPU {cpu:.0%} of a core"
        if lag is not None:
            why += f", open-loop send lag p99 {lag.p99:.1f} ms"
        warnings.append(
            f"{level.deployment} {level.spec.label}: the client may be the bottleneck ({why}); "
            f"rerun with --processes {level.spec.processes * 2} on a larger client"
        )
    return warnings


@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float
    n: int


def spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    return Spread(min(values), statistics.median(values), max(values), len(values))


@dataclass(frozen=True)
class Ratio:
    """A over B for one level across repeats (each repeat ran A then B back to back)."""

    label: str
    throughput: Spread | None
    p99: Spread | None


def compare_ratios(levels: list[LevelResult]) -> list[Ratio]:
    """Per level label, the per-repeat ratios A/B of throughput and of the SLO latency's p99."""
    pairs: dict[str, dict[int, dict[str, LevelResult]]] = {}
    for level in levels:
        pairs.setdefault(level.spec.label, {}).setdefault(level.repeat, {})[level.deployment] = (
            level
        )
    ratios: list[Ratio] = []
    for label, repeats in pairs.items():
        tput: list[float] = []
        p99: list[float] = []
        for pair in repeats.values():
            a, b = pair.get("A"), pair.get("B")
            if a is None or b is None:
                continue
            if b.throughput_rps > 0:
                tput.append(a.throughput_rps / b.throughput_rps)
            pa, pb = slo_p99(a), slo_p99(b)
            if pa is not None and pb:
                p99.append(pa / pb)
        ratios.append(Ratio(label, spread(tput), spread(p99)))
    return ratios
