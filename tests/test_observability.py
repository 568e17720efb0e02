"""Dashboards and alerts (components/render/observability.py, components/observability.py): every
stack's dashboards and Rules against their API shapes, every query against the metric catalog and
the catalog against the installed Ray and vLLM sources, the checks' refusals, the component and the
program under mocks, and the rules through `promtool check rules` and `promtool test rules`."""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from stackfiles import STACKS

from components.render import observability as o
from infra.specs import observability_spec
from infra.stack_file import load_stack_config
from raygke.mocks import run_with_mocks

SITE = Path(o.__file__).parents[2] / ".venv/lib/python3.11/site-packages"
DOC = Path(__file__).parents[1] / "docs/observability.md"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
RULES = "kubernetes:monitoring.googleapis.com/v1:Rules"
NODE = o.NODE_TYPE_TARGET_LABEL


def spec_of(stack: str) -> o.ObservabilitySpec:
    return observability_spec(load_stack_config(stack))


def all_queries(spec: o.ObservabilitySpec) -> list[tuple[str, str]]:
    return o.dashboard_queries(spec) + o.alert_expressions(spec) + o.alert_inputs(spec)


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.pure
@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_renders_dashboards_and_rules_their_apis_accept(stack: str) -> None:
    spec = spec_of(stack)
    boards = o.render_dashboards(spec)
    assert set(boards) == {"serving", "tier", "gpu"} | ({"llm"} if spec.llm_apps else set())
    for body in boards.values():
        assert o.dashboard_problems(json.loads(json.dumps(body))) == []
    rules = o.render_rules(spec)
    assert (rules["apiVersion"], rules["kind"]) == ("monitoring.googleapis.com/v1", "Rules")
    assert rules["metadata"]["namespace"] == spec.namespace
    assert o.rules_problems(rules) == []


@pytest.mark.pure
@pytest.mark.parametrize("stack", STACKS)
def test_every_query_reads_catalog_metrics_by_their_labels(stack: str) -> None:
    for title, promql in all_queries(spec_of(stack)):
        assert o.metric_names(promql) <= set(o.CATALOG), title
        for name, matchers in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", promql):
            base = re.sub(r"_(bucket|count)$", "", name)
            labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!=|!~|=)", matchers))
            assert labels <= set(o.CATALOG[base if base in o.CATALOG else name].labels), (
                title,
                name,
            )


@pytest.mark.pure
@pytest.mark.parametrize("stack", STACKS)
def test_each_alert_compares_its_inputs(stack: str) -> None:
    """An alert's inputs are its expression's values without the comparison: each is in the
    expression verbatim, and together they read every metric it reads (the head's `absent`
    reads the same `up`)."""
    for alert in o.alerts(spec_of(stack)):
        assert alert.inputs, alert.name
        for value in alert.inputs:
            assert value in alert.expr, alert.name
        read = set().union(*(o.metric_names(v) for v in alert.inputs))
        assert read == o.metric_names(alert.expr), alert.name


@pytest.mark.pure
def test_the_head_is_told_by_its_node_type_not_its_pod_name() -> None:
    spec = spec_of("prod")
    head = o.ray_head_selector(spec)
    assert head == f'job="{spec.rayservice}-ray", {NODE}="head", instance=~".+:metrics"'


@pytest.mark.pure
def test_the_catalog_holds_only_what_queries_read() -> None:
    read = {
        n for stack in STACKS for _, q in all_queries(spec_of(stack)) for n in o.metric_names(q)
    }
    assert read == set(o.CATALOG)


def _ray_serve_sources() -> str:
    return "".join(p.read_text() for p in (SITE / "ray/serve/_private").glob("*.py"))


@pytest.mark.pure
def test_ray_and_vllm_metric_names_are_the_installed_ones() -> None:
    """Each catalog name, less Ray's `ray_` prefix and the exporter's `_total`, is defined in the
    installed source: Serve's (the HTTP/gRPC family through its `{protocol_name}` template) and
    vLLM's (`vllm:<name>`)."""
    serve = _ray_serve_sources()
    vllm = (SITE / "vllm/v1/metrics/loggers.py").read_text()
    for name in o.CATALOG:
        if name.startswith("ray_vllm_"):
            assert f'"vllm:{name.removeprefix("ray_vllm_").removesuffix("_total")}"' in vllm, name
        elif name.startswith("ray_serve_"):
            base = name.removeprefix("ray_").removesuffix("_total")
            template = re.sub(r"_(http|grpc)_", "_{protocol_name}_", base)
            assert f'"{base}"' in serve or f'f"{template}"' in serve, name
    assert (
        'NAMESPACE = "ray"'
        in (SITE / "ray/_private/telemetry/open_telemetry_metric_recorder.py").read_text()
    )


def _literal(path: Path, target: str) -> Any:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            names = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(n, ast.Name) and n.id == target for n in names):
                return ast.literal_eval(node.value)
    raise LookupError(target)


def _vllm_buckets(metric: str) -> list[float]:
    for node in ast.walk(ast.parse((SITE / "vllm/v1/metrics/loggers.py").read_text())):
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            name = kw.get("name")
            if isinstance(name, ast.Constant) and name.value == metric and "buckets" in kw:
                return ast.literal_eval(kw["buckets"])
    raise LookupError(metric)


@pytest.mark.pure
def test_objective_buckets_are_the_installed_histograms_bounds() -> None:
    constants = SITE / "ray/serve/_private/constants.py"
    assert list(o.SERVE_LATENCY_BUCKETS_MS) == _literal(constants, "DEFAULT_LATENCY_BUCKET_MS")
    assert list(o.TTFT_BUCKETS_S) == _vllm_buckets("vllm:time_to_first_token_seconds")
    assert list(o.TPOT_BUCKETS_S) == _vllm_buckets("vllm:request_time_per_output_token_seconds")


@pytest.mark.pure
def test_alerts_count_requests_over_the_bucket_at_or_above_each_objective() -> None:
    spec = spec_of("prod")  # p99Ms 250, ttftMs 1000, tpotMs 50
    exprs = dict(o.alert_expressions(spec))
    assert 'le=~"300(\\\\.0)?"' in exprs["ServeLatencyBudgetFastBurn"]
    assert 'le=~"1(\\\\.0)?"' in exprs["LlmTtftBudgetFastBurn"]
    assert 'le="0.05"' in exprs["LlmTpotBudgetFastBurn"]
    # smoke.maxErrorRate 0 pages at the floor budget, never on a single error
    assert "> 0.0144\n" in exprs["ServeErrorBudgetFastBurn"]
    looser = replace(spec, objectives=replace(spec.objectives, max_error_rate=0.02))
    assert "> 0.288\n" in dict(o.alert_expressions(looser))["ServeErrorBudgetFastBurn"]


@pytest.mark.pure
def test_only_stacks_with_an_llm_app_get_its_dashboard_and_alerts() -> None:
    names = {stack: [n for n, _ in o.alert_expressions(spec_of(stack))] for stack in STACKS}
    assert any(n.startswith("Llm") for n in names["prod"])
    assert not any(n.startswith("Llm") for n in names["dev"])
    assert {k for k, _ in o.dashboard_queries(spec_of("dev"), keys=["llm"])} == set()


@pytest.mark.pure
def test_runbooks_name_panels_that_exist() -> None:
    for stack in STACKS:
        spec = spec_of(stack)
        boards = {b.title: {p.title for p in b.panels} for b in o.dashboards(spec)}
        for alert in o.alerts(spec):
            for board, panels in re.findall(
                r"(?i)dashboard '([^']+)', panels? ('[^;]+)", alert.runbook
            ):
                assert board in boards, alert.name
                assert set(re.findall(r"'([^']+)'", panels)) <= boards[board], alert.name


# ---------------------------------------------------------------------------------------------- refusals
def _board() -> dict[str, Any]:
    return o.render_dashboards(spec_of("dev"))["serving"]


def _broken(edit: Any) -> dict[str, Any]:
    body = copy.deepcopy(_board())
    edit(body)
    return body


BAD_DASHBOARDS = [
    ("no display name", lambda b: b.pop("displayName"), "displayName is required"),
    ("too many columns", lambda b: b["mosaicLayout"].update(columns=60), "columns must be 1..48"),
    ("no tiles", lambda b: b["mosaicLayout"].update(tiles=[]), "at least one tile"),
    (
        "past the columns",
        lambda b: b["mosaicLayout"]["tiles"][1].update(xPos=30),
        r"xPos \+ width \(54\) exceeds",
    ),
    (
        "overlap",
        lambda b: b["mosaicLayout"]["tiles"][1].update(xPos=0),
        r"tiles\[1\] overlaps tiles\[0\]",
    ),
    ("negative", lambda b: b["mosaicLayout"]["tiles"][0].update(yPos=-1), "must be >= 0"),
    (
        "zero width",
        lambda b: b["mosaicLayout"]["tiles"][0].update(width=0),
        "width and height >= 1",
    ),
    (
        "no prometheusQuery",
        lambda b: b["mosaicLayout"]["tiles"][0]["widget"]["xyChart"]["dataSets"][0].update(
            timeSeriesQuery={"timeSeriesFilter": {}}
        ),
        "must hold one non-empty prometheusQuery",
    ),
    (
        "bad plot",
        lambda b: b["mosaicLayout"]["tiles"][0]["widget"]["xyChart"]["dataSets"][0].update(
            plotType="PIE"
        ),
        "plotType must be one of",
    ),
    ("untitled", lambda b: b["mosaicLayout"]["tiles"][2]["widget"].pop("title"), "needs a title"),
]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("edit", "match"), [pytest.param(e, m, id=i) for i, e, m in BAD_DASHBOARDS]
)
def test_dashboard_check_refuses_what_the_api_refuses(edit: Any, match: str) -> None:
    problems = o.dashboard_problems(_broken(edit))
    assert any(re.search(match, p) for p in problems), problems


@pytest.mark.pure
def test_dashboard_check_reports_every_problem_at_once_and_rendering_raises() -> None:
    body = _broken(lambda b: (b.pop("displayName"), b["mosaicLayout"].update(columns=0)))
    assert len(o.dashboard_problems(body)) == 2
    assert o.dashboard_problems([]) == ["the dashboard must be an object"]
    board = o.dashboards(spec_of("dev"))[0]
    with pytest.raises(ValueError, match="dashboard serving: displayName is required"):
        o.render_dashboard(replace(board, title=""))


def _rules() -> dict[str, Any]:
    return o.render_rules(spec_of("dev"))


def _rule_edit(index: int, **values: Any) -> Any:
    def edit(body: dict[str, Any]) -> None:
        rule = body["spec"]["groups"][0]["rules"][index]
        for key, value in values.items():
            if value is None:
                rule.pop(key)
            else:
                rule[key] = value

    return edit


BAD_RULES = [
    ("lowercase name", _rule_edit(0, alert="serveErrors"), "must be a CamelCase name"),
    ("snake name", _rule_edit(1, alert="Serve_errors"), "must be a CamelCase name"),
    ("no expr", _rule_edit(0, expr=" "), "expr is required"),
    ("bad severity", _rule_edit(0, labels={"severity": "page"}), "labels.severity must be one of"),
    ("no severity", _rule_edit(2, labels=None), "labels.severity must be one of"),
    (
        "no runbook",
        _rule_edit(0, annotations={"summary": "s"}),
        r"annotations.runbook must be one non-empty line",
    ),
    (
        "two-line runbook",
        _rule_edit(0, annotations={"summary": "s", "runbook": "a\nb"}),
        "annotations.runbook must be one non-empty line",
    ),
    ("duplicate", _rule_edit(1, alert="ServeErrorBudgetFastBurn"), "is defined twice"),
    ("no groups", lambda b: b["spec"].update(groups=[]), "at least one group"),
    ("no rules", lambda b: b["spec"]["groups"][0].update(rules=[]), "at least one rule"),
]


@pytest.mark.pure
@pytest.mark.parametrize(("edit", "match"), [pytest.param(e, m, id=i) for i, e, m in BAD_RULES])
def test_rules_check_refuses_rules_without_name_expr_severity_or_runbook(
    edit: Any, match: str
) -> None:
    body = _rules()
    edit(body)
    problems = o.rules_problems(body)
    assert any(re.search(match, p) for p in problems), problems


@pytest.mark.pure
@pytest.mark.parametrize(
    ("objectives", "match"),
    [
        pytest.param(
            {"tpot_ms": 100_000.0}, r"smoke.llm.tpotMs \(in seconds\) 100 is above", id="tpot"
        ),
        pytest.param(
            {"ttft_ms": 3_000_000.0}, r"smoke.llm.ttftMs \(in seconds\) 3000 is above", id="ttft"
        ),
    ],
)
def test_an_objective_above_every_bucket_is_refused_naming_the_stack_key(
    objectives: dict[str, float], match: str
) -> None:
    spec = spec_of("prod")
    with pytest.raises(ValueError, match=match):
        o.alerts(replace(spec, objectives=replace(spec.objectives, **objectives)))


# ---------------------------------------------------------------------------------------------- docs
def _doc_section() -> str:
    text = DOC.read_text()
    return text[text.index("## Dashboards and alerts") :]


@pytest.mark.pure
def test_the_docs_list_every_panel_and_alert_prod_renders() -> None:
    """docs/observability.md lists prod's panels (prod has every dashboard) and its alerts with
    their severity, wait and runbook line, exactly as rendered."""
    spec = spec_of("prod")
    section = _doc_section()
    dashboards_part = section[: section.index("### Alerts")]
    documented_boards = {
        key: re.findall(r"^- (.+)$", body, re.M)
        for key, body in re.findall(
            r"^#### `(\w+)`.*\n((?:.*\n)*?)(?=^####|\Z)", dashboards_part, re.M
        )
    }
    assert documented_boards == {b.key: [p.title for p in b.panels] for b in o.dashboards(spec)}
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (\w+) \| (.+) \|$", section, re.M)
    assert rows == [
        (a.name, a.severity, a.for_, a.runbook.replace("|", "\\|")) for a in o.alerts(spec)
    ]


# ---------------------------------------------------------------------------------------------- mocks
def _deploy(**extra: Any):
    spec = spec_of("prod")

    def program() -> dict[str, Any]:
        from components.observability import Observability

        provider = k8s.Provider("k8s", kubeconfig="{}")
        obs = Observability(
            "obs",
            {"spec": spec, "project": "my-proj", **extra},  # type: ignore[typeddict-item]
            opts=pulumi.ResourceOptions(provider=provider),
        )
        return {"urls": obs.dashboard_urls, "ids": obs.dashboard_ids, "rules": obs.rules_name}

    return spec, run_with_mocks(program)


@pytest.mark.mocks
def test_the_component_registers_each_dashboard_and_the_rules_as_children() -> None:
    spec, (inv, outputs) = _deploy()
    component = inv.one("raygke:observability:Observability", "obs")
    boards = inv.of_type(DASHBOARD)
    assert {r.name for r in boards} == {f"obs-{key}" for key in o.render_dashboards(spec)}
    for board in boards:
        assert board.parent == component.urn
        assert board.inputs["project"] == "my-proj"
        key = board.name.removeprefix("obs-")
        assert json.loads(board.inputs["dashboardJson"]) == o.render_dashboards(spec)[key]
    rules = inv.one(RULES)
    assert rules.parent == component.urn
    assert rules.inputs["spec"] == o.render_rules(spec)["spec"]
    assert set(outputs["urls"]) == set(o.render_dashboards(spec))
    assert all(u.startswith("https://console.cloud.google.com/") for u in outputs["urls"].values())
    assert outputs["rules"] == "serving-alerts"


@pytest.mark.mocks
def test_the_rules_can_be_left_out() -> None:
    _, (inv, outputs) = _deploy(rules=False)
    assert inv.of_type(RULES) == []
    assert outputs["rules"] == ""


@pytest.mark.mocks
@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_registers_its_dashboards_rules_tier_monitoring_and_dcgm(stack: str) -> None:
    from test_program import planned

    inv = planned(stack).inventory
    spec = spec_of(stack)
    assert len(inv.of_type(DASHBOARD)) == len(o.dashboards(spec))
    assert inv.one(RULES).inputs["metadata"]["namespace"] == spec.namespace
    monitors = {
        r.inputs["metadata"]["name"]
        for r in inv.of_type("kubernetes:monitoring.googleapis.com/v1:PodMonitoring")
    }
    assert monitors == {f"{spec.rayservice}-ray", spec.tier}  # Ray's pods and our tier
    cluster = inv.one("gcp:container/cluster:Cluster")
    assert "DCGM" in cluster.inputs["monitoringConfig"]["enableComponents"]


# ---------------------------------------------------------------------------------------------- promtool
def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, (
        "promtool is missing: `make test` installs Debian's prometheus package (`make prometheus`)"
    )
    return binary


def _run_promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.process
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_every_rule_and_every_panel_query(stack: str, tmp_path: Path) -> None:
    spec = spec_of(stack)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": o.rule_groups(spec)}))
    # Each panel's query as a recording rule: promtool parses it as the PromQL it is.
    panels = [
        {"record": f"panel_{i}", "expr": q} for i, (_, q) in enumerate(o.dashboard_queries(spec))
    ]
    (tmp_path / "panels.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": panels}]})
    )
    out = _run_promtool("check", "rules", "rules.yaml", "panels.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(o.alerts(spec))} rules found" in out


HOURS = 8 * 60  # samples at 1 m: the 6 h windows of the slow burns fit, evaluated at 7 h
EVAL = "7h"


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _counter(per_minute: float) -> str:
    return f"0+{per_minute:g}x{HOURS}"


def _gauge(value: float) -> str:
    return f"{value:g}x{HOURS}"


def _inputs(healthy: bool, spec: o.ObservabilitySpec) -> list[dict[str, str]]:
    """A stack's series at 1 m: echo failing and slow, its deployment unhealthy, the tier without
    an UP server, the model slow to its first token, no head (or all of it healthy); recsys healthy
    over gRPC throughout, and the model's TPOT within its objective throughout."""
    model = spec.llm_apps[0].model or ""
    http = {"route": "/echo", "method": "GET"}
    grpc = {"route": "recsys", "method": "/raygke.recsys.v1.RecsysService/Rank"}
    errors, slow, ttft_ok = (0, 0, 100) if healthy else (10, 50, 50)
    latency = "ray_serve_http_request_latency_ms"
    return [
        _series("ray_serve_num_http_requests_total", {"application": "echo", "status_code": "200", **http}, _counter(100 - errors)),
        _series("ray_serve_num_http_requests_total", {"application": "echo", "status_code": "503", **http}, _counter(errors)),
        _series("ray_serve_num_grpc_requests_total", {"application": "recsys", "status_code": "OK", **grpc}, _counter(100)),
        _series("ray_serve_num_grpc_requests_total", {"application": "recsys", "status_code": "INVALID_ARGUMENT", **grpc}, _counter(30)),
        _series(f"{latency}_bucket", {"application": "echo", "le": "300.0", **http}, _counter(100 - slow)),
        _series(f"{latency}_count", {"application": "echo", **http}, _counter(100)),
        _series("ray_serve_grpc_request_latency_ms_bucket", {"application": "recsys", "le": "300.0", **grpc}, _counter(100)),
        _series("ray_serve_grpc_request_latency_ms_count", {"application": "recsys", **grpc}, _counter(100)),
        _series("ray_vllm_time_to_first_token_seconds_bucket", {"model_name": model, "le": "1.0"}, _counter(ttft_ok)),
        _series("ray_vllm_time_to_first_token_seconds_count", {"model_name": model}, _counter(100)),
        _series("ray_vllm_request_time_per_output_token_seconds_bucket", {"model_name": model, "le": "0.05"}, _counter(100)),
        _series("ray_vllm_request_time_per_output_token_seconds_count", {"model_name": model}, _counter(100)),
        _series("ray_serve_application_status", {"application": "echo"}, _gauge(6 if healthy else 5)),
        _series("ray_serve_application_status", {"application": "recsys"}, _gauge(6)),
        _series("ray_serve_deployment_status", {"application": "echo", "deployment": "Echo"}, _gauge(6 if healthy else 2)),
        _series("ray_serve_deployment_status", {"application": "recsys", "deployment": "Ranker"}, _gauge(6)),
        _series("haproxy_backend_active_servers", {"proxy": "be_ray_http", "instance": "ingress-1:metrics"}, _gauge(2 if healthy else 0)),
        _series("haproxy_backend_active_servers", {"proxy": "be_ray_grpc", "instance": "ingress-1:metrics"}, _gauge(2)),
        _series("up", {"job": f"{spec.rayservice}-ray", NODE: "worker", "instance": f"{spec.rayservice}-ab1cd-worker-x:metrics"}, _gauge(1)),
        # The head's Ray HAProxy answers; its metrics agent does not (or it is not scraped at all).
        _series("up", {"job": f"{spec.rayservice}-ray", NODE: "head", "instance": f"{spec.rayservice}-ab1cd-head-y:haproxy-metrics"}, _gauge(1)),
        _series("up", {"job": f"{spec.rayservice}-ray", NODE: "head", "instance": f"{spec.rayservice}-ab1cd-head-y:metrics"}, _gauge(1 if healthy else 0)),
    ]  # fmt: skip


def _expected(spec: o.ObservabilitySpec) -> dict[str, list[dict[str, str]]]:
    """The labels each alert fires with on the failing series (beside its severity)."""
    model = spec.llm_apps[0].model or ""
    burns = {
        "ServeErrorBudget": {"application": "echo"},
        "ServeLatencyBudget": {"application": "echo"},
        "LlmTtftBudget": {"model_name": model},
    }
    firing = {f"{k}{s}Burn": [v] for k, v in burns.items() for s in ("Fast", "Slow")}
    return {
        **firing,
        "LlmTpotBudgetFastBurn": [],
        "LlmTpotBudgetSlowBurn": [],
        "ServeApplicationNotRunning": [{"application": "echo"}],
        "ServeDeploymentUnhealthy": [{"application": "echo", "deployment": "Echo"}],
        "IngressTierNoBackendUp": [{"proxy": "be_ray_http", "instance": "ingress-1:metrics"}],
        "RayHeadDown": [{}],  # sum() keeps no label
    }


@pytest.mark.process
def test_promtool_unit_tests_each_alert_firing_and_not_firing(tmp_path: Path) -> None:
    spec = spec_of("prod")  # the stack with every kind of alert
    alerts = {a.name: a for a in o.alerts(spec)}
    expected = _expected(spec)
    assert set(expected) == set(alerts)  # a new alert needs its case here

    def cases(healthy: bool) -> list[dict[str, Any]]:
        return [
            {
                "eval_time": EVAL,
                "alertname": name,
                "exp_alerts": [
                    {
                        "exp_labels": {**labels, "severity": alerts[name].severity},
                        "exp_annotations": {
                            "summary": alerts[name].summary,
                            "runbook": alerts[name].runbook,
                        },
                    }
                    for labels in ([] if healthy else expected[name])
                ],
            }
            for name in alerts
        ]

    tests = [
        {
            "interval": "1m",
            "input_series": _inputs(healthy, spec),
            "alert_rule_test": cases(healthy),
        }
        for healthy in (False, True)
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": o.rule_groups(spec)}))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    assert "SUCCESS" in _run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)


@pytest.mark.process
def test_the_head_alert_fires_when_no_head_is_scraped_at_all(tmp_path: Path) -> None:
    """RayHeadDown's other branch: the workers are scraped, the head is not (its pod gone, or its
    PodMonitoring no longer selecting it), so `absent()` fires, with the selector's equality labels."""
    spec = spec_of("prod")
    [head] = [a for a in o.alerts(spec) if a.name == "RayHeadDown"]
    job = f"{spec.rayservice}-ray"
    worker = {"job": job, NODE: "worker", "instance": f"{spec.rayservice}-ab1cd-worker-x:metrics"}
    test = {
        "interval": "1m",
        "input_series": [_series("up", worker, _gauge(1))],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "RayHeadDown",
                "exp_alerts": [
                    {
                        "exp_labels": {"job": job, NODE: "head", "severity": head.severity},
                        "exp_annotations": {"summary": head.summary, "runbook": head.runbook},
                    }
                ],
            }
        ],
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": o.rule_groups(spec)}))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [test]})
    )
    assert "SUCCESS" in _run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)
