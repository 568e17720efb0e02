"""An llm replica's cold start, where it can be seen: on a local run that this command starts.

    python -m raygke.smoke.coldstart --stack prod [--state-dir DIR] [--out DIR] [--keep]

What is measured: the time from Serve being handed the stack's apps (`raygke local up`'s deploy
submitting them) to the first token of a streamed completion from the llm app, through our tier,
sent the moment `raygke local up` returns; and its parts, each stamped when `raygke local up`'s
progress line arrives: Ray's start (not part of the cold start), submit to the llm app RUNNING
(Serve placing the replica, vLLM loading the model and the replica's health check), RUNNING to the
run serving (our tier's start), and that first request's TTFT (what a fresh replica's first
request costs beyond its load). The apps deploy together, so the llm replica starts beside the
others, as in a cluster's first deploy.
What is not: a new replica added to a serving app (a scale-up), which needs the cluster's API; the
smoke benchmark never has it and reads only the `smoke` contract, so `raygke smoke` measures no
cold start (docs/smoke.md, "Cold start").
Owns: reading the progress lines, the first request, the figures (`cold_start.json`). Does not own
starting or stopping the run (`raygke local`, run as a command) or the stream's timing (llm.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from raygke.smoke.contract import ContractError, SmokeContract, load_contract
from raygke.smoke.llm import (
    LlmResult,
    completion_body,
    completions_url,
    prompt_text,
    stream_completion,
)

# `raygke local up`'s progress lines this reads (raygke/local_ray.py writes them; a test pins them).
RAY_UP = re.compile(r"\bRay up in\b")
SUBMITTED = re.compile(r"\bsubmitting \d+ apps\b")
FIRST_TOKENS = 16  # the first request: short, so its TTFT is the figure, not its decode


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() when the line arrived
    text: str


@dataclass(frozen=True)
class ColdStart:
    """Seconds. `cold_start_s`: submit to the first token; None where a line was not seen."""

    stack: str
    app: str
    cold_start_s: float | None
    ray_start_s: float | None
    submit_to_running_s: float | None
    running_to_serving_s: float | None
    first_ttft_s: float | None
    up_s: float
    first_request: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "measured": "a local run started by this command (raygke local up)",
            "definition": (
                "from Serve being handed the apps (raygke local up's deploy submit) to the first "
                "token of a streamed completion from the llm app through our tier, sent when "
                "raygke local up returns"
            ),
        }


def _first(lines: Iterable[Line], pattern: re.Pattern[str]) -> float | None:
    return next((line.at for line in lines if pattern.search(line.text)), None)


def timeline(
    lines: Sequence[Line],
    app: str,
    started: float,
    served: float,
    first_request_at: float,
    first: LlmResult,
    stack: str,
) -> ColdStart:
    """The figures from `raygke local up`'s lines (stamped on arrival), the moment it returned
    (`served`) and the first request, sent at `first_request_at`."""
    ray_up = _first(lines, RAY_UP)
    submitted = _first(lines, SUBMITTED)
    running = _first(lines, re.compile(rf"(^|[\s,]){re.escape(app)}=RUNNING\b"))
    first_token = None if first.ttft_s is None else first_request_at + first.ttft_s

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    return ColdStart(
        stack=stack,
        app=app,
        cold_start_s=span(submitted, first_token),
        ray_start_s=span(started, ray_up),
        submit_to_running_s=span(submitted, running),
        running_to_serving_s=span(running, served),
        first_ttft_s=first.ttft_s,
        up_s=served - started,
        first_request={
            "ok": first.ok,
            "error": first.error,
            "message": first.message,
            "output_tokens": first.output_tokens,
            "latency_s": first.latency_s,
        },
    )


def read_lines(proc: subprocess.Popen[str], echo: Callable[[str], None]) -> list[Line]:
    """Every line the command writes, stamped on arrival, until it exits."""
    assert proc.stdout is not None
    lines = []
    for text in proc.stdout:
        lines.append(Line(time.monotonic(), text.rstrip("\n")))
        echo(text.rstrip("\n"))
    proc.wait()
    return lines


def first_request(
    contract: SmokeContract, app_name: str, timeout_s: float
) -> tuple[float, LlmResult]:
    """One streamed completion to the app through the contract's endpoints: (sent at, result)."""
    app = next(a for a in contract.apps if a.name == app_name)

    async def go() -> tuple[float, LlmResult]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            body = completion_body(app.model or "", prompt_text(16, random.Random(0)), FIRST_TOKENS)
            at = time.monotonic()
            start = time.perf_counter()
            return at, await stream_completion(
                s, completions_url(contract.endpoints, app), body, start
            )

    return asyncio.run(go())


def llm_app(contract: SmokeContract) -> str:
    apps = [a.name for a in contract.apps if a.kind == "llm"]
    if not apps:
        raise ContractError(
            f"stack {contract.stack!r} serves no llm app on this machine (an llm app runs locally "
            "with localArgs device: cpu): nothing to start cold"
        )
    return apps[0]


def measure(
    up: Sequence[str],
    down: Sequence[str] | None,
    outputs: Path,
    stack: str,
    *,
    timeout_s: float = 120.0,
    echo: Callable[[str], None] = lambda _text: None,
) -> ColdStart:
    """Run `up` (a `raygke local up`), read its lines, send the first request the moment it
    returns, then run `down` (None: leave the run up)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(up), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = read_lines(proc, echo)
    served = time.monotonic()
    try:
        if proc.returncode != 0:
            tail = lines[-1].text if lines else "no output"
            raise RuntimeError(f"`{' '.join(up)}` exited {proc.returncode}: {tail}")
        contract = load_contract(outputs)
        app = llm_app(contract)
        sent_at, result = first_request(contract, app, timeout_s)
    finally:
        if down is not None:
            subprocess.run(list(down), check=False, capture_output=True, text=True)
    return timeline(lines, app, started, served, sent_at, result, stack)


def _raygke() -> list[str]:
    return [sys.executable, "-m", "raygke.cli"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raygke.smoke.coldstart",
        description="Start a stack on this machine and time its llm app's cold start "
        "(docs/smoke.md). Exit 0: measured; 1: the run or the first request failed; 2: bad input.",
    )
    parser.add_argument("--stack", required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("out/coldstart/state"))
    parser.add_argument("--out", type=Path, default=Path("out/coldstart"))
    parser.add_argument("--keep", action="store_true", help="leave the local run up afterwards")
    args = parser.parse_args(argv)
    state = args.state_dir.resolve()
    up = [*_raygke(), "local", "up", "--stack", args.stack, "--state-dir", str(state)]
    down = None if args.keep else [*_raygke(), "local", "down", "--state-dir", str(state)]
    try:
        figures = measure(up, down, state / "outputs.json", args.stack, echo=print)
    except ContractError as exc:
        print(f"coldstart: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"coldstart: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cold_start.json"
    path.write_text(json.dumps(figures.as_dict(), indent=2) + "\n")
    print(render(figures))
    print(f"figures: {path}")
    return 0 if figures.first_request["ok"] else 1


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def render(figures: ColdStart) -> str:
    return (
        f"cold start of {figures.stack}'s {figures.app} app: {_s(figures.cold_start_s)} from the "
        f"deploy's submit to its first token (submit to RUNNING {_s(figures.submit_to_running_s)}, "
        f"RUNNING to serving {_s(figures.running_to_serving_s)}, first request's TTFT "
        f"{_ms(figures.first_ttft_s)}); Ray's start before it {_s(figures.ray_start_s)}"
    )


if __name__ == "__main__":
    sys.exit(main())
