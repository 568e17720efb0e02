"""`make bench-llm-paced`: which LLM client reads the truth, against a server whose timings are known.

Owns: an OpenAI-compatible completions server on 127.0.0.1 that streams one token per SSE event, the
first `--ttft-ms` after the request arrives, then one every `--tpot-ms`, with `usage` at the end (a
process of its own, stopped by PID); running our LLM phase and `vllm bench serve` against it with the
load bench/llm.py uses; and the table of what each client read next to what the server did.
Why: against the real llm app the two clients disagree on TTFT by more than the server's run-to-run
noise lets one tell apart (docs/performance.md); a server that keeps time removes that noise.
Does not own: the clients' definitions (raygke/smoke/llm.py, vLLM) or the reference runs
(bench/llm.py, whose runners it calls).

    python bench/llm_paced.py [--ttft-ms 100] [--tpot-ms 5] [--levels 1,8,32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import REPO, render, say
from llm import Load, Target, order, prompts_for, run_ours, run_vllm

from app.tiny_llm import write_tiny_llm
from raygke.host import free_ports
from raygke.smoke.contract import EXAMPLE, parse_contract

OUT = REPO / "out" / "bench-llm" / "paced"
MODEL = "paced"


def serve(port: int, ttft_s: float, tpot_s: float) -> None:
    """The paced server (runs in its own process until killed)."""
    from aiohttp import web

    async def completions(request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        body = await request.json()
        tokens = int(body.get("max_tokens") or 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(tokens):
            # Each token on its own schedule from arrival: late writes never push later ones.
            await asyncio.sleep(max(0.0, arrived + ttft_s + i * tpot_s - time.perf_counter()))
            event = {
                "id": "p",
                "object": "text_completion",
                "model": MODEL,
                "choices": [{"index": 0, "text": " a", "finish_reason": None}],
            }
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        prompt_tokens = len(str(body.get("prompt", "")).split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        }
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/llm/v1/completions", completions)
    app.router.add_get("/llm/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def wait_serving(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--tpot-ms", type=float, default=5.0)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.ttft_ms / 1000, args.tpot_ms / 1000)
        return 0

    port = free_ports(1)[0]
    work = Path(tempfile.mkdtemp(prefix="raygke-paced-"))
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port),
            "--ttft-ms",
            str(args.ttft_ms),
            "--tpot-ms",
            str(args.tpot_ms),
        ]
    )
    try:
        contract = parse_contract(
            {
                **EXAMPLE,
                "http_url": f"http://127.0.0.1:{port}",
                "apps": [
                    {
                        "name": "llm",
                        "kind": "llm",
                        "route_prefix": "/llm",
                        "grpc_service": None,
                        "grpc_application": None,
                        "model": MODEL,
                    }
                ],
            }
        )
        tokenizer = work / "tiny-llm"
        write_tiny_llm(tokenizer)  # vLLM's random dataset needs a tokenizer to make prompts
        wait_serving(f"http://127.0.0.1:{port}/llm/v1/models")
        target = Target(contract, contract.apps[0], 1.0, tokenizer)
        truth_e2e = args.ttft_ms + (args.output_len - 1) * args.tpot_ms
        say(
            f"server: TTFT {args.ttft_ms:g} ms, TPOT {args.tpot_ms:g} ms, {args.output_len} "
            f"tokens (E2E {truth_e2e:g} ms); the truth every figure below should read"
        )
        header = [
            "level",
            "round",
            "client",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "TPOT p50 ms",
            "ITL p50 ms",
            "tok/s per stream (1000 / TPOT)",
        ]
        rows: list[list[str]] = []
        for round_ in range(args.repeats):
            for c in (int(x) for x in args.levels.split(",")):
                load = Load(c, prompts_for(c, 4), 32, args.output_len, round_)
                for client in order(("ours", "vLLM"), round_, 0):
                    if client == "ours":
                        f = run_ours(target, load)
                    else:
                        f = run_vllm(
                            contract,
                            contract.apps[0],
                            tokenizer,
                            load,
                            OUT / f"vllm-c{c}-r{round_}.json",
                        )
                    per_stream = 1000 / f["tpot_p50_ms"] if f["tpot_p50_ms"] else float("nan")
                    rows.append(
                        [
                            f"c={c}",
                            str(round_),
                            client,
                            f"{f['ttft_p50_ms']:.1f}",
                            f"{f['ttft_p99_ms']:.1f}",
                            f"{f['tpot_p50_ms']:.2f}",
                            f"{f['itl_p50_ms']:.2f}",
                            f"{per_stream:.0f}",
                        ]
                    )
                    say(
                        f"  c={c} round {round_} {client}: TTFT p50 {f['ttft_p50_ms']:.1f} ms, "
                        f"TPOT p50 {f['tpot_p50_ms']:.2f} ms"
                    )
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    text, md = render(header, rows)
    say(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "figures.md").write_text(
        f"# LLM clients against a paced server (TTFT {args.ttft_ms:g} ms, TPOT "
        f"{args.tpot_ms:g} ms)\n\n{md}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
