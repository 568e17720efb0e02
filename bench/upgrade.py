"""`make bench-upgrade`: `raygke local upgrade` of a local run of prod under load, with streams in
flight at the switch, the llm app's among them.

    python bench/upgrade.py

It starts `raygke local up --stack prod` (the llm app on vLLM's CPU build), puts steady HTTP and gRPC
load on echo through our tier (2 + 2 closed-loop users), and upgrades the run to prod with echo's
`version` changed to v2, through `raygke local upgrade`'s own code. Just before our tier switches to
the new cluster it sends an echo stream over HTTP and over gRPC (20 chunks, 500 ms apart) and a
streamed chat completion of the llm app, and waits for their first bytes, so all three are on the old
cluster when the switch comes. The upgrade then waits prod's deletion delay (335 s: our tier's 35 s
plus the llm app's 300 s deadline) and the old pods' preStop (160 s drain), so a run takes about 10
minutes. It prints and writes (out/bench/upgrade/figures.json and figures.md): failed requests, when the replies turned v2,
each stream's end, and the upgrade's own figures (`upgrade.json`: the switch, the old cluster's end,
peak memory with two clusters). Stops the run at the end, whatever happened.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import OUT, machine, render, say, write_figures
from fault_harness import ECHO, SteadyLoad, long_stream, stream_figures

from infra.stack_file import NAMESPACE as NS
from infra.stack_file import parse_stack_config, read_stack_file
from raygke import local, local_upgrade
from raygke.local_ray import LocalRay
from raygke.smoke.contract import Endpoints

CHUNKS, TPOT_MS = 20, 500  # each echo stream: 10 s
LLM_TOKENS = 480  # the local llm app's max_model_len is 512: a short prompt and this many tokens
FIRST_BYTES_S = 60.0  # each stream's first bytes, on a loaded machine


class Run:
    """What the load needs of a run: where our tier serves."""

    def __init__(self, outputs: dict[str, Any]) -> None:
        self.endpoints = Endpoints(outputs["http_url"], outputs["grpc_target"])


class LlmStream(threading.Thread):
    """One streamed chat completion of `LLM_TOKENS` tokens (ignore_eos: the tiny model's random
    weights would otherwise stop anywhere), counting the tokens as they arrive."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = urlsplit(url), model
        self.first = threading.Event()
        self.tokens = 0
        self.done = False
        self.error: str | None = None
        self.started = self.ended = 0.0

    def run(self) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": LLM_TOKENS,
            "ignore_eos": True,
            "stream": True,
        }
        self.started = time.monotonic()
        try:
            conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=600)
            conn.request(
                "POST", self.url.path, json.dumps(body), {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            if response.status != 200:
                self.error = f"HTTP {response.status}"
                return
            for raw in response:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    delta = json.loads(line[6:])["choices"][0].get("delta", {})
                    if delta.get("content"):
                        self.tokens += 1
                        self.first.set()
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = time.monotonic()
            self.first.set()

    def figures(self, switch: float) -> dict[str, Any]:
        return {
            "ok": self.done and self.error is None,
            "error": self.error,
            "tokens": self.tokens,
            "seconds": round(self.ended - self.started, 2),
            "spanned_switch": self.started < switch < self.ended,
        }


def upgraded_prod() -> Any:
    """prod as its file says, with echo answering v2: what the upgrade moves the run to."""
    config = read_stack_file("prod")
    for app in config[f"{NS}:apps"]:
        if app["kind"] == "echo":
            app["args"] = {**app.get("args", {}), "version": "v2"}
    return parse_stack_config("prod", config)


def main() -> int:
    out = OUT / "upgrade"
    state_dir = out / "state"
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"machine": machine()}
    local.up("prod", state_dir=state_dir)
    try:
        outputs = json.loads((state_dir / "outputs.json").read_text())
        [llm] = [a for a in outputs["apps"] if a["kind"] == "llm"]
        chat = f"{outputs['http_url']}{llm['route_prefix']}/v1/chat/completions"
        streams: dict[str, Any] = {}
        moments: dict[str, float] = {}
        with SteadyLoad(Run(outputs), ECHO) as load:
            load.wait_for_requests(50)
            t0 = time.monotonic()

            def step(name: str, _new: LocalRay) -> None:
                moments[name] = time.monotonic()
                if name != "switching":
                    return
                streams["llm"] = LlmStream(chat, llm["model"])
                streams["llm"].start()
                moments["echo_sent"] = time.monotonic()
                for transport in ("http", "grpc"):
                    streams[transport] = load.submit(long_stream(transport, ECHO, CHUNKS, TPOT_MS))
                if not streams["llm"].first.wait(FIRST_BYTES_S):
                    raise RuntimeError(f"the llm stream sent nothing within {FIRST_BYTES_S:.0f} s")
                time.sleep(1.0)  # the echo streams' first chunks (their pace is 500 ms)
                moments["switching"] = time.monotonic()

            local_upgrade.upgrade("prod", state_dir=state_dir, config=upgraded_prod(), on_step=step)
            load.wait_for_requests(50, since=time.monotonic())
            echo = {t: streams[t].result(60) for t in ("http", "grpc")}
            streams["llm"].join(600)
        switch = moments["switching"]
        mine = [s for s in load.samples if s.at >= t0]
        v1 = [s.at - t0 for s in mine if s.ok and s.version == "v1"]
        v2 = [s.at - t0 for s in mine if s.ok and s.version == "v2"]
        figures.update(
            load.figures(since=t0),
            last_v1_sent_s=round(max(v1), 1) if v1 else None,
            first_v2_sent_s=round(min(v2), 1) if v2 else None,
            streams={
                **{
                    t: {
                        **stream_figures(r, CHUNKS),
                        "spanned_switch": moments["echo_sent"] + r.latency_s > switch,
                    }
                    for t, r in echo.items()
                },
                "llm": streams["llm"].figures(switch),
            },
            upgrade=json.loads((state_dir / "upgrade.json").read_text()),
        )
    finally:
        local.down(state_dir=state_dir)
    up = figures["upgrade"]
    rows = [
        ["requests (HTTP + gRPC)", f"{figures['requests_http']:,} + {figures['requests_grpc']:,}"],
        ["failed", f"{figures['failed']} {figures['errors'] or ''}".strip()],
        ["switch (s after the upgrade began)", f"{up['promoted_s']}"],
        [
            "last v1 / first v2 sent (s)",
            f"{figures['last_v1_sent_s']} / {figures['first_v2_sent_s']}",
        ],
        *[
            [f"{t} stream in flight at the switch", json.dumps(f)]
            for t, f in figures["streams"].items()
        ],
        ["old cluster's deletion delay (s)", f"{up['deletion_delay_s']}"],
        ["old cluster gone (s after the upgrade began)", f"{up['old_stopped_s']}"],
        [
            "peak with two clusters",
            f"{up['peak']['pss_gib']} GiB in {up['peak']['processes']} processes",
        ],
        ["before", f"{up['before']['pss_gib']} GiB in {up['before']['processes']} processes"],
    ]
    text, markdown = render(["figure", "value"], rows)
    say(text)
    host = figures["machine"]
    write_figures(
        out,
        figures,
        "raygke local upgrade of prod's local run under load",
        f"{host['cores']} cores, {host['cpu_model']}, Python {host['python']}; load average at "
        f"start {host['loadavg_at_start']}",
        markdown,
    )
    say(f"figures in {out} (figures.json, figures.md)")
    return 0 if figures["failed"] == 0 and all(f["ok"] for f in figures["streams"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
