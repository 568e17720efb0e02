"""Pass/fail: functional checks, error rates and the SLO's p99, from the contract's `slo`.

Owns: turning check outcomes and level results into named gates, client-bottleneck warnings, and
A/B ratios with their spread. Does not own: measuring (load.py) or rendering (report.py).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import Slo
from raygke.smoke.llm import LlmLevelResult, Measure
from raygke.smoke.load import LevelResult


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str


def slo_p99(level: LevelResult) -> float | None:
    """The latency the SLO's p99 applies to: end-to-end (unary) or time to first chunk (streams)."""
    summary = level.ttft_ms if level.spec.mode == "stream" else level.latency_ms
    return None if summary is None else summary.p99


def _error_rate(label: str, errors: dict[str, int], total: int, max_rate: float) -> Gate:
    rate = sum(errors.values()) / total if total else 1.0
    return Gate(
        f"error rate {label}",
        passed=rate <= max_rate,
        detail=f"{rate:.2%} of {total}, max {max_rate:.2%}" + (f": {errors}" if errors else ""),
    )


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
        gates.append(_error_rate(level.spec.label, level.errors, total, slo.max_error_rate))
    at_slo: dict[str, list[LevelResult]] = {}
    for level in mine:
        if level.spec.loop == "closed" and level.spec.concurrency == slo.concurrency:
            at_slo.setdefault(level.spec.target, []).append(level)
    for target, runs in at_slo.items():
        values = [slo_p99(run) for run in runs]
        measured = [v for v in values if v is not None]
        what = "TTFT p99" if runs[0].spec.mode == "stream" else "p99"
        name = f"{what} {target} c={slo.concurrency}"
        if len(measured) != len(values):
            gates.append(Gate(name, False, "no successful requests to measure"))
            continue
        # Median over repeats: one noisy repeat neither passes nor fails a deployment alone.
        p99 = statistics.median(measured)
        gates.append(Gate(name, p99 <= slo.p99_ms, f"{p99:.1f} ms (max {slo.p99_ms:g} ms)"))
    return gates


def evaluate_llm(slo: Slo, levels: list[LlmLevelResult], problems: dict[str, str]) -> list[Gate]:
    """The LLM phase's gates for deployment A: errors at every level, and the p99 of TTFT and TPOT
    at `slo.llm.concurrency` (median over repeats); `problems` (app name -> why its load could not
    run) fail a gate each."""
    gates = [Gate(f"llm load {app}", False, why) for app, why in problems.items()]
    llm = slo.llm
    mine = [lv for lv in levels if lv.deployment == "A"]
    for level in mine:
        total = len(level.results)
        gates.append(_error_rate(f"llm {level.label}", level.errors, total, slo.max_error_rate))
    if llm is None:
        return gates
    at_slo: dict[str, list[LlmLevelResult]] = {}
    for level in mine:
        if level.spec.loop == "closed" and level.spec.concurrency == llm.concurrency:
            at_slo.setdefault(level.spec.app.name, []).append(level)
    for app, runs in at_slo.items():
        objectives: tuple[tuple[Measure, float], ...] = (
            ("ttft", llm.ttft_ms),
            ("tpot", llm.tpot_ms),
        )
        for measure, limit in objectives:
            name = f"{measure.upper()} p99 llm {app} c={llm.concurrency}"
            summaries = [run.summary_ms(measure) for run in runs]
            if any(s is None for s in summaries):
                gates.append(Gate(name, False, "no successful streams to measure"))
                continue
            p99 = statistics.median(s.p99 for s in summaries if s is not None)
            gates.append(Gate(name, p99 <= limit, f"{p99:.1f} ms (max {limit:g} ms)"))
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
