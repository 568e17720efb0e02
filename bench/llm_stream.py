"""`make bench-llm-stream`: does the llm app's stream arrive in pieces, quiet and with other work beside it?

Owns: streamed completions of `--tokens` tokens asked one after another of a running local run's llm app
(through our tier, or straight at Ray's HAProxy with `--direct`), first quiet, then beside one CPU-bound
process per core at nice 10 (started here and stopped by PID); per completion the first and last chunk's
arrival and the smoke check's verdict (raygke/smoke/checks.py), and a count of bursts per phase.
Why: `raygke smoke`'s `llm stream` check judges a stream by its timing; on the CPU build with other work
on the cores a whole completion can arrive at once (docs/reliability.md, "A busy machine").
Does not own: the local run (start one with `raygke local up --stack prod`, any `--profile`).

    python bench/llm_stream.py [--outputs .raygke/local/outputs.json] [--count 8] [--tokens 128] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
from common import say

from raygke.smoke.checks import stream_timing_problem
from raygke.smoke.contract import AppEndpoint, Endpoints, load_contract
from raygke.smoke.llm import completion_body, completions_url, served_model, stream_completion

REQUEST_TIMEOUT_S = 60.0  # one completion on the CPU build, however loaded the machine


async def completions(endpoints: Endpoints, app: AppEndpoint, count: int, tokens: int) -> list[str]:
    """One line per completion: first and last chunk (ms), chunks, and the check's verdict."""
    lines = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        model = await served_model(session, endpoints, app)
        for _ in range(count):
            body = completion_body(model, "the quick brown fox", tokens)
            r = await stream_completion(
                session, completions_url(endpoints, app), body, time.perf_counter()
            )
            last = r.chunk_times[-1] if r.chunk_times else None
            problem = stream_timing_problem(r.ttft_s, last, len(r.chunk_times)) if r.ok else r.error
            first_ms = f"{r.ttft_s * 1000:7.1f}" if r.ttft_s is not None else "      -"
            last_ms = f"{last * 1000:7.1f}" if last is not None else "      -"
            verdict = "streamed" if problem is None else "burst" if r.ok else f"failed: {problem}"
            lines.append(f"{first_ms} {last_ms} {len(r.chunk_times):6d}  {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="the llm app's streams, quiet and busy")
    parser.add_argument("--outputs", default=".raygke/local/outputs.json")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--direct", action="store_true", help="straight at Ray's HAProxy")
    args = parser.parse_args()
    contract = load_contract(args.outputs)
    [app] = [a for a in contract.apps if a.kind == "llm"]
    endpoints = contract.direct if args.direct else contract.endpoints
    if endpoints is None:
        parser.error(f"{args.outputs} names no direct endpoint (Ray's own ingress)")
    print(f"{'first ms':>8} {'last ms':>7} {'chunks':>6}  verdict")
    for phase in ("quiet", "busy"):
        spinners = []
        if phase == "busy":
            spinners = [
                subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)
            ]
            time.sleep(1)
        try:
            say(f"{phase}: {args.count} completions of {args.tokens} tokens")
            lines = asyncio.run(completions(endpoints, app, args.count, args.tokens))
        finally:
            for proc in spinners:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        print("\n".join(lines))
        bursts = sum(1 for line in lines if line.endswith("burst"))
        print(f"{phase}: {args.count - bursts} of {args.count} streamed, {bursts} in one burst")
    return 0


if __name__ == "__main__":
    sys.exit(main())
