"""The stack's cloud dashboards, drawn from a local run's Prometheus over a smoke run (PNG).

Owns: whether a smoke run draws them (`run_prometheus`: a local run's contract whose run has a
Prometheus in its state.json, or the one line saying how to get one), which dashboards a local run
can fill (`local_dashboards`), each panel's series over the run (`panel_series`, a range query per
data set) and one PNG per dashboard, its panels laid out as the cloud lays them (`draw_dashboard`).
Does not own: the panels and their PromQL (components/render/observability.py, the cloud
dashboards' own, so what is drawn here is what the cloud charts), Prometheus's HTTP API
(raygke/local_prometheus.py), the run's state file (raygke/local.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.render.observability import COLUMNS, TILE_WIDTH, Dashboard, Panel, dashboards
from infra.config import StackConfig
from infra.specs import observability_spec
from raygke import local_prometheus
from raygke.local import read_state
from raygke.smoke.contract import SmokeContract

# What a smoke run of a local run without a Prometheus says instead of drawing.
NO_PROMETHEUS = (
    "the cloud dashboards' panels are not drawn: this local run has no Prometheus; start it with "
    "`raygke local up --prometheus` to get them (docs/smoke.md, 'The dashboards, drawn locally')"
)
# Points per series at most: a smooth line over a run of any length, far below the 11,000 points
# Prometheus allows a range query; and no finer than a second (the local run scrapes every 5 s).
MAX_POINTS = 300
MIN_STEP_S = 1.0
NO_SERIES = "no series"


@dataclass(frozen=True)
class RunPrometheus:
    """A local run's Prometheus, as its state.json records it, and the run's stack."""

    url: str
    stack: str


def run_prometheus(
    contract: SmokeContract, outputs: Path | None
) -> tuple[RunPrometheus | None, str | None]:
    """(where to draw the dashboards from, or None; the line to report instead, or None).

    A local run's outputs.json sits in its state dir beside state.json, which records the run's
    Prometheus (`raygke local up --prometheus`). A cluster's contract, or one read with --stack,
    draws nothing and says nothing: its dashboards are in Cloud Monitoring."""
    if not contract.local or outputs is None:
        return None, None
    try:
        state = read_state(outputs.resolve().parent) or {}
    except (OSError, ValueError):  # unreadable or half-written: as good as no Prometheus
        state = {}
    prometheus = state.get("prometheus")
    if not prometheus:
        return None, NO_PROMETHEUS
    return RunPrometheus(prometheus["url"], state["stack"]), None


def local_dashboards(config: StackConfig) -> tuple[tuple[Dashboard, ...], dict[str, str]]:
    """The stack's dashboards a local run can fill, and those it cannot, with why: not the GPUs'
    (no DCGM exporter runs locally); the LLM one only where an llm app runs locally."""
    llm_here = any(a.kind == "llm" and a.runs_locally for a in config.apps)
    why_not = {"gpu": "no GPUs and no DCGM exporter on a local run"}
    if not llm_here:
        why_not["llm"] = "the stack's llm apps need a GPU: the local run leaves them out"
    boards = dashboards(observability_spec(config))
    return (
        tuple(b for b in boards if b.key not in why_not),
        {b.key: why_not[b.key] for b in boards if b.key in why_not},
    )


def step_s(start: float, end: float) -> float:
    return max(MIN_STEP_S, (end - start) / MAX_POINTS)


@dataclass(frozen=True)
class Series:
    label: str  # the series' labels; led by its data set's name where a panel has several
    t: list[float]  # seconds since the smoke run started
    v: list[float]


def panel_series(url: str, panel: Panel, start: float, end: float) -> list[Series]:
    """Every series of the panel's data sets from `start` to `end` (Unix seconds)."""
    series = []
    for query in panel.queries:
        for s in local_prometheus.query_range(url, query.promql, start, end, step_s(start, end)):
            labels = ", ".join(
                f"{k}={v}" for k, v in sorted(s["metric"].items()) if k != "__name__"
            )
            # Two data sets (http and grpc, healthy and target) can give series the same labels.
            label = f"{query.legend}: {labels}" if len(panel.queries) > 1 and labels else labels
            series.append(
                Series(
                    label or query.legend,
                    [float(t) - start for t, _ in s["values"]],
                    [float(v) for _, v in s["values"]],  # "NaN" (no rate yet) leaves a gap
                )
            )
    return series


def draw_dashboard(
    board: Dashboard, panels: list[list[Series]], duration_s: float, path: Path
) -> Path:
    """One PNG: the board's panels in its order, two a row as the cloud dashboard's tiles, each a
    line per series; a panel with none says so rather than vanish."""
    from raygke.smoke.plot import _pyplot, _save

    plt = _pyplot()
    per_row = COLUMNS // TILE_WIDTH
    rows = math.ceil(len(board.panels) / per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(7 * per_row, 3.4 * rows), squeeze=False)
    flat: list[Any] = [ax for row in axes for ax in row]
    for ax, panel, series in zip(flat, board.panels, panels, strict=False):
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.unit)
        ax.set_xlabel("s since the smoke run started")
        ax.set_xlim(0, max(duration_s, 1.0))
        for s in series:
            # Dots too: a series of one point (a short run, a late first scrape) has no line.
            ax.plot(s.t, s.v, marker=".", markersize=3, label=s.label)
        if series:
            ax.legend(fontsize="x-small", loc="upper left")
        else:
            ax.text(0.5, 0.5, NO_SERIES, ha="center", va="center", transform=ax.transAxes)
    for ax in flat[len(board.panels) :]:
        ax.axis("off")
    fig.suptitle(f"{board.title} (local Prometheus)")
    return _save(plt, fig, path)


def draw(url: str, board: Dashboard, start: float, end: float, out: Path) -> dict[str, Any]:
    """Draws `board` over [start, end] into out/dashboard_<key>.png; returns its report entry:
    the file and, per panel, how many series it had."""
    panels = [panel_series(url, p, start, end) for p in board.panels]
    path = draw_dashboard(board, panels, end - start, out / f"dashboard_{board.key}.png")
    return {
        "key": board.key,
        "title": board.title,
        "file": str(path),
        "panels": [
            {"title": p.title, "series": len(s)} for p, s in zip(board.panels, panels, strict=True)
        ],
    }
