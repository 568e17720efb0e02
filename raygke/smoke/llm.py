"""The LLM phase: OpenAI-compatible completions streamed under load, measured as LLM teams measure.

Owns: synthetic prompts of a set length, the streamed request and its per-token timings, closed-loop
concurrency and open-loop Poisson arrivals over a fixed number of prompts (as `vllm bench serve`
does, so the two compare), and the per-level figures: TTFT, ITL, TPOT, end-to-end latency, output
tokens/s, requests/s, goodput and errors by status.
Does not own: which levels run (plan.py), pass/fail (gates.py), or the reports (report.py).

Definitions (the ones `vllm bench serve` uses, so figures compare one to one):
- TTFT: from the request's start (its scheduled instant in open loop) to the first chunk with a
  choice (a decode step; its text may be empty, as for a special token).
- ITL: the gaps between successive such chunks. A server that sends several tokens in one
  chunk, or chunks that arrive in one read, shows gaps near 0: read TPOT for the per-token rate.
- TPOT: (end-to-end - TTFT) / (output tokens - 1), output tokens from the server's `usage`.
- Goodput: requests per second that succeeded within both the TTFT and the TPOT objective.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from raygke.smoke.contract import AppEndpoint, Endpoints, LlmSlo
from raygke.smoke.stats import Summary, summarize
from raygke.smoke.transport import SSE_DONE, app_url, sse_events

LlmLoop = Literal["closed", "open"]
Measure = Literal["ttft", "itl", "tpot", "e2e"]

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


@dataclass
class LlmResult:
    """One request. Times are seconds from its start instant."""

    ok: bool = False
    error: str | None = None
    message: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrivals of chunks with a choice
    output_tokens: int = 0
    input_tokens: int = 0

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
        return f"{spec.app.name} {load} ({spec.input_tokens} in / {spec.output_tokens} out)"

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
                if event.get("choices"):
                    if result.ttft_s is None:
                        result.ttft_s = now
                    result.chunk_times.append(now)
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


async def _measure(
    spec: LlmLoadSpec, endpoints: Endpoints, words_per_token: float
) -> tuple[float, list[LlmResult]]:
    rng = random.Random(spec.seed)
    url = completions_url(endpoints, spec.app)
    jobs = [
        completion_body(spec.model, prompt_text(round(n_in * words_per_token), rng), n_out)
        for n_in, n_out in lengths(spec, spec.num_prompts, rng)
    ]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = completion_body(spec.model, prompt_text(4, rng), 4)
        for _ in range(spec.warmup_prompts):
            await stream_completion(session, url, warm, time.perf_counter())
        results: list[LlmResult] = [LlmResult() for _ in jobs]
        t0 = time.perf_counter()
        if spec.loop == "closed":
            queue = iter(range(len(jobs)))

            async def user() -> None:
                for i in queue:
                    results[i] = await stream_completion(session, url, jobs[i], time.perf_counter())

            await asyncio.gather(*(user() for _ in range(max(1, spec.concurrency))))
        else:
            bound = asyncio.Semaphore(max(1, spec.concurrency))

            async def arrive(i: int, offset: float) -> None:
                at = t0 + offset
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                async with bound:  # latency counts from the arrival, queueing here included
                    results[i] = await stream_completion(session, url, jobs[i], at)

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
    duration, results = asyncio.run(_measure(spec, endpoints, words_per_token))
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
        "ttft_ms": summary("ttft"),
        "itl_ms": summary("itl"),
        "tpot_ms": summary("tpot"),
        "e2e_ms": summary("e2e"),
        "client_cpu": level.client_cpu,
        "samples_ms": {
            "ttft": [round(v * 1000, 3) for v in level.samples_s("ttft")],
            "itl": [round(v * 1000, 3) for v in level.samples_s("itl")],
        },
    }
