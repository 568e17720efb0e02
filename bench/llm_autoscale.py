"""`make bench-llm-autoscale`: the llm app autoscaling on TTFT (app/autoscaling.py) on a local run of
prod with its Prometheus, under a load step, and the timeline of what the policy did.

Owns: the bench's stack (prod's llm app alone, its `localArgs` at 1..2 replicas with
`autoscale_on: ttft`), bringing up `raygke local up --prometheus` for it in a process of its own
(as bench/llm_prefix.py does: `raygke local up` has no flag for a stack variant) and taking it down
whatever happens; the load step (our LLM phase, raygke/smoke/llm.py: open-loop Poisson arrivals,
a low rate then a high one, then nothing); sampling, every SAMPLE_S, Serve's target and healthy
LLMServer replicas, the TTFT p90 the policy reads and the waiting requests, from the run's
Prometheus; out/bench-llm-autoscale/timeline.json, figures.md and timeline.png.
Does not own: the policy or its rules (app/autoscaling.py, infra/), any measuring of requests
(raygke/smoke/llm.py), the local run (raygke/local.py). Not a test: figures only.

    python bench/llm_autoscale.py [--target-ms 100] [--low-rate 1] [--high-rate 60]
        # defaults: the recorded run (docs/performance.md); at 30 req/s this machine keeps the
        # p90 under 170 ms and nothing scales
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
from ab import start_stack_run, stop_local_run
from common import REPO, machine, render, say, write_figures

from app.autoscaling import ttft_query
from infra.stack_file import NAMESPACE as NS
from infra.stack_file import parse_stack_config, read_stack_file
from raygke import local_prometheus
from raygke.smoke.contract import load_contract
from raygke.smoke.llm import LlmLoadSpec, calibrate, run_llm_level

OUT = REPO / "out" / "bench-llm-autoscale"
STACK = "prod"
MAX_REPLICAS = 2
WINDOW_S = 20  # four of the local run's 5 s scrapes
HOLD_S = 60  # a local run lasts minutes: the cluster's 300 s would outlast it
SAMPLE_S = 3.0
# The load step, seconds: quiet, low rate, high rate, then nothing until the hold has passed.
QUIET_S, LOW_S, HIGH_S, COOL_S = 15.0, 60.0, 150.0, HOLD_S + 60.0
INPUT_TOKENS, OUTPUT_TOKENS = 32, 64


def bench_stack(target_ms: float) -> dict[str, Any]:
    """prod's `config:` map with its llm app alone, 1..MAX_REPLICAS replicas on TTFT p90."""
    raw = copy.deepcopy(read_stack_file(STACK))
    apps = [a for a in raw[f"{NS}:apps"] if a["kind"] == "llm"]
    for app in apps:
        app["localArgs"] = {
            **app.get("localArgs", {}),
            "min_replicas": 1,
            "max_replicas": MAX_REPLICAS,
            "autoscale_on": {
                "signal": "ttft",
                "target_ms": target_ms,
                "window_s": WINDOW_S,
                "hold_s": HOLD_S,
            },
        }
    raw[f"{NS}:apps"] = apps
    parse_stack_config(STACK, raw)  # refused here, before anything starts, if the stack is
    return raw


def start_run(raw: dict[str, Any], state_dir: Path, logs: Path) -> None:
    start_stack_run(raw, state_dir, logs, "run", llm_replicas=MAX_REPLICAS, prometheus=True)


def _value(url: str, promql: str) -> float | None:
    try:
        series = local_prometheus.query(url, promql)
    except local_prometheus.PrometheusError:
        return None
    values = [float(s["value"][1]) for s in series]
    return values[0] if len(values) == 1 and values[0] == values[0] else None  # NaN: None


def sample_queries(model: str) -> dict[str, str]:
    server = 'deployment=~"LLMServer:.*"'
    return {
        "target_replicas": f"max(ray_serve_autoscaling_target_replicas{{{server}}})",
        "healthy_replicas": f"sum(ray_serve_deployment_replica_healthy{{{server}}})",
        "ttft_p90_s": ttft_query(model, WINDOW_S),  # what the policy reads
        "waiting": f'sum(ray_vllm_num_requests_waiting{{model_name="{model}"}})',
    }


def load_step(target: Any, app: Any, wpt: float, phases: list[dict[str, Any]]) -> None:
    """Each phase's open-loop arrivals at its rate for its duration, in turn."""
    for phase in phases:
        phase["began"] = time.time()
        if phase["rate"] > 0:
            spec = LlmLoadSpec(
                app=app,
                model=app.model or "",
                loop="open",
                concurrency=256,
                rate=phase["rate"],
                num_prompts=max(1, int(phase["rate"] * phase["seconds"])),
                input_tokens=INPUT_TOKENS,
                output_tokens=OUTPUT_TOKENS,
                warmup_prompts=0,
                timeout_s=300.0,
            )
            level = run_llm_level(spec, target.endpoints, wpt)
            phase["requests"] = len(level.results)
            phase["errors"] = sum(1 for r in level.results if not r.ok)
        else:
            time.sleep(phase["seconds"])
        phase["ended"] = time.time()


def plot(
    timeline: list[dict[str, Any]], phases: list[dict[str, Any]], target_ms: float, path: Path
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = timeline[0]["t"]
    xs = [s["t"] - t0 for s in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for key, style in (("target_replicas", "-"), ("healthy_replicas", "--")):
        top.step(
            xs,
            [s[key] if s[key] is not None else float("nan") for s in timeline],
            style,
            where="post",
            label=key.replace("_", " "),
        )
    top.set_ylabel("LLMServer replicas")
    top.set_ylim(0, MAX_REPLICAS + 0.5)
    top.legend(loc="lower right")
    ttft = [
        s["ttft_p90_s"] * 1000 if s["ttft_p90_s"] is not None else float("nan") for s in timeline
    ]
    bottom.plot(xs, ttft, label=f"TTFT p90 over {WINDOW_S} s (what the policy reads)")
    bottom.axhline(target_ms, color="grey", linestyle=":", label=f"target {target_ms:g} ms")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("seconds since the first sample")
    bottom.legend(loc="upper left")
    for i, phase in enumerate(phases):
        for ax in (top, bottom):
            shade = 0.1 if phase["rate"] > 0 else 0.03
            ax.axvspan(phase["began"] - t0, phase["ended"] - t0, alpha=shade)
            ax.axvline(phase["began"] - t0, color="grey", linewidth=0.5)
        top.text(  # staggered: a short phase's label would run into the next one's
            phase["began"] - t0 + 2,
            MAX_REPLICAS + 0.15 + 0.2 * (i % 2),
            f"{phase['name']} {phase['rate']:g}/s",
            fontsize=8,
        )
    fig.suptitle("llm app on TTFT: a load step on a local run of prod")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-ms", type=float, default=100.0, help="the TTFT p90 to hold")
    parser.add_argument("--low-rate", type=float, default=1.0, help="requests/s before the step")
    parser.add_argument("--high-rate", type=float, default=60.0, help="requests/s after it")
    args = parser.parse_args(argv)
    raw = bench_stack(args.target_ms)
    OUT.mkdir(parents=True, exist_ok=True)
    state_dir = OUT / "run"
    logs = OUT / "logs"
    logs.mkdir(exist_ok=True)
    host = machine()
    try:
        start_run(raw, state_dir, logs)
        state = json.loads((state_dir / "state.json").read_text())
        prometheus = state["prometheus"]["url"]
        target = load_contract(state_dir / "outputs.json")
        app = next(a for a in target.apps if a.kind == "llm")
        wpt = calibrate(target.endpoints, app, app.model or "")
        queries = sample_queries(app.model or "")
        phases = [
            {"name": "quiet", "rate": 0.0, "seconds": QUIET_S},
            {"name": "low", "rate": args.low_rate, "seconds": LOW_S},
            {"name": "high", "rate": args.high_rate, "seconds": HIGH_S},
            {"name": "none", "rate": 0.0, "seconds": COOL_S},
        ]
        loader = threading.Thread(target=load_step, args=(target, app, wpt, phases), daemon=True)
        timeline: list[dict[str, Any]] = []
        loader.start()
        while loader.is_alive():
            sample = {"t": time.time(), **{k: _value(prometheus, q) for k, q in queries.items()}}
            timeline.append(sample)
            ttft = sample["ttft_p90_s"]
            say(
                f"  t={sample['t'] - timeline[0]['t']:5.0f} s  target {sample['target_replicas']}  "
                f"healthy {sample['healthy_replicas']}  TTFT p90 "
                + ("-" if ttft is None else f"{ttft * 1000:.0f} ms")
                + f"  waiting {sample['waiting']}"
            )
            time.sleep(SAMPLE_S)
        loader.join()
    finally:
        stop_local_run(state_dir, logs)
    t0 = timeline[0]["t"]

    def first(pred: Any, after: float) -> float | None:
        return next((s["t"] - t0 for s in timeline if s["t"] >= after and pred(s)), None)

    high, cool = phases[2], phases[3]
    figures = {
        "step_at_s": high["began"] - t0,
        "target_2_at_s": first(lambda s: (s["target_replicas"] or 0) >= 2, high["began"]),
        "healthy_2_at_s": first(lambda s: (s["healthy_replicas"] or 0) >= 2, high["began"]),
        "load_off_at_s": cool["began"] - t0,
        "target_1_at_s": first(lambda s: s["target_replicas"] == 1, cool["began"]),
    }
    ttfts = {
        p["name"]: [
            s["ttft_p90_s"] * 1000
            for s in timeline
            if p["began"] <= s["t"] <= p["ended"] and s["ttft_p90_s"] is not None
        ]
        for p in phases
    }
    rows = [
        [
            p["name"],
            f"{p['rate']:g}",
            f"{p['ended'] - p['began']:.0f}",
            str(p.get("requests", 0)),
            str(p.get("errors", 0)),
            f"{max(ttfts[p['name']]):.0f}" if ttfts[p["name"]] else "-",
        ]
        for p in phases
    ]
    text, md = render(["phase", "req/s", "s", "requests", "errors", "max TTFT p90 ms"], rows)
    say(text)
    for key, value in figures.items():
        say(f"{key}: {'-' if value is None else f'{value:.0f}'}")
    document = {
        "machine": host,
        "target_ms": args.target_ms,
        "window_s": WINDOW_S,
        "hold_s": HOLD_S,
        "phases": phases,
        "figures": figures,
        "timeline": timeline,
    }
    (OUT / "timeline.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(timeline, phases, args.target_ms, OUT / "timeline.png")
    lines = "\n".join(f"- {k}: {'-' if v is None else f'{v:.0f}'}" for k, v in figures.items())
    write_figures(
        OUT,
        document,
        "llm app autoscaling on TTFT: a load step",
        f"{host['cores']} cores, {host['cpu_model']}",
        md + "\n\n" + lines,
    )
    say(f"wrote {OUT / 'timeline.json'} and {OUT / 'timeline.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
