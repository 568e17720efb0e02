"""Synthetic smoke data for the smoke tests (gates, plan, report): the documented contract, closed-loop
specs on its echo app, and level results built from given latencies, as the load phase merges them."""

from __future__ import annotations

from collections import Counter

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import EXAMPLE, parse_contract
from raygke.smoke.load import LevelResult, LoadSpec, Mode, Transport, WorkerSamples, merge_samples

CONTRACT = parse_contract(EXAMPLE)
ECHO = CONTRACT.apps[0]


def closed_spec(transport: Transport = "http", mode: Mode = "unary", c: int = 8) -> LoadSpec:
    return LoadSpec(
        app=ECHO, transport=transport, mode=mode, loop="closed", concurrency=c, duration_s=10.0
    )


def level_result(
    spec: LoadSpec,
    latencies_ms: list[float],
    errors: dict[str, int] | None = None,
    deployment: str = "A",
    repeat: int = 0,
    cpu: float = 0.3,
    ttft_ms: list[float] | None = None,
    send_lags_ms: list[float] | None = None,
) -> LevelResult:
    """One client process's samples (10 s of wall time at `cpu` of a core), merged into a level."""
    part = WorkerSamples(
        latencies=[v / 1000 for v in latencies_ms],
        ttfts=[v / 1000 for v in (ttft_ms or [])],
        send_lags=[v / 1000 for v in (send_lags_ms or [])],
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


def passing_checks() -> list[CheckOutcome]:
    return [CheckOutcome("health", None, "http", True, "GET /-/healthz: 200", 1.0)]
