"""Load generation: closed-loop concurrency levels and open-loop constant-rate arrivals.

Owns: running one load level (`run_level`) in this process or several client processes, keeping raw
samples (never per-worker means), error counts by code, the client's own CPU use, and the open-loop
schedule (arrivals on time whatever the server does; latency measured from the scheduled instant).
Does not own: which levels to run (plan.py) or pass/fail (gates.py).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.stats import LogHistogram, Summary, summarize
from raygke.smoke.transport import USERS_PER_GRPC_CHANNEL, Client, HttpUnary, Result

try:
    import uvloop
except ImportError:  # optional: the stock loop measures the same, at more client CPU
    uvloop = None

Transport = Literal["http", "grpc"]
Mode = Literal["unary", "stream"]
Loop = Literal["closed", "open"]

# A client process busier than this fraction of one core may be what limits the measurement.
CLIENT_BOUND_CPU = 0.85
# Open loop: arrivals are sent late by more than this (p99) when the client cannot keep up.
CLIENT_BOUND_SEND_LAG_MS = 5.0


@dataclass(frozen=True)
class LoadSpec:
    """One measured configuration: a target (app, transport, mode) under one load shape."""

    app: AppEndpoint
    transport: Transport
    mode: Mode
    loop: Loop
    concurrency: int = 1
    rate: float = 0.0
    duration_s: float = 5.0
    warmup_s: float = 1.0
    timeout_s: float = 10.0
    payload_size: int = 1024
    chunks: int = 20
    chunk_size: int = 64
    rows: int = 32
    processes: int = 1
    # Open loop: arrivals beyond this many in flight (per process) are counted as
    # `client_overload` errors, not sent: each needs a connection, and file descriptors run out.
    max_inflight: int = 1000

    @property
    def target(self) -> str:
        """The configuration name shared by every level of one target, e.g. `echo/http/unary`."""
        return f"{self.app.name}/{self.transport}/{self.mode}"

    @property
    def label(self) -> str:
        shape = f"c={self.concurrency}" if self.loop == "closed" else f"rate={self.rate:g}/s"
        return f"{self.target} {self.loop} {shape}"


@dataclass
class WorkerSamples:
    """Raw samples from one client process, in seconds; merged by concatenation."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    per_chunk: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    chunks: int = 0
    ok: int = 0
    sent: int = 0
    # Requests actually sent inside the measured window: below `sent` when the client lags.
    sent_in_window: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    # Connections the lean HTTP client opened (warm-up included); None where it was not used.
    connections: int | None = None


@dataclass
class LevelResult:
    spec: LoadSpec
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    throughput_rps: float
    latency_ms: Summary | None
    ttft_ms: Summary | None
    per_chunk_ms: Summary | None
    chunks_per_s: float
    send_lag_ms: Summary | None
    sent_in_window: int
    client_cpu: list[float]
    histogram: LogHistogram
    latencies_ms: list[float]
    deployment: str = "A"
    repeat: int = 0
    # HTTP unary: connections the client opened over the level, warm-up included. Above the
    # concurrency (closed loop) when the server closed some and the client reconnected.
    connections: int | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        total = self.ok + self.error_count
        return self.error_count / total if total else 1.0

    @property
    def achieved_rate(self) -> float:
        """Requests actually sent per second in the measured window (open loop: vs spec.rate)."""
        return self.sent_in_window / self.duration_s if self.duration_s else 0.0

    @property
    def client_bound(self) -> bool:
        lag = self.send_lag_ms
        lagging = lag is not None and lag.p99 > CLIENT_BOUND_SEND_LAG_MS
        return lagging or any(cpu > CLIENT_BOUND_CPU for cpu in self.client_cpu)


def open_loop_schedule(
    rate: float, processes: int, index: int, start: float, end: float
) -> list[float]:
    """Arrival instants for client `index` of `processes`: together, one every 1/rate seconds.

    Each client takes every `processes`-th arrival, so the merged stream is evenly spaced.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0; got {rate}")
    period = 1.0 / rate
    times: list[float] = []
    i = index
    while True:
        at = start + i * period
        if at >= end:
            return times
        times.append(at)
        i += processes


def _request_fn(spec: LoadSpec, client: Client) -> Callable[[float], Awaitable[Result]]:
    app = spec.app
    if app.kind == "recsys":
        if spec.transport == "http":
            return client.http_unary(app, "/rank", {"rows": spec.rows, "seed": 7})
        return lambda start: client.grpc_rank(app, spec.rows, 7, start)
    if spec.mode == "stream":
        if spec.transport == "http":
            return lambda start: client.http_stream(app, spec.chunks, spec.chunk_size, start)
        return lambda start: client.grpc_stream(app, spec.chunks, spec.chunk_size, start)
    if spec.transport == "http":
        return client.http_unary(app, f"/unary?size={spec.payload_size}", None)
    return lambda start: client.grpc_unary(app, spec.payload_size, start)


def _record(samples: WorkerSamples, result: Result) -> None:
    if not result.ok:
        samples.errors[result.error or "unknown"] += 1
        return
    samples.ok += 1
    samples.latencies.append(result.latency_s)
    samples.chunks += result.chunks
    if result.ttft_s is not None:
        samples.ttfts.append(result.ttft_s)
        if result.chunks > 1 and result.last_chunk_s is not None:
            samples.per_chunk.append((result.last_chunk_s - result.ttft_s) / (result.chunks - 1))


async def _closed_loop(
    request: Callable[[float], Awaitable[Result]],
    concurrency: int,
    measure_from: float,
    end: float,
    samples: WorkerSamples,
) -> None:
    if isinstance(request, HttpUnary):
        await _closed_loop_chained(request, concurrency, measure_from, end, samples)
        return

    async def user() -> None:
        while (start := time.perf_counter()) < end:
            result = await request(start)
            if start >= measure_from:
                samples.sent += 1
                samples.sent_in_window += 1
                _record(samples, result)

    await asyncio.gather(*(user() for _ in range(concurrency)))


async def _closed_loop_chained(
    request: HttpUnary, concurrency: int, measure_from: float, end: float, samples: WorkerSamples
) -> None:
    """The closed loop of `_closed_loop` on callbacks: each response's callback records it and
    sends that user's next request, as `user()` would after its await, minus the task switch."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = concurrency
    send = request.send
    perf_counter = time.perf_counter

    def next_request() -> None:
        nonlocal left
        start = perf_counter()
        if start >= end:
            left -= 1
            if left == 0 and not done.done():
                done.set_result(None)
            return
        send(start, lambda result: finished(start, result))

    def finished(start: float, result: Result) -> None:
        try:
            if start >= measure_from:
                samples.sent += 1
                samples.sent_in_window += 1
                _record(samples, result)
            next_request()
        except BaseException as exc:  # a bug here must end the level, not hang it
            if not done.done():
                done.set_exception(exc)
            raise

    for _ in range(concurrency):
        next_request()
    await done


async def _open_loop(
    spec: LoadSpec,
    request: Callable[[float], Awaitable[Result]],
    schedule: list[float],
    measure_from: float,
    end: float,
    samples: WorkerSamples,
) -> None:
    inflight: set[asyncio.Task[None]] = set()

    async def one(at: float, measured: bool) -> None:
        sent_at = time.perf_counter()
        lag = sent_at - at
        if measure_from <= sent_at < end:
            samples.sent_in_window += 1
        result = await request(at)  # latency counts from the scheduled instant, not the send
        if measured:
            samples.send_lags.append(lag)
            _record(samples, result)

    for at in schedule:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        measured = at >= measure_from
        if measured:
            samples.sent += 1
        if len(inflight) >= spec.max_inflight:
            if measured:
                samples.errors["client_overload"] += 1
            continue
        task = asyncio.create_task(one(at, measured))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.gather(*inflight)


async def _run_worker(
    spec: LoadSpec, endpoints: Endpoints, index: int, start_delay_s: float = 0.0
) -> WorkerSamples:
    samples = WorkerSamples()
    concurrency = spec.concurrency // spec.processes + (
        1 if index < spec.concurrency % spec.processes else 0
    )
    # Closed loop: one HTTP connection per user; open loop: unbounded so arrivals never queue
    # here (max_inflight bounds them).
    pool = concurrency if spec.loop == "closed" else 0
    users = concurrency if spec.loop == "closed" else 4 * USERS_PER_GRPC_CHANNEL
    channels = min(16, math.ceil(max(1, users) / USERS_PER_GRPC_CHANNEL))
    if spec.transport == "http":
        channels = 0
    async with Client(endpoints, spec.timeout_s, pool_size=pool, grpc_channels=channels) as client:
        request = _request_fn(spec, client)
        # process_time: this process's user + system CPU in ns (os.times() counts 10 ms ticks).
        cpu0 = time.process_time()
        t0 = time.perf_counter() + start_delay_s
        measure_from = t0 + spec.warmup_s
        end = measure_from + spec.duration_s
        if start_delay_s > 0:
            await asyncio.sleep(start_delay_s)
        if spec.loop == "closed":
            if concurrency > 0:
                await _closed_loop(request, concurrency, measure_from, end, samples)
        else:
            schedule = open_loop_schedule(spec.rate, spec.processes, index, t0, end)
            await _open_loop(spec, request, schedule, measure_from, end, samples)
        cpu1 = time.process_time()
        samples.wall_s = time.perf_counter() - t0
        samples.cpu_s = cpu1 - cpu0
        samples.connections = client.http_connections
    return samples


def _run_async(spec: LoadSpec, main: Coroutine[Any, Any, WorkerSamples]) -> WorkerSamples:
    """An HTTP worker's loop is uvloop where installed (about a quarter less client CPU per
    request than the stock loop, measured); gRPC keeps the stock loop, which grpc.aio supports."""
    if spec.transport == "http" and uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def _worker_main(
    spec: LoadSpec, endpoints: Endpoints, index: int, barrier: Any, queue: Any
) -> None:
    """Entry point of a spawned client process: wait for the others, run, send samples back."""
    try:
        barrier.wait(timeout=60)
        samples = _run_async(spec, _run_worker(spec, endpoints, index))
        queue.put((index, samples, None))
    except BaseException as exc:
        queue.put((index, None, f"{type(exc).__name__}: {exc}"))


def _run_processes(spec: LoadSpec, endpoints: Endpoints) -> list[WorkerSamples]:
    # spawn, not fork: grpc's threads do not survive fork, and the parent may hold channels.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(spec.processes)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(spec, endpoints, i, barrier, queue), daemon=True)
        for i in range(spec.processes)
    ]
    for proc in procs:
        proc.start()
    results: list[WorkerSamples] = []
    failures: list[str] = []
    deadline = 90 + spec.warmup_s + spec.duration_s + spec.timeout_s
    try:
        for _ in procs:
            _, samples, failure = queue.get(timeout=deadline)
            if samples is None:
                failures.append(str(failure))
            else:
                results.append(samples)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    if failures:
        raise RuntimeError(f"client process failed: {failures[0]}")
    return results


def merge_samples(spec: LoadSpec, parts: list[WorkerSamples]) -> LevelResult:
    """One level's result from every client process's raw samples (concatenated, never averaged)."""
    merged = WorkerSamples()
    for part in parts:
        merged.latencies += part.latencies
        merged.ttfts += part.ttfts
        merged.per_chunk += part.per_chunk
        merged.send_lags += part.send_lags
        merged.chunks += part.chunks
        merged.ok += part.ok
        merged.sent += part.sent
        merged.sent_in_window += part.sent_in_window
        merged.errors.update(part.errors)
    counts = [part.connections for part in parts if part.connections is not None]
    latencies_ms = [v * 1000 for v in merged.latencies]
    histogram = LogHistogram()
    histogram.record_all(latencies_ms)
    duration = spec.duration_s
    return LevelResult(
        spec=spec,
        duration_s=duration,
        sent=merged.sent,
        ok=merged.ok,
        errors=dict(merged.errors),
        throughput_rps=merged.ok / duration,
        latency_ms=summarize(latencies_ms),
        ttft_ms=summarize(v * 1000 for v in merged.ttfts),
        per_chunk_ms=summarize(v * 1000 for v in merged.per_chunk),
        chunks_per_s=merged.chunks / duration,
        send_lag_ms=summarize(v * 1000 for v in merged.send_lags) if spec.loop == "open" else None,
        sent_in_window=merged.sent_in_window,
        client_cpu=[p.cpu_s / p.wall_s if p.wall_s else 0.0 for p in parts],
        histogram=histogram,
        latencies_ms=latencies_ms,
        connections=sum(counts) if counts else None,
    )


def run_level(spec: LoadSpec, endpoints: Endpoints) -> LevelResult:
    """Run one level to completion and merge every client's raw samples."""
    if spec.loop == "closed" and spec.concurrency < 1:
        raise ValueError(f"closed loop needs concurrency >= 1; got {spec.concurrency}")
    if spec.loop == "open" and spec.rate <= 0:
        raise ValueError(f"open loop needs rate > 0; got {spec.rate}")
    if spec.processes <= 1:
        parts = [_run_async(spec, _run_worker(spec, endpoints, 0))]
    else:
        parts = _run_processes(spec, endpoints)
    return merge_samples(spec, parts)
