"""raygke/smoke/coldstart.py: the cold start's figures from `raygke local up`'s progress lines, read
here from lines given; against a real stream, in tests/test_smoke_process.py (a fake `up`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raygke.smoke.coldstart import RAY_UP, SUBMITTED, Line, llm_app, render, timeline
from raygke.smoke.contract import EXAMPLE, ContractError, parse_contract
from raygke.smoke.llm import LlmResult

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parents[1]

LINES = [
    Line(100.5, "[raygke local] starting Ray head (gcs :1, temp dir /tmp/x)"),
    Line(112.0, "[raygke local] Ray up in 11.4s: head + 2 workers (9 processes)"),
    Line(113.0, "[raygke local] connected to 127.0.0.1:1; submitting 3 apps"),
    Line(120.0, "[raygke local] echo=RUNNING, recsys=DEPLOYING, llm=DEPLOYING"),
    Line(170.0, "[raygke local] echo=RUNNING, recsys=RUNNING, llm=RUNNING"),
    Line(171.0, "[raygke local] apps RUNNING and routable in 58.0s: {...}"),
    Line(174.0, "[raygke local] up in 73.5 s"),
]


def test_the_cold_start_runs_from_the_submit_to_the_first_token() -> None:
    first = LlmResult(ok=True, ttft_s=0.75, output_tokens=16, latency_s=1.0)
    figures = timeline(LINES, "llm", 100.0, 175.0, 175.25, first, "prod")
    assert figures.cold_start_s == pytest.approx(175.25 + 0.75 - 113.0)
    assert figures.ray_start_s == pytest.approx(12.0)
    assert figures.submit_to_running_s == pytest.approx(57.0)
    assert figures.running_to_serving_s == pytest.approx(5.0)
    assert (figures.first_ttft_s, figures.up_s) == (0.75, 75.0)
    doc = figures.as_dict()
    assert doc["first_request"]["ok"] is True and "deploy submit" in doc["definition"]
    assert render(figures).startswith("cold start of prod's llm app: 63.0 s from the deploy's")


def test_an_app_named_like_another_is_not_taken_for_it() -> None:
    lines = [Line(1.0, "submitting 2 apps"), Line(2.0, "my-llm=RUNNING, llm=DEPLOYING")]
    first = LlmResult(ok=True, ttft_s=0.5)
    assert timeline(lines, "llm", 0.0, 3.0, 3.0, first, "s").submit_to_running_s is None
    lines.append(Line(4.0, "my-llm=RUNNING, llm=RUNNING"))
    assert timeline(lines, "llm", 0.0, 5.0, 5.0, first, "s").submit_to_running_s == 3.0


def test_lines_not_seen_and_a_failed_first_request_leave_their_figures_empty() -> None:
    failed = LlmResult(error="http_404", message="no route")
    figures = timeline([], "llm", 0.0, 10.0, 10.0, failed, "prod")
    assert (figures.cold_start_s, figures.submit_to_running_s, figures.ray_start_s) == (
        None,
        None,
        None,
    )
    assert figures.up_s == 10.0 and figures.first_request["error"] == "http_404"
    assert "cold start of prod's llm app: - from" in render(figures)


def test_the_lines_it_reads_are_the_ones_the_local_run_writes() -> None:
    source = (REPO / "raygke" / "local_ray.py").read_text()
    assert RAY_UP.search(source) and 'f"Ray up in {ray.start_s:.1f}s' in source
    assert "submitting {len(config.applications)} apps" in source
    assert SUBMITTED.search("connected to 127.0.0.1:6379; submitting 3 apps")
    assert 'f"{n}={s}" for n, s in statuses.items()' in source


def test_a_stack_without_a_local_llm_app_has_nothing_to_start_cold() -> None:
    with pytest.raises(ContractError, match="serves no llm app on this machine"):
        llm_app(parse_contract(EXAMPLE))
