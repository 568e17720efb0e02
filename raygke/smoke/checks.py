"""Phase 1: functional gates, as a data table of checks run against every app of a deployment.

Owns: what "serves correctly" means for health, echo (unary and streaming, HTTP and gRPC) and
recsys (valid scores) and llm (the model listed, a completion streamed), including "a stream delivers
>= 2 chunks, the first well before the last".
Does not own: load (load.py) or latency thresholds (gates.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raygke.smoke.contract import AppEndpoint, SmokeContract
from raygke.smoke.llm import completion_body, completions_url, served_model, stream_completion
from raygke.smoke.transport import Client, Result

# Probe sizes: small, so gates are about correctness, not speed.
UNARY_SIZE = 64
STREAM_CHUNKS = 16
STREAM_SIZE = 32
RANK_ROWS = 8
# The gap the stream probe asks the app to leave between chunks (the request's `tpot_ms`).
# Unpaced chunks can reach the client in one read even when every hop streams, so only a paced
# stream tells streamed from buffered; 5 ms x 15 gaps = 75 ms, far above scheduling noise yet
# cheap enough for a gate. Load levels do not pace (they measure serving overhead).
STREAM_TPOT_MS = 5
# "First well before the last": the first chunk must arrive before this fraction of the time
# the last one took. A response buffered whole by any hop arrives as one read (fraction ~1.0).
FIRST_CHUNK_MAX_FRACTION = 0.9


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    app: str | None
    transport: str
    passed: bool
    detail: str
    latency_ms: float


App = AppEndpoint | None
Verdict = tuple[bool, str, Result]
Probe = Callable[[Client, SmokeContract, AppEndpoint | None], Awaitable[Verdict]]


@dataclass(frozen=True)
class Check:
    """A row of the table: `kinds` are the app kinds it runs for (empty: once per deployment)."""

    name: str
    kinds: frozenset[str]
    transport: str
    probe: Probe


def _error(result: Result) -> str:
    said = f" ({result.message})" if result.message else ""
    return f"request failed: {result.error}{said}"


def stream_timing_problem(ttft_s: float | None, last_s: float | None, chunks: int) -> str | None:
    """Why a stream does not look incremental, or None when it does."""
    if chunks < 2 or ttft_s is None or last_s is None:
        return f"needs >= 2 chunks; got {chunks}"
    if not ttft_s < last_s * FIRST_CHUNK_MAX_FRACTION:
        return (
            f"first chunk at {ttft_s * 1000:.2f} ms, last at {last_s * 1000:.2f} ms: "
            "the response looks buffered, not streamed"
        )
    return None


async def _health(c: Client, contract: SmokeContract, app: App) -> Verdict:
    r = await c.http_get(contract.health_path, time.perf_counter())
    return r.ok, f"GET {contract.health_path}: " + ("200" if r.ok else str(r.error)), r


async def _echo_http_unary(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.http_json(
        app, f"/unary?size={UNARY_SIZE}", None, time.perf_counter(), keep_body=True
    )
    if not r.ok:
        return False, _error(r), r
    body = r.body if isinstance(r.body, dict) else {}
    missing = [k for k in ("message", "payload", "version") if k not in body]
    if missing:
        return False, f"reply lacks {', '.join(missing)}", r
    if len(str(body["payload"])) != UNARY_SIZE:
        return False, f"payload has {len(str(body['payload']))} chars; asked {UNARY_SIZE}", r
    return True, f"{UNARY_SIZE}-char payload, version {body['version']}", r


async def _echo_grpc_unary(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.grpc_unary(app, UNARY_SIZE, time.perf_counter(), keep_body=True)
    if not r.ok:
        return False, _error(r), r
    if len(r.body.payload) != UNARY_SIZE:
        return False, f"payload has {len(r.body.payload)} chars; asked {UNARY_SIZE}", r
    return True, f"{UNARY_SIZE}-char payload, version {r.body.version}", r


def _stream_verdict(r: Result, indices: list[int], sizes: list[int]) -> Verdict:
    if not r.ok:
        return False, _error(r), r
    if indices != list(range(STREAM_CHUNKS)):
        return False, f"chunk indices out of order: {indices[:5]}...", r
    if any(size != STREAM_SIZE for size in sizes):
        return False, f"chunk payloads are not {STREAM_SIZE} chars", r
    problem = stream_timing_problem(r.ttft_s, r.last_chunk_s, r.chunks)
    if problem:
        return False, problem, r
    assert r.ttft_s is not None and r.last_chunk_s is not None
    first, last = r.ttft_s * 1000, r.last_chunk_s * 1000
    paced = f"{r.chunks} chunks asked {STREAM_TPOT_MS} ms apart"
    return True, f"{paced}, first at {first:.2f} ms, last at {last:.2f} ms", r


async def _echo_http_stream(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.http_stream(
        app,
        STREAM_CHUNKS,
        STREAM_SIZE,
        time.perf_counter(),
        keep_body=True,
        tpot_ms=STREAM_TPOT_MS,
    )
    bodies = [b for b in r.chunk_bodies if isinstance(b, dict)]
    indices = [int(b.get("index", -1)) for b in bodies]
    sizes = [len(str(b.get("payload", ""))) for b in bodies]
    return _stream_verdict(r, indices, sizes)


async def _echo_grpc_stream(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.grpc_stream(
        app,
        STREAM_CHUNKS,
        STREAM_SIZE,
        time.perf_counter(),
        keep_body=True,
        tpot_ms=STREAM_TPOT_MS,
    )
    indices = [chunk.index for chunk in r.chunk_bodies]
    sizes = [len(chunk.payload) for chunk in r.chunk_bodies]
    return _stream_verdict(r, indices, sizes)


def scores_problem(scores: object, rows: int) -> str | None:
    """Why recsys scores are invalid (count, type, range), or None."""
    if not isinstance(scores, list | tuple) and not hasattr(scores, "__len__"):
        return f"scores is not a list: {scores!r}"
    values = list(scores)  # type: ignore[arg-type]
    if len(values) != rows:
        return f"{len(values)} scores for {rows} rows"
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"score {value!r} is not a number"
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            return f"score {value!r} is outside [0, 1]"
    return None


async def _recsys_http(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    payload = {"rows": RANK_ROWS, "seed": 7}
    r = await c.http_json(app, "/rank", payload, time.perf_counter(), keep_body=True)
    if not r.ok:
        return False, _error(r), r
    body = r.body if isinstance(r.body, dict) else {}
    problem = scores_problem(body.get("scores"), RANK_ROWS)
    if problem:
        return False, problem, r
    return True, f"{RANK_ROWS} scores in [0, 1]", r


async def _recsys_grpc(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.grpc_rank(app, RANK_ROWS, 7, time.perf_counter(), keep_body=True)
    if not r.ok:
        return False, _error(r), r
    problem = scores_problem(list(r.body.scores), RANK_ROWS)
    if problem:
        return False, problem, r
    return True, f"{RANK_ROWS} scores in [0, 1]", r


async def _llm_models(c: Client, _: SmokeContract, app: App) -> Verdict:
    assert app is not None
    r = await c.http_json(app, "/v1/models", None, time.perf_counter(), keep_body=True)
    if not r.ok:
        return False, _error(r), r
    models = r.body.get("data") if isinstance(r.body, dict) else None
    if not models:
        return False, "no models listed", r
    ids = [m.get("id") for m in models if isinstance(m, dict)]
    if app.model is not None and app.model not in ids:
        return False, f"{app.model!r} is not listed (listed: {ids})", r
    return True, f"lists {', '.join(map(str, ids))}", r


# Tokens the stream probe asks for: enough decode steps that a stream and a buffered reply differ.
LLM_CHECK_TOKENS = 128


async def _llm_stream(c: Client, _: SmokeContract, app: App) -> Verdict:
    """A streamed completion delivers its tokens in several chunks over time, not in one piece."""
    assert app is not None
    model = await served_model(c.session, c.endpoints, app)
    body = completion_body(model, "the quick brown fox", LLM_CHECK_TOKENS)
    start = time.perf_counter()
    r = await stream_completion(c.session, completions_url(c.endpoints, app), body, start)
    chunks = len(r.chunk_times)
    result = Result(r.ok, r.latency_s, r.error, r.ttft_s, chunks=chunks, message=r.message)
    if not r.ok:
        return False, _error(result), result
    last = r.chunk_times[-1]
    problem = stream_timing_problem(r.ttft_s, last, chunks)
    if problem:
        return False, problem, result
    return True, f"{r.output_tokens} tokens in {chunks} chunks", result


ECHO = frozenset({"echo"})
RECSYS = frozenset({"recsys"})
LLM = frozenset({"llm"})

CHECKS: tuple[Check, ...] = (
    Check("health", frozenset(), "http", _health),
    Check("echo unary", ECHO, "http", _echo_http_unary),
    Check("echo unary", ECHO, "grpc", _echo_grpc_unary),
    Check("echo stream", ECHO, "http", _echo_http_stream),
    Check("echo stream", ECHO, "grpc", _echo_grpc_stream),
    Check("recsys rank", RECSYS, "http", _recsys_http),
    Check("recsys rank", RECSYS, "grpc", _recsys_grpc),
    Check("llm models", LLM, "http", _llm_models),
    Check("llm stream", LLM, "http", _llm_stream),
)


async def _run_all(contract: SmokeContract, timeout_s: float) -> list[CheckOutcome]:
    outcomes: list[CheckOutcome] = []
    async with Client(contract.endpoints, timeout_s) as client:
        for check in CHECKS:
            targets: list[AppEndpoint | None] = (
                [None]
                if not check.kinds
                else [
                    a
                    for a in contract.apps
                    if a.kind in check.kinds and (check.transport == "http" or a.grpc)
                ]
            )
            for app in targets:
                try:
                    passed, detail, result = await check.probe(client, contract, app)
                    latency = result.latency_s * 1000
                except Exception as exc:  # a malformed reply must fail its check, not the run
                    passed, detail, latency = False, f"{type(exc).__name__}: {exc}", 0.0
                outcomes.append(
                    CheckOutcome(
                        name=check.name,
                        app=None if app is None else app.name,
                        transport=check.transport,
                        passed=passed,
                        detail=detail,
                        latency_ms=latency,
                    )
                )
    return outcomes


def run_checks(contract: SmokeContract, timeout_s: float = 10.0) -> list[CheckOutcome]:
    """Every applicable check, once each, in table order."""
    return asyncio.run(_run_all(contract, timeout_s))
