"""`make ablation`: what each Ray Serve lever beyond Ray's two flags is worth, one lever at a time.

Owns: two isolated local Ray heads on this machine, both serving the echo app (Ray's own HAProxy
in front, no tier of ours: the tier is the same on both sides). The baseline head runs "flags
only" (`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, Ray's defaults for the
rest); the variant head runs the baseline plus one lever, then plus every lever the package keeps
(its `serveProfile: tuned`). Each variant is measured against the baseline closed loop, the two
interleaved and repeated, with the smoke benchmark's load generator, and the server's CPU per
request taken from /proc for every process of each head. Levers in the serve config are redeployed
into the running variant head; env levers restart it. Writes out/bench/ablation.{json,md}.
Does not own: the package's defaults (infra/config.py's TuningConfig, which the last row measures),
the measuring logic (raygke/smoke/load.py), the end-to-end A/B (bench/ab.py).

    python bench/ablation.py [--duration 3] [--warmup 1] [--repeats 3] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
from common import OUT, machine, render, say, spread

from infra.config import FLAGS_ONLY, ServeProfile, with_serve_profile
from infra.specs import SERVE_LOG_ENV
from infra.stack_file import load_stack_config
from raygke import local_ray
from raygke.local import local_flags, local_serve_config
from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.load import LoadSpec, Mode, Transport, run_level

ServeEdit = Callable[[dict[str, Any]], None]
# (transport, mode, concurrency): the measured targets, echo unary and streaming at c=8 and c=32.
TARGETS: tuple[tuple[Transport, Mode, int], ...] = (
    ("http", "unary", 8),
    ("http", "unary", 32),
    ("grpc", "unary", 32),
    ("http", "stream", 8),
)
ECHO = AppEndpoint("echo", "echo", "/echo", "raygke.echo.v1.EchoService", "echo")


@dataclass(frozen=True)
class Lever:
    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    serve: ServeEdit | None = None


def _deployments(**options: Any) -> ServeEdit:
    def edit(config: dict[str, Any]) -> None:
        for app in config["applications"]:
            for dep in app["deployments"]:
                dep.update(options)

    return edit


def _app(key: str, value: Any) -> ServeEdit:
    def edit(config: dict[str, Any]) -> None:
        for app in config["applications"]:
            app[key] = value

    return edit


def _args(**args: Any) -> ServeEdit:
    def edit(config: dict[str, Any]) -> None:
        for app in config["applications"]:
            app["args"] = {**app["args"], **args}

    return edit


def _ingress_replicas(replicas: int) -> ServeEdit:
    """`replicas` ingress replicas sharing the one replica's CPUs: same resources in total."""

    def edit(config: dict[str, Any]) -> None:
        for app in config["applications"]:
            for dep in app["deployments"]:
                if dep["name"] == "EchoIngress":
                    dep["num_replicas"] = replicas
                    cpus = dep["ray_actor_options"]["num_cpus"]
                    dep["ray_actor_options"] = {
                        **dep["ray_actor_options"],
                        "num_cpus": cpus / replicas,
                    }

    return edit


def echo_config(profile: ServeProfile) -> dict[str, Any]:
    """The dev stack's echo app as `raygke local` deploys it, under `profile`."""
    config = local_serve_config(with_serve_profile(load_stack_config("dev"), profile))
    return {**config, "applications": [a for a in config["applications"] if a["name"] == "echo"]}


def _package_tuned(config: dict[str, Any]) -> None:
    config.clear()
    config.update(echo_config("tuned"))


LEVERS = (
    Lever(
        "access log off",
        "logging_config.enable_access_log: false",
        serve=_app("logging_config", {"enable_access_log": False}),
    ),
    Lever(
        "log level WARNING",
        "logging_config.log_level: WARNING (access log on)",
        serve=_app("logging_config", {"log_level": "WARNING"}),
    ),
    Lever(
        "max_ongoing 64",
        "max_ongoing_requests 64 (Ray's default: 5)",
        serve=_deployments(max_ongoing_requests=64),
    ),
    Lever(
        "pickle handles",
        "handle request/response serialization pickle (default cloudpickle)",
        serve=_args(handle_serialization="pickle"),
    ),
    Lever(
        "FastAPI ingress",
        "the same handlers behind FastAPI routing (app.echo:build_fastapi_app)",
        serve=_app("import_path", "app.echo:build_fastapi_app"),
    ),
    Lever(
        "uvloop off",
        "RAY_USE_UVLOOP=0: asyncio's own event loop in every replica (Ray uses uvloop)",
        env={"RAY_USE_UVLOOP": "0"},
    ),
    Lever(
        "2 ingress replicas",
        "EchoIngress: 2 replicas x 0.5 CPU instead of 1 x 1",
        serve=_ingress_replicas(2),
    ),
    Lever(
        "HAProxy 1 thread",
        "RAY_SERVE_HAPROXY_NBTHREAD=1 (default 4)",
        env={"RAY_SERVE_HAPROXY_NBTHREAD": "1"},
    ),
    Lever(
        "metrics on replicas",
        "RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE=0",
        env={"RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE": "0"},
    ),
    Lever(
        "metrics every 1 s",
        "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS=1000 (default 100)",
        env={"RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"},
    ),
    Lever(
        "controller loop 0.5 s",
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.5 (default 0.1): the controller wakes less often",
        env={"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"},
    ),
    Lever(
        "no HAProxy metrics",
        "RAY_SERVE_HAPROXY_METRICS_ENABLED=0",
        env={"RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"},
    ),
    Lever(
        "Serve logs on stderr",
        "RAY_SERVE_LOG_TO_STDERR=1 (0 under the flags): what the cluster sets for Cloud Logging, "
        "and the local run with it (infra/specs.py SERVE_LOG_ENV)",
        env=dict(SERVE_LOG_ENV),
    ),
    Lever(
        "tuned (package default)",
        "serveProfile: tuned: the levers the package keeps",
        env=local_flags(load_stack_config("dev")),
        serve=_package_tuned,
    ),
)


# Where a request's CPU goes: process groups by command line (the first match wins).
CPU_GROUPS = (
    ("ServeReplica:echo:EchoIngress", "EchoIngress replica"),
    ("ServeReplica:echo:Echo", "Echo replica"),
    ("ServeReplica:echo:Streamer", "Streamer replica"),
    ("haproxy", "Ray's HAProxy"),
    ("ServeController", "Serve controller"),
    ("HAProxyManager", "HAProxy manager, proxy actor"),
    ("ProxyActor", "HAProxy manager, proxy actor"),
)
OTHER_GROUP = "Ray daemons (GCS, raylet, dashboard, agents)"


def cpu_by_group(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) each process group has used so far; gone processes count 0."""
    totals: dict[str, float] = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        cmdline = local_ray.command_line(pid)
        group = next((g for marker, g in CPU_GROUPS if marker in cmdline), OTHER_GROUP)
        totals[group] = totals.get(group, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return totals


def measure(
    head: local_ray.LocalRay,
    target: tuple[Transport, Mode, int],
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """One closed-loop level, and the server's CPU per request: every process of the head
    (replicas, Ray's HAProxy, controller, daemons). On a saturated machine throughput swings
    with whatever else runs; CPU per request much less, and it is what throughput divides."""
    transport, mode, concurrency = target
    spec = LoadSpec(
        app=ECHO,
        transport=transport,
        mode=mode,
        loop="closed",
        concurrency=concurrency,
        duration_s=duration,
        warmup_s=warmup,
        processes=1,
    )
    pids = local_ray.processes(head)
    before = cpu_by_group(pids)
    level = run_level(spec, Endpoints(head.http_url, head.grpc_target))
    after = cpu_by_group(pids)
    served = level.throughput_rps * (duration + warmup)  # the window's rate over the whole run
    per_request = {g: 1000 * (after[g] - before.get(g, 0.0)) / served for g in after if served}
    if served:
        per_request["benchmark client"] = 1000 * sum(level.client_cpu) / level.throughput_rps
    return {
        "rps": level.throughput_rps,
        "cpu_ms_per_request": sum(v for g, v in per_request.items() if g != "benchmark client")
        if served
        else None,
        "cpu_ms_by_group": per_request,
        "p99_ms": None if level.latency_ms is None else level.latency_ms.p99,
        "errors": sum(level.errors.values()),
    }


def compare(
    base: local_ray.LocalRay, variant: local_ray.LocalRay, args: argparse.Namespace
) -> dict[str, Any]:
    """Every target on both heads, interleaved (order alternates per repeat), `repeats` times."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for repeat in range(args.repeats):
        for target in TARGETS:
            key = "/".join(map(str, target))
            sides = [("base", base), ("variant", variant)]
            for side, head in sides if repeat % 2 == 0 else sides[::-1]:
                result = measure(head, target, args.duration, args.warmup)
                runs.setdefault(key, {}).setdefault(side, []).append(result)
        say(f"    repeat {repeat + 1}/{args.repeats} done")
    return runs


def ratios(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, sides in runs.items():
        pairs = list(zip(sides["base"], sides["variant"], strict=True))
        tput = spread(v["rps"] / b["rps"] for b, v in pairs if b["rps"] > 0)
        p99 = spread(v["p99_ms"] / b["p99_ms"] for b, v in pairs if b["p99_ms"] and v["p99_ms"])
        cpu = spread(
            v["cpu_ms_per_request"] / b["cpu_ms_per_request"]
            for b, v in pairs
            if b["cpu_ms_per_request"] and v["cpu_ms_per_request"]
        )
        out[key] = {
            "base_rps": spread(b["rps"] for b, _ in pairs).as_dict(),
            "variant_rps": spread(v["rps"] for _, v in pairs).as_dict(),
            "throughput_ratio": tput.as_dict(),
            "p99_ratio": p99.as_dict(),
            "base_cpu_ms_per_request": spread(
                b["cpu_ms_per_request"] or 0 for b, _ in pairs
            ).as_dict(),
            "cpu_per_request_ratio": cpu.as_dict(),
            "errors": sum(b["errors"] + v["errors"] for b, v in pairs),
        }
    return out


class Heads:
    """The baseline head and the variant head; the variant restarts when its env changes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.base: local_ray.LocalRay | None = None
        self.variant: local_ray.LocalRay | None = None
        self.variant_env: dict[str, str] | None = None
        self.starts = 0

    def start(self, env: dict[str, str]) -> local_ray.LocalRay:
        self.starts += 1
        return local_ray.start(self.work / f"head{self.starts}", env=env, num_cpus=4)

    def variant_with(self, env: dict[str, str], config: dict[str, Any]) -> local_ray.LocalRay:
        if self.variant is None or env != self.variant_env:
            if self.variant is not None:
                local_ray.stop(self.variant)
            self.variant, self.variant_env = self.start(env), env
        local_ray.deploy(self.variant, config)
        return self.variant

    def drop_variant(self) -> None:
        if self.variant is not None:
            local_ray.stop(self.variant, check=False)
        self.variant = self.variant_env = None

    def stop(self) -> None:
        for head in (self.base, self.variant):
            if head is not None:
                local_ray.stop(head, check=False)


def table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per lever and target: throughput variant/baseline [min..max], then server CPU per request
    variant/baseline (below 1: cheaper); the baseline's CPU per request is in the JSON."""
    keys = ["/".join(map(str, t)) for t in TARGETS]
    header = ["lever", *(f"{k}: req/s, CPU/req" for k in keys), "http/unary/32 p99"]
    rows = []
    for name, lever in results.items():
        cells = [name]
        for k in keys:
            r, c = (
                lever["ratios"][k]["throughput_ratio"],
                lever["ratios"][k]["cpu_per_request_ratio"],
            )
            cells.append(f"{r['median']:.2f}x [{r['min']:.2f}..{r['max']:.2f}], {c['median']:.2f}x")
        cells.append(f"{lever['ratios']['http/unary/32']['p99_ratio']['median']:.2f}x")
        rows.append(cells)
    return header, rows


def breakdown(
    runs: dict[str, dict[str, list[dict[str, Any]]]], target: str
) -> tuple[list[str], list[list[str]]]:
    """CPU ms per request by process group, baseline vs variant (medians over repeats)."""
    sides = runs[target]
    groups = sorted({g for side in sides.values() for r in side for g in r["cpu_ms_by_group"]})
    rows = []
    for group in groups:
        cells = [group]
        for side in ("base", "variant"):
            cells.append(
                spread(r["cpu_ms_by_group"].get(group, 0.0) for r in sides[side]).fmt(".3f")
            )
        rows.append(cells)
    return ["process group", "baseline ms/request", "variant ms/request"], rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        help="comma-separated lever names (default: all); their rows replace those in "
        "out/bench/ablation.json, the other levers' rows are kept",
    )
    args = parser.parse_args(argv)
    levers = LEVERS
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        unknown = wanted - {lv.name for lv in LEVERS}
        if unknown:
            parser.error(f"unknown lever(s) {sorted(unknown)}; known: {[lv.name for lv in LEVERS]}")
        levers = tuple(lv for lv in LEVERS if lv.name in wanted)
    # Serve-config levers first: they share one variant head (redeploys, no restart).
    levers = tuple(sorted(levers, key=lambda lv: (bool(lv.env), lv.name == LEVERS[-1].name)))
    host = machine()
    say(
        f"machine: {host['cores']} cores, {host['cpu_model']}; load average {host['loadavg_at_start']}"
    )
    say(
        f"plan: {len(levers)} levers x {len(TARGETS)} targets x {args.repeats} repeats, {args.duration:g} s each side"
    )
    began = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    # A plain `kill` must still stop both heads: SystemExit runs the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    heads = Heads(Path(tempfile.mkdtemp(prefix="raygke-abl-")))
    base_config = echo_config("flags-only")
    results: dict[str, dict[str, Any]] = {}
    try:
        heads.base = heads.start(dict(FLAGS_ONLY))
        local_ray.deploy(heads.base, base_config)
        for index, lever in enumerate(levers, 1):
            say(
                f"[{index}/{len(levers)}] {lever.name}: {lever.what}  ({time.monotonic() - began:.0f} s)"
            )
            config = copy.deepcopy(base_config)
            if lever.serve is not None:
                lever.serve(config)
            try:
                head = heads.variant_with({**FLAGS_ONLY, **lever.env}, config)
            except local_ray.LocalRayError as exc:  # one broken lever must not end the run
                say(f"    SKIPPED: {exc}")
                heads.drop_variant()
                continue
            runs = compare(heads.base, head, args)
            results[lever.name] = {
                "what": lever.what,
                "env": lever.env,
                "ratios": ratios(runs),
                "runs": runs,
            }
            row = table({lever.name: results[lever.name]})[1][0]
            say("    " + "  ".join(row[1:]))
    finally:
        heads.stop()
    saved = OUT / "ablation.json"
    if args.only and saved.exists():  # re-measured levers replace their rows, in LEVERS order
        kept = {**json.loads(saved.read_text())["levers"], **results}
        results = {lv.name: kept[lv.name] for lv in LEVERS if lv.name in kept}
    text, md = render(*table(results))
    say(
        "\nthroughput variant/baseline (median [min..max] over repeats); baseline = Ray's two flags only"
    )
    say(text)
    tuned = results.get(LEVERS[-1].name)
    cpu_text, cpu_md = "", ""
    if tuned is not None:
        cpu_text, cpu_md = render(*breakdown(tuned["runs"], "http/unary/32"))
        say(f"\nwhere a request's CPU goes, http/unary/32, baseline vs {LEVERS[-1].name}")
        say(cpu_text)
    took = time.monotonic() - began
    say(f"\ntotal {took:.0f} s")
    saved.write_text(
        json.dumps(
            {"machine": host, "plan": vars(args), "levers": results, "seconds": round(took)},
            indent=2,
            default=str,
        )
        + "\n"
    )
    (OUT / "ablation.md").write_text(
        f"# Ablation: one lever at a time over Ray's two flags\n\nMachine: {host['cores']} cores, {host['cpu_model']}; "
        f"load average at start {host['loadavg_at_start']}. {args.repeats} repeats, {args.duration:g} s per side, interleaved.\n\n{md}\n"
        + (f"\n## CPU per request by process group (http/unary/32)\n\n{cpu_md}\n" if cpu_md else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
