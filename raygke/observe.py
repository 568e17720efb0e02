"""Every dashboard query and alert of a stack, evaluated against a real Prometheus on the local run.

Owns: what each query must show on a healthy run (`checks`): a panel's query and each value an
alert compares must return series, an alert's own expression must return none (it is not
firing); the few queries that honestly have no series until something goes wrong (`QUIET`, each
with its reason), whose metrics must still have series, so a wrong name fails either way; which
dashboards a local run can fill (`local_dashboards`); evaluating them (`evaluate`,
`check_queries`) and the report `raygke local check-queries` prints.
Does not own: the queries (components/render/observability.py), starting or asking Prometheus
(raygke/local_prometheus.py), the traffic that fills the series (a smoke run, or the user's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from components.render.observability import (
    CATALOG,
    ObservabilitySpec,
    alert_inputs,
    alerts,
    dashboard_queries,
    metric_names,
)
from infra.config import StackConfig
from raygke import local_prometheus

# The GPU dashboard reads GKE's managed DCGM metrics; a local run has no DCGM exporter (and no GPU).
NOT_LOCAL = {"gpu": "GKE's DCGM exporter and an H100 exist only in the cluster"}

# Queries that have no series on a healthy run, by panel title or alert name, and why. Each still
# has its metrics checked: the names it reads must have series.
QUIET = {
    "Server errors/s by app, protocol and code": (
        "no request failed: Ray Serve has no series for a server-error code until one is answered"
    ),
    "ServeErrorBudgetFastBurn": "its errors over requests: no server error yet, so no ratio",
    "ServeErrorBudgetSlowBurn": "its errors over requests: no server error yet, so no ratio",
    # vLLM sets these gauges at each engine step only, and Ray's metrics agent drops a gauge not
    # set for two export intervals (ray/_private/telemetry/open_telemetry_metric_recorder.py).
    "Running and waiting requests": (
        "vLLM's gauges exist only while requests run: Ray drops them seconds after the last one"
    ),
    "KV-cache usage (highest replica, 1 is full)": (
        "vLLM's gauges exist only while requests run: Ray drops them seconds after the last one"
    ),
}
# A quiet query's metrics must have been scraped within this window (a gauge Ray dropped a minute
# ago counts; a wrong name never does).
SEEN_WITHIN = "1h"

Kind = Literal["panel", "alert input", "alert"]


@dataclass(frozen=True)
class Check:
    kind: Kind
    name: str  # the panel's title or the alert's name
    promql: str
    quiet: str | None = None  # why it may return nothing on a healthy run

    @property
    def wants_series(self) -> bool:
        return self.kind != "alert" and self.quiet is None


@dataclass(frozen=True)
class Result:
    check: Check
    series: int  # how many series it returned
    problem: str | None  # None: as expected

    def line(self) -> str:
        c = self.check
        if self.problem:
            verdict = f"FAIL: {self.problem}"
        elif c.kind == "alert":
            verdict = "OK: not firing"
        elif self.series:
            verdict = f"OK: {self.series} series"
        else:
            verdict = f"no series expected on a healthy run ({c.quiet}); its metrics were scraped"
        return f"  {c.kind} {c.name!r}: {verdict}"


def local_dashboards(config: StackConfig) -> tuple[str, ...]:
    """The dashboards a local run of `config` can fill: serving and the tier, and the LLM one when
    the stack's llm app runs locally (on vLLM's CPU build)."""
    llm = any(a.kind == "llm" and a.runs_locally for a in config.apps)
    return ("serving", "tier", *(("llm",) if llm else ()))


def checks(spec: ObservabilitySpec, keys: Iterable[str]) -> list[Check]:
    """Every panel query of the dashboards `keys`, then each alert's inputs and the alert itself."""
    found = [Check("panel", t, q, QUIET.get(t)) for t, q in dashboard_queries(spec, keys)]
    found += [Check("alert input", n, q, QUIET.get(n)) for n, q in alert_inputs(spec)]
    found += [Check("alert", a.name, a.expr) for a in alerts(spec)]
    return found


def _values(series: Sequence[dict]) -> list[float]:
    return [float(s["value"][1]) for s in series]


def _evaluate_one(url: str, check: Check) -> Result:
    try:
        series = local_prometheus.query(url, check.promql)
    except local_prometheus.PrometheusError as exc:  # a query Prometheus refuses
        return Result(check, 0, f"refused: {exc}")
    if check.kind == "alert":
        firing = ", ".join(str(s["metric"]) for s in series)
        return Result(check, len(series), f"fires on a healthy run: {firing}" if series else None)
    if series and all(math.isnan(v) for v in _values(series)):
        # A quantile or ratio over rates that did not move: nothing was counted in the window.
        return Result(check, len(series), "NaN only: no samples moved in its window")
    if series or not check.wants_series:
        missing = [] if series else _metrics_without_series(url, check.promql)
        problem = f"its metrics have no series: {', '.join(missing)}" if missing else None
        return Result(check, len(series), problem)
    if not metric_names(check.promql):
        return Result(check, 0, "no series")
    missing = _metrics_without_series(url, check.promql)
    if missing:
        return Result(check, 0, f"no series: none of {', '.join(missing)} at all")
    # Each metric has series: a label matcher or the aggregation selects none of them.
    return Result(check, 0, "no series, though its metrics have some: check its label matchers")


def _metrics_without_series(url: str, promql: str) -> list[str]:
    """The metric names `promql` reads that Prometheus has scraped no series of within SEEN_WITHIN
    (a histogram's by its `_count`)."""
    missing = []
    for name in sorted(metric_names(promql)):
        metric = CATALOG.get(name)
        stored = f"{name}_count" if metric and metric.type == "histogram" else name
        if not local_prometheus.query(url, f"count(last_over_time({stored}[{SEEN_WITHIN}]))"):
            missing.append(stored)
    return missing


def evaluate(url: str, wanted: Sequence[Check]) -> list[Result]:
    return [_evaluate_one(url, c) for c in wanted]


def check_queries(
    url: str, spec: ObservabilitySpec, keys: Iterable[str], bound_s: float = 0.0
) -> list[str]:
    """What fails among `checks(spec, keys)` on the Prometheus at `url`, one line each naming the
    panel or alert; evaluated again until nothing fails or `bound_s` has passed (the next scrapes
    may bring a series)."""
    wanted = checks(spec, keys)
    deadline = time.monotonic() + bound_s
    while True:
        problems = [r.line().strip() for r in evaluate(url, wanted) if r.problem]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(2.0)


def report(spec: ObservabilitySpec, keys: Sequence[str], results: Sequence[Result]) -> str:
    """What `raygke local check-queries` prints: each check's verdict, what was not checked and
    why, and the failures' names at the end."""
    lines = [f"stack {spec.stack}: dashboards {', '.join(keys)} and {len(alerts(spec))} alerts"]
    lines += [r.line() for r in results]
    skipped = [k for k in NOT_LOCAL if spec.gpus and k not in keys]
    lines += [f"  dashboard {k!r}: not checked here: {NOT_LOCAL[k]}" for k in skipped]
    failed = sorted({r.check.name for r in results if r.problem})
    ok = len(results) - sum(1 for r in results if r.problem)
    lines.append(f"{ok} of {len(results)} checks passed")
    if failed:
        lines.append("failed: " + "; ".join(failed))
    return "\n".join(lines)


def check_run(state: dict) -> int:
    """`raygke local check-queries` on a run's state: prints the report; 1 if a check failed."""
    from infra.specs import observability_spec
    from infra.stack_file import load_stack_config

    prometheus = state.get("prometheus")
    if not prometheus:
        raise local_prometheus.PrometheusError(
            "this local run has no Prometheus: start it with `raygke local up --prometheus`"
        )
    config = load_stack_config(state["stack"])
    spec, keys = observability_spec(config), local_dashboards(config)
    results = evaluate(prometheus["url"], checks(spec, keys))
    print(report(spec, keys, results))
    return 1 if any(r.problem for r in results) else 0
