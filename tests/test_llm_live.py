"""app/llm.py on vLLM's CPU build: the llm app serving app/tiny_llm.py's model over real HTTP.

One isolated Ray head (raygke/local_ray.py, the package's serve flags: Ray's HAProxy ingress),
the llm app deployed from a serve config as the RayService carries it, under prod's model id, with
the args a CPU run needs. Checks the OpenAI API (models, chat and text completions, streaming and
not), that bad input gets an OpenAI-style 4xx and the engine keeps serving, and that stopping the
head leaves none of vLLM's processes behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from procs import alive, cmdline

from app.tiny_llm import write_tiny_llm
from infra.config import FLAGS_ONLY
from infra.stack_file import load_stack_config
from raygke import local_ray

pytestmark = pytest.mark.process

MAX_MODEL_LEN = 512
TIMEOUT_S = 120  # per request: a hung engine fails the test instead of stalling it


def _tiny_llm_args(model_dir: Path) -> dict[str, Any]:
    """prod's llm args with what a CPU run of the tiny model needs merged over them."""
    (prod_llm,) = [a for a in load_stack_config("prod").apps if a.kind == "llm"]
    return {
        **prod_llm.args,
        "device": "cpu",
        "source": "local",
        "model_source": str(model_dir),
        "load_format": "dummy",
        "enforce_eager": True,
        "max_model_len": MAX_MODEL_LEN,
        "max_num_seqs": 16,
        "kv_cache_gib": 1,
    }


@dataclass(frozen=True)
class LlmRun:
    url: str  # the app's route prefix on Ray's ingress
    model_id: str


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmRun]:
    root = tmp_path_factory.mktemp("llm")
    args = _tiny_llm_args(root / "tiny-llm")
    write_tiny_llm(Path(args["model_source"]))
    serve_config = {
        "applications": [
            {"name": "llm", "route_prefix": "/llm", "import_path": "app.llm:build_app",
             "args": args}
        ]
    }  # fmt: skip
    # Logical CPUs (reservations, not cores) for OpenAiIngress, LLMServer and the engine's bundle.
    ray = local_ray.start(root / "run", env=FLAGS_ONLY, num_cpus=4)
    engines: list[int] = []
    try:
        local_ray.deploy(ray, serve_config, timeout_s=400)
        # vLLM's engine processes (spawned by the LLMServer replica) belong to the head's session.
        engines = [p for p in local_ray.processes(ray) if "EngineCore" in cmdline(p)]
        assert engines, "no vLLM EngineCore among the head's processes"
        yield LlmRun(f"{ray.http_url}/llm", args["model_id"])
    finally:
        local_ray.stop(ray)  # by PID; raises if any of the head's processes survive SIGKILL
        assert not [p for p in engines if alive(p)], "vLLM's engine outlived the head"


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


Body = Callable[[str], str | dict[str, Any]]  # the request body for a model id

# (case, body, the status OpenAI's API answers it with, the error's shape)
BAD_INPUT: list[tuple[str, Body, int, str]] = [
    ("malformed JSON", lambda m: f'{{"model": "{m}", "messages": [', 400, "openai"),
    ("no messages", lambda m: {"model": m, "max_tokens": 4}, 400, "openai"),
    # Ray Serve LLM 2.60's ingress raises FastAPI's HTTPException for a model it does not serve
    # (OpenAiIngress._get_model_id): {"detail": "..."}, not OpenAI's {"error": {...}}.
    ("unknown model", lambda m: _chat("no-such-model"), 404, "fastapi"),
    ("max_tokens beyond the model length", lambda m: _chat(m, max_tokens=MAX_MODEL_LEN + 1), 400,
     "openai"),
    ("prompt over the limit", lambda m: _chat(m, "fox " * MAX_MODEL_LEN), 400, "openai"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "shape"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_gets_an_error_and_the_engine_keeps_serving(
    llm_run: LlmRun, case: str, body: Body, status: int, shape: str
) -> None:
    t0 = time.monotonic()
    r = _post(llm_run, "/v1/chat/completions", body(llm_run.model_id))
    assert r.status_code == status, f"{case}: {r.status_code} {r.text}"
    if shape == "openai":
        error = r.json()["error"]
        assert error["message"] and error["type"], error
    else:
        assert "no-such-model" in r.json()["detail"], r.text
    assert time.monotonic() - t0 < 30, f"{case}: the error took {time.monotonic() - t0:.0f}s"
    ok = _post(llm_run, "/v1/chat/completions", _chat(llm_run.model_id, max_tokens=4))
    assert ok.status_code == 200, f"after {case}: {ok.text}"
