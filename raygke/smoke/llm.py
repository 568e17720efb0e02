"""The LLM phase: OpenAI-compatible completions streamed under load, measured as LLM teams measure.

Owns: the workloads' prompts (synthetic prompts of a set length; shared-prefix groups; multi-turn
conversations), the streamed request and its per-token timings, closed-loop concurrency and
open-loop Poisson arrivals over a fixed number of prompts (as `vllm bench serve` does, so the two
compare), the per-level figures (TTFT, ITL, TPOT, end-to-end latency, output tokens/s in total and
per user, requests/s, goodput, errors by status), the knee of a request-rate sweep, and each
level's per-request records in `vllm bench serve`'s result layout (`vllm_result`).
Does not own: which levels run (profiles.py), pass/fail (gates.py), or the reports (report.py).

Definitions (the ones `vllm bench serve` uses, so figures compare one to one):
- TTFT: from the request's start (its scheduled instant in open loop) to the first chunk with a
  choice (a decode step; its text may be empty, as for a special token).
- ITL: the gaps between successive such chunks. A server that sends several tokens in one
  chunk, or chunks that arrive in one read, shows gaps near 0: read TPOT for the per-token rate.
- TPOT: (end-to-end - TTFT) / (output tokens - 1), output tokens from the server's `usage`.
- Goodput: requests per second that succeeded within both the TTFT and the TPOT objective.
- Output tokens/s per user: 1000 / the level's median TPOT (ms), the decode speed one stream sees
  (the interactivity axis of the throughput/interactivity trade-off; `vllm bench sweep
  plot_pareto` divides output tokens/s by the user count instead, from the same result keys).
- SLO attainment: the fraction of a level's requests that succeeded within both objectives, i.e.
  goodput over the level's request throughput (DistServe's measure, which `vllm bench serve
  --goodput` cites). Not goodput over the offered rate: a level sends a fixed number of prompts,
  so its wall time includes the drain of its last requests, and goodput reads below the offered
  rate even where every request meets the SLO (75% of it at a quarter of prod's local peak).
- The knee of a rate sweep: the highest offered rate at which it and every lower rate swept meet
  the SLO: attainment >= KNEE_ATTAINMENT and the p99 of TTFT and of TPOT within their objectives
  (median over repeats, as the gates read them); queueing past the peak shows in the TTFT p99.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from raygke.smoke.contract import AppEndpoint, Endpoints, LlmSlo
from raygke.smoke.stats import Summary, percentile, summarize
from raygke.smoke.transport import SSE_DONE, app_url, sse_events

LlmLoop = Literal["closed", "open"]
Measure = Literal["ttft", "itl", "tpot", "e2e"]
Workload = Literal["synthetic", "shared-prefix", "multi-turn"]
WORKLOADS: tuple[Workload, ...] = ("synthetic", "shared-prefix", "multi-turn")
KNEE_ATTAINMENT = 0.9
# A multi-turn request never sent because an earlier turn of its conversation failed.
TURN_SKIPPED = "turn_skipped"

# Prompts are drawn from these words; lowercase, common, so most tokenizers give few tokens each.
_WORD_LIST = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part"
)
WORDS: tuple[str, ...] = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class LlmLoadSpec:
    """One LLM level: `num_prompts` requests of `input_tokens` in and `output_tokens` out."""

    app: AppEndpoint
    model: str
    loop: LlmLoop
    concurrency: int = 1  # closed loop: users; open loop: an upper bound on requests in flight
    rate: float = 0.0  # open loop: mean Poisson arrivals per second
    num_prompts: int = 32
    input_tokens: int = 32
    output_tokens: int = 32
    # Lengths drawn uniformly from [n * (1 - range_ratio), n * (1 + range_ratio)], as vLLM's random
    # dataset does; 0 keeps every request the same.
    range_ratio: float = 0.0
    seed: int = 0
    timeout_s: float = 60.0
    warmup_prompts: int = 2
    workload: Workload = "synthetic"
    # open loop: the rate as a fraction of the app's measured closed-loop peak (None: set by hand)
    fraction: float | None = None
    # shared-prefix: prompts fall in `groups` groups; the first `prefix_ratio` of each prompt's
    # tokens is its group's system prompt, the rest its own
    groups: int = 4
    prefix_ratio: float = 0.75
    # multi-turn: conversations of `turns` requests, each resending the turns before it
    turns: int = 4


@dataclass
class LlmResult:
    """One request. Times are seconds from its start instant; `start_s` is that instant, in
    seconds from the level's start."""

    ok: bool = False
    error: str | None = None
    message: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrivals of chunks with a choice
    output_tokens: int = 0
    input_tokens: int = 0
    start_s: float = 0.0
    text: str = ""  # the completion's text, as it streamed
    turn: int | None = None  # multi-turn: which turn of its conversation (0 first)

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.chunk_times)]

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass
class LlmLevelResult:
    spec: LlmLoadSpec
    duration_s: float
    results: list[LlmResult]
    client_cpu: float  # this process's CPU over the level, as a fraction of one core
    slo: LlmSlo | None = None
    repeat: int = 0
    deployment: str = "A"

    @property
    def label(self) -> str:
        spec = self.spec
        load = f"c={spec.concurrency}" if spec.loop == "closed" else f"open {spec.rate:g}/s"
        workload = "" if spec.workload == "synthetic" else f" {spec.workload}"
        return (
            f"{spec.app.name} {load}{workload} ({spec.input_tokens} in / {spec.output_tokens} out)"
        )

    @property
    def ok(self) -> list[LlmResult]:
        return [r for r in self.results if r.ok]

    @property
    def errors(self) -> dict[str, int]:
        return dict(Counter(r.error or "unknown" for r in self.results if not r.ok))

    @property
    def error_rate(self) -> float:
        return 1.0 - len(self.ok) / len(self.results) if self.results else 1.0

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.ok)

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s else 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.ok) / self.duration_s if self.duration_s else 0.0

    @property
    def good(self) -> int | None:
        """Requests within both objectives; None without objectives."""
        if self.slo is None:
            return None
        slo = self.slo
        return sum(
            1
            for r in self.ok
            if r.ttft_s is not None
            and r.ttft_s * 1000 <= slo.ttft_ms
            and (r.tpot_s is None or r.tpot_s * 1000 <= slo.tpot_ms)
        )

    @property
    def goodput_rps(self) -> float | None:
        good = self.good
        return None if good is None or not self.duration_s else good / self.duration_s

    @property
    def attainment(self) -> float | None:
        """The fraction of requests sent that succeeded within both objectives (None: none)."""
        good = self.good
        return None if good is None or not self.results else good / len(self.results)

    @property
    def output_tok_s_per_user(self) -> float | None:
        """1000 / median TPOT (ms): the decode speed one stream sees (None: no TPOT measured)."""
        tpot = self.summary_ms("tpot")
        return None if tpot is None or tpot.p50 <= 0 else 1000.0 / tpot.p50

    def turn_ttft_ms(self) -> list[float | None]:
        """Multi-turn: the median TTFT (ms) of each turn, first turn first."""
        by_turn: dict[int, list[float]] = {}
        for r in self.ok:
            if r.turn is not None and r.ttft_s is not None:
                by_turn.setdefault(r.turn, []).append(r.ttft_s * 1000)
        return [
            statistics.median(by_turn[t]) if t in by_turn else None
            for t in range(max(by_turn, default=-1) + 1)
        ]

    def summary_ms(self, measure: Measure) -> Summary | None:
        return summarize(v * 1000 for v in self.samples_s(measure))

    def samples_s(self, measure: Measure) -> list[float]:
        ok = self.ok
        if measure == "ttft":
            return [r.ttft_s for r in ok if r.ttft_s is not None]
        if measure == "itl":
            return [gap for r in ok for gap in r.itl_s]
        if measure == "tpot":
            return [t for r in ok if (t := r.tpot_s) is not None]
        return [r.latency_s for r in ok]

    @property
    def mean_input_tokens(self) -> float:
        ok = self.ok
        return sum(r.input_tokens for r in ok) / len(ok) if ok else 0.0


# ------------------------------------------------------------------------------------------ prompts
def lengths(spec: LlmLoadSpec, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """(input, output) lengths for `count` requests, fixed or uniform within the range ratio."""

    def draw(n: int) -> int:
        if spec.range_ratio <= 0:
            return n
        low = max(1, round(n * (1 - spec.range_ratio)))
        return rng.randint(low, max(low, round(n * (1 + spec.range_ratio))))

    return [(draw(spec.input_tokens), draw(spec.output_tokens)) for _ in range(count)]


def prompt_text(words: int, rng: random.Random) -> str:
    """`words` random words: different prompts, so no prefix cache makes them free."""
    return " ".join(rng.choice(WORDS) for _ in range(max(1, words)))


@dataclass(frozen=True)
class Job:
    """One request to send: its prompt and length (multi-turn: the turn's own message, which
    follows the conversation so far; `turns` is then the conversation's length)."""

    prompt: str
    max_tokens: int
    conversation: int | None = None
    turn: int | None = None


def synthetic_jobs(spec: LlmLoadSpec, words_per_token: float, rng: random.Random) -> list[Job]:
    return [
        Job(prompt_text(round(n_in * words_per_token), rng), n_out)
        for n_in, n_out in lengths(spec, spec.num_prompts, rng)
    ]


def shared_prefix_jobs(spec: LlmLoadSpec, words_per_token: float, rng: random.Random) -> list[Job]:
    """Prompts of `input_tokens` in `groups` groups: each opens with its group's system prompt
    (`prefix_ratio` of its tokens, the same words for the whole group, which a prefix cache
    serves after the group's first request) and ends with words of its own. Request i is in
    group i mod groups, so every group keeps coming back."""
    groups = max(1, min(spec.groups, spec.num_prompts))
    prefix_tokens = round(spec.input_tokens * spec.prefix_ratio)
    prefixes = [prompt_text(round(prefix_tokens * words_per_token), rng) for _ in range(groups)]
    return [
        Job(
            f"{prefixes[i % groups]} "
            + prompt_text(round((n_in - prefix_tokens) * words_per_token), rng),
            n_out,
        )
        for i, (n_in, n_out) in enumerate(lengths(spec, spec.num_prompts, rng))
    ]


def turn_lengths(spec: LlmLoadSpec) -> tuple[int, int, int]:
    """(turns, message tokens, answer tokens) of a multi-turn conversation: each turn asks for
    `output_tokens / turns` and sends a message sized so that the last turn's prompt (every
    message and answer before it, and its own message) is `input_tokens`: the conversation never
    needs more context than one synthetic request. Fewer turns where the prompt is too short."""
    turns = max(1, spec.turns)
    while True:
        answer = max(2, spec.output_tokens // turns)
        message = (spec.input_tokens - (turns - 1) * answer) // turns
        if message >= 1 or turns == 1:
            return turns, max(1, message), answer
        turns -= 1


def multi_turn_jobs(spec: LlmLoadSpec, words_per_token: float, rng: random.Random) -> list[Job]:
    """Conversations of `turns` turns, `num_prompts / turns` of them (at least one): each turn's
    own message; `_conversation` resends the turns before it."""
    turns, message, answer = turn_lengths(spec)
    conversations = max(1, spec.num_prompts // turns)
    return [
        Job(prompt_text(round(message * words_per_token), rng), answer, conversation=c, turn=t)
        for c in range(conversations)
        for t in range(turns)
    ]


def jobs_for(spec: LlmLoadSpec, words_per_token: float, rng: random.Random) -> list[Job]:
    make = {
        "synthetic": synthetic_jobs,
        "shared-prefix": shared_prefix_jobs,
        "multi-turn": multi_turn_jobs,
    }[spec.workload]
    return make(spec, words_per_token, rng)


# ------------------------------------------------------------------------------------------ request
def completion_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """A streamed completion of exactly `max_tokens` where the server honours `ignore_eos` (vLLM)."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }


def _status_error(status: int, raw: bytes) -> tuple[str, str]:
    text = raw.decode(errors="replace")
    try:
        message = json.loads(text).get("error", {}).get("message") or text
    except (ValueError, AttributeError):
        message = text
    return f"http_{status}", str(message)[:300]


async def stream_completion(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], start: float
) -> LlmResult:
    """POST one streamed completion; every chunk with a choice is timed on arrival."""
    result = LlmResult()
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                result.error, result.message = _status_error(resp.status, await resp.read())
                result.latency_s = time.perf_counter() - start
                return result
            done = False
            async for now, data in sse_events(resp, start):
                if data == SSE_DONE:
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    result.error, result.message = "stream_error", str(event["error"])[:300]
                    break
                # A chunk with a choice is a decode step, even with empty text (a special token,
                # or part of a UTF-8 character): vllm bench serve times it, and so do we.
                choices = event.get("choices")
                if choices:
                    if result.ttft_s is None:
                        result.ttft_s = now
                    result.chunk_times.append(now)
                    result.text += str(choices[0].get("text") or "")
                usage = event.get("usage")
                if usage:
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
                    result.input_tokens = int(usage.get("prompt_tokens") or 0)
            result.latency_s = time.perf_counter() - start
            if result.error is None:
                if not done:
                    result.error = "stream_incomplete"
                elif not result.chunk_times:
                    result.error = "no_tokens"
                else:
                    result.ok = True
                    # A server that sends no usage: one token per chunk is the best estimate.
                    result.output_tokens = result.output_tokens or len(result.chunk_times)
    except TimeoutError as exc:
        result.error, result.message = "timeout", str(exc) or "no reply in time"
        result.latency_s = time.perf_counter() - start
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        result.error, result.message = type(exc).__name__, str(exc)[:300]
        result.latency_s = time.perf_counter() - start
    return result


def completions_url(endpoints: Endpoints, app: AppEndpoint) -> str:
    return app_url(endpoints, app, "/v1/completions")


async def served_model(
    session: aiohttp.ClientSession, endpoints: Endpoints, app: AppEndpoint
) -> str:
    """The model id to send: the contract's, or the first `/v1/models` lists (a version 1
    contract); raises on a non-200, a malformed reply or an empty list."""
    if app.model is not None:
        return app.model
    url = app_url(endpoints, app, "/v1/models")
    async with session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status}")
        doc = await resp.json()
    ids = [m["id"] for m in doc.get("data", [])]
    if not ids:
        raise RuntimeError(f"GET {url}: lists no model")
    return ids[0]


# ------------------------------------------------------------------------------------------- levels
def poisson_arrivals(rate: float, count: int, rng: random.Random) -> list[float]:
    """Offsets (s) of `count` arrivals at a mean `rate` per second; the first at 0."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0; got {rate}")
    at, offsets = 0.0, []
    for _ in range(count):
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


def answer_stand_in(tokens: int, words_per_token: float, seed: int) -> str:
    """What a multi-turn conversation resends for an answer: words of the answer's length. The
    client has no tokenizer, so the model's own text could come back longer in tokens than it was
    generated and overflow the context; the turns before stay a prefix of the next prompt."""
    return prompt_text(round(tokens * words_per_token), random.Random(seed))


async def measure(
    spec: LlmLoadSpec, endpoints: Endpoints, words_per_token: float
) -> tuple[float, list[LlmResult]]:
    """One level in the running event loop: (its duration in s, its requests in the order of
    its jobs). Multi-turn: each user holds a conversation to its end, every turn resending the
    turns before it."""
    rng = random.Random(spec.seed)
    url = completions_url(endpoints, spec.app)
    jobs = jobs_for(spec, words_per_token, rng)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = completion_body(spec.model, prompt_text(4, rng), 4)
        for _ in range(spec.warmup_prompts):
            await stream_completion(session, url, warm, time.perf_counter())
        results: list[LlmResult] = [LlmResult() for _ in jobs]
        t0 = time.perf_counter()

        async def send(i: int, prompt: str, start: float) -> LlmResult:
            body = completion_body(spec.model, prompt, jobs[i].max_tokens)
            result = await stream_completion(session, url, body, start)
            result.start_s, result.turn = start - t0, jobs[i].turn
            results[i] = result
            return result

        if spec.workload == "multi-turn":
            # A user holds a conversation to its end: each turn waits for the answer before it.
            conversations: dict[int, list[int]] = {}
            for i, job in enumerate(jobs):
                conversations.setdefault(job.conversation or 0, []).append(i)
            talks = iter(conversations.values())

            async def talker() -> None:
                for turns in talks:
                    history: str | None = ""
                    for i in turns:
                        prompt = f"{history or ''} {jobs[i].prompt}".strip()
                        if history is None:  # an earlier turn failed: nothing to follow
                            results[i] = LlmResult(error=TURN_SKIPPED, turn=jobs[i].turn)
                            continue
                        result = await send(i, prompt, time.perf_counter())
                        history = (
                            f"{prompt} {answer_stand_in(jobs[i].max_tokens, words_per_token, i)}"
                            if result.ok
                            else None
                        )

            await asyncio.gather(*(talker() for _ in range(max(1, spec.concurrency))))
        elif spec.loop == "closed":
            queue = iter(range(len(jobs)))

            async def user() -> None:
                for i in queue:
                    await send(i, jobs[i].prompt, time.perf_counter())

            await asyncio.gather(*(user() for _ in range(max(1, spec.concurrency))))
        else:
            bound = asyncio.Semaphore(max(1, spec.concurrency))

            async def arrive(i: int, offset: float) -> None:
                at = t0 + offset
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                async with bound:  # latency counts from the arrival, queueing here included
                    await send(i, jobs[i].prompt, at)

            offsets = poisson_arrivals(spec.rate, len(jobs), rng)
            await asyncio.gather(*(arrive(i, o) for i, o in enumerate(offsets)))
        return time.perf_counter() - t0, results


def calibrate(endpoints: Endpoints, app: AppEndpoint, model: str, timeout_s: float = 60.0) -> float:
    """Words per prompt token for this server's tokenizer, from a prompt's `usage`."""

    async def probe() -> LlmResult:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            body = completion_body(model, prompt_text(64, random.Random(1)), 2)
            return await stream_completion(
                session, completions_url(endpoints, app), body, time.perf_counter()
            )

    probe_result = asyncio.run(probe())
    if not probe_result.ok or probe_result.input_tokens <= 0:
        raise RuntimeError(
            "the LLM endpoint did not report prompt tokens for a calibration prompt: "
            f"{probe_result.error}: {probe_result.message}"
        )
    return 64 / probe_result.input_tokens


def run_llm_level(
    spec: LlmLoadSpec,
    endpoints: Endpoints,
    words_per_token: float,
    slo: LlmSlo | None = None,
) -> LlmLevelResult:
    """One level, in this process (LLM request rates are far below what one asyncio loop sends)."""
    cpu0 = time.process_time()
    duration, results = asyncio.run(measure(spec, endpoints, words_per_token))
    cpu = (time.process_time() - cpu0) / duration if duration else 0.0
    return LlmLevelResult(spec, duration, results, client_cpu=cpu, slo=slo)


def level_dict(level: LlmLevelResult) -> dict[str, Any]:
    """A level's figures for report.json (milliseconds; raw TTFT and ITL kept for plots)."""

    def summary(measure: Measure) -> dict[str, Any] | None:
        s = level.summary_ms(measure)
        return None if s is None else s.as_dict()

    spec = level.spec
    return {
        "app": spec.app.name,
        "model": spec.model,
        "loop": spec.loop,
        "concurrency": spec.concurrency,
        "rate": spec.rate,
        "num_prompts": spec.num_prompts,
        "input_tokens": spec.input_tokens,
        "output_tokens": spec.output_tokens,
        "range_ratio": spec.range_ratio,
        "deployment": level.deployment,
        "repeat": level.repeat,
        "duration_s": level.duration_s,
        "ok": len(level.ok),
        "errors": level.errors,
        "error_rate": level.error_rate,
        "mean_input_tokens": level.mean_input_tokens,
        "output_tokens_total": level.output_tokens,
        "output_tok_s": level.output_tok_s,
        "requests_per_s": level.requests_per_s,
        "goodput_rps": level.goodput_rps,
        "attainment": level.attainment,
        "output_tok_s_per_user": level.output_tok_s_per_user,
        "ttft_ms": summary("ttft"),
        "itl_ms": summary("itl"),
        "tpot_ms": summary("tpot"),
        "e2e_ms": summary("e2e"),
        "client_cpu": level.client_cpu,
        "samples_ms": {
            "ttft": [round(v * 1000, 3) for v in level.samples_s("ttft")],
            "itl": [round(v * 1000, 3) for v in level.samples_s("itl")],
        },
        "workload": spec.workload,
        "fraction": spec.fraction,
        "workload_shape": workload_shape(spec),
        "ttft_ms_by_turn": level.turn_ttft_ms() if spec.workload == "multi-turn" else None,
        "vllm": vllm_result(level),
    }


def workload_shape(spec: LlmLoadSpec) -> dict[str, Any] | None:
    """What shapes a workload's prompts beyond their lengths (None for synthetic prompts)."""
    if spec.workload == "shared-prefix":
        groups = max(1, min(spec.groups, spec.num_prompts))
        return {"groups": groups, "prefix_tokens": round(spec.input_tokens * spec.prefix_ratio)}
    if spec.workload == "multi-turn":
        turns, message, answer = turn_lengths(spec)
        return {"turns": turns, "message_tokens": message, "answer_tokens": answer}
    return None


def _vllm_stats(name: str, values_s: list[float]) -> dict[str, float]:
    """vLLM's mean/median/std/p99 keys of one measure, in ms (0 without samples, as vLLM has)."""
    ms = sorted(v * 1000 for v in values_s) or [0.0]
    return {
        f"mean_{name}_ms": statistics.fmean(ms),
        f"median_{name}_ms": statistics.median(ms),
        f"std_{name}_ms": statistics.pstdev(ms),
        f"p99_{name}_ms": percentile(ms, 99.0),
    }


def vllm_result(level: LlmLevelResult) -> dict[str, Any]:
    """The level as one `vllm bench serve --save-result --save-detailed` result (vLLM 0.29's
    vllm/benchmarks/serve.py keys): the summary and, per request in the order sent, its
    `start_times` (s from the level's start; vLLM's are perf_counter instants, which its tools
    only ever subtract), `ttfts` and `itls` (s; 0.0 and [] for a failed request, as vLLM),
    `input_lens` and `output_lens` (the server's `usage`; 0 where a request failed before it),
    `generated_texts` and `errors` ("" for a success). docs/smoke.md maps every key."""
    spec, results, ok = level.spec, level.results, level.ok
    total_in = sum(r.input_tokens for r in ok)
    duration = level.duration_s
    return {
        "backend": "openai",
        "endpoint_type": "openai",
        "label": level.label,
        "model_id": spec.model,
        "num_prompts": len(results),
        "request_rate": spec.rate if spec.loop == "open" else "inf",
        "burstiness": 1.0,  # Poisson arrivals (or none: closed loop)
        "max_concurrency": spec.concurrency,
        "duration": duration,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": level.output_tokens,
        "request_throughput": level.requests_per_s,
        "request_goodput": level.goodput_rps,
        "output_throughput": level.output_tok_s,
        "total_token_throughput": (total_in + level.output_tokens) / duration if duration else 0.0,
        "input_lens": [r.input_tokens for r in results],
        "output_lens": [r.output_tokens if r.ok else 0 for r in results],
        "ttfts": [r.ttft_s if r.ok and r.ttft_s is not None else 0.0 for r in results],
        "itls": [r.itl_s if r.ok else [] for r in results],
        "start_times": [r.start_s for r in results],
        "generated_texts": [r.text if r.ok else "" for r in results],
        "errors": [
            "" if r.ok else f"{r.error}: {r.message}" if r.message else str(r.error)
            for r in results
        ],
        **_vllm_stats("ttft", level.samples_s("ttft")),
        **_vllm_stats("tpot", level.samples_s("tpot")),
        **_vllm_stats("itl", level.samples_s("itl")),
        **_vllm_stats("e2el", level.samples_s("e2e")),
    }


# --------------------------------------------------------------------------------------------- knee
@dataclass(frozen=True)
class SweepPoint:
    """One offered rate of a sweep: its figures, the median over repeats."""

    rate: float
    fraction: float | None
    goodput_rps: float
    attainment: float
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    meets: bool


@dataclass(frozen=True)
class Sweep:
    """A deployment's app under Poisson arrivals at several rates, and its knee (module doc):
    `knee_rps` None when even the lowest rate misses the SLO; `bounded` False when the highest
    rate swept still meets it (the knee lies at or above it)."""

    app: str
    deployment: str
    points: tuple[SweepPoint, ...]
    knee_rps: float | None
    bounded: bool


def sweep_point(runs: list[LlmLevelResult], slo: LlmSlo) -> SweepPoint:
    """A rate's figures over its repeats, judged against `slo`."""
    spec = runs[0].spec

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    ttft = median([s.p99 if (s := r.summary_ms("ttft")) else None for r in runs])
    tpot = median([s.p99 if (s := r.summary_ms("tpot")) else None for r in runs])
    attainment = median([r.attainment for r in runs]) or 0.0
    goodput = median([r.goodput_rps for r in runs]) or 0.0
    meets = (
        attainment >= KNEE_ATTAINMENT
        and ttft is not None
        and ttft <= slo.ttft_ms
        and (tpot is None or tpot <= slo.tpot_ms)
    )
    return SweepPoint(spec.rate, spec.fraction, goodput, attainment, ttft, tpot, meets)


def knee(points: list[SweepPoint]) -> tuple[float | None, bool]:
    """(the knee's rate, whether a higher rate missed): the highest rate at which it and every
    lower rate meet the SLO."""
    found: float | None = None
    for point in sorted(points, key=lambda p: p.rate):
        if not point.meets:
            return found, True
        found = point.rate
    return found, False


def sweeps(levels: list[LlmLevelResult], slo: LlmSlo | None) -> list[Sweep]:
    """Per deployment and app, its synthetic open-loop levels as a sweep (one rate in `quick`)."""
    if slo is None:
        return []
    by: dict[tuple[str, str], dict[float, list[LlmLevelResult]]] = {}
    for level in levels:
        spec = level.spec
        if spec.loop == "open" and spec.workload == "synthetic":
            key = (level.deployment, spec.app.name)
            by.setdefault(key, {}).setdefault(spec.rate, []).append(level)
    found = []
    for (deployment, app), rates in by.items():
        points = [sweep_point(runs, slo) for _, runs in sorted(rates.items())]
        knee_rps, bounded = knee(points)
        found.append(Sweep(app, deployment, tuple(points), knee_rps, bounded))
    return found
