"""`make bench-llm-prefix`: the llm app's prefix-aware router (`router: prefix-cache-affinity`)
against Ray's default router, on a local run of prod with two LLMServer replicas.

Owns: the bench's stack (prod's llm app alone, its `localArgs` at two replicas and a context long
enough for several of vLLM's KV blocks; each arm one router; Ray Serve LLM's direct streaming off in
both, since the prefix-aware router cannot work under it: infra/serve_rules.py), bringing each arm's
local run up and down, the shared-prefix workload (groups of chat requests, each group with a long
system prompt of its own, the groups interleaved, fresh prompts every round so that every round
starts cold and both arms of a round send the same requests), reading vLLM's prefix-cache counters
from the run's Ray metrics endpoint, and the side-by-side table with ratios,
out/bench-llm-prefix/figures.{json,md,png}.
Does not own: the request and its timing (raygke/smoke/llm.py stream_completion), the router
mapping (app/llm.py), the local run (raygke/local.py).

The arms run one after the other (two runs of two engine replicas each would not fit beside the
machine's other work), in alternating order over repeats: default, prefix; prefix, default; ...

`raygke local up` takes a stack name, and counts one replica per llm app when it sizes Ray's
logical CPUs; this script runs `raygke.local.up` in a child process of its own with the bench's
stack and the logical CPUs the second replica (Ray Serve LLM merges the replica actor's CPU into the
engine's bundle: 1 + cpus_per_replica) and the prefix router's tree actor (a plain Ray actor: one
CPU to be placed) reserve. Ray only counts them: more than the machine has is fine.

vLLM's prefix cache keeps whole KV blocks only: 128 tokens on its CPU build (vllm/platforms/cpu.py,
check_and_update_config: block_size 128 unless set), so a shared prefix shorter than 128 tokens never
hits. Counters: vllm:prefix_cache_queries / vllm:prefix_cache_hits (tokens; vllm/v1/metrics/
loggers.py), which Ray Serve LLM exports through Ray's metrics (log_engine_metrics, on by default;
vllm/v1/metrics/ray_wrappers.py: ":" becomes "_", a ReplicaId tag per replica).

    python bench/llm_prefix.py [--repeats 3] [--rounds 4] [--groups 8] [--per-group 4]
        [--concurrency 4] [--system-tokens 768] [--user-tokens 32] [--output-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
from ab import start_stack_run, stop_local_run
from common import REPO, Spread, machine, render, say, spread, write_figures

from infra.stack_file import NAMESPACE as NS
from infra.stack_file import parse_stack_config, read_stack_file
from raygke.smoke.contract import SmokeContract, load_contract
from raygke.smoke.llm import WORDS, LlmResult, calibrate, stream_completion
from raygke.smoke.stats import summarize
from raygke.smoke.transport import app_url

OUT = REPO / "out" / "bench-llm-prefix"
STACK = "prod"
REPLICAS = 2
MAX_MODEL_LEN = 1024  # a long system prompt (several 128-token blocks) and its question
# Half of prod's local KV cache per replica: 2 replicas beside the machine's other work. The tiny
# Llama's KV is at most 2 KiB a token (2 layers x 2 KV heads x 64 x K and V, fp32), so 0.5 GiB holds
# 256k tokens, several times what a run sends: no round's prefix is evicted before it is reused.
KV_CACHE_GIB = 0.5
# The arms: the llm app's `router` in its localArgs (app/contracts.py LlmArgs).
ARMS: dict[str, dict[str, Any]] = {
    "default": {"router": "default"},
    "prefix": {"router": "prefix-cache-affinity"},
}
# vLLM's KV block on its CPU build (vllm/platforms/cpu.py check_and_update_config: 128 unless the
# engine is given one): the prefix cache keeps and matches whole blocks only.
BLOCK_TOKENS = 128
SETTLE_S = 60.0  # Ray's metrics agent exports every few seconds; a round's counters settle within
REQUEST_TIMEOUT_S = 120.0


# The stack ------------------------------------------------------------------------------------


def bench_stack(router: dict[str, Any]) -> dict[str, Any]:
    """prod's `config:` map with its llm app alone, at REPLICAS replicas, MAX_MODEL_LEN and
    KV_CACHE_GIB in the local run, the arm's router, and Ray Serve LLM's direct streaming off."""
    raw = copy.deepcopy(read_stack_file(STACK))
    apps = [a for a in raw[f"{NS}:apps"] if a["kind"] == "llm"]
    for app in apps:
        app["localArgs"] = {
            **app.get("localArgs", {}),
            "min_replicas": REPLICAS,
            "max_replicas": REPLICAS,
            "max_model_len": MAX_MODEL_LEN,
            "kv_cache_gib": KV_CACHE_GIB,
            **router,
        }
    raw[f"{NS}:apps"] = apps
    ray = raw[f"{NS}:ray"]
    ray["tuning"] = {**(ray.get("tuning") or {}), "llmDirectStreaming": False}
    parse_stack_config(STACK, raw)  # refused here, before anything starts, if the stack is
    return raw


def start_run(raw: dict[str, Any], state_dir: Path, logs: Path, label: str) -> None:
    start_stack_run(raw, state_dir, logs, label, llm_replicas=REPLICAS)


# vLLM's prefix-cache counters -------------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Counters:
    """vLLM's prefix-cache counters, tokens, per replica (ReplicaId tag)."""

    queries: dict[str, float]
    hits: dict[str, float]

    def minus(self, before: Counters) -> Counters:
        def delta(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
            return {r: v - then.get(r, 0.0) for r, v in now.items()}

        return Counters(delta(self.queries, before.queries), delta(self.hits, before.hits))

    @property
    def total_queries(self) -> float:
        return sum(self.queries.values())

    @property
    def total_hits(self) -> float:
        return sum(self.hits.values())


def metrics_ports(state_dir: Path) -> list[int]:
    """Every node's Ray metrics export port (state.json, raygke/local_ray.py Ports)."""
    state = json.loads((state_dir / "state.json").read_text())
    ray = state["ray"]
    return [ray["ports"]["metrics_export"], *(w["ports"]["metrics_export"] for w in ray["workers"])]


def read_counters(ports: list[int]) -> Counters:
    queries: dict[str, float] = {}
    hits: dict[str, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if not match or "external" in match[1]:
                continue
            name, labels, value = match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])
            replica = labels.get("ReplicaId", "?")
            if re.search(r"vllm_prefix_cache_queries(_total)?$", name):
                queries[replica] = queries.get(replica, 0.0) + value
            elif re.search(r"vllm_prefix_cache_hits(_total)?$", name):
                hits[replica] = hits.get(replica, 0.0) + value
    return Counters(queries, hits)


def settled(ports: list[int], before: Counters, prompt_tokens: int) -> tuple[Counters, bool]:
    """The counters' change since `before`, once they account for the round's prompt tokens and
    stop moving (Ray's agent exports periodically); (change, whether they settled in time)."""
    deadline = time.monotonic() + SETTLE_S
    last: Counters | None = None
    while True:
        now = read_counters(ports).minus(before)
        steady = last is not None and now == last
        if steady and now.total_queries >= prompt_tokens:
            return now, True
        if time.monotonic() >= deadline:
            return now, False
        last = now
        time.sleep(3)


# The workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    groups: int
    per_group: int
    concurrency: int
    system_tokens: int
    user_tokens: int
    output_tokens: int
    seed: int


def words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n)))


def requests_for(load: Workload, round_seed: int | str, words_per_token: float) -> list[list[dict]]:
    """The round's chat messages, groups interleaved (g0 g1 .. g0 g1 ..): each group's system
    prompt is its own from the first word, so groups share no KV block. (random.Random seeds an
    int by its absolute value: -1 is 1, so the warm-up's seeds are strings no round uses.)"""
    rng = random.Random(round_seed)
    systems = [words(round(load.system_tokens * words_per_token), rng) for _ in range(load.groups)]
    order = []
    for _ in range(load.per_group):
        for g in range(load.groups):
            question = words(round(load.user_tokens * words_per_token), rng)
            order.append(
                [{"role": "system", "content": systems[g]}, {"role": "user", "content": question}]
            )
    return order


def chat_body(model: str, messages: list[dict], max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }


def ceiling_hits(tokenizer_dir: Path, round_messages: list[list[dict]]) -> tuple[int, list[int]]:
    """The most prefix-cache hits the round allows, in tokens: each request can reuse the whole
    blocks it shares with an earlier request of its group (its system prompt), as vLLM tokenizes it
    (the model's chat template, transformers as vLLM uses it); and every prompt's length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompts = [
        tok(
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,  # the template writes BOS itself
        )["input_ids"]
        for m in round_messages
    ]
    best = 0
    for j, ids in enumerate(prompts):
        system = round_messages[j][0]["content"]
        shared = 0
        for i in range(j):
            if round_messages[i][0]["content"] != system:
                continue
            common = 0
            for a, b in zip(prompts[i], ids, strict=False):
                if a != b:
                    break
                common += 1
            shared = max(shared, common)
        # vLLM computes a prompt's last token whatever the cache holds.
        best += min(shared, len(ids) - 1) // BLOCK_TOKENS * BLOCK_TOKENS
    return best, [len(ids) for ids in prompts]


async def send_all(url: str, bodies: list[dict], concurrency: int) -> list[LlmResult]:
    """Closed loop: `concurrency` users take the next request in order."""
    results = [LlmResult() for _ in bodies]
    queue = iter(range(len(bodies)))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def user() -> None:
            for i in queue:
                results[i] = await stream_completion(session, url, bodies[i], time.perf_counter())

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return results


# One arm's run --------------------------------------------------------------------------------


@dataclass
class Round:
    arm: str
    repeat: int
    round: int
    requests: int
    ok: int
    prompt_tokens: int
    queries: float
    hits: float
    settled: bool
    queries_by_replica: dict[str, float]
    hits_by_replica: dict[str, float]
    ceiling: int
    ttft_ms: list[float] = field(default_factory=list)
    load_average: float = 0.0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else float("nan")

    @property
    def of_ceiling(self) -> float:
        """The share of the hits the round allows that the replicas' caches gave."""
        return self.hits / self.ceiling if self.ceiling else float("nan")

    def ttft(self, q: str) -> float:
        s = summarize(self.ttft_ms)
        return float("nan") if s is None else float(getattr(s, q))

    def replica_shares(self) -> list[float]:
        """Each replica's share of the round's prompt tokens, largest first."""
        total = sum(self.queries_by_replica.values())
        if not total:
            return []
        return sorted((v / total for v in self.queries_by_replica.values()), reverse=True)


def run_arm(
    arm: str, repeat: int, load: Workload, rounds: int, work: Path, logs: Path
) -> list[Round]:
    label = f"{arm}-r{repeat}"
    state_dir = work / label
    raw = bench_stack(ARMS[arm])
    out: list[Round] = []
    try:
        start_run(raw, state_dir, logs, label)
        contract: SmokeContract = load_contract(state_dir / "outputs.json")
        app = next(a for a in contract.apps if a.kind == "llm")
        model = app.model or ""
        wpt = calibrate(contract.endpoints, app, model)
        url = app_url(contract.endpoints, app, "/v1/chat/completions")
        ports = metrics_ports(state_dir)
        # Warm both engines (and their first-request paths) on prompts no round sends.
        warm = [
            chat_body(model, m, load.output_tokens)
            for m in requests_for(load, f"warm-up {repeat}", wpt)[: 2 * REPLICAS]
        ]
        zero = read_counters(ports)
        warmed = asyncio.run(send_all(url, warm, REPLICAS))
        # The calibration's and warm-up's counts must land before the first round's baseline.
        settled(ports, zero, sum(x.input_tokens for x in warmed))
        before = read_counters(ports)
        say(f"  {label}: {wpt:.2f} words per token; metrics on ports {ports}")
        for r in range(rounds):
            messages = requests_for(load, load.seed + 1000 * repeat + r, wpt)
            ceiling, lengths = ceiling_hits(state_dir / "models" / app.name, messages)
            bodies = [chat_body(model, m, load.output_tokens) for m in messages]
            load_average = os.getloadavg()[0]
            began = time.monotonic()
            results = asyncio.run(send_all(url, bodies, load.concurrency))
            took = time.monotonic() - began
            ok = [x for x in results if x.ok]
            prompt = sum(x.input_tokens for x in ok)
            counted = [x.input_tokens for x in results]
            if all(x.ok for x in results) and counted != lengths:
                say(f"  (the server counted other prompt lengths than the template: {counted[:4]})")
            delta, done = settled(ports, before, prompt)
            before = read_counters(ports)
            row = Round(
                arm,
                repeat,
                r,
                len(results),
                len(ok),
                prompt,
                delta.total_queries,
                delta.total_hits,
                done,
                delta.queries,
                delta.hits,
                ceiling,
                [1000 * x.ttft_s for x in ok if x.ttft_s is not None],
                load_average,
                took,
            )
            out.append(row)
            errors = sorted({f"{x.error}: {x.message}" for x in results if not x.ok})
            shares = "/".join(f"{100 * s:.0f}" for s in row.replica_shares())
            say(
                f"  {label} round {r}: hit rate {100 * row.hit_rate:.1f}% ({row.hits:.0f} of "
                f"{row.queries:.0f} prompt tokens; {prompt} sent), {100 * row.of_ceiling:.0f}% of "
                f"the {ceiling} the round allows, replicas {shares}% of tokens, "
                f"TTFT p50 {row.ttft('p50'):.0f} ms p99 {row.ttft('p99'):.0f} ms, {row.ok}/"
                f"{row.requests} ok, {took:.0f} s, load average {load_average:.1f}"
                + ("" if done else "; counters not settled")
                + (f"; errors: {errors[:3]}" if errors else "")
            )
    finally:
        stop_local_run(state_dir, logs)
    return out


# Figures --------------------------------------------------------------------------------------


MEASURES: tuple[tuple[str, str, str], ...] = (
    ("hit_rate_pct", "prefix-cache hit rate %", ".1f"),
    ("of_ceiling_pct", "hits taken of those the requests allow %", ".0f"),
    ("ttft_p50_ms", "TTFT p50 ms", ".0f"),
    ("ttft_p99_ms", "TTFT p99 ms", ".0f"),
    ("busiest_replica_pct", "busiest replica's share of prompt tokens %", ".0f"),
)


def figures_of(row: Round) -> dict[str, float]:
    shares = row.replica_shares()
    return {
        "hit_rate_pct": 100 * row.hit_rate,
        "of_ceiling_pct": 100 * row.of_ceiling,
        "ttft_p50_ms": row.ttft("p50"),
        "ttft_p99_ms": row.ttft("p99"),
        "busiest_replica_pct": 100 * shares[0] if shares else float("nan"),
    }


def pooled(rows: list[Round]) -> dict[str, float]:
    """Over every round of an arm: hits over queries, TTFT percentiles of all requests."""
    queries = sum(r.queries for r in rows)
    ceiling = sum(r.ceiling for r in rows)
    ttft = summarize([t for r in rows for t in r.ttft_ms])
    return {
        "hit_rate_pct": 100 * sum(r.hits for r in rows) / queries if queries else float("nan"),
        "of_ceiling_pct": 100 * sum(r.hits for r in rows) / ceiling if ceiling else float("nan"),
        "ttft_p50_ms": float("nan") if ttft is None else ttft.p50,
        "ttft_p99_ms": float("nan") if ttft is None else ttft.p99,
    }


def compare(rows: list[Round]) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """prefix vs default: pooled, the spread of rounds, and the paired ratio per round (both arms
    of a (repeat, round) sent the same requests)."""
    a, b = "default", "prefix"
    header = ["figure", f"{a} (router: default)", f"{b} (prefix-cache-affinity)", f"{b}/{a}"]
    by = {(r.arm, r.repeat, r.round): figures_of(r) for r in rows}
    pairs = sorted({(r.repeat, r.round) for r in rows})
    pool = {arm: pooled([r for r in rows if r.arm == arm]) for arm in (a, b)}
    out: list[list[str]] = []
    figures: dict[str, Any] = {}
    for key, label, fmt in MEASURES:
        sides: dict[str, Spread] = {
            arm: spread(f[key] for (arm_, _, _), f in by.items() if arm_ == arm) for arm in (a, b)
        }
        ratio = spread(
            by[(b, *p)][key] / by[(a, *p)][key]
            for p in pairs
            if (a, *p) in by and (b, *p) in by and by[(a, *p)][key] > 0
        )
        cells = []
        for arm in (a, b):
            whole = pool[arm].get(key)
            rounds = sides[arm].fmt(fmt)
            cells.append(f"{format(whole, fmt)} (rounds {rounds})" if whole is not None else rounds)
        out.append([label, *cells, ratio.fmt(".2f", "x")])
        figures[key] = {
            a: {"pooled": pool[a].get(key), **sides[a].as_dict()},
            b: {"pooled": pool[b].get(key), **sides[b].as_dict()},
            "ratio": ratio.as_dict(),
        }
    return header, out, figures


def plot(rows: list[Round], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("hit_rate_pct", "prefix-cache hit rate (%)"),
        ("of_ceiling_pct", "hits taken of those allowed (%)"),
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("ttft_p99_ms", "TTFT p99 (ms)"),
    )
    pairs = sorted({(r.repeat, r.round) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for arm, marker in (("default", "o"), ("prefix", "s")):
            by = {(r.repeat, r.round): figures_of(r)[key] for r in rows if r.arm == arm}
            xs = [i for i, p in enumerate(pairs) if p in by]
            ax.plot(xs, [by[pairs[i]] for i in xs], marker=marker, label=arm)
        ax.set_xticks(range(len(pairs)), [f"{rep}.{rnd}" for rep, rnd in pairs])
        ax.set_xlabel("repeat.round (same requests in both arms)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        if key.endswith("_pct"):
            ax.set_ylim(0, 105)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# Main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm, order alternating")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run, fresh prompts each")
    parser.add_argument("--groups", type=int, default=8, help="system prompts per round")
    parser.add_argument("--per-group", type=int, default=4, help="requests per system prompt")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop users")
    parser.add_argument("--system-tokens", type=int, default=768, help="each system prompt")
    parser.add_argument("--user-tokens", type=int, default=32, help="each question")
    parser.add_argument("--output-tokens", type=int, default=16, help="each answer (ignore_eos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.system_tokens + args.user_tokens + args.output_tokens + 16 > MAX_MODEL_LEN:
        parser.error(f"system + user + output tokens must leave room within {MAX_MODEL_LEN}")
    # `kill` (not only Ctrl-C) must also reach the finally that stops the local run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load = Workload(
        args.groups,
        args.per_group,
        args.concurrency,
        args.system_tokens,
        args.user_tokens,
        args.output_tokens,
        args.seed,
    )
    began = time.monotonic()
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    host = machine()
    say(
        f"machine: {host['cores']} cores, {host['cpu_model']}, Python {host['python']}; load "
        f"average {host['loadavg_at_start']}"
    )
    say(
        f"plan: {args.repeats} repeats x (default, prefix) alternating, {args.rounds} rounds each: "
        f"{args.groups} groups x {args.per_group} chat requests ({args.system_tokens}-token system "
        f"prompt per group, {args.user_tokens}-token questions, {args.output_tokens} tokens out), "
        f"interleaved, c={args.concurrency}; {REPLICAS} LLMServer replicas"
    )
    work = Path(tempfile.mkdtemp(prefix="raygke-bench-llm-prefix-"))
    rows: list[Round] = []
    try:
        for repeat in range(args.repeats):
            arms = ("default", "prefix") if repeat % 2 == 0 else ("prefix", "default")
            for arm in arms:
                rows += run_arm(arm, repeat, load, args.rounds, work, logs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header, table, figures = compare(rows)
    text, md = render(header, table)
    title = (
        f"llm app, {REPLICAS} replicas: router prefix-cache-affinity vs default (pooled over "
        f"rounds; rounds: median [min .. max]; ratio: per round, same requests)"
    )
    say()
    say(f"== {title}")
    say(text)
    took = time.monotonic() - began
    png = plot(rows, "llm app: prefix-cache-affinity vs Ray's default router", OUT / "figures.png")
    loads = [r.load_average for r in rows]
    document = {
        "machine": host,
        "plan": {**asdict(load), "repeats": args.repeats, "rounds": args.rounds},
        "replicas": REPLICAS,
        "figures": figures,
        "rounds": [
            {
                **asdict(r),
                "hit_rate": r.hit_rate,
                "of_ceiling": r.of_ceiling,
                "replica_shares": r.replica_shares(),
            }
            for r in rows
        ],
        "load_average": {"min": min(loads), "max": max(loads)} if loads else None,
        "seconds": round(took, 1),
    }
    write_figures(
        OUT,
        document,
        title,
        f"{host['cores']} cores, {host['cpu_model']}, Python {host['python']}; load average at "
        f"start {host['loadavg_at_start']}, at each round "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f}",
        md,
    )
    say(f"\ntotal {took:.0f} s; figures in {OUT.relative_to(REPO)} ({png.name}, figures.json)")
    whole = all(h % BLOCK_TOKENS == 0 for r in rows for h in r.hits_by_replica.values())
    say(f"every replica's hits are whole {BLOCK_TOKENS}-token blocks: {'yes' if whole else 'NO'}")
    unsettled = [f"{r.arm}-r{r.repeat} round {r.round}" for r in rows if not r.settled]
    if unsettled:
        say(f"counters had not settled within {SETTLE_S:.0f} s for: {', '.join(unsettled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
