"""`make bench`: the package's defaults against a baseline, side by side, on this machine.

Owns: one run that starts two local runs of a stack at once (A: the package's defaults,
`serveProfile: tuned`; B: `--profile flags-only`, Ray's two flags and nothing else, or
`--baseline ray-defaults`), drives `raygke smoke --compare` between them (echo unary and streaming
and recsys, closed loop at c=8 and c=32, interleaved and repeated), then measures our HAProxy tier
against Ray's own HAProxy (`--compare-direct`), our benchmark client against `wrk` on the same
endpoint, and the Ray-free ceiling: bench/reference_server.py with the same shape behind the same
HAProxy tier. It prints the figures with their targets, writes out/bench/ab.json and
out/bench/ab.md, and stops everything it started, by PID or with `raygke local down`, whatever
happens.
Does not own: any measuring logic (raygke/smoke does that) or the local run itself (raygke local).
Targets are printed, never tuned for: a missed target is reported as missed.

    python bench/ab.py [--baseline flags-only|ray-defaults] [--duration 4] [--repeats 3] [--no-ceiling]
    python bench/ab.py --client-vs-wrk OUTPUTS [--repeats 3]   # section 3 only, running deployment
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
import reference_server
from common import OUT, REPO, machine, render, say, spread

from infra.stack_file import NAMESPACE as NS
from raygke import local
from raygke.smoke.contract import AppEndpoint, SmokeContract, load_contract
from raygke.smoke.load import LoadSpec, run_level

RAYGKE = Path(sys.executable).with_name("raygke")
LEVELS = (8, 32)
TARGETS = (
    "echo/http/unary",
    "echo/grpc/unary",
    "echo/http/stream",
    "echo/grpc/stream",
    "recsys/http/unary",
    "recsys/grpc/unary",
)
STREAM_CHUNKS = 20  # the smoke profile's default, pacing 0: pure serving overhead


@dataclass(frozen=True)
class Baseline:
    label: str
    min_throughput_ratio: float  # echo, A/B, every level
    max_p99_ratio: float  # echo, A/B, c=32


# The targets: tuned vs Ray's two flags (1.5x, p99 no worse), and the package vs Ray's defaults
# (after the published benchmark behind the article this package follows: 5.9x / 3.8x / 0.27x with
# wrk on 2 cores).
BASELINES = {
    "flags-only": Baseline("B: Ray's two flags only", 1.5, 1.0),
    "ray-defaults": Baseline("B: Ray defaults", 5.0, 0.25),
}
MAX_TIER_THROUGHPUT_COST = 0.05
MAX_TIER_P50_COST_MS = 1.0
MIN_CLIENT_PER_CORE_VS_WRK = 0.5


Level = dict[str, Any]


def closed_levels(report: dict[str, Any]) -> dict[tuple[str, int, str, int], Level]:
    """(target, concurrency, deployment, repeat) -> the report's level."""
    return {
        (lv["target"], lv["concurrency"], lv["deployment"], lv["repeat"]): lv
        for lv in report["load"]
        if lv["loop"] == "closed"
    }


def paired(
    levels: dict[tuple[str, int, str, int], Level],
    target: str,
    c: int,
    value: Callable[[Level], float | None],
) -> tuple[list[float], list[float]]:
    """Per repeat, the value for A and for B (only repeats where both have it)."""
    a_vals: list[float] = []
    b_vals: list[float] = []
    repeats = sorted({k[3] for k in levels if k[0] == target and k[1] == c})
    for r in repeats:
        a, b = levels.get((target, c, "A", r)), levels.get((target, c, "B", r))
        va = None if a is None else value(a)
        vb = None if b is None else value(b)
        if va is not None and vb is not None:
            a_vals.append(va)
            b_vals.append(vb)
    return a_vals, b_vals


def tput(level: Level) -> float | None:
    return float(level["throughput_rps"]) if level["ok"] else None


def lat(pct: str) -> Callable[[Level], float | None]:
    def get(level: Level) -> float | None:
        summary = level["latency_ms"]
        return None if summary is None else float(summary[pct])

    return get


# Subprocesses ---------------------------------------------------------------------------------


def start_local_runs(
    runs: dict[str, list[str]], logs: Path, launchers: Mapping[str, list[str]] | None = None
) -> None:
    """`raygke local up` for every run at once; progress lines until all are up. `launchers`: the
    command that stands for `raygke` for some runs (one taking the CLI's arguments)."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    began = time.monotonic()
    for label, args in runs.items():
        log = (logs / f"local-up-{label}.log").open("wb")
        launcher = (launchers or {}).get(label, [str(RAYGKE)])
        # One node per run, as docs/performance.md's figures were measured: the A/B is about the
        # serving path's overhead, and two runs of a head + 2 workers each would put 6 raylets on
        # a 2-core machine.
        procs[label] = subprocess.Popen(
            [*launcher, "local", "up", "--workers", "0", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        say(f"starting {label}: raygke local up {' '.join(args)} (pid {procs[label].pid})")
    waiting = dict(procs)
    try:
        _wait_up(waiting, logs, began)
    finally:
        # One failed: the other's `up` must not go on starting a cluster nobody stops.
        for proc in waiting.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)


def _wait_up(waiting: dict[str, subprocess.Popen[bytes]], logs: Path, began: float) -> None:
    next_note = began + 10
    while waiting:
        for label, proc in list(waiting.items()):
            if proc.poll() is None:
                continue
            del waiting[label]
            took = time.monotonic() - began
            if proc.returncode != 0:
                tail = (logs / f"local-up-{label}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{label}: raygke local up failed (rc {proc.returncode}):\n{tail}"
                )
            say(f"  {label} up after {took:.0f} s")
        if waiting and time.monotonic() >= next_note:
            elapsed = time.monotonic() - began
            say(f"  ... {elapsed:.0f} s, still starting: {', '.join(sorted(waiting))}")
            next_note += 10
        time.sleep(0.5)


# `raygke local up` of a stack given as its `config:` map (a benchmark's variant of a stack file), in
# a process of its own: the CLI reads stack files by name. Its argv: the map as a JSON file, the
# state dir, the logical CPUs to add, and "1" for --prometheus.
UP_STACK = (
    "import json, signal, sys\n"
    "from infra.stack_file import parse_stack_config\n"
    "from raygke import local\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # up's own cleanup runs\n"
    "raw = json.loads(open(sys.argv[1]).read())\n"
    "extra = int(sys.argv[3])\n"
    "local.load_stack_config = lambda stack: parse_stack_config(stack, raw)\n"
    "counted = local.logical_cpus\n"
    "local.logical_cpus = lambda config, serve_config: counted(config, serve_config) + extra\n"
    "sys.exit(local.up('prod', state_dir=sys.argv[2], workers=0, prometheus=sys.argv[4] == '1'))\n"
)


def llm_extra_cpus(raw: dict[str, Any], replicas: int) -> int:
    """Logical CPUs beyond what `raygke local up` counts (one replica per llm app) for `replicas`
    of the stack's llm app."""
    [app] = [a for a in raw[f"{NS}:apps"] if a["kind"] == "llm"]
    per_replica = 1 + int(app["localArgs"].get("cpus_per_replica", 1))
    return per_replica * (replicas - 1) + 1


def start_stack_run(
    raw: dict[str, Any],
    state_dir: Path,
    logs: Path,
    label: str,
    *,
    llm_replicas: int,
    prometheus: bool = False,
) -> None:
    """`raygke local up` (one node) of the stack map `raw` with room for `llm_replicas`, its log in
    `logs`; raises with the log's tail if it fails."""
    stack_file = logs / f"stack-{label}.json"
    stack_file.write_text(json.dumps(raw, indent=2) + "\n")
    log = logs / f"local-up-{label}.log"
    extra, flag = llm_extra_cpus(raw, llm_replicas), "1" if prometheus else "0"
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", UP_STACK, str(stack_file), str(state_dir), str(extra), flag],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        say(f"starting {label}: raygke local up (the bench's stack; pid {proc.pid})")
        try:
            rc = proc.wait(timeout=local.up_bound_s(0, prometheus=prometheus) + 60)
        except BaseException:
            proc.terminate()
            proc.wait(timeout=60)
            raise
    if rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{label}: raygke local up failed (rc {rc}):\n{tail}")
    say(f"  {label} up after {time.monotonic() - began:.0f} s")


def stop_local_run(state_dir: Path, logs: Path) -> None:
    if not (state_dir / "state.json").exists() and not state_dir.exists():
        return
    with (logs / f"local-down-{state_dir.name}.log").open("wb") as log:
        done = subprocess.run(
            [str(RAYGKE), "local", "down", "--state-dir", str(state_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            timeout=180,
            check=False,
        )
    say(f"stopped {state_dir.name}: raygke local down (rc {done.returncode})")


def echo_only(source: Path, dest: Path, grpc: bool = True) -> Path:
    """The outputs with only the echo app (a shorter plan); without gRPC when `grpc` is False."""
    doc = json.loads(source.read_text())
    apps = [dict(app) for app in doc["apps"] if app["kind"] == "echo"]
    if not grpc:
        for app in apps:
            app["grpc_service"] = None
    doc["apps"] = apps
    dest.write_text(json.dumps(doc, indent=2) + "\n")
    return dest


def smoke(args: list[str], out: Path) -> dict[str, Any]:
    """`raygke smoke` (progress on stderr passes through); the JSON report it wrote."""
    cmd = [str(RAYGKE), "smoke", *args, "--out", str(out), "--no-plots"]
    say(f"$ {' '.join(cmd[1:])}")
    done = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL, check=False)
    if done.returncode == 2:
        raise RuntimeError(f"raygke smoke rejected its input: {' '.join(cmd)}")
    report = json.loads((out / "report.json").read_text())
    if done.returncode == 1:
        failed = [g["name"] for g in report["gates"] if not g["passed"]]
        say(f"  (smoke gates failed for A: {', '.join(failed)}; the figures still stand)")
    return report


# wrk ------------------------------------------------------------------------------------------


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not found:
        raise ValueError(f"wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def run_wrk(url: str, concurrency: int, duration_s: int) -> dict[str, Any]:
    """One wrk run (1 thread: the same one-process client as ours); its CPU from wait4."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency", url]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    text = proc.stdout.read().decode(errors="replace")
    # wait4, not wait: the child's own CPU time, which is what "per client core" divides by.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if proc.returncode != 0 or rps is None:
        raise RuntimeError(f"wrk failed (rc {proc.returncode}):\n{text}")
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    cpu = (usage.ru_utime + usage.ru_stime) / wall
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)) if p50 else None,
        "p99_ms": _ms(p99.group(1)) if p99 else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
        "cpu_cores": cpu,
    }


def run_ours(
    contract: SmokeContract, echo: AppEndpoint, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    spec = LoadSpec(
        app=echo,
        transport="http",
        mode="unary",
        loop="closed",
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        processes=1,
    )
    level = run_level(spec, contract.endpoints)
    return {
        "rps": level.throughput_rps,
        "p50_ms": None if level.latency_ms is None else level.latency_ms.p50,
        "p99_ms": None if level.latency_ms is None else level.latency_ms.p99,
        "errors": dict(level.errors),
        "cpu_cores": sum(level.client_cpu),
    }


WRK_MISSING = "SKIPPED: wrk is not installed (Debian: apt-get install -y wrk)"
CLIENT_TITLE = "Our benchmark client vs wrk (1 process / 1 thread each, same endpoint and duration)"
CLIENT_NOTE = (
    "per core = req/s divided by the client's own CPU (cores busy over the run); "
    "the target applies to per core."
)


def client_vs_wrk(
    outputs: Path, repeats: int, duration_s: int, warmup_s: float
) -> dict[int, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Our client then wrk on the echo app's unary endpoint, per level, `repeats` times."""
    contract = load_contract(outputs)
    echo = next(app for app in contract.apps if app.kind == "echo")
    prefix = "" if echo.route_prefix == "/" else echo.route_prefix
    url = f"{contract.http_url}{prefix}/unary?size=1024"
    runs: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {c: [] for c in LEVELS}
    for repeat in range(repeats):
        for c in LEVELS:
            ours = run_ours(contract, echo, c, duration_s, warmup_s)
            theirs = run_wrk(url, c, duration_s)
            runs[c].append((ours, theirs))
            say(
                f"  repeat {repeat} c={c}: ours {ours['rps']:.0f} req/s on "
                f"{ours['cpu_cores']:.2f} cores, wrk {theirs['rps']:.0f} req/s on "
                f"{theirs['cpu_cores']:.2f} cores; load average {os.getloadavg()[0]:.2f}"
            )
    return runs


def client_only(outputs: Path, repeats: int, duration_s: int, warmup_s: float) -> int:
    """`--client-vs-wrk OUTPUTS`: only section 3, against a deployment already running."""
    if shutil.which("wrk") is None:
        say(WRK_MISSING)
        return 2
    host = machine()
    say(f"machine: {host['cores']} cores, {host['cpu_model']}, Python {host['python']}")
    say(f"         load average at start {host['loadavg_at_start']}")
    echo = echo_only(outputs, Path(tempfile.mkdtemp(prefix="raygke-client-")) / "echo.json")
    runs = client_vs_wrk(echo, repeats, duration_s, warmup_s)
    text, _ = render(*client_section(runs, {}))
    say()
    say(f"== {CLIENT_TITLE}")
    say(text)
    say(CLIENT_NOTE)
    say(f"load average at end {[round(v, 2) for v in os.getloadavg()]}")
    return 0


# Verdicts -------------------------------------------------------------------------------------


def met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


# Sections -------------------------------------------------------------------------------------


def present_targets(levels: dict[tuple[str, int, str, int], Level]) -> list[str]:
    """The targets measured, in TARGETS order (others last)."""
    return sorted({k[0] for k in levels}, key=lambda t: TARGETS.index(t) if t in TARGETS else 99)


def _ratio_figure(
    a: list[float], b: list[float], fmt: str, op: str, bound: float
) -> tuple[list[str], dict[str, Any]]:
    """The row cells after the figure's name, and its figure, for A/B against `op bound`."""
    ratio = spread(x / y for x, y in zip(a, b, strict=True) if y > 0)
    ok = None
    if ratio.n:
        ok = ratio.median >= bound if op == ">=" else ratio.median <= bound
    cells = [
        spread(a).fmt(fmt),
        spread(b).fmt(fmt),
        ratio.fmt(".2f", "x"),
        f"{op} {bound:g}x",
        met(ok),
    ]
    figure = {
        "A": spread(a).as_dict(),
        "B": spread(b).as_dict(),
        "ratio": ratio.as_dict(),
        "target": f"{op} {bound}",
        "met": ok,
    }
    return cells, figure


def ab_section(
    report: dict[str, Any], figures: dict[str, Any], baseline: Baseline
) -> tuple[list[str], list[list[str]]]:
    levels = closed_levels(report)
    header = [
        "figure",
        "A: package defaults",
        baseline.label,
        "A/B median [min .. max]",
        "target",
        "met",
    ]
    rows: list[list[str]] = []
    for target in present_targets(levels):
        if target.startswith("recsys/"):
            rows.append(_best_level_row(levels, target, figures))
            continue
        for c in LEVELS:
            a, b = paired(levels, target, c, tput)
            if not a:
                rows.append([f"{target} c={c} req/s", "-", "-", "not measured on both", "", ""])
                continue
            cells, figures[f"{target} c={c} throughput"] = _ratio_figure(
                a, b, ".0f", ">=", baseline.min_throughput_ratio
            )
            rows.append([f"{target} c={c} req/s", *cells])
        a, b = paired(levels, target, 32, lat("p99"))
        if a:
            cells, figures[f"{target} c=32 p99"] = _ratio_figure(
                a, b, ".1f", "<=", baseline.max_p99_ratio
            )
            rows.append([f"{target} c=32 p99 ms", *cells])
    return header, rows


def _best_level_row(
    levels: dict[tuple[str, int, str, int], Level], target: str, figures: dict[str, Any]
) -> list[str]:
    """Each side at its own best concurrency (median req/s over repeats): the gain must be > 1x."""
    best: dict[str, tuple[float, int]] = {}
    for side in ("A", "B"):
        medians = {
            c: spread(
                v for k, lv in levels.items() if k[:3] == (target, c, side) if (v := tput(lv))
            ).median
            for c in LEVELS
        }
        c = max(medians, key=lambda c: medians[c] if medians[c] == medians[c] else -1)
        best[side] = (medians[c], c)
    (a, ca), (b, cb) = best["A"], best["B"]
    ratio = a / b if b else float("nan")
    figures[f"{target} best throughput"] = {
        "A": {"rps": a, "concurrency": ca},
        "B": {"rps": b, "concurrency": cb},
        "ratio": ratio,
        "target": "> 1",
        "met": ratio > 1,
    }
    return [
        f"{target} best req/s",
        f"{a:.0f} (c={ca})",
        f"{b:.0f} (c={cb})",
        f"{ratio:.2f}x",
        "> 1x",
        met(ratio > 1),
    ]


def direct_section(
    report: dict[str, Any], figures: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    levels = closed_levels(report)
    header = [
        "figure",
        "our tier req/s",
        "Ray's HAProxy req/s",
        "throughput cost",
        "p50 ours / direct ms",
        "p50 cost ms",
        "met (<5%, <1 ms)",
    ]
    rows: list[list[str]] = []
    for target in present_targets(levels):
        for c in LEVELS:
            a, b = paired(levels, target, c, tput)
            pa, pb = paired(levels, target, c, lat("p50"))
            if not a or not pa:
                continue
            costs = [1 - x / y for x, y in zip(a, b, strict=True) if y > 0]
            cost = spread(costs)
            p50_cost = spread(x - y for x, y in zip(pa, pb, strict=True))
            ok = (
                cost.median < MAX_TIER_THROUGHPUT_COST and p50_cost.median < MAX_TIER_P50_COST_MS
                if cost.n and p50_cost.n
                else None
            )
            rows.append(
                [
                    f"{target} c={c}",
                    spread(a).fmt(".0f"),
                    spread(b).fmt(".0f"),
                    spread(v * 100 for v in costs).fmt("+.1f", "%"),
                    f"{spread(pa).median:.2f} / {spread(pb).median:.2f}",
                    p50_cost.fmt("+.2f"),
                    met(ok),
                ]
            )
            figures[f"{target} c={c} tier vs direct"] = {
                "ours_rps": spread(a).as_dict(),
                "direct_rps": spread(b).as_dict(),
                "throughput_cost": cost.as_dict(),
                "p50_cost_ms": p50_cost.as_dict(),
                "met": ok,
            }
    return header, rows


def client_section(
    runs: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]], figures: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    header = [
        "echo/http/unary via our tier",
        "ours req/s",
        "ours client cores",
        "wrk req/s",
        "wrk client cores",
        "ours/wrk req/s",
        "ours/wrk per core",
        "target",
        "met",
    ]
    rows: list[list[str]] = []
    for c, pairs in runs.items():
        ours = [o for o, _ in pairs]
        wrk = [w for _, w in pairs]
        per_core = spread(
            (o["rps"] / o["cpu_cores"]) / (w["rps"] / w["cpu_cores"])
            for o, w in pairs
            if o["cpu_cores"] > 0 and w["cpu_cores"] > 0 and w["rps"] > 0
        )
        rps_ratio = spread(o["rps"] / w["rps"] for o, w in pairs if w["rps"] > 0)
        ok = per_core.median >= MIN_CLIENT_PER_CORE_VS_WRK if per_core.n else None
        rows.append(
            [
                f"c={c}",
                spread(o["rps"] for o in ours).fmt(".0f"),
                spread(o["cpu_cores"] for o in ours).fmt(".3f"),
                spread(w["rps"] for w in wrk).fmt(".0f"),
                spread(w["cpu_cores"] for w in wrk).fmt(".3f"),
                rps_ratio.fmt(".2f", "x"),
                per_core.fmt(".2f", "x"),
                f">= {MIN_CLIENT_PER_CORE_VS_WRK:g}x",
                met(ok),
            ]
        )
        figures[f"client vs wrk c={c}"] = {
            "ours": ours,
            "wrk": wrk,
            "rps_ratio": rps_ratio.as_dict(),
            "per_core_ratio": per_core.as_dict(),
            "met": ok,
        }
    return header, rows


def ceiling_section(
    ab: dict[str, Any], ceiling: dict[str, Any], figures: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    ours = closed_levels(ab)
    ref = closed_levels(ceiling)
    header = [
        "figure",
        "ceiling req/s (no Ray)",
        "A req/s",
        "A / ceiling",
        "B req/s",
        "B / ceiling",
    ]
    rows: list[list[str]] = []
    for target in TARGETS[:4]:  # echo: the reference's recsys has no model to compare with
        for c in LEVELS:
            r = spread(v for k, lv in ref.items() if k[:3] == (target, c, "A") if (v := tput(lv)))
            if not r.n:
                continue
            row = [f"{target} c={c}", r.fmt(".0f")]
            figure: dict[str, Any] = {"ceiling": r.as_dict()}
            for side in ("A", "B"):
                s = spread(
                    v for k, lv in ours.items() if k[:3] == (target, c, side) if (v := tput(lv))
                )
                fraction = s.median / r.median if s.n and r.median else float("nan")
                row += [s.fmt(".0f"), f"{fraction:.3f}"]
                figure[side] = s.as_dict()
                figure[f"{side} fraction"] = fraction
            rows.append(row)
            figures[f"{target} c={c} ceiling"] = figure
    return header, rows


# Main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", default="dev")
    parser.add_argument(
        "--baseline",
        choices=sorted(BASELINES),
        default="flags-only",
        help="B's serve profile (default: Ray's two flags only)",
    )
    parser.add_argument("--duration", type=int, default=4, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the Ray-free ceiling")
    parser.add_argument(
        "--client-vs-wrk",
        type=Path,
        metavar="OUTPUTS",
        help="only measure our client against wrk, on the deployment of this outputs file",
    )
    args = parser.parse_args(argv)
    if args.client_vs_wrk is not None:
        return client_only(args.client_vs_wrk, args.repeats, args.duration, args.warmup)

    began = time.monotonic()
    out = OUT / args.baseline  # one report folder per baseline
    out.mkdir(parents=True, exist_ok=True)
    host = machine()
    say(f"machine: {host['cores']} cores, {host['cpu_model']}, Python {host['python']}")
    say(f"         {host['platform']}, load average at start {host['loadavg_at_start']}")
    say(
        f"plan: levels c={','.join(map(str, LEVELS))}, {args.duration} s each after "
        f"{args.warmup:g} s warm-up, {args.repeats} repeats, A/B interleaved; streams "
        f"{STREAM_CHUNKS} chunks, pacing 0"
    )
    work = Path(tempfile.mkdtemp(prefix="raygke-ab-"))
    state = {"A": work / "A", "B": work / "B"}
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    figures: dict[str, Any] = {}
    sections: list[tuple[str, str, str]] = []  # (title, text table, markdown table)
    reference: Any = None
    smoke_args = [
        "--profile",
        "quick",
        "--levels",
        ",".join(map(str, LEVELS)),
        "--repeats",
        str(args.repeats),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]

    def section(title: str, table: tuple[list[str], list[list[str]]], note: str = "") -> None:
        text, md = render(*table)
        say()
        say(f"== {title}")
        say(text)
        if note:
            say(note)
        sections.append(
            (title, text + ("\n" + note if note else ""), md + ("\n\n" + note if note else ""))
        )

    try:
        start_local_runs(
            {
                "A": ["--stack", args.stack, "--state-dir", str(state["A"])],
                "B": [
                    "--stack",
                    args.stack,
                    "--profile",
                    args.baseline,
                    "--state-dir",
                    str(state["B"]),
                ],
            },
            logs,
        )
        a_echo = echo_only(state["A"] / "outputs.json", work / "A-echo.json")
        baseline = BASELINES[args.baseline]

        say(f"\n-- 1/4 A/B: package defaults (A) vs {args.baseline} (B)")
        ab = smoke(
            [
                "--outputs",
                str(state["A"] / "outputs.json"),
                "--compare",
                str(state["B"] / "outputs.json"),
                *smoke_args,
            ],
            out / "smoke-ab",
        )
        section(
            f"A/B: package defaults vs {args.baseline} (closed loop, median over repeats [min .. max])",
            ab_section(ab, figures, baseline),
        )

        say("\n-- 2/4 our HAProxy tier (A) vs Ray's HAProxy directly (B), HTTP")
        a_http = echo_only(state["A"] / "outputs.json", work / "A-echo-http.json", grpc=False)
        direct = smoke(
            ["--outputs", str(a_http), "--compare-direct", *smoke_args], out / "smoke-direct"
        )
        section(
            "Our HAProxy tier vs Ray's HAProxy directly (package defaults)",
            direct_section(direct, figures),
            "cost = 1 - ours/direct (positive: our tier is slower); p50 cost = ours - direct.",
        )

        say("\n-- 3/4 our benchmark client vs wrk, A's echo unary over our tier")
        if shutil.which("wrk") is None:
            say(WRK_MISSING)
            sections.append(("Our client vs wrk", WRK_MISSING, WRK_MISSING))
            figures["client vs wrk"] = "skipped: wrk not installed"
        else:
            runs = client_vs_wrk(a_echo, args.repeats, args.duration, args.warmup)
            section(CLIENT_TITLE, client_section(runs, figures), CLIENT_NOTE)

        if args.no_ceiling:
            say("\n-- 4/4 Ray-free ceiling: skipped (--no-ceiling)")
        else:
            say("\n-- 4/4 Ray-free ceiling: bench/reference_server.py behind our tier, same levels")
            reference = reference_server.start(work / "ref", tier=True)
            ref_echo = echo_only(reference.outputs_path, work / "ref-echo.json")
            ceiling_args = [*smoke_args]
            ceiling_args[ceiling_args.index("--repeats") + 1] = "1"
            ceiling = smoke(["--outputs", str(ref_echo), *ceiling_args], out / "smoke-ceiling")
            reference.stop()
            reference = None
            section(
                "A and B as fractions of the Ray-free ceiling (one run of the reference server)",
                ceiling_section(ab, ceiling, figures),
            )
    finally:
        if reference is not None:
            reference.stop()
        for label in ("A", "B"):
            try:
                stop_local_run(state[label], logs)
            except Exception as exc:  # keep stopping the other run
                say(f"stopping {label} failed: {exc}")

    took = time.monotonic() - began
    say(f"\ntotal {took:.0f} s; reports under {out.relative_to(REPO)}")
    document = {
        "machine": host,
        "plan": {
            "stack": args.stack,
            "baseline": args.baseline,
            "levels": LEVELS,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "stream_chunks": STREAM_CHUNKS,
        },
        "figures": figures,
        "seconds": round(took, 1),
    }
    (out / "ab.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    md = [
        f"# raygke bench: package defaults vs {args.baseline}",
        "",
        f"Machine: {host['cores']} cores, {host['cpu_model']}, Python {host['python']} "
        f"({host['platform']}); load average at start {host['loadavg_at_start']}.",
        f"Plan: c={', '.join(map(str, LEVELS))}; {args.duration} s per level after "
        f"{args.warmup:g} s warm-up; {args.repeats} repeats, interleaved.",
    ]
    for title, _, table in sections:
        md += ["", f"## {title}", "", table]
    (out / "ab.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
