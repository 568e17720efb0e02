"""Reports: the versioned JSON document (and its JSON Schema), Markdown, the phase-0 fingerprint.

Owns: the report's shape (`REPORT_SCHEMA_VERSION`), what the fingerprint records, and the Markdown a
PR comment or CI step summary shows: which SLO gated the run, and for every level whether it is
gated and by what, or why it is reported, not gated. Markdown is rendered from the JSON document
alone, so a stored report can be re-rendered. Does not own: the numbers (load.py, llm.py, gates.py)
or plots (plot.py, and the dashboards' pictures: panels.py).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import PurePath
from typing import Any

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import SmokeContract
from raygke.smoke.gates import NOT_GATED, Gate, Ratio, llm_gating, load_gating
from raygke.smoke.llm import KNEE_ATTAINMENT, LlmLevelResult, Sweep, sweeps
from raygke.smoke.llm import level_dict as llm_level_dict
from raygke.smoke.load import LevelResult
from raygke.smoke.profiles import Profile

# 2: `llm`, the LLM phase's levels; 3: each level's `gating`, the SLO's origin, `llm_sweeps`,
# the LLM levels' workloads, per-user tokens/s and `vllm` records
REPORT_SCHEMA_VERSION = 3


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(contract: SmokeContract, label: str = "A") -> dict[str, Any]:
    """Phase 0: what was measured, recorded with every result."""
    return {
        "label": label,
        "stack": contract.stack,
        "source": contract.source,
        "http_url": contract.http_url,
        "grpc_target": contract.grpc_target,
        "apps": [asdict(app) for app in contract.apps],
        "ray_version": contract.ray_version,
        "kuberay_version": contract.kuberay_version,
        "image": contract.image,
        "serve_flags": dict(sorted(contract.serve_flags.items())),
        "gpu": contract.gpu,
        "slo": contract.slo.as_dict(),
        # the cluster's objectives where `slo` is a local run's own (None: `slo` is the cluster's)
        "cluster_slo": None if contract.cluster_slo is None else contract.cluster_slo.as_dict(),
    }


def client_fingerprint() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        # 1, 5 and 15 minutes, when the report is written: a busy machine's latency is its own
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "argv": sys.argv[1:],
        "packages": {
            p: _version(p) for p in ("ray-serve-gke", "aiohttp", "uvloop", "grpcio", "protobuf")
        },
    }


def _summary(value: Any) -> dict[str, Any] | None:
    return None if value is None else value.as_dict()


def level_dict(level: LevelResult) -> dict[str, Any]:
    spec = level.spec
    return {
        "deployment": level.deployment,
        "repeat": level.repeat,
        "label": spec.label,
        "target": spec.target,
        "app": spec.app.name,
        "transport": spec.transport,
        "mode": spec.mode,
        "loop": spec.loop,
        "concurrency": spec.concurrency if spec.loop == "closed" else None,
        "rate": spec.rate if spec.loop == "open" else None,
        "processes": spec.processes,
        "duration_s": level.duration_s,
        "sent": level.sent,
        "ok": level.ok,
        "errors": level.errors,
        "error_rate": level.error_rate,
        "throughput_rps": level.throughput_rps,
        "achieved_rate": level.achieved_rate,
        "chunks_per_s": level.chunks_per_s,
        "latency_ms": _summary(level.latency_ms),
        "ttft_ms": _summary(level.ttft_ms),
        "per_chunk_ms": _summary(level.per_chunk_ms),
        "send_lag_ms": _summary(level.send_lag_ms),
        "client_cpu": [round(c, 4) for c in level.client_cpu],
        "client_bound": level.client_bound,
        "connections": level.connections,
        "histogram_ms": level.histogram.as_dict(),
    }


def sweep_dict(sweep: Sweep) -> dict[str, Any]:
    return {
        "app": sweep.app,
        "deployment": sweep.deployment,
        "knee_rps": sweep.knee_rps,
        "bounded": sweep.bounded,
        "definition": (
            "the highest offered rate at which it and every lower rate swept meet the SLO: "
            f"at least {KNEE_ATTAINMENT:.0%} of its requests within both objectives (goodput >= "
            f"{KNEE_ATTAINMENT:.0%} of its request throughput) and the p99 of TTFT and TPOT within "
            "them"
        ),
        "points": [asdict(p) for p in sweep.points],
    }


def build_report(
    *,
    profile: Profile,
    contracts: dict[str, SmokeContract],
    checks: dict[str, list[CheckOutcome]],
    levels: list[LevelResult],
    llm_levels: list[LlmLevelResult],
    gates: list[Gate],
    warnings: list[str],
    ratios: list[Ratio] | None,
    plots: list[str],
    started: dt.datetime,
    exit_code: int,
    dashboards: dict[str, Any] | None = None,
) -> dict[str, Any]:
    slo = contracts["A"].slo
    return {
        "schema": "raygke.smoke.report",
        "schema_version": REPORT_SCHEMA_VERSION,
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "profile": asdict(profile),
        "passed": exit_code == 0,
        "exit_code": exit_code,
        "deployments": {label: fingerprint(c, label) for label, c in contracts.items()},
        "client": client_fingerprint(),
        "checks": {label: [asdict(o) for o in outs] for label, outs in checks.items()},
        "load": [{**level_dict(lv), "gating": load_gating(lv, slo)} for lv in levels],
        "llm": [{**llm_level_dict(lv), "gating": llm_gating(lv, slo)} for lv in llm_levels],
        "llm_sweeps": [sweep_dict(s) for s in sweeps(llm_levels, slo.llm)],
        "gates": [asdict(g) for g in gates],
        "warnings": warnings,
        "compare": None if ratios is None else [asdict(r) for r in ratios],
        "plots": plots,
        # A local run's: the cloud dashboards drawn from its Prometheus (cli._draw_dashboards),
        # or the line saying how to get them; None for a cluster.
        "dashboards": dashboards,
    }


_SUMMARY = {
    "type": ["object", "null"],
    "required": ["count", "mean", "min", "max", "p50", "p90", "p99", "p99_9"],
    "properties": {
        k: {"type": "number"} for k in ("mean", "min", "max", "p50", "p90", "p99", "p99_9")
    }
    | {"count": {"type": "integer", "minimum": 1}},
}
_GATING = {
    "type": "object",
    "required": ["slo", "slo_source", "gates", "latency", "reason"],
    "properties": {
        "slo": {"enum": ["slo", "localSlo", None]},
        "slo_source": {"enum": ["cluster SLO", "local SLO", None]},
        "gates": {"type": "array", "items": {"type": "string"}},
        "latency": {"enum": ["gated", "reported, not gated"]},
        "reason": {"type": ["string", "null"]},
    },
}
_SLO = {
    "type": "object",
    "required": ["concurrency", "p99_ms", "max_error_rate", "llm", "origin", "source"],
    "properties": {
        "origin": {"enum": ["slo", "localSlo"]},
        "source": {"enum": ["cluster SLO", "local SLO"]},
    },
}
_SPREAD = {
    "type": ["object", "null"],
    "required": ["min", "median", "max", "n"],
    "properties": {"n": {"type": "integer"}},
}
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "raygke smoke report",
    "type": "object",
    "required": [
        "schema",
        "schema_version",
        "started",
        "finished",
        "profile",
        "passed",
        "exit_code",
        "deployments",
        "client",
        "checks",
        "load",
        "llm",
        "llm_sweeps",
        "gates",
        "warnings",
        "compare",
        "plots",
    ],
    "properties": {
        "schema": {"const": "raygke.smoke.report"},
        "schema_version": {"const": REPORT_SCHEMA_VERSION},
        "passed": {"type": "boolean"},
        "exit_code": {"enum": [0, 1]},
        "deployments": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["stack", "http_url", "grpc_target", "serve_flags", "slo", "apps"],
                "properties": {"slo": _SLO, "cluster_slo": {"anyOf": [_SLO, {"type": "null"}]}},
            },
        },
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "app", "transport", "passed", "detail", "latency_ms"],
                    "properties": {"passed": {"type": "boolean"}},
                },
            },
        },
        "load": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "deployment",
                    "repeat",
                    "label",
                    "target",
                    "transport",
                    "mode",
                    "loop",
                    "sent",
                    "ok",
                    "errors",
                    "error_rate",
                    "throughput_rps",
                    "latency_ms",
                    "ttft_ms",
                    "per_chunk_ms",
                    "client_cpu",
                    "client_bound",
                    "histogram_ms",
                    "gating",
                ],
                "properties": {
                    "transport": {"enum": ["http", "grpc"]},
                    "mode": {"enum": ["unary", "stream"]},
                    "loop": {"enum": ["closed", "open"]},
                    "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "latency_ms": _SUMMARY,
                    "ttft_ms": _SUMMARY,
                    "per_chunk_ms": _SUMMARY,
                    "send_lag_ms": _SUMMARY,
                    # HTTP unary: connections the client opened (reconnects included).
                    "connections": {"type": ["integer", "null"], "minimum": 0},
                    "gating": _GATING,
                },
            },
        },
        "llm": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "deployment",
                    "repeat",
                    "app",
                    "model",
                    "loop",
                    "concurrency",
                    "num_prompts",
                    "input_tokens",
                    "output_tokens",
                    "ok",
                    "errors",
                    "error_rate",
                    "output_tok_s",
                    "requests_per_s",
                    "goodput_rps",
                    "ttft_ms",
                    "itl_ms",
                    "tpot_ms",
                    "e2e_ms",
                    "client_cpu",
                    "workload",
                    "attainment",
                    "output_tok_s_per_user",
                    "vllm",
                    "gating",
                ],
                "properties": {
                    "loop": {"enum": ["closed", "open"]},
                    "workload": {"enum": ["synthetic", "shared-prefix", "multi-turn"]},
                    "attainment": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "output_tok_s_per_user": {"type": ["number", "null"], "minimum": 0},
                    "gating": _GATING,
                    # one `vllm bench serve --save-detailed` result (docs/smoke.md maps the keys)
                    "vllm": {
                        "type": "object",
                        "required": [
                            "completed",
                            "failed",
                            "duration",
                            "request_throughput",
                            "output_throughput",
                            "input_lens",
                            "output_lens",
                            "ttfts",
                            "itls",
                            "start_times",
                            "generated_texts",
                            "errors",
                        ],
                    },
                    "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "goodput_rps": {"type": ["number", "null"], "minimum": 0},
                    "ttft_ms": _SUMMARY,
                    "itl_ms": _SUMMARY,
                    "tpot_ms": _SUMMARY,
                    "e2e_ms": _SUMMARY,
                },
            },
        },
        "llm_sweeps": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["app", "deployment", "knee_rps", "bounded", "definition", "points"],
                "properties": {"knee_rps": {"type": ["number", "null"]}},
            },
        },
        "gates": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "passed", "detail"],
                "properties": {"passed": {"type": "boolean"}},
            },
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
        "compare": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["label", "throughput", "p99"],
                "properties": {"throughput": _SPREAD, "p99": _SPREAD},
            },
        },
        "plots": {"type": "array", "items": {"type": "string"}},
        # Not required: reports written before it still validate.
        "dashboards": {
            "type": ["object", "null"],
            "required": ["prometheus", "note"],
            "properties": {
                "prometheus": {"type": ["string", "null"]},
                "note": {"type": ["string", "null"]},
                "step_s": {"type": "number", "exclusiveMinimum": 0},
                "files": {"type": "array", "items": {"type": "string"}},
                "boards": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["key", "title", "file", "panels"],
                        "properties": {
                            "panels": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["title", "series"],
                                    "properties": {"series": {"type": "integer", "minimum": 0}},
                                },
                            }
                        },
                    },
                },
                "skipped": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}


def _ms(summary: dict[str, Any] | None, key: str) -> str:
    return "-" if summary is None else f"{summary[key]:.1f}"


def _ratio(sp: dict[str, Any] | None) -> str:
    if sp is None:
        return "-"
    return f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}, n={sp['n']})"


def _slo_text(slo: dict[str, Any]) -> str:
    text = (
        f"p99 <= {slo['p99_ms']:g} ms at c={slo['concurrency']}, "
        f"errors <= {slo['max_error_rate']:.2%}"
    )
    llm = slo.get("llm")
    if llm:
        text += (
            f"; llm TTFT p99 <= {llm['ttft_ms']:g} ms and TPOT p99 <= {llm['tpot_ms']:g} ms "
            f"at c={llm['concurrency']}"
        )
    return text


def slo_lines(deployment: dict[str, Any], source: str) -> list[str]:
    """Which SLO gated the run, and the cluster's beside a local run's own."""
    slo = deployment["slo"]
    if slo.get("origin") == "localSlo":
        keys = ", ".join(slo.get("local_keys") or [])
        lines = [
            f"Gated on the **local SLO** (the stack's `smoke.localSlo`, which sets {keys}; the "
            f"rest from `smoke`): {_slo_text(slo)}."
        ]
        cluster = deployment.get("cluster_slo")
        if cluster:
            lines.append(f"The cluster SLO (`smoke`), not applied here: {_slo_text(cluster)}.")
        return lines
    line = f"Gated on the **cluster SLO** (the stack's `smoke`): {_slo_text(slo)}."
    if source == "local":
        line += " This local run's stack sets no `smoke.localSlo`."
    return [line]


def gate_cell(gating: dict[str, Any]) -> str:
    """A level's gating in a table cell (the reason is listed under the table)."""
    if gating["slo"] is None:
        return NOT_GATED
    if gating["latency"] == "gated":
        return f"{gating['slo_source']}: errors, latency"
    if gating["gates"]:
        return f"{gating['slo_source']}: errors; latency {NOT_GATED}"
    return NOT_GATED


def _not_gated(levels: list[dict[str, Any]], label: Any) -> list[str]:
    """One line per level label reported, not gated (repeats share it), with its reason."""
    reasons: dict[str, str] = {}
    for lv in levels:
        if lv["gating"]["reason"]:
            reasons.setdefault(f"{lv['deployment']} {label(lv)}", lv["gating"]["reason"])
    if not reasons:
        return []
    return ["", "Reported, not gated:", *(f"- {k}: {why}" for k, why in reasons.items())]


def _llm_label(lv: dict[str, Any]) -> str:
    load = f"c={lv['concurrency']}" if lv["loop"] == "closed" else f"open {lv['rate']:g}/s"
    workload = "" if lv["workload"] == "synthetic" else f" {lv['workload']}"
    return f"{lv['app']} {load}{workload} ({lv['input_tokens']}/{lv['output_tokens']} tok)"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_markdown(report: dict[str, Any]) -> str:
    """Markdown for a PR comment or `$GITHUB_STEP_SUMMARY`, from the JSON report alone."""
    lines: list[str] = []
    verdict = "PASS" if report["passed"] else "FAIL"
    deps = report["deployments"]
    a = deps.get("A", next(iter(deps.values())))
    lines.append(f"## raygke smoke: {verdict} ({a['stack']}, profile {report['profile']['name']})")
    lines.append("")
    lines.append("| deployment | stack | source | Ray | HTTP | gRPC | serve flags |")
    lines.append("|---|---|---|---|---|---|---|")
    for label, d in deps.items():
        flags = ", ".join(f"{k}={v}" for k, v in d["serve_flags"].items()) or "(Ray defaults)"
        lines.append(
            f"| {label} | {d['stack']} | {d['source']} | {d['ray_version'] or '?'} | "
            f"{d['http_url']} | {d['grpc_target']} | {flags} |"
        )
    client = report["client"]
    lines.append("")
    load = client.get("load_average")
    busy = "" if not load else f", load average {'/'.join(f'{v:g}' for v in load)} (1/5/15 min)"
    lines.append(
        f"Client: {client['host']}, {client['cpu_count']} cores{busy}, Python {client['python']}."
    )
    lines.append("")
    lines += slo_lines(a, a["source"])
    lines.append("")
    lines.append("### Gates")
    lines.append("| gate | result | detail |")
    lines.append("|---|---|---|")
    for gate in report["gates"]:
        mark = "pass" if gate["passed"] else "**FAIL**"
        lines.append(f"| {gate['name']} | {mark} | {gate['detail']} |")
    lines.append("")
    lines.append("### Functional checks")
    lines.append("| deployment | check | app | transport | result | ms | detail |")
    lines.append("|---|---|---|---|---|---|---|")
    for label, outcomes in report["checks"].items():
        for o in outcomes:
            mark = "pass" if o["passed"] else "**FAIL**"
            lines.append(
                f"| {label} | {o['name']} | {o['app'] or '-'} | {o['transport']} | {mark} | "
                f"{o['latency_ms']:.1f} | {o['detail']} |"
            )
    lines.append("")
    lines.append("### Load")
    lines.append(
        "| dep | # | configuration | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "TTFT p50/p99 ms | per chunk p50 ms | chunks/s | errors | gate |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lv in report["load"]:
        lat = lv["latency_ms"]
        ttft = lv["ttft_ms"]
        ttft_cell = "-" if ttft is None else f"{ttft['p50']:.1f} / {ttft['p99']:.1f}"
        errors = ", ".join(f"{k}: {v}" for k, v in lv["errors"].items()) or "0"
        rate = f"{lv['throughput_rps']:.0f}"
        if lv["loop"] == "open":
            rate += f" (sent {lv['achieved_rate']:.0f}/s of {lv['rate']:g})"
        flag = " (client-bound)" if lv["client_bound"] else ""
        lines.append(
            f"| {lv['deployment']} | {lv['repeat']} | {lv['label']}{flag} | {rate} | "
            f"{_ms(lat, 'p50')} | {_ms(lat, 'p90')} | {_ms(lat, 'p99')} | {_ms(lat, 'p99_9')} | "
            f"{ttft_cell} | {_ms(lv['per_chunk_ms'], 'p50')} | "
            f"{lv['chunks_per_s']:.0f} | {errors} | {gate_cell(lv['gating'])} |"
        )
    lines += _not_gated(report["load"], lambda lv: lv["label"])
    if report["llm"]:
        lines += _llm_markdown(report)
    if report["compare"]:
        lines.append("")
        lines.append("### A/B (A over B; median, range over repeats)")
        lines.append("| configuration | throughput A/B | p99 A/B |")
        lines.append("|---|---|---|")
        for r in report["compare"]:
            lines.append(f"| {r['label']} | {_ratio(r['throughput'])} | {_ratio(r['p99'])} |")
    if report["warnings"]:
        lines.append("")
        lines.append("### Warnings")
        lines += [f"- {w}" for w in report["warnings"]]
    if report["plots"]:
        lines.append("")
        lines.append("Plots: " + ", ".join(f"`{p}`" for p in report["plots"]))
    if report.get("dashboards"):
        lines += _dashboards_markdown(report["dashboards"])
    lines.append("")
    return "\n".join(lines)


def _dashboards_markdown(drawn: dict[str, Any]) -> list[str]:
    lines = ["", "### The dashboards, drawn from the local Prometheus"]
    if drawn["prometheus"] is None:
        return [*lines, drawn["note"]]
    lines.append(
        f"The cloud dashboards' panels over this run, from {drawn['prometheus']} every "
        f"{drawn['step_s']:g} s ({drawn['start']} to {drawn['end']}; x: seconds since the start):"
    )
    for board in drawn["boards"]:
        panels = board["panels"]
        empty = [p["title"] for p in panels if not p["series"]]
        # A link relative to report.md, which the PNGs sit beside.
        lines.append(
            f"- [{board['title']}]({PurePath(board['file']).name}): "
            f"{len(panels) - len(empty)} of {len(panels)} panels with series"
            + (f"; no series: {'; '.join(empty)}" if empty else "")
        )
    lines += [f"- `{key}` not drawn: {why}" for key, why in drawn["skipped"].items()]
    return lines


def _llm_markdown(report: dict[str, Any]) -> list[str]:
    lines = ["", "### LLM (streamed completions; ITL per chunk, TPOT per token)"]
    lines.append(
        "| dep | # | level | ok | out tok/s | tok/s per user | req/s | goodput/s | "
        "TTFT p50/p99 ms | ITL p50/p99 ms | TPOT p50/p99 ms | E2E p99 ms | errors | gate |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lv in report["llm"]:
        errors = ", ".join(f"{k}: {v}" for k, v in lv["errors"].items()) or "0"
        pair = {
            m: "-" if lv[m] is None else f"{lv[m]['p50']:.1f} / {lv[m]['p99']:.1f}"
            for m in ("ttft_ms", "itl_ms", "tpot_ms")
        }
        lines.append(
            f"| {lv['deployment']} | {lv['repeat']} | {_llm_label(lv)} | "
            f"{lv['ok']}/{lv['num_prompts']} | {lv['output_tok_s']:.0f} | "
            f"{_opt(lv['output_tok_s_per_user'], '.1f')} | {lv['requests_per_s']:.2f} | "
            f"{_opt(lv['goodput_rps'], '.2f')} | {pair['ttft_ms']} | {pair['itl_ms']} | "
            f"{pair['tpot_ms']} | {_ms(lv['e2e_ms'], 'p99')} | {errors} | "
            f"{gate_cell(lv['gating'])} |"
        )
    lines += _not_gated(report["llm"], _llm_label)
    turns = [lv for lv in report["llm"] if lv.get("ttft_ms_by_turn")]
    if turns:
        lines += ["", "Multi-turn, each turn resending the conversation so far:"]
    for lv in turns:
        by_turn = ", ".join(_opt(v, ".0f") for v in lv["ttft_ms_by_turn"])
        lines.append(
            f"- {lv['deployment']} {_llm_label(lv)} #{lv['repeat']}: TTFT p50 by turn "
            f"(ms): {by_turn}"
        )
    for sweep in report["llm_sweeps"]:
        lines.append("")
        lines.append(f"#### Request-rate sweep: {sweep['deployment']} {sweep['app']}")
        lines.append(
            "| rate/s | of peak | goodput/s | within SLO | TTFT p99 ms | TPOT p99 ms | meets |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for point in sweep["points"]:
            lines.append(
                f"| {point['rate']:g} | {_opt(point['fraction'], '.0%')} | "
                f"{point['goodput_rps']:.2f} | {point['attainment']:.0%} | "
                f"{_opt(point['ttft_p99_ms'], '.0f')} | {_opt(point['tpot_p99_ms'], '.1f')} | "
                f"{'yes' if point['meets'] else 'no'} |"
            )
        knee = sweep["knee_rps"]
        if knee is None:
            lowest = min(p["rate"] for p in sweep["points"])
            verdict = f"below {lowest:g}/s, the lowest rate swept"
        elif sweep["bounded"]:
            verdict = f"{knee:g}/s"
        else:
            verdict = f"at least {knee:g}/s (the highest rate swept still meets the SLO)"
        lines.append("")
        lines.append(f"Knee: {verdict}; {sweep['definition']}.")
    return lines
