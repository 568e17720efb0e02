"""Reports: the versioned JSON document (and its JSON Schema), Markdown, the phase-0 fingerprint.

Owns: the report's shape (`REPORT_SCHEMA_VERSION`), what the fingerprint records, and the Markdown a
PR comment or CI step summary shows. Markdown is rendered from the JSON document alone, so a stored
report can be re-rendered. Does not own: the numbers (load.py, gates.py) or plots (plot.py).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
from dataclasses import asdict
from importlib import metadata
from typing import Any

from raygke.smoke.checks import CheckOutcome
from raygke.smoke.contract import SmokeContract
from raygke.smoke.gates import Gate, Ratio
from raygke.smoke.llm import LlmLevelResult
from raygke.smoke.llm import level_dict as llm_level_dict
from raygke.smoke.load import LevelResult
from raygke.smoke.profiles import Profile

REPORT_SCHEMA_VERSION = 2  # 2: `llm`, the LLM phase's levels


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
        "slo": asdict(contract.slo),
    }


def client_fingerprint() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
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
) -> dict[str, Any]:
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
        "load": [level_dict(level) for level in levels],
        "llm": [llm_level_dict(level) for level in llm_levels],
        "gates": [asdict(g) for g in gates],
        "warnings": warnings,
        "compare": None if ratios is None else [asdict(r) for r in ratios],
        "plots": plots,
    }


_SUMMARY = {
    "type": ["object", "null"],
    "required": ["count", "mean", "min", "max", "p50", "p90", "p99", "p99_9"],
    "properties": {
        k: {"type": "number"} for k in ("mean", "min", "max", "p50", "p90", "p99", "p99_9")
    }
    | {"count": {"type": "integer", "minimum": 1}},
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
                ],
                "properties": {
                    "loop": {"enum": ["closed", "open"]},
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
    },
}


def _ms(summary: dict[str, Any] | None, key: str) -> str:
    return "-" if summary is None else f"{summary[key]:.1f}"


def _ratio(sp: dict[str, Any] | None) -> str:
    if sp is None:
        return "-"
    return f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}, n={sp['n']})"


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
    lines.append(
        f"Client: {client['host']}, {client['cpu_count']} cores, Python {client['python']}. "
        f"SLO: p99 <= {a['slo']['p99_ms']:g} ms at c={a['slo']['concurrency']}, "
        f"errors <= {a['slo']['max_error_rate']:.2%}."
    )
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
        "TTFT p50/p99 ms | per chunk p50 ms | chunks/s | errors |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
            f"{lv['chunks_per_s']:.0f} | {errors} |"
        )
    if report["llm"]:
        lines.append("")
        lines.append("### LLM (streamed completions; ITL per chunk, TPOT per token)")
        lines.append(
            "| dep | # | level | ok | out tok/s | req/s | goodput/s | TTFT p50/p99 ms | "
            "ITL p50/p99 ms | TPOT p50/p99 ms | E2E p99 ms | errors |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for lv in report["llm"]:
            errors = ", ".join(f"{k}: {v}" for k, v in lv["errors"].items()) or "0"
            load = f"c={lv['concurrency']}" if lv["loop"] == "closed" else f"open {lv['rate']:g}/s"
            goodput = "-" if lv["goodput_rps"] is None else f"{lv['goodput_rps']:.2f}"
            pair = {
                m: "-" if lv[m] is None else f"{lv[m]['p50']:.1f} / {lv[m]['p99']:.1f}"
                for m in ("ttft_ms", "itl_ms", "tpot_ms")
            }
            lines.append(
                f"| {lv['deployment']} | {lv['repeat']} | {lv['app']} {load} "
                f"({lv['input_tokens']}/{lv['output_tokens']} tok) | {lv['ok']}/{lv['num_prompts']} | "
                f"{lv['output_tok_s']:.0f} | {lv['requests_per_s']:.2f} | {goodput} | "
                f"{pair['ttft_ms']} | {pair['itl_ms']} | {pair['tpot_ms']} | "
                f"{_ms(lv['e2e_ms'], 'p99')} | {errors} |"
            )
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
    lines.append("")
    return "\n".join(lines)
