"""The LLM phase's arithmetic and its stream client. The client is read against a small aiohttp server
on 127.0.0.1 that sends the byte streams a vLLM server sends, and the broken ones it must not trust;
the phase against the real llm app runs in tests/test_llm_live.py."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from raygke.smoke.contract import AppEndpoint, Endpoints, LlmSlo
from raygke.smoke.llm import (
    TURN_SKIPPED,
    LlmLevelResult,
    LlmLoadSpec,
    LlmResult,
    completion_body,
    lengths,
    level_dict,
    measure,
    poisson_arrivals,
    served_model,
    shared_prefix_jobs,
    stream_completion,
    sweep_point,
    sweeps,
    turn_lengths,
    vllm_result,
)

pytestmark = pytest.mark.pure

# vLLM's result writer, read as text (never imported: tests start no vLLM)
_VLLM = importlib.util.find_spec("vllm")
vllm_benchmarks = None if _VLLM is None or not _VLLM.submodule_search_locations else _VLLM

APP = AppEndpoint("llm", "llm", "/llm", None, None)


def spec(**overrides: object) -> LlmLoadSpec:
    return LlmLoadSpec(**{"app": APP, "model": "m", "loop": "closed", **overrides})  # type: ignore[arg-type]


def test_poisson_arrivals_keep_the_mean_rate_and_start_at_zero() -> None:
    offsets = poisson_arrivals(20.0, 4000, random.Random(3))
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert offsets[0] == 0.0
    assert statistics.fmean(gaps) == pytest.approx(1 / 20, rel=0.05)
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(1 / 20, rel=0.1)
    with pytest.raises(ValueError, match="rate must be > 0"):
        poisson_arrivals(0.0, 3, random.Random(0))


def test_lengths_are_fixed_or_within_the_range_ratio() -> None:
    rng = random.Random(0)
    assert set(lengths(spec(input_tokens=30, output_tokens=10), 50, rng)) == {(30, 10)}
    drawn = lengths(spec(input_tokens=100, output_tokens=40, range_ratio=0.25), 500, rng)
    assert {i for i, _ in drawn} <= set(range(75, 126))
    assert {o for _, o in drawn} <= set(range(30, 51))
    assert len({i for i, _ in drawn}) > 20  # drawn, not fixed


def result(ttft: float, chunks: list[float], tokens: int, latency: float) -> LlmResult:
    return LlmResult(
        ok=True, ttft_s=ttft, latency_s=latency, chunk_times=chunks, output_tokens=tokens
    )


def test_tpot_itl_and_goodput_follow_vllms_definitions() -> None:
    # 5 tokens in 3 chunks: TPOT spreads the decode time over 4 tokens; ITL is per chunk.
    fast = result(0.1, [0.1, 0.2, 0.5], 5, 0.5)
    assert fast.tpot_s == pytest.approx(0.1)
    assert fast.itl_s == pytest.approx([0.1, 0.3])
    slow_first = result(2.0, [2.0, 2.05], 2, 2.05)
    failed = LlmResult(error="http_500")
    level = LlmLevelResult(
        spec(num_prompts=3),
        2.0,
        [fast, slow_first, failed],
        0.1,
        LlmSlo(8, ttft_ms=500, tpot_ms=200, input_tokens=8, output_tokens=8),
    )
    assert level.errors == {"http_500": 1}
    assert level.error_rate == pytest.approx(1 / 3)
    assert level.output_tokens == 7
    assert level.output_tok_s == pytest.approx(3.5)
    assert level.requests_per_s == pytest.approx(1.0)
    assert level.good == 1  # slow_first misses the TTFT objective
    assert level.goodput_rps == pytest.approx(0.5)
    figures = level_dict(level)
    assert figures["ttft_ms"]["p50"] == pytest.approx(1050.0)
    assert figures["samples_ms"]["itl"] == pytest.approx([100.0, 300.0, 50.0])
    assert json.loads(json.dumps(figures)) == figures


def test_a_level_without_objectives_has_no_goodput() -> None:
    level = LlmLevelResult(spec(), 1.0, [result(0.1, [0.1, 0.2], 2, 0.2)], 0.0)
    assert level.good is None and level.goodput_rps is None


def test_completion_body_asks_for_exact_lengths_and_usage() -> None:
    body = completion_body("tiny", "a b c", 17)
    assert body["max_tokens"] == 17 and body["ignore_eos"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def sse(*events: object, done: bool = True) -> list[bytes]:
    lines = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
    return lines + ([b"data: [DONE]\n\n"] if done else [])


def text_event(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "text": text}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def streaming(chunks: list[bytes], pause_s: float = 0.02) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
            await asyncio.sleep(pause_s)
        await resp.write_eof()
        return resp

    return handler


async def rejecting(request: web.Request) -> web.Response:
    error = {"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}
    return web.json_response(error, status=400)


async def hanging(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await asyncio.sleep(30)
    return resp


async def serve(
    handler: Handler, method: str = "POST", path: str = "/llm/v1/completions"
) -> AsyncIterator[str]:
    """A server on 127.0.0.1 (a free port) answering `method path` with `handler`; yields its URL."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def completion(handler: Handler, timeout_s: float = 5.0) -> LlmResult:
    async def go() -> LlmResult:
        async for base in serve(handler):
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                url = f"{base}/llm/v1/completions"
                body = completion_body("m", "hi", 3)
                return await stream_completion(session, url, body, time.perf_counter())
        raise AssertionError("server did not start")

    return asyncio.run(go())


def test_a_stream_is_timed_per_chunk_and_counted_from_usage() -> None:
    r = completion(streaming(sse(text_event("a"), text_event("b c"), USAGE)))
    assert r.ok and r.error is None
    assert r.output_tokens == 3 and r.input_tokens == 9  # usage, not the chunk count
    assert len(r.chunk_times) == 2 and r.chunk_times[1] > r.chunk_times[0]


def test_a_token_whose_text_is_still_empty_is_timed_as_vllm_times_it() -> None:
    # A byte-level tokenizer's first byte of a two-byte character decodes to "": still a token.
    r = completion(streaming(sse(text_event(""), text_event("\u00e9"), text_event("a"), USAGE)))
    assert r.ok and len(r.chunk_times) == 3
    assert r.ttft_s == r.chunk_times[0]


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        (sse(text_event("a"), USAGE, done=False), "stream_incomplete"),
        (sse(USAGE), "no_tokens"),
        (sse(text_event("a"), {"error": {"message": "engine dead"}}), "stream_error"),
    ],
)
def test_a_broken_stream_fails_with_its_reason(chunks: list[bytes], error: str) -> None:
    r = completion(streaming(chunks))
    assert not r.ok and r.error == error


def test_an_openai_error_reply_keeps_status_and_message() -> None:
    r = completion(rejecting)
    assert (r.ok, r.error, r.message) == (False, "http_400", "max_tokens is too large")


def test_a_hung_server_is_a_timeout_not_a_hang() -> None:
    r = completion(hanging, timeout_s=0.5)
    assert r.error == "timeout" and r.latency_s < 5


def test_endpoints_build_the_completions_url() -> None:
    from raygke.smoke.llm import completions_url

    url = completions_url(Endpoints("http://127.0.0.1:1", "127.0.0.1:2"), APP)
    assert url == "http://127.0.0.1:1/llm/v1/completions"


def model_of(app: AppEndpoint, reply: web.Response) -> str:
    """`served_model` for `app` against a server whose `/llm/v1/models` answers `reply`."""

    async def models(_: web.Request) -> web.Response:
        return reply

    async def go() -> str:
        async for base in serve(models, "GET", "/llm/v1/models"):
            async with aiohttp.ClientSession() as session:
                return await served_model(session, Endpoints(base, "127.0.0.1:1"), app)
        raise AssertionError("server did not start")

    return asyncio.run(go())


def test_the_served_model_is_the_contracts_or_the_first_the_server_lists() -> None:
    listed = web.json_response({"data": [{"id": "first"}, {"id": "second"}]})
    assert model_of(APP, listed) == "first"  # a version 1 contract names none
    named = AppEndpoint("llm", "llm", "/llm", None, None, model="named")
    assert model_of(named, web.json_response({"data": []})) == "named"  # the server is not asked
    with pytest.raises(RuntimeError, match="/llm/v1/models: lists no model"):
        model_of(APP, web.json_response({"data": []}))
    with pytest.raises(RuntimeError, match="/llm/v1/models: HTTP 503"):
        model_of(APP, web.json_response({}, status=503))


# ------------------------------------------------------------------------------------- workloads
def test_shared_prefix_prompts_share_their_groups_opening_and_keep_their_length() -> None:
    shaped = spec(workload="shared-prefix", num_prompts=12, input_tokens=40, groups=3)
    jobs = shared_prefix_jobs(shaped, 1.0, random.Random(0))
    prefix_words = round(40 * 0.75)
    openings = [" ".join(j.prompt.split()[:prefix_words]) for j in jobs]
    assert all(len(j.prompt.split()) == 40 for j in jobs)
    assert len(set(openings)) == 3  # one system prompt per group
    assert openings[0] == openings[3] == openings[6] and openings[0] != openings[1]
    assert len({j.prompt for j in jobs}) == 12  # each ends with words of its own
    # more groups than prompts: one group per prompt
    assert (
        len(shared_prefix_jobs(replace(shaped, groups=50, num_prompts=2), 1.0, random.Random(0)))
        == 2
    )


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "turns", "expected"),
    [
        (256, 128, 4, (4, 40, 32)),  # prod's: prompts of 40, 112, 184 and 256 tokens
        (128, 128, 4, (4, 8, 32)),
        (32, 32, 4, (4, 2, 8)),
        (8, 64, 4, (1, 8, 64)),  # too short for 4 turns, or for 2: one
        (20, 16, 1, (1, 20, 16)),
    ],
)
def test_a_conversations_last_turn_fits_the_synthetic_request(
    input_tokens: int, output_tokens: int, turns: int, expected: tuple[int, int, int]
) -> None:
    shaped = spec(input_tokens=input_tokens, output_tokens=output_tokens, turns=turns)
    got = turn_lengths(shaped)
    assert got == expected
    n, message, answer = got
    last_prompt = n * message + (n - 1) * answer
    assert last_prompt <= input_tokens and last_prompt + answer <= input_tokens + output_tokens


def _recording(prompts: list[str]) -> Handler:
    """A server that answers every completion with one token per `max_tokens` and keeps each
    prompt it was sent; usage counts a prompt's words."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompts.append(body["prompt"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(body["max_tokens"]):
            await resp.write(f"data: {json.dumps(text_event(' a'))}\n\n".encode())
        usage = {
            "prompt_tokens": len(body["prompt"].split()),
            "completion_tokens": body["max_tokens"],
        }
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return handler


def measured(shaped: LlmLoadSpec, prompts: list[str]) -> list[LlmResult]:
    async def go() -> list[LlmResult]:
        async for base in serve(_recording(prompts)):
            _, results = await measure(shaped, Endpoints(base, "127.0.0.1:1"), 1.0)
            return results
        raise AssertionError("server did not start")

    return asyncio.run(go())


def test_each_turn_resends_the_conversation_so_far() -> None:
    shaped = spec(
        workload="multi-turn", concurrency=2, num_prompts=8, input_tokens=32, output_tokens=8,
        warmup_prompts=0,
    )  # fmt: skip
    prompts: list[str] = []
    results = measured(shaped, prompts)
    assert all(r.ok for r in results) and len(results) == 8
    turns, message, answer = turn_lengths(shaped)
    # 2 conversations of 4 turns: turn t's prompt is (t+1) messages and t answers long
    assert sorted(r.input_tokens for r in results) == sorted(
        [(t + 1) * message + t * answer for t in range(turns)] * 2
    )
    assert [r.turn for r in results] == [0, 1, 2, 3, 0, 1, 2, 3]
    turn_of = {(t + 1) * message + t * answer: t for t in range(turns)}
    by_turn: dict[int, list[str]] = {}
    for prompt in prompts:
        by_turn.setdefault(turn_of[len(prompt.split())], []).append(prompt)
    for t in range(1, turns):  # every later turn opens with exactly one earlier turn's prompt
        for prompt in by_turn[t]:
            assert sum(prompt.startswith(f"{q} ") for q in by_turn[t - 1]) == 1
    first, second = results[0], results[1]  # one conversation's first two turns
    assert second.start_s >= first.start_s + first.latency_s  # a turn waits for its answer


def test_a_failed_turn_ends_its_conversation() -> None:
    shaped = spec(workload="multi-turn", num_prompts=4, input_tokens=16, output_tokens=8)
    calls = 0

    async def failing_second_turn(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first turn (after no warmup) succeeds, the second fails
            return await rejecting(request)
        return await _recording([])(request)

    async def go() -> list[LlmResult]:
        async for base in serve(failing_second_turn):
            _, results = await measure(
                replace(shaped, warmup_prompts=0), Endpoints(base, "127.0.0.1:1"), 1.0
            )
            return results
        raise AssertionError("server did not start")

    results = asyncio.run(go())
    assert [r.error for r in results] == [None, "http_400", TURN_SKIPPED, TURN_SKIPPED]
    assert calls == 2


# ------------------------------------------------------------------------------------------- knee
SLO = LlmSlo(8, ttft_ms=500, tpot_ms=50, input_tokens=8, output_tokens=8)


def rate_level(rate: float, ttft_s: float, ok: int = 20, failed: int = 0) -> LlmLevelResult:
    runs = [result(ttft_s, [ttft_s, ttft_s + 0.01], 2, ttft_s + 0.01) for _ in range(ok)]
    runs += [LlmResult(error="timeout") for _ in range(failed)]
    shaped = spec(loop="open", rate=rate, fraction=rate / 10, num_prompts=ok + failed)
    return LlmLevelResult(shaped, 10.0, runs, 0.0, SLO)


@pytest.mark.parametrize(
    ("levels", "knee_rps", "bounded"),
    [
        ([rate_level(1, 0.1), rate_level(2, 0.2), rate_level(4, 0.9)], 2.0, True),
        ([rate_level(1, 0.1), rate_level(2, 0.2)], 2.0, False),  # the knee is at least 2/s
        ([rate_level(1, 0.9), rate_level(2, 0.1)], None, True),  # the lowest rate misses
        # 3 of 20 failed: 85% within the SLO is under 90%, though the p99s of the rest are met
        ([rate_level(1, 0.1), rate_level(2, 0.1, ok=17, failed=3)], 1.0, True),
        ([rate_level(1, 0.1), rate_level(2, 0.1, ok=18, failed=2)], 2.0, False),  # 90%: meets
    ],
)
def test_the_knee_is_the_highest_rate_meeting_the_slo_with_every_lower_one(
    levels: list[LlmLevelResult], knee_rps: float | None, bounded: bool
) -> None:
    [found] = sweeps(levels, SLO)
    assert (found.knee_rps, found.bounded) == (knee_rps, bounded)
    assert [p.rate for p in found.points] == sorted(p.rate for p in found.points)


def test_a_rate_swept_twice_is_judged_on_the_median_of_its_repeats() -> None:
    noisy = [rate_level(2, 0.1), rate_level(2, 0.9), rate_level(2, 0.2)]
    point = sweep_point(noisy, SLO)
    assert point.meets and point.ttft_p99_ms == pytest.approx(200.0)
    assert sweep_point(noisy[1:], SLO).meets is False  # median of 900 and 200 ms: 550 ms
    closed = LlmLevelResult(spec(), 1.0, [], 0.0, SLO)
    assert sweeps([closed], SLO) == [] and sweeps(noisy, None) == []


def test_per_user_tokens_and_attainment() -> None:
    level = rate_level(1, 0.1, ok=3, failed=1)
    assert level.output_tok_s_per_user == pytest.approx(100.0)  # TPOT 10 ms
    assert level.attainment == pytest.approx(0.75)
    assert LlmLevelResult(spec(), 1.0, [LlmResult(error="x")], 0.0).output_tok_s_per_user is None


# ------------------------------------------------------------------------------ vLLM's result keys
VLLM_SERVE = (
    Path(next(iter(vllm_benchmarks.submodule_search_locations))) / "benchmarks" / "serve.py"
    if vllm_benchmarks and vllm_benchmarks.submodule_search_locations
    else None
)


def test_the_vllm_record_uses_vllm_029s_result_keys_per_request_in_order() -> None:
    stream = result(0.1, [0.1, 0.2, 0.5], 5, 0.5)
    stream.start_s, stream.input_tokens, stream.text = 0.25, 9, "a b"
    failed = LlmResult(error="http_400", message="too long", start_s=0.5)
    level = LlmLevelResult(spec(num_prompts=2, concurrency=4), 2.0, [stream, failed], 0.0, SLO)
    record = vllm_result(level)
    assert record["ttfts"] == [0.1, 0.0] and record["itls"] == [pytest.approx([0.1, 0.3]), []]
    assert record["start_times"] == [0.25, 0.5]
    assert (record["input_lens"], record["output_lens"]) == ([9, 0], [5, 0])
    assert record["generated_texts"] == ["a b", ""]
    assert record["errors"] == ["", "http_400: too long"]
    assert (record["completed"], record["failed"], record["max_concurrency"]) == (1, 1, 4)
    assert record["request_rate"] == "inf" and record["output_throughput"] == 2.5
    assert record["median_tpot_ms"] == pytest.approx(100.0)
    assert record["p99_itl_ms"] == pytest.approx(298.0)  # numpy's p99 of 100 and 300 ms
    assert json.loads(json.dumps(record)) == record
    source = VLLM_SERVE.read_text() if VLLM_SERVE else ""
    if not source:
        pytest.skip("vLLM's benchmarks are not installed here")
    for key in record:
        if key.startswith(("mean_", "median_", "std_", "p99_")):
            continue  # vLLM builds these names from the measure (process_one_metric)
        assert f'"{key}"' in source, f"vLLM 0.29's serve.py writes no {key!r}"
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert f'"{metric}"' in source
