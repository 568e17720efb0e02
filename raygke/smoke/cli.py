"""`raygke smoke`: read the contract, gate the deployment, measure it, write the reports.

Owns: the command line (`main(argv)`, the arguments after `smoke`), the order of phases, the A/B
interleaving, progress display and exit codes: 0 every gate passed, 1 a gate failed, 2 bad input.
Does not own: the `raygke` entry point (raygke/cli.py wires `main` in) or any measuring logic.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from infra.stack_file import load_stack_config
from raygke.smoke.checks import CheckOutcome, run_checks
from raygke.smoke.contract import (
    AppEndpoint,
    ContractError,
    Slo,
    SmokeContract,
    contract_from_stack,
    load_contract,
)
from raygke.smoke.gates import client_warnings, compare_ratios, evaluate, evaluate_llm
from raygke.smoke.llm import (
    WORKLOADS,
    LlmLevelResult,
    LlmLoadSpec,
    Workload,
    calibrate,
    run_llm_level,
    served_model,
)
from raygke.smoke.load import LevelResult, LoadSpec, run_level
from raygke.smoke.profiles import (
    PROFILES,
    Profile,
    closed_specs,
    llm_open_specs,
    llm_specs,
    llm_workload_specs,
    open_specs,
    with_overrides,
)
from raygke.smoke.report import build_report, render_markdown

EXIT_PASS, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Progress:
    """A bar on a terminal; plain lines otherwise (CI logs keep every line)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r\x1b[2K[{bar}] {self.done}/{self.total} {label}"[:160])
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"smoke: [{self.done}/{self.total}] {label}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(("\n" if self.tty else "") + f"smoke: {text}\n")
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raygke smoke",
        description="Gate and measure a deployment from its `smoke` outputs. "
        "Exit 0: every gate passed; 1: a gate failed; 2: bad input.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--outputs",
        type=Path,
        help="the local run's outputs file, or a whole `pulumi stack output --json` document",
    )
    src.add_argument("--stack", help="read the outputs with the Pulumi CLI from this stack")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ab = p.add_mutually_exclusive_group()
    ab.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER_OUTPUTS",
        help="A/B: run the same plan against this deployment too (B), interleaved",
    )
    ab.add_argument(
        "--compare-direct",
        action="store_true",
        help="A/B: our ingress tier (A) against the same deployment's `direct` endpoints (B)",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="measure the deployment's `direct` endpoints (Ray's own HAProxy) instead",
    )
    p.add_argument("--out", type=Path, default=Path("smoke-report"), help="report directory")
    p.add_argument("--duration", type=float, help="measured seconds per level (profile's default)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each level")
    p.add_argument(
        "--levels", help="closed-loop concurrencies, comma-separated (the SLO's is added)"
    )
    p.add_argument("--repeats", type=int, help="repeats of every level")
    p.add_argument("--processes", type=int, help="client processes per level (default: automatic)")
    p.add_argument(
        "--llm-range-ratio",
        type=float,
        help="LLM phase: draw input and output lengths uniformly within +-this fraction of "
        "slo.llm's (default 0: every request the same)",
    )
    p.add_argument(
        "--llm-rates",
        help="LLM phase: the request-rate sweep's Poisson rates, as fractions of the measured "
        "closed-loop peak, comma-separated (quick: 0.5; full: 0.25,0.5,0.75,1,1.25)",
    )
    p.add_argument(
        "--llm-workloads",
        help="LLM phase: workloads beside the synthetic one, comma-separated: "
        f"{', '.join(WORKLOADS[1:])} (quick: none; full: both), or none",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _levels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        levels = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ContractError(f"--levels must be integers separated by commas; got {text!r}") from exc
    if not levels or min(levels) < 1:
        raise ContractError(f"--levels must be integers >= 1; got {text!r}")
    return levels


def _fractions(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        fractions = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ContractError(
            f"--llm-rates must be numbers separated by commas; got {text!r}"
        ) from exc
    if not fractions or min(fractions) <= 0 or max(fractions) > 10:
        raise ContractError(f"--llm-rates must be fractions in (0, 10] of the peak; got {text!r}")
    return fractions


def _workloads(text: str | None) -> tuple[Workload, ...] | None:
    if text is None:
        return None
    names = [v.strip() for v in text.split(",") if v.strip()]
    if names == ["none"]:
        return ()
    extra = WORKLOADS[1:]
    unknown = [n for n in names if n not in extra]
    if not names or unknown:
        raise ContractError(
            f"--llm-workloads must name {', '.join(extra)} or none, comma-separated; got {text!r}"
        )
    return tuple(w for w in extra if w in names)


def _for_deployment(spec: LoadSpec, contract: SmokeContract) -> LoadSpec | None:
    """The same spec aimed at another deployment's app of the same name (None: no gRPC there)."""
    for app in contract.apps:
        if app.name == spec.app.name:
            return replace(spec, app=app) if spec.transport == "http" or app.grpc else None
    raise ContractError(f"--compare: its smoke.apps has no app named {spec.app.name!r}")


def direct_view(contract: SmokeContract) -> SmokeContract:
    """The contract aimed at its `direct` endpoints (a local run's Ray HAProxy, bypassing ours)."""
    if contract.direct is None:
        raise ContractError("smoke.direct: missing; only a local run's outputs carry it")
    return replace(
        contract,
        http_url=contract.direct.http_url,
        grpc_target=contract.direct.grpc_target,
        stack=f"{contract.stack} (direct)",
        direct=None,
    )


def _run_plan(
    profile: Profile, contracts: dict[str, SmokeContract], progress: Progress
) -> list[LevelResult]:
    primary = contracts["A"]
    closed = closed_specs(primary, profile)
    results: list[LevelResult] = []

    def run_round(specs: list[LoadSpec]) -> None:
        # Interleave A,B per level within each repeat so drift over time hits both alike.
        for repeat in range(profile.repeats):
            for spec in specs:
                for label, contract in contracts.items():
                    aimed = _for_deployment(spec, contract)
                    if aimed is None:
                        progress.step(f"{label} {spec.label}: skipped (no gRPC there)")
                        continue
                    level = run_level(aimed, contract.endpoints)
                    level.deployment, level.repeat = label, repeat
                    results.append(level)
                    lat = level.latency_ms
                    progress.step(
                        f"{label} {spec.label}: {level.throughput_rps:.0f} req/s, "
                        f"p99 {lat.p99 if lat else float('nan'):.1f} ms, errors {level.error_count}"
                    )

    run_round(closed)
    # Open-loop rates come from the slowest deployment's peak, so A and B face the same arrivals.
    peaks: dict[tuple[str, str], float] = {}
    for level in results:
        key = (level.deployment, level.spec.target)
        peaks[key] = max(peaks.get(key, 0.0), level.throughput_rps)
    common = {
        spec.target: min(peaks.get((label, spec.target), 0.0) for label in contracts)
        for spec in closed
    }
    opened = open_specs(primary, profile, common)
    progress.total += len(opened) * profile.repeats * len(contracts)
    run_round(opened)
    return results


def _llm_model(contract: SmokeContract, app: AppEndpoint) -> str:
    async def ask() -> str:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return await served_model(session, contract.endpoints, app)

    return asyncio.run(ask())


def _run_llm(
    profile: Profile, contracts: dict[str, SmokeContract], progress: Progress
) -> tuple[list[LlmLevelResult], dict[str, str]]:
    """The LLM phase, A and B interleaved per level; returns the levels and, per app of A, why its
    load could not run (an endpoint that fails its calibration prompt)."""
    primary = contracts["A"]
    llm_apps = [a for a in primary.apps if a.kind == "llm"]
    llm_slo = primary.slo.llm
    if not llm_apps or llm_slo is None:
        return [], {}
    # Per deployment and app: (the app there, its model id, its tokenizer's words per token).
    targets: dict[str, dict[str, tuple[AppEndpoint, str, float]]] = {}
    problems: dict[str, str] = {}
    for label, contract in contracts.items():
        targets[label] = {}
        for app in contract.apps:
            if app.kind != "llm" or app.name in problems:
                continue
            try:
                model = _llm_model(contract, app)
                targets[label][app.name] = (app, model, calibrate(contract.endpoints, app, model))
            except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                if label == "A":
                    problems[app.name] = f"{type(exc).__name__}: {exc}"
    models = {name: model for name, (_, model, _) in targets["A"].items()}
    closed = llm_specs(primary, profile, models)
    results: list[LlmLevelResult] = []

    def run_round(specs: list[LlmLoadSpec]) -> None:
        for repeat in range(profile.repeats):
            for spec in specs:
                for label, contract in contracts.items():
                    there = targets[label].get(spec.app.name)
                    if there is None:
                        continue
                    app, model, words_per_token = there
                    aimed = replace(spec, app=app, model=model)
                    level = run_llm_level(aimed, contract.endpoints, words_per_token, llm_slo)
                    level.deployment, level.repeat = label, repeat
                    results.append(level)
                    ttft, tpot = level.summary_ms("ttft"), level.summary_ms("tpot")
                    progress.step(
                        f"{label} llm {level.label}: {level.output_tok_s:.0f} tok/s, "
                        f"TTFT p99 {ttft.p99 if ttft else float('nan'):.0f} ms, "
                        f"TPOT p99 {tpot.p99 if tpot else float('nan'):.1f} ms, "
                        f"errors {len(level.results) - len(level.ok)}"
                    )

    progress.total += len(closed) * profile.repeats * len(contracts)
    run_round(closed)
    # Open loop at fractions of the slowest deployment's peak, so A and B face the same arrivals.
    # The peak: the synthetic closed levels' best (the only levels run so far).
    peaks = {
        name: min(
            max(
                (
                    lv.requests_per_s
                    for lv in results
                    if (lv.spec.app.name, lv.deployment) == (name, d)
                ),
                default=0.0,
            )
            for d in contracts
        )
        for name in models
    }
    workloads = llm_workload_specs(closed, profile, llm_slo.concurrency)
    progress.total += len(workloads) * profile.repeats * len(contracts)
    run_round(workloads)
    opened = llm_open_specs(closed, profile, peaks)
    progress.total += len(opened) * profile.repeats * len(contracts)
    run_round(opened)
    return results, problems


def _write_plots(
    levels: list[LevelResult], llm_levels: list[LlmLevelResult], slo: Slo, out: Path
) -> list[str]:
    from raygke.smoke.plot import (
        plot_latency_distribution,
        plot_llm,
        plot_llm_tradeoff,
        plot_throughput_vs_p99,
    )

    plots = []
    if levels:
        plots.append(plot_throughput_vs_p99(levels, out / "throughput_p99.png"))
        plots.append(plot_latency_distribution(levels, slo.concurrency, out / "latency_cdf.png"))
    if llm_levels and slo.llm is not None:
        plots.append(plot_llm(llm_levels, slo.llm.concurrency, out / "llm.png"))
        plots.append(plot_llm_tradeoff(llm_levels, out / "llm_tradeoff.png"))
    return [str(p) for p in plots]


def _draw_dashboards(
    contract: SmokeContract,
    outputs: Path | None,
    started: dt.datetime,
    out: Path,
    progress: Progress,
    warnings: list[str],
) -> dict[str, Any] | None:
    """The stack's cloud dashboards over this run, drawn from a local run's Prometheus (report's
    `dashboards`); for a local run without one, the line saying how to get them; None for a
    cluster (its dashboards are in Cloud Monitoring)."""
    from raygke import local_prometheus
    from raygke.smoke import panels

    source, note = panels.run_prometheus(contract, outputs)
    if source is None:
        if note is None:
            return None
        progress.note(note)
        return {"prometheus": None, "note": note}
    end = dt.datetime.now(dt.UTC)
    start_s, end_s = started.timestamp(), end.timestamp()
    drawn: dict[str, Any] = {
        "prometheus": source.url,
        "note": None,
        "start": started.isoformat(),
        "end": end.isoformat(),
        "step_s": panels.step_s(start_s, end_s),
        "files": [],
        "boards": [],
        "skipped": {},
    }
    try:
        boards, drawn["skipped"] = panels.local_dashboards(load_stack_config(source.stack))
        progress.total += len(boards)
        for board in boards:
            entry = panels.draw(source.url, board, start_s, end_s, out)
            drawn["boards"].append(entry)
            drawn["files"].append(entry["file"])
            filled = sum(p["series"] > 0 for p in entry["panels"])
            progress.step(
                f"A dashboard {board.key}: {filled}/{len(entry['panels'])} panels with series"
            )
    # A Prometheus gone or a stack file changed since `up` costs the pictures, not the verdict.
    except (local_prometheus.PrometheusError, ValueError, OSError) as exc:
        warnings.append(f"dashboards not drawn from {source.url}: {exc}")
        progress.note(warnings[-1])
    return drawn


# A 1-minute load average past this many per core: busy beyond what a local run of prod and the
# smoke make on their own (quiet runs on 2 cores ended at 5-14; beside another benchmark, 17-39).
BUSY_LOAD_PER_CORE = 8.0


def busy_warnings(load_1m: float, cores: int) -> list[str]:
    """A machine much busier than the run itself makes it says so: its latency is the machine's."""
    if load_1m <= BUSY_LOAD_PER_CORE * cores:
        return []
    return [
        f"the machine was busy: load average {load_1m:.1f} over the last minute on {cores} cores "
        "(a local run's own processes count too); the latency figures may be the machine's, not "
        "the deployment's"
    ]


def slo_warnings(contract: SmokeContract) -> list[str]:
    """A local run gated on the cluster's objectives says so: a miss may be this machine."""
    if not contract.local or contract.slo.origin != "slo":
        return []
    gpu = (contract.gpu or {}).get("type") or "the cluster's machines"
    return [
        f"this local run is gated on the cluster SLO (the stack's `smoke`, written for {gpu}): "
        "the stack sets no smoke.localSlo, so a missed latency gate may be this machine rather "
        "than a regression (docs/smoke.md, 'Local runs')"
    ]


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why nothing answers a TCP connect to `url`'s host and port, or None when something does."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port out of range in the URL
        return str(exc)
    if not parts.hostname:
        return "no host in the URL"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def _unreachable_outcome(contract: SmokeContract, reason: str) -> CheckOutcome:
    """The health check's failure, without running the table against an endpoint that is not there."""
    return CheckOutcome("health", None, "http", False, f"{contract.http_url}: {reason}", 0.0)


def _spread_text(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "-"
    return f"{spread['median']:.2f}x [{spread['min']:.2f}-{spread['max']:.2f}]"


def main(argv: list[str] | None = None) -> int:
    """Run `raygke smoke` with the arguments after `smoke`; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        primary = load_contract(args.outputs) if args.outputs else contract_from_stack(args.stack)
        if args.direct:
            primary = direct_view(primary)
        contracts = {"A": primary}
        if args.compare:
            contracts["B"] = load_contract(args.compare)
        elif args.compare_direct:
            contracts["B"] = direct_view(primary)
        profile = with_overrides(
            PROFILES[args.profile],
            duration_s=args.duration,
            warmup_s=args.warmup,
            levels=_levels(args.levels),
            repeats=args.repeats,
            processes=args.processes,
            llm_range_ratio=args.llm_range_ratio,
            llm_rate_fractions=_fractions(args.llm_rates),
            llm_workloads=_workloads(args.llm_workloads),
        )
        if profile.duration_s <= 0 or profile.warmup_s < 0 or profile.repeats < 1:
            raise ContractError("--duration must be > 0, --warmup >= 0 and --repeats >= 1")
        if not 0.0 <= profile.llm_range_ratio < 1.0:
            raise ContractError(
                f"--llm-range-ratio must be in [0, 1); got {profile.llm_range_ratio}"
            )
        if args.processes is not None and args.processes < 1:
            raise ContractError(f"--processes must be >= 1; got {args.processes}")
        if len(contracts) > 1:
            for spec in closed_specs(primary, profile):
                _for_deployment(spec, contracts["B"])
            if args.repeats is None:
                # A ratio needs its spread: at least two A,B rounds, even in the quick profile.
                profile = replace(profile, repeats=max(2, profile.repeats))
    except ContractError as exc:
        print(f"raygke smoke: {str(exc).removeprefix('smoke: ')}", file=sys.stderr)
        return EXIT_BAD_INPUT

    started = dt.datetime.now(dt.UTC)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"raygke smoke: cannot create --out {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # An endpoint nothing listens on is one clear line, not a table of connection errors: the
    # health gate fails (exit 1) and the report says why.
    down = {
        label: reason
        for label, contract in contracts.items()
        if (reason := unreachable(contract.http_url, min(5.0, profile.timeout_s))) is not None
    }
    planned = len(closed_specs(primary, profile)) * profile.repeats * len(contracts)
    progress = Progress(len(contracts) + planned, stream=io.StringIO() if down else sys.stderr)

    checks: dict[str, list[CheckOutcome]] = {}
    for label, contract in contracts.items():
        if label in down:
            checks[label] = [_unreachable_outcome(contract, down[label])]
            continue
        checks[label] = run_checks(contract, timeout_s=profile.timeout_s)
        passed = sum(o.passed for o in checks[label])
        progress.step(f"{label} functional checks: {passed}/{len(checks[label])} passed")

    warnings: list[str] = slo_warnings(primary)
    for line in warnings:
        progress.note(line)
    health_down = [
        label
        for label, outs in checks.items()
        if any(o.name == "health" and not o.passed for o in outs)
    ]
    levels: list[LevelResult] = []
    llm_levels: list[LlmLevelResult] = []
    llm_problems: dict[str, str] = {}
    if health_down:
        warnings.append(f"load skipped: health check failed for {', '.join(health_down)}")
        progress.note(warnings[-1])
    else:
        levels = _run_plan(profile, contracts, progress)
        llm_levels, llm_problems = _run_llm(profile, contracts, progress)
    if primary.slo.llm is None and any(a.kind == "llm" for a in primary.apps):
        warnings.append(
            "LLM load skipped: a version 1 contract has no slo.llm (export it again: pulumi up)"
        )

    # The run's window ends here: the dashboards are drawn over the checks and the load.
    dashboards = (
        None
        if args.no_plots
        else _draw_dashboards(primary, args.outputs, started, out, progress, warnings)
    )
    gates = evaluate(primary.slo, checks["A"], levels)
    gates += evaluate_llm(primary.slo, llm_levels, llm_problems)
    warnings += client_warnings(levels)
    warnings += busy_warnings(os.getloadavg()[0], os.cpu_count() or 1)
    exit_code = EXIT_PASS if all(g.passed for g in gates) else EXIT_GATE_FAILED
    plots = [] if args.no_plots else _write_plots(levels, llm_levels, primary.slo, out)
    report = build_report(
        profile=profile,
        contracts=contracts,
        checks=checks,
        levels=levels,
        llm_levels=llm_levels,
        gates=gates,
        warnings=warnings,
        ratios=compare_ratios(levels) if len(contracts) > 1 else None,
        plots=plots,
        dashboards=dashboards,
        started=started,
        exit_code=exit_code,
    )
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (out / "report.md").write_text(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as fh:
            fh.write(markdown)
    for ratio in report["compare"] or []:
        # Plain lines for scripts (make bench) that print the A/B without parsing the JSON.
        tput, p99 = _spread_text(ratio["throughput"]), _spread_text(ratio["p99"])
        print(f"A/B {ratio['label']}: throughput {tput}, p99 {p99}")
    if down:
        where = "; ".join(
            f"{label} {contracts[label].http_url} is unreachable ({reason})"
            for label, reason in down.items()
        )
        print(
            f"raygke smoke: {where}: is the deployment up? report: {out / 'report.md'}",
            file=sys.stderr,
        )
    failed = [g.name for g in gates if not g.passed]
    verdict = "PASS" if not failed else f"FAIL ({len(failed)} gate(s): {'; '.join(failed[:5])})"
    print(f"raygke smoke: {verdict}")
    for gate in [g for g in gates if not g.passed][:5]:  # each names the objective it held
        print(f"  {gate.name}: {gate.detail}")
    pictures = plots + (dashboards or {}).get("files", [])
    print(f"report: {out / 'report.md'} {out / 'report.json'}" + "".join(f" {p}" for p in pictures))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
