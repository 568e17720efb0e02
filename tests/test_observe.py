"""raygke/observe.py: which checks a stack's queries get (pure), and their verdicts from a real
Prometheus (Debian's) scraping a stand-in exporter: a wrong metric name fails naming its panel, a
quiet query whose metric is missing fails too, NaN is no data, a firing alert fails.

The live proof on real local runs is in tests/test_local_run.py (dev) and tests/test_llm_live.py
(prod's llm app)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounds import CLUSTER_CHANGE_S, PROCESS_EXIT_S
from exporter import exporter

from components.render import observability as o
from infra.specs import observability_spec
from infra.stack_file import load_stack_config
from raygke import host, local_prometheus, observe
from raygke.observe import Check


def spec_of(stack: str) -> o.ObservabilitySpec:
    return observability_spec(load_stack_config(stack))


@pytest.mark.pure
def test_local_runs_check_serving_and_the_tier_and_llm_where_it_runs_never_gpus() -> None:
    assert observe.local_dashboards(load_stack_config("dev")) == ("serving", "tier")
    assert observe.local_dashboards(load_stack_config("prod")) == ("serving", "tier", "llm")


@pytest.mark.pure
def test_every_panel_query_and_alert_is_checked_and_each_quiet_one_is_named() -> None:
    spec = spec_of("prod")
    keys = ("serving", "tier", "llm")
    found = observe.checks(spec, keys)
    assert [c.promql for c in found if c.kind == "panel"] == [
        q for _, q in o.dashboard_queries(spec, keys)
    ]
    assert [c.promql for c in found if c.kind == "alert input"] == [
        q for _, q in o.alert_inputs(spec)
    ]
    assert [c.name for c in found if c.kind == "alert"] == [a.name for a in o.alerts(spec)]
    # Each quiet entry names a panel or an alert that exists, with its reason.
    names = {t for t, _ in o.dashboard_queries(spec)} | {a.name for a in o.alerts(spec)}
    assert set(observe.QUIET) <= names
    assert all(reason.strip() for reason in observe.QUIET.values())
    assert not any(c.quiet for c in found if c.kind == "alert")


@pytest.mark.pure
def test_the_report_says_what_is_not_checked_and_names_each_failure() -> None:
    spec = spec_of("dev")
    results = [
        observe.Result(Check("panel", "Tier queued requests", "q"), 2, None),
        observe.Result(Check("panel", "p99", "q"), 0, "no series"),
        observe.Result(Check("alert", "RayHeadDown", "q"), 0, None),
    ]
    text = observe.report(spec, ("serving", "tier"), results)
    assert "panel 'Tier queued requests': OK: 2 series" in text
    assert "panel 'p99': FAIL: no series" in text
    assert "alert 'RayHeadDown': OK: not firing" in text
    assert "dashboard 'gpu': not checked here: GKE's DCGM exporter" in text
    assert text.endswith("2 of 3 checks passed\nfailed: p99")


@pytest.mark.pure
def test_check_queries_needs_a_run_with_prometheus(capsys: pytest.CaptureFixture[str]) -> None:
    from raygke.cli import main

    assert main(["local", "check-queries", "--state-dir", "/nonexistent/x"]) == 2
    assert "start one with `raygke local up --prometheus`" in capsys.readouterr().err
    with pytest.raises(local_prometheus.PrometheusError, match=r"up --prometheus"):
        observe.check_run({"stack": "dev"})


@pytest.mark.pure
def test_check_queries_on_a_run_without_prometheus_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raygke.cli import main

    state = {"stack": "dev", "profile": "tuned", "pids": [], "ray": {}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert main(["local", "check-queries", "--state-dir", str(tmp_path)]) == 1
    assert "start it with `raygke local up --prometheus`" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A real Prometheus

EXPORTED = (
    "# TYPE ray_serve_num_http_requests_total counter\n"
    'ray_serve_num_http_requests_total{application="echo",status_code="200"} 7\n'
    "# TYPE ray_serve_application_status gauge\n"
    'ray_serve_application_status{application="echo"} 6\n'
)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping the stand-in exporter every second, its URL once it holds a sample."""
    assert shutil.which("prometheus"), "`make prometheus` installs Debian's package"
    with exporter(lambda _: EXPORTED) as stand_in:
        config = {
            "scrape_configs": [
                {
                    "job_name": "stand-in",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": [f"127.0.0.1:{stand_in}"]}],
                }
            ]
        }
        port = host.plan_ports(["prometheus"])["prometheus"]
        pid = local_prometheus.start(config, tmp_path, port)
        url = local_prometheus.url(port)
        try:
            local_prometheus.wait_ready(url, pid=pid, run_dir=tmp_path)
            # Three samples: a rate over them exists (and is 0: the counter does not move).
            local_prometheus.wait_for_series(
                url, "count_over_time(ray_serve_application_status[1m]) >= 3", CLUSTER_CHANGE_S
            )
            yield url
        finally:
            local_prometheus.stop(pid, timeout_s=PROCESS_EXIT_S)


@pytest.mark.process
def test_each_verdict_from_a_real_prometheus(prometheus: str) -> None:
    requests = "ray_serve_num_http_requests_total"
    verdicts = {
        r.check.name: r.problem
        for r in observe.evaluate(
            prometheus,
            [
                Check("panel", "right name", f"sum by (application) (rate({requests}[5m]))"),
                Check(
                    "panel",
                    "wrong name",
                    'sum(rate(ray_serve_num_http_request_total{application=~".+"}[5m]))',
                ),
                Check("panel", "wrong label", f'sum({requests}{{application="nope"}})'),
                Check("panel", "refused", "sum("),
                Check(
                    "panel",
                    "no requests moved",
                    f"sum(rate({requests}[5m])) / sum(rate({requests}[5m]))",
                ),
                Check("panel", "quiet", f'{requests}{{status_code="500"}}', "no error"),
                Check(
                    "panel", "quiet, wrong name", 'ray_serve_num_grpc_requests_total{a="b"}', "x"
                ),
                Check("alert", "quiet alert", "ray_serve_application_status != 6"),
                Check("alert", "firing alert", "ray_serve_application_status == 6"),
            ],
        )
    }
    assert verdicts["right name"] is None
    assert verdicts["wrong name"] == ("no series: none of ray_serve_num_http_request_total at all")
    assert verdicts["wrong label"].startswith("no series, though its metrics have some")
    assert verdicts["refused"] and verdicts["refused"].startswith("refused: ")
    assert verdicts["no requests moved"] == "NaN only: no samples moved in its window"
    assert verdicts["quiet"] is None
    assert verdicts["quiet, wrong name"] == (
        "its metrics have no series: ray_serve_num_grpc_requests_total"
    )
    assert verdicts["quiet alert"] is None
    assert verdicts["firing alert"] and "fires on a healthy run" in verdicts["firing alert"]
