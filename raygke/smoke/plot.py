"""PNG plots: throughput vs p99 per configuration, and latency distributions (CDF).

Owns: the two figures in every report, and the LLM phase's (TTFT and ITL CDFs, tokens/s against
concurrency; output tokens/s per user against total output tokens/s, the throughput/interactivity
trade-off). Does not own: the numbers. matplotlib is imported lazily
(with the Agg backend: CI runners have no display) because it is slow to import.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from raygke.smoke.gates import slo_p99
from raygke.smoke.llm import LlmLevelResult
from raygke.smoke.load import LevelResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cdf(ax: Any, values: list[float], label: str) -> None:
    """The empirical CDF of `values` on `ax`."""
    ordered = sorted(values)
    ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)


def _config(level: LevelResult) -> str:
    return f"{level.deployment}: {level.spec.target}"


def plot_throughput_vs_p99(levels: list[LevelResult], path: Path) -> Path:
    """One line per configuration through its closed-loop levels (x req/s, y p99 ms, log y)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[float, float, int]]] = {}
    for level in levels:
        p99 = slo_p99(level)
        if level.spec.loop != "closed" or p99 is None:
            continue
        series.setdefault(_config(level), []).append(
            (level.throughput_rps, p99, level.spec.concurrency)
        )
    for name, points in sorted(series.items()):
        points.sort(key=lambda p: p[2])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        for x, y, c in points:
            ax.annotate(f"c={c}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("p99 latency (ms; TTFT for streams)")
    ax.set_yscale("log")
    ax.set_title("Throughput vs p99 per configuration")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_latency_distribution(levels: list[LevelResult], concurrency: int, path: Path) -> Path:
    """Empirical CDF of end-to-end latency, per configuration, at the SLO's concurrency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for level in levels:
        spec = level.spec
        if spec.loop != "closed" or spec.concurrency != concurrency or not level.latencies_ms:
            continue
        _cdf(ax, level.latencies_ms, f"{_config(level)} #{level.repeat}")
        drawn += 1
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Latency distribution at c={concurrency}")
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_llm(levels: list[LlmLevelResult], concurrency: int, path: Path) -> Path:
    """Three panels: TTFT and ITL CDFs at the SLO's concurrency (repeats pooled), and output
    tokens/s against concurrency, per deployment and app, of the synthetic closed levels."""
    plt = _pyplot()
    fig, (ttft_ax, itl_ax, tput_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    pooled: dict[str, dict[str, list[float]]] = {}
    throughput: dict[str, list[tuple[int, float]]] = {}
    for level in levels:
        if level.spec.loop != "closed" or level.spec.workload != "synthetic":
            continue  # the workloads have their own rows and the trade-off plot's points
        name = f"{level.deployment}: {level.spec.app.name}"
        throughput.setdefault(name, []).append((level.spec.concurrency, level.output_tok_s))
        if level.spec.concurrency == concurrency:
            samples = pooled.setdefault(name, {"ttft": [], "itl": []})
            samples["ttft"] += level.samples_s("ttft")
            samples["itl"] += level.samples_s("itl")
    for ax, measure, title in ((ttft_ax, "ttft", "TTFT"), (itl_ax, "itl", "ITL (per chunk)")):
        for name, samples in sorted(pooled.items()):
            if samples[measure]:
                _cdf(ax, [v * 1000 for v in samples[measure]], name)
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(f"{title} CDF at c={concurrency}")
        ax.grid(True, alpha=0.3)
        if pooled:
            ax.legend(fontsize=7)
    for name, points in sorted(throughput.items()):
        by_level: dict[int, list[float]] = {}
        for c, tps in points:
            by_level.setdefault(c, []).append(tps)
        xs = sorted(by_level)
        tput_ax.plot(xs, [statistics.median(by_level[c]) for c in xs], marker="o", label=name)
    tput_ax.set_xlabel("concurrent streams")
    tput_ax.set_ylabel("output tokens/s (median over repeats)")
    tput_ax.set_xscale("log", base=2)
    tput_ax.set_title("Output tokens/s against concurrency")
    tput_ax.grid(True, which="both", alpha=0.3)
    if throughput:
        tput_ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _tradeoff_series(level: LlmLevelResult) -> str:
    spec = level.spec
    kind = "closed loop" if spec.loop == "closed" else "rate sweep"
    if spec.workload != "synthetic":
        kind = spec.workload
    return f"{level.deployment}: {spec.app.name}, {kind}"


def _tradeoff_tag(level: LlmLevelResult) -> str:
    spec = level.spec
    return f"c={spec.concurrency}" if spec.loop == "closed" else f"{spec.rate:g}/s"


def plot_llm_tradeoff(levels: list[LlmLevelResult], path: Path) -> Path:
    """Output tokens/s per user (1000 / median TPOT) against total output tokens/s, one point
    per level (median over repeats), a line per deployment, app and kind of level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for level in levels:
        per_user = level.output_tok_s_per_user
        if per_user is None:
            continue
        tags = points.setdefault(_tradeoff_series(level), {})
        tags.setdefault(_tradeoff_tag(level), []).append((level.output_tok_s, per_user))
    for name, tags in sorted(points.items()):
        merged = sorted(
            (
                statistics.median(x for x, _ in runs),
                statistics.median(y for _, y in runs),
                tag,
            )
            for tag, runs in tags.items()
        )
        ax.plot([p[0] for p in merged], [p[1] for p in merged], marker="o", label=name)
        for x, y, tag in merged:
            ax.annotate(tag, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("total output tokens/s")
    ax.set_ylabel("output tokens/s per user (1000 / median TPOT ms)")
    ax.set_title("Throughput against interactivity, one point per level")
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(fontsize=7)
    return _save(plt, fig, path)
