"""The llm app in the local run of prod: vLLM's CPU build serving app/tiny_llm.py's model, over our
tier and over Ray's own HAProxy, and `raygke smoke`'s LLM phase against it.

One `raygke local up --stack prod` for the module (prod's llm app has localArgs that put it on vLLM's
CPU build; the run writes the tiny model into its state dir), torn down by PID at the end. Checks the
OpenAI API (models, chat and text completions, streaming and not), that bad input gets a 4xx and the
engine keeps serving, that vLLM's engine runs in the head's process session (which `down` stops),
that prod's `tuned` profile serves the app in Ray Serve LLM's direct streaming (the LLMServer as
ingress, no OpenAiIngress), the smoke benchmark's LLM phase: its figures, and its gate against an
endpoint that fails, and that every dashboard query and alert of prod returns series from a real
Prometheus on the run.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from bounds import SMOKE_S
from conftest import RAYGKE, LocalRun, local_run_of
from procs import cmdline, environ, pids_matching

from app.contracts import LlmArgs
from app.protos import echo_pb2, echo_pb2_grpc, recsys_pb2, recsys_pb2_grpc
from infra.config import LLM_DIRECT_STREAMING_ENV, PROMETHEUS_HOST_ENV, VLLM_RAY_V2_EXECUTOR_ENV
from infra.rendered import render_stack
from infra.specs import observability_spec
from infra.stack_file import load_stack_config
from raygke import local, local_prometheus, local_ray, observe

pytestmark = pytest.mark.process

TIMEOUT_S = 120  # per request: a hung engine fails the test instead of stalling it


@pytest.fixture(scope="module")
def prod_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    # With its Prometheus: the dashboards' proof below reads it, and its Ray nodes are told where
    # it is, as an llm app's serving-signal autoscaler needs.
    yield from local_run_of(tmp_path_factory.mktemp("prod") / "state", "--prometheus", stack="prod")


@dataclass(frozen=True)
class LlmRun:
    url: str  # the app's route prefix on one ingress
    model_id: str
    max_model_len: int


@pytest.fixture(params=["tier", "ray"], scope="module")
def llm_run(request: pytest.FixtureRequest, prod_run: LocalRun) -> LlmRun:
    """The llm app through our tier, then straight through Ray's own HAProxy."""
    base = prod_run.http_url if request.param == "tier" else prod_run.direct_http_url
    [app] = [a for a in prod_run.outputs["apps"] if a["kind"] == "llm"]
    serve_config = json.loads((prod_run.state_dir / "serve-config.json").read_text())
    [llm] = [a for a in serve_config["applications"] if a["name"] == app["name"]]
    return LlmRun(f"{base}{app['route_prefix']}", app["model"], llm["args"]["max_model_len"])


def test_the_local_run_serves_prods_llm_app_on_the_cpu_build(prod_run: LocalRun) -> None:
    serve_config = json.loads((prod_run.state_dir / "serve-config.json").read_text())
    [llm] = [a for a in serve_config["applications"] if a["import_path"] == "app.llm:build_app"]
    args = llm["args"]
    assert (args["device"], args["source"], args["load_format"]) == ("cpu", "local", "dummy")
    model_dir = Path(args["model_source"])
    assert model_dir.parent == prod_run.state_dir / "models"
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    [app] = [a for a in prod_run.outputs["apps"] if a["kind"] == "llm"]
    assert app["model"] == args["model_id"] == "llama-3.1-8b-instruct"  # prod's model id


def test_vllms_engine_runs_in_a_worker_nodes_processes(prod_run: LocalRun) -> None:
    """`raygke local down` stops each node's processes; vLLM's engine must be among a worker's
    (never the head's: it has num-cpus 0)."""
    ray = local.ray_from_state(prod_run.state)
    engines = set(pids_matching("EngineCore"))
    on = {w.name: engines & set(local_ray.node_processes(w.pid)) for w in ray.workers}
    assert any(on.values()), "no vLLM EngineCore process on this run's worker nodes"
    assert not engines & set(local_ray.node_processes(ray.pid))


REPLICA_TITLE = "ray::ServeReplica:"  # how Ray titles a Serve replica's process: <app>:<deployment>


def _llm_replicas(run: LocalRun) -> dict[str, list[int]]:
    """This run's replica processes of the llm app, by deployment name."""
    ray = local.ray_from_state(run.state)
    prefix = f"{REPLICA_TITLE}{next(a['name'] for a in run.outputs['apps'] if a['kind'] == 'llm')}:"
    found: dict[str, list[int]] = {}
    for leader in (ray.pid, *(w.pid for w in ray.workers)):
        for pid in local_ray.node_processes(leader):
            title = cmdline(pid)
            if title.startswith(prefix):
                found.setdefault(title.removeprefix(prefix).split()[0], []).append(pid)
    return found


def test_the_llm_app_is_served_in_direct_streaming(prod_run: LocalRun) -> None:
    """prod's `tuned` profile: the LLMServer deployment is the app's ingress and an LLMRouter picks
    its replica for Ray's HAProxy; there is no OpenAiIngress replica between them."""
    from app.llm import deployment_names

    serve_config = json.loads((prod_run.state_dir / "serve-config.json").read_text())
    [llm] = [a for a in serve_config["applications"] if a["import_path"] == "app.llm:build_app"]
    args = LlmArgs.model_validate(llm["args"])
    replicas = _llm_replicas(prod_run)
    assert set(replicas) == set(deployment_names(args, direct_streaming=True)), replicas
    assert deployment_names(args)[0] not in replicas  # OpenAiIngress
    # Ray's HAProxy asks the router before it sends a POST to the llm app's replicas.
    ray = local.ray_from_state(prod_run.state)
    configs = list(Path(ray.temp_dir).glob("**/haproxy.cfg"))
    assert configs and all(
        "lua.route_via_ingress_request_router" in c.read_text() for c in configs
    ), configs


def test_the_modes_flags_reach_every_node_and_the_replicas(prod_run: LocalRun) -> None:
    assert prod_run.outputs["serve_flags"][LLM_DIRECT_STREAMING_ENV] == "1"
    ray = local.ray_from_state(prod_run.state)
    wanted = {LLM_DIRECT_STREAMING_ENV: "1", VLLM_RAY_V2_EXECUTOR_ENV: "1"}
    for leader in (ray.pid, *(w.pid for w in ray.workers)):
        env = environ(leader)
        assert {k: env.get(k) for k in wanted} == wanted, f"ray start {leader}"
    for name, pids in _llm_replicas(prod_run).items():
        for pid in pids:
            env = environ(pid)
            assert {k: env.get(k) for k in wanted} == wanted, f"{name} replica {pid}"


def _post(run: LlmRun, path: str, body: Any, **kw: Any) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{run.url}{path}", data=data, headers=headers, timeout=TIMEOUT_S, **kw)


def _events(response: requests.Response) -> list[dict[str, Any]]:
    """The SSE `data:` events of a stream, up to `[DONE]` (which must end it)."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return events
        events.append(json.loads(line[len("data: ") :]))
    raise AssertionError(f"the stream ended without data: [DONE] after {len(events)} events")


def test_models_lists_the_stacks_model_id(llm_run: LlmRun) -> None:
    r = requests.get(f"{llm_run.url}/v1/models", timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert llm_run.model_id in [m["id"] for m in r.json()["data"]]


def test_chat_completion(llm_run: LlmRun) -> None:
    body = {
        "model": llm_run.model_id,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "ignore_eos": True,  # vLLM's extension: exactly max_tokens from random weights
    }
    r = _post(llm_run, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["object"] == "chat.completion"
    assert reply["model"] == llm_run.model_id
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] == 16


def test_completion(llm_run: LlmRun) -> None:
    body = {"model": llm_run.model_id, "prompt": "The quick brown fox", "max_tokens": 8,
            "ignore_eos": True}  # fmt: skip
    r = _post(llm_run, "/v1/completions", body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["object"] == "text_completion"
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["usage"]["prompt_tokens"] > 1  # BOS and the prompt's tokens


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to ten."}]}),
        ("/v1/completions", {"prompt": "Once upon a time"}),
    ],
)
def test_stream_delivers_tokens_in_several_chunks(
    llm_run: LlmRun, path: str, body: dict[str, Any]
) -> None:
    body = {**body, "model": llm_run.model_id, "max_tokens": 32, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with _post(llm_run, path, body, stream=True) as r:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
    texts = [
        c.get("delta", {}).get("content") or c.get("text") or ""
        for e in events
        for c in e.get("choices", [])
    ]
    assert sum(1 for t in texts if t) > 1, f"one chunk carried the whole answer: {texts}"
    assert events[-1]["usage"]["completion_tokens"] == 32


def _chat(model: str, content: str = "Hello.", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


Body = Callable[[LlmRun], str | dict[str, Any]]  # the request body for a run

# (case, body, the status OpenAI's API answers it with, the error's shape)
BAD_INPUT: list[tuple[str, Body, int, str]] = [
    ("malformed JSON", lambda r: f'{{"model": "{r.model_id}", "messages": [', 400, "openai"),
    ("no messages", lambda r: {"model": r.model_id, "max_tokens": 4}, 400, "openai"),
    # In direct streaming vLLM's own OpenAI server answers: OpenAI's {"error": {...}} with a 404
    # (through OpenAiIngress, Ray Serve LLM 2.60 answered FastAPI's {"detail": "..."}).
    ("unknown model", lambda r: _chat("no-such-model"), 404, "openai"),
    ("max_tokens beyond the model length",
     lambda r: _chat(r.model_id, max_tokens=r.max_model_len + 1), 400, "openai"),
    ("prompt over the limit", lambda r: _chat(r.model_id, "fox " * r.max_model_len), 400, "openai"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "shape"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_gets_an_error_and_the_engine_keeps_serving(
    llm_run: LlmRun, case: str, body: Body, status: int, shape: str
) -> None:
    t0 = time.monotonic()
    r = _post(llm_run, "/v1/chat/completions", body(llm_run))
    assert r.status_code == status, f"{case}: {r.status_code} {r.text}"
    if shape == "openai":
        error = r.json()["error"]
        assert error["message"] and error["type"], error
    else:
        assert "no-such-model" in r.json()["detail"], r.text
    assert time.monotonic() - t0 < 30, f"{case}: the error took {time.monotonic() - t0:.0f}s"
    ok = _post(llm_run, "/v1/chat/completions", _chat(llm_run.model_id, max_tokens=4))
    assert ok.status_code == 200, f"after {case}: {ok.text}"


def _smoke(outputs: dict[str, Any], out: Path) -> tuple[int, dict[str, Any]]:
    """`raygke smoke --profile quick` on these outputs; (exit code, report.json)."""
    path = out / "outputs.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs))
    run = subprocess.run(
        [*RAYGKE, "smoke", "--outputs", str(path), "--profile", "quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=SMOKE_S,
    )
    assert run.returncode in (0, 1), run.stderr  # 1: a gate missed; 2 would be bad input
    return run.returncode, json.loads((out / "report.json").read_text())


def _llm_only(outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs with the llm app alone: the other apps' load levels would only slow the run down
    (tests/test_smoke_local.py smokes every app of a local run)."""
    only = json.loads(json.dumps(outputs))
    only["apps"] = [a for a in only["apps"] if a["kind"] == "llm"]
    return only


def test_smokes_llm_phase_measures_the_llm_app(prod_run: LocalRun, tmp_path: Path) -> None:
    _, report = _smoke(_llm_only(prod_run.outputs), tmp_path)
    checks = {c["name"]: c for c in report["checks"]["A"] if c["app"] == "llm"}
    assert checks["llm models"]["passed"], checks["llm models"]
    # The stream check's verdict is timing: on this CPU build a busy machine can hand a whole
    # completion over at once, through Ray's defaults as through our flags (docs/reliability.md, "A
    # busy machine"). What must hold here is that the request succeeded and got a verdict;
    # tests/test_smoke_process.py proves the verdict against a server whose pacing is known.
    stream = checks["llm stream"]
    assert stream["passed"] or "looks buffered" in stream["detail"], stream
    slo = prod_run.outputs["slo"]["llm"]
    [closed] = [lv for lv in report["llm"] if lv["loop"] == "closed"]
    assert closed["concurrency"] == slo["concurrency"]
    assert closed["errors"] == {} and closed["ok"] == closed["num_prompts"]
    assert closed["output_tok_s"] > 0 and closed["tpot_ms"]["count"] == closed["ok"]
    # ignore_eos: every stream is exactly the objective's length; the prompt about its length.
    assert closed["output_tokens_total"] == closed["ok"] * slo["output_tokens"]
    assert abs(closed["mean_input_tokens"] - slo["input_tokens"]) <= 0.2 * slo["input_tokens"]
    assert [lv["loop"] for lv in report["llm"]].count("open") >= 1
    gates = {g["name"] for g in report["gates"]}
    assert f"TTFT p99 llm llm c={slo['concurrency']}" in gates
    assert f"TPOT p99 llm llm c={slo['concurrency']}" in gates
    assert (tmp_path / "llm.png").is_file()


def test_smokes_llm_phase_fails_its_gate_naming_what_failed(
    prod_run: LocalRun, tmp_path: Path
) -> None:
    """An llm route that answers 404 (the app gone from behind the ingress): exit 1, and the gates
    say which app and what the endpoint answered."""
    outputs = _llm_only(prod_run.outputs)
    for app in outputs["apps"]:
        app["route_prefix"] = "/no-llm-here"
    code, report = _smoke(outputs, tmp_path)
    assert code == 1
    failed = {g["name"]: g["detail"] for g in report["gates"] if not g["passed"]}
    assert "http_404" in failed["llm load llm"], failed
    assert "llm models llm/http" in failed["functional checks"]


# The LLM histograms' and gRPC's series, which exist only once a request has been counted.
SCRAPED_TWICE = (
    "ray_vllm_time_to_first_token_seconds_count",
    "ray_serve_grpc_request_latency_ms_count",
)
GAUGE_PANELS = ("Running and waiting requests", "KV-cache usage (highest replica, 1 is full)")


def test_every_dashboard_query_and_alert_returns_series_on_prods_run(prod_run: LocalRun) -> None:
    """`raygke local check-queries`' proof, on prod: its dashboards hold dev's and staging's
    queries for more apps, and the llm app's, which runs here. The run's own Prometheus (`raygke
    local up --prometheus`, named to every Ray node), a short burst to every app (echo and recsys
    over HTTP and gRPC, the llm app streamed and not), then every serving, tier and LLM panel query and every alert's inputs
    return series (the quiet ones excepted, by name, with their metrics present), and no alert
    fires. No GPU dashboard: no DCGM here."""
    config = load_stack_config("prod")
    spec, keys = observability_spec(config), observe.local_dashboards(config)
    assert keys == ("serving", "tier", "llm")
    ray = local.ray_from_state(prod_run.state)
    rendered = render_stack(config)
    url = prod_run.state["prometheus"]["url"]
    for node in (ray.pid, *(w.pid for w in ray.workers)):  # each node's `ray start`
        environ = Path(f"/proc/{node}/environ").read_bytes().split(b"\0")
        assert f"{PROMETHEUS_HOST_ENV}={url}".encode() in environ
    scraped = local_prometheus.scrape_config_for_run(rendered, ray, prod_run.state["tier"])
    targets = sum(len(job["static_configs"]) for job in scraped["scrape_configs"])
    local_prometheus.wait_for_series(url, f"count(up == 1) == {targets}", TIMEOUT_S)
    http = prod_run.http_url
    [llm] = [a for a in prod_run.outputs["apps"] if a["kind"] == "llm"]
    chat_url = f"{http}{llm['route_prefix']}/v1/chat/completions"
    chat = _chat(llm["model"], max_tokens=8, ignore_eos=True)

    def burst() -> None:
        with grpc.insecure_channel(prod_run.grpc_target) as channel:
            echo = echo_pb2_grpc.EchoServiceStub(channel)
            recsys = recsys_pb2_grpc.RecsysServiceStub(channel)
            assert requests.get(f"{http}/echo/unary?size=8", timeout=TIMEOUT_S).ok
            assert requests.get(f"{http}/recsys/rank", timeout=TIMEOUT_S).ok
            echo.Unary(echo_pb2.EchoRequest(size=8), metadata=(("application", "echo"),))
            recsys.Rank(recsys_pb2.RankRequest(), metadata=(("application", "recsys"),))
            assert requests.post(chat_url, json=chat, timeout=TIMEOUT_S).ok
            with requests.post(
                chat_url, json={**chat, "stream": True}, stream=True, timeout=TIMEOUT_S
            ) as r:
                assert r.ok and _events(r)

    # Each series scraped twice before the burst: rate() never counts a series' first
    # sample as an increase, and vLLM's and gRPC's series start with their first request.
    burst()
    for metric in SCRAPED_TWICE:
        twice = f"count_over_time({metric}[1m]) >= 2"
        local_prometheus.wait_for_series(url, twice, TIMEOUT_S)
    for _ in range(3):
        burst()
    # vLLM's gauges exist only while requests run: one stream after another during the check.
    stop = threading.Event()

    def streams() -> None:
        body = {**chat, "max_tokens": 64, "stream": True}
        while not stop.is_set():
            with requests.post(chat_url, json=body, stream=True, timeout=TIMEOUT_S) as r:
                _events(r)

    under_load = threading.Thread(target=streams, daemon=True)
    under_load.start()
    try:
        problems = observe.check_queries(url, spec, keys, bound_s=TIMEOUT_S)
        results = observe.evaluate(url, observe.checks(spec, keys))
    finally:
        stop.set()
        under_load.join(TIMEOUT_S)
    print(observe.report(spec, keys, results))
    assert not problems, "\n".join(problems)
    # Under load the gauge panels quiet on an idle engine return series too.
    gauges = [r for r in results if r.check.name in GAUGE_PANELS]
    assert len(gauges) == 3 and all(r.series for r in gauges), gauges
    # The CLI a user runs (`raygke local check-queries`) says the same of this run.
    assert observe.check_run(prod_run.state) == 0
