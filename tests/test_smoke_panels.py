"""raygke/smoke/panels.py and its wiring into `raygke smoke`: when a smoke run draws the stack's
cloud dashboards (a local run's contract whose state.json records a Prometheus; the line saying how
to get them otherwise; nothing for a cluster), which dashboards a local run can fill, and a real
Prometheus (Debian's) scraping stand-in exporters that serve a few of the catalog's metrics with
changing values, drawn panel by panel into PNGs.

No Ray, no vLLM: the stand-ins are plain HTTP servers on free 127.0.0.1 ports."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from bounds import CLUSTER_CHANGE_S, PROCESS_EXIT_S
from exporter import exporter
from PIL import Image

from components.render.haproxy import HTTP_BACKEND
from components.render.observability import dashboards
from infra.outputs import smoke_contract
from infra.specs import observability_spec
from infra.stack_file import load_stack_config
from raygke import host, local_prometheus
from raygke.smoke import cli, panels
from raygke.smoke.contract import parse_contract
from raygke.smoke.panels import NO_PROMETHEUS, NO_SERIES, RunPrometheus
from raygke.smoke.report import REPORT_SCHEMA

STACK = (
    "prod"  # every local dashboard: serving, tier and llm (its llm app runs on vLLM's CPU build)
)
URLS = ("http://127.0.0.1:1", "127.0.0.1:2")
Source = Literal["pulumi", "local"]


def _run_dir(
    tmp: Path, source: Source, state: dict[str, Any] | None, http_url: str = URLS[0]
) -> Path:
    """A run's state dir as `raygke local up` leaves it: outputs.json, and state.json if given."""
    tmp.mkdir(parents=True, exist_ok=True)
    contract = smoke_contract(
        load_stack_config(STACK), source=source, http_url=http_url, grpc_target=URLS[1]
    )
    (tmp / "outputs.json").write_text(json.dumps(contract))
    if state is not None:
        (tmp / "state.json").write_text(json.dumps(state))
    return tmp / "outputs.json"


def _decide(outputs: Path | None, source: Source = "local") -> Any:
    """run_prometheus on the contract in `outputs`, or (None: --stack) on one built here."""
    if outputs is None:
        doc = smoke_contract(
            load_stack_config(STACK), source=source, http_url=URLS[0], grpc_target=URLS[1]
        )
    else:
        doc = json.loads(outputs.read_text())
    return panels.run_prometheus(parse_contract(doc), outputs)


PROMETHEUS_STATE = {
    "stack": STACK,
    "pids": [],
    "prometheus": {"pid": 1, "port": 9, "url": "http://127.0.0.1:9"},
}


# ---------------------------------------------------------------------------------------------
# The wiring decision (pure: files only)


@pytest.mark.pure
def test_a_local_run_with_a_prometheus_draws_from_it(tmp_path: Path):
    outputs = _run_dir(tmp_path, "local", PROMETHEUS_STATE)
    assert _decide(outputs) == (RunPrometheus("http://127.0.0.1:9", STACK), None)


@pytest.mark.pure
@pytest.mark.parametrize(
    "state",
    [None, {"stack": STACK, "pids": []}, "half-written {"],
    ids=["none", "no-prometheus", "unreadable"],
)
def test_a_local_run_without_a_prometheus_says_how_to_get_one(tmp_path: Path, state: Any):
    outputs = _run_dir(tmp_path, "local", state if isinstance(state, dict) else None)
    if isinstance(state, str):
        (tmp_path / "state.json").write_text(state)
    assert _decide(outputs) == (None, NO_PROMETHEUS)
    assert "`raygke local up --prometheus`" in NO_PROMETHEUS


@pytest.mark.pure
def test_a_cluster_never_draws_nor_says_anything(tmp_path: Path):
    """A cluster's contract, even beside a state.json with a Prometheus, and --stack (no file)."""
    outputs = _run_dir(tmp_path, "pulumi", PROMETHEUS_STATE)
    assert _decide(outputs) == (None, None)
    assert _decide(None, source="pulumi") == (None, None)
    assert _decide(None, source="local") == (None, None)  # no file to find the run by


@pytest.mark.pure
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_no_gpu_dashboard_locally_and_llm_only_where_an_llm_app_runs_locally(stack: str):
    config = load_stack_config(stack)
    boards, skipped = panels.local_dashboards(config)
    every = {b.key: b for b in dashboards(observability_spec(config))}
    llm_here = any(a.kind == "llm" and a.runs_locally for a in config.apps)
    assert [b.key for b in boards] == ["serving", "tier"] + (["llm"] if llm_here else [])
    assert "gpu" in skipped and set(skipped) | {b.key for b in boards} == set(every)
    assert all(b == every[b.key] for b in boards)  # the cloud's panels, not copies
    # An llm app left on its GPU (no localArgs device: cpu) leaves the llm dashboard out.
    gpu_only = config.model_copy(
        update={"apps": [a.model_copy(update={"local_args": {}}) for a in config.apps]}
    )
    boards, skipped = panels.local_dashboards(gpu_only)
    assert "llm" not in {b.key for b in boards}
    assert ("llm" in skipped) == any(a.kind == "llm" for a in config.apps)


@pytest.mark.pure
def test_a_panel_without_series_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from raygke.smoke import plot

    saved: list[Any] = []
    monkeypatch.setattr(plot, "_save", lambda plt, fig, path: saved.append(fig) or path)
    board = panels.local_dashboards(load_stack_config(STACK))[0][0]
    line = [panels.Series("application=echo", [0.0, 1.0], [1.0, 2.0])]
    drawn = [line] + [[] for _ in board.panels[1:]]
    panels.draw_dashboard(board, drawn, 2.0, tmp_path / "x.png")
    axes = saved[0].axes
    assert [ax.get_title() for ax in axes[: len(board.panels)]] == [p.title for p in board.panels]
    texts = [[t.get_text() for t in ax.texts] for ax in axes[: len(board.panels)]]
    assert texts == [[]] + [[NO_SERIES]] * (len(board.panels) - 1)
    assert axes[0].get_legend().get_texts()[0].get_text() == "application=echo"


# ---------------------------------------------------------------------------------------------
# A real Prometheus over stand-in exporters


def _prometheus_installed() -> None:
    assert shutil.which("prometheus") and shutil.which("promtool"), (
        "Prometheus is missing: `make prometheus` installs Debian's package"
    )


MODEL = load_stack_config(STACK).apps[2].args["model_id"]


def _ray_page(n: int) -> str:
    """A Ray node's metrics agent after n scrapes: a request counter that grows, gauges."""
    return (
        "# TYPE ray_serve_num_http_requests_total counter\n"
        f'ray_serve_num_http_requests_total{{application="echo",status_code="200"}} {10 * n}\n'
        "# TYPE ray_serve_deployment_replica_healthy gauge\n"
        'ray_serve_deployment_replica_healthy{application="echo",deployment="Echo",replica="r1"} 1\n'
        "# TYPE ray_serve_application_status gauge\n"
        'ray_serve_application_status{application="echo"} 6\n'
        "# TYPE ray_vllm_num_requests_running gauge\n"
        f'ray_vllm_num_requests_running{{model_name="{MODEL}"}} {n % 4}\n'
    )


def _tier_page(n: int) -> str:
    """Our tier's HAProxy exporter after n scrapes: only 2xx responses, a queue that moves."""
    proxy = f'proxy="{HTTP_BACKEND}"'
    return (
        "# TYPE haproxy_backend_http_requests_total counter\n"
        f"haproxy_backend_http_requests_total{{{proxy}}} {7 * n}\n"
        "# TYPE haproxy_backend_http_responses_total counter\n"
        f'haproxy_backend_http_responses_total{{{proxy},code="2xx"}} {7 * n}\n'
        f'haproxy_backend_http_responses_total{{{proxy},code="5xx"}} 0\n'
        "# TYPE haproxy_backend_current_queue gauge\n"
        f"haproxy_backend_current_queue{{{proxy}}} {n % 3}\n"
    )


# Series per panel from the stand-ins; every other panel has none. Filters count: the tier's 5xx
# counter is one series of "Tier 5xx/s by cause" (at 0/s), Serve's 200s none of the server errors'.
SERIES = {
    "Requests/s by app and protocol": 1,
    "Replicas per deployment: healthy and target": 1,
    "Application status (6 is RUNNING)": 1,
    "Tier requests/s by backend": 1,
    "Tier responses/s by backend and class": 2,
    "Tier 5xx/s by cause": 1,
    "Tier queued requests": 1,
    "Running and waiting requests": 1,
}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    """A Prometheus scraping both stand-ins every second, once both rates have two samples; its
    URL and the Unix time just before anything started (the window's start)."""
    _prometheus_installed()
    start = time.time()
    stand_ins = contextlib.ExitStack()
    ray_port = stand_ins.enter_context(exporter(_ray_page))
    tier_port = stand_ins.enter_context(exporter(_tier_page))
    config = {
        "scrape_configs": [
            {
                "job_name": "stand-ins",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{ray_port}", f"127.0.0.1:{tier_port}"]}
                ],
            }
        ]
    }
    port = host.plan_ports(["prometheus"])["prometheus"]
    run_dir = tmp_path_factory.mktemp("prometheus")
    pid = local_prometheus.start(config, run_dir, port)
    url = local_prometheus.url(port)
    try:
        local_prometheus.wait_ready(url, pid=pid, run_dir=run_dir)
        boards, _ = panels.local_dashboards(load_stack_config(STACK))
        # Until the first panels' rates (two scrapes of each stand-in) are on the range query's
        # grid, which may end up to a step before now: an instant query can see them earlier.
        deadline = time.monotonic() + CLUSTER_CHANGE_S
        for board in boards[:2]:
            while not panels.panel_series(url, board.panels[0], start, time.time()):
                assert time.monotonic() < deadline, f"no series for {board.panels[0].title}"
                time.sleep(0.2)
        yield url, start
    finally:
        local_prometheus.stop(pid, timeout_s=PROCESS_EXIT_S)
        stand_ins.close()


def _valid_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0


@pytest.mark.process
def test_every_local_dashboard_is_drawn_with_its_panels_series(
    prometheus: tuple[str, float], tmp_path: Path
):
    url, start = prometheus
    end = time.time()
    boards, _ = panels.local_dashboards(load_stack_config(STACK))
    drawn = [panels.draw(url, board, start, end, tmp_path) for board in boards]
    assert [d["file"] for d in drawn] == [
        str(tmp_path / f"dashboard_{key}.png") for key in ("serving", "tier", "llm")
    ]
    for entry in drawn:
        _valid_png(Path(entry["file"]))
    counts = {p["title"]: p["series"] for d in drawn for p in d["panels"]}
    assert counts == {title: SERIES.get(title, 0) for title in counts}
    # A series is labelled by its labels, led by its data set where the panel has several.
    requests = boards[0].panels[0]
    [series] = panels.panel_series(url, requests, start, end)
    assert series.label == "http: application=echo"
    assert all(0 <= t <= end - start + 1 for t in series.t)
    assert any(v > 0 for v in series.v)


@pytest.mark.process
def test_raygke_smoke_on_a_local_run_with_prometheus_reports_the_pictures(
    prometheus: tuple[str, float], tmp_path: Path
):
    """`raygke smoke` on a run's outputs.json whose state.json records the Prometheus: the
    deployment is down (nothing on its port: the health gate fails, exit 1), and the dashboards
    are still drawn over the run, listed in report.json and linked from report.md."""
    url, _ = prometheus
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: a connect is refused at once
        http_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        state = {**PROMETHEUS_STATE, "prometheus": {"pid": 1, "port": 9, "url": url}}
        outputs = _run_dir(tmp_path / "run", "local", state, http_url=http_url)
        out = tmp_path / "report"
        assert cli.main(["--outputs", str(outputs), "--out", str(out)]) == cli.EXIT_GATE_FAILED
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    drawn = report["dashboards"]
    assert drawn["prometheus"] == url and drawn["note"] is None
    assert drawn["files"] == [str(out / f"dashboard_{k}.png") for k in ("serving", "tier", "llm")]
    assert list(drawn["skipped"]) == ["gpu"]
    for board in drawn["boards"]:
        _valid_png(Path(board["file"]))
        assert {p["title"]: p["series"] for p in board["panels"]} == {
            p["title"]: SERIES.get(p["title"], 0) for p in board["panels"]
        }
    markdown = (out / "report.md").read_text()
    assert "(dashboard_serving.png)" in markdown and "`gpu` not drawn" in markdown

    assert cli.main(["--outputs", str(outputs), "--out", str(tmp_path / "np"), "--no-plots"]) == 1
    assert json.loads((tmp_path / "np" / "report.json").read_text())["dashboards"] is None
    assert not list((tmp_path / "np").glob("*.png"))


@pytest.mark.process
def test_raygke_smoke_on_a_local_run_without_prometheus_says_how_in_one_line(tmp_path: Path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        http_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        outputs = _run_dir(tmp_path / "run", "local", {"stack": STACK, "pids": []}, http_url)
        out = tmp_path / "report"
        assert cli.main(["--outputs", str(outputs), "--out", str(out)]) == cli.EXIT_GATE_FAILED
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["dashboards"] == {"prometheus": None, "note": NO_PROMETHEUS}
    assert NO_PROMETHEUS in (out / "report.md").read_text().splitlines()
    assert not list(out.glob("dashboard_*.png"))
