"""The LLM phase's arithmetic and its stream client. The client is read against a small aiohttp server
on 127.0.0.1 that sends the byte streams a vLLM server sends, and the broken ones it must not trust;
the phase against the real llm app runs in tests/test_llm_live.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from raygke.smoke.contract import AppEndpoint, Endpoints, LlmSlo
from raygke.smoke.llm import (
    LlmLevelResult,
    LlmLoadSpec,
    LlmResult,
    completion_body,
    lengths,
    level_dict,
    poisson_arrivals,
    served_model,
    stream_completion,
)

pytestmark = pytest.mark.pure

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
