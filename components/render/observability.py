"""A stack's dashboards and alerts: Cloud Monitoring dashboards and Managed Prometheus `Rules`.

Owns: the catalog of every metric a panel or alert reads (`CATALOG`: its exported name, its labels,
and where the name was read), each dashboard's panels and each alert as PromQL, the alerts'
objectives and burn rates, the dashboards' JSON body (REST `projects.dashboards`) and the `Rules`
custom resource, and the checks of both shapes (`dashboard_problems`, `rules_problems`), run on
everything rendered here. `dashboard_queries`, `alert_expressions` and `alert_inputs` list every
query, for anything that evaluates them against a real Prometheus (raygke/observe.py).
Does not own: the stack's objectives (infra/config.py `SmokeConfig`), the price table
(infra/cost.py), scraping (the PodMonitorings: components/render/rayservice.py, ingress_tier.py),
registering (components/observability.py). Pure: no pulumi.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from components.render.haproxy import GRPC_BACKEND, HTTP_BACKEND
from components.render.rayservice import (
    NODE_TYPE_TARGET_LABEL,
    ray_pod_monitoring_name,
    serve_service_name,
)

Protocol = Literal["http", "grpc"]


# ------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class ObservedApp:
    """One Serve application as the metrics name it."""

    name: str  # Ray Serve's `application` label
    kind: str  # echo | recsys | llm | custom
    protocols: tuple[Protocol, ...]
    model: str | None = None  # an llm app's model id: vLLM's `model_name` label


@dataclass(frozen=True)
class Objectives:
    """The stack's smoke objectives (infra/config.py SmokeConfig, LlmSmokeConfig)."""

    p99_ms: float
    max_error_rate: float
    ttft_ms: float
    tpot_ms: float


@dataclass(frozen=True)
class ObservabilitySpec:
    stack: str
    namespace: str  # the Ray pods' and the tier's
    rayservice: str
    tier: str  # our HAProxy tier's name (its Deployment and PodMonitoring)
    apps: tuple[ObservedApp, ...]
    objectives: Objectives
    gpus: bool  # the stack has a GPU pool (GKE's managed DCGM metrics)
    gpu_node_hourly_usd: float | None = None  # list price of one GPU node; None: no cost panel

    @property
    def llm_apps(self) -> tuple[ObservedApp, ...]:
        return tuple(a for a in self.apps if a.kind == "llm" and a.model)

    @property
    def protocols(self) -> tuple[Protocol, ...]:
        served = {p for a in self.apps for p in a.protocols}
        return tuple(p for p in ("http", "grpc") if p in served)


# --------------------------------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class Metric:
    name: str  # as Prometheus stores it (a histogram: the base name, without _bucket)
    type: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]  # the labels queries here read
    source: str  # where the exported name was read


# Ray exports `ray.util.metrics` under the `ray_` namespace (ray/_private/telemetry/
# open_telemetry_metric_recorder.py NAMESPACE) through OpenTelemetry's Prometheus exporter, which
# appends `_total` to counters (prometheus_client CounterMetricFamily) and maps unit "1" to no
# suffix (opentelemetry/exporter/prometheus/_mapping.py). Serve's replica-side metrics come from
# ray.serve.metrics, which adds `deployment`, `replica` and `application`. In HAProxy mode the
# HTTP request family is emitted from Ray's HAProxy logs (serve/_private/haproxy_metrics.py), gRPC's
# by the direct-ingress replica (replica.py): the same names either way.
_RAY_SERVE = "ray 2.60 serve/_private/"
# vLLM's metrics under Ray Serve LLM go through Ray (vllm/v1/metrics/ray_wrappers.py, chosen by
# ray/llm/_internal/serve/engines/vllm/vllm_engine.py when log_engine_metrics, the default): `vllm:`
# becomes `vllm_`, then Ray adds `ray_`. Labels: model_name (Ray Serve LLM sets it to the model id,
# engines/vllm/vllm_models.py), engine, ReplicaId; no `application`.
_VLLM = "vllm 0.29 v1/metrics/loggers.py via ray_wrappers.py"
# HAProxy's Prometheus exporter (addons/promex/README and service-prometheus.c, same names in
# v2.8.0 and v3.2.0): `proxy` names the backend; `code` is the class (1xx..5xx, other); server and
# aggregated states carry `state` (UP, DOWN, MAINT, DRAIN, NOLB).
_PROMEX = "haproxy addons/promex (v2.8.0, v3.2.0)"
# GKE's managed DCGM metrics are DCGM-Exporter's (NVIDIA/dcgm-exporter etc/default-counters.csv),
# labelled per GPU (`gpu`, `UUID`) and node (`Hostname`).
_DCGM = "GKE managed DCGM (dcgm-exporter default counters)"

CATALOG: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "ray_serve_num_http_requests_total",
            "counter",
            ("application", "route", "method", "status_code"),
            _RAY_SERVE + "request_ingress_metrics.py",
        ),
        Metric(
            "ray_serve_num_grpc_requests_total",
            "counter",
            ("application", "route", "method", "status_code"),
            _RAY_SERVE + "request_ingress_metrics.py",
        ),
        Metric(
            "ray_serve_http_request_latency_ms",
            "histogram",
            ("application", "route", "method", "status_code", "le"),
            _RAY_SERVE + "request_ingress_metrics.py",
        ),
        Metric(
            "ray_serve_grpc_request_latency_ms",
            "histogram",
            ("application", "route", "method", "status_code", "le"),
            _RAY_SERVE + "request_ingress_metrics.py",
        ),
        Metric(
            "ray_serve_application_status",
            "gauge",
            ("application",),
            _RAY_SERVE + "application_state.py (6 = RUNNING)",
        ),
        Metric(
            "ray_serve_deployment_status",
            "gauge",
            ("application", "deployment"),
            _RAY_SERVE + "deployment_state.py (1 DEPLOY_FAILED, 2 UNHEALTHY, 6 HEALTHY)",
        ),
        Metric(
            "ray_serve_deployment_replica_healthy",
            "gauge",
            ("application", "deployment", "replica"),
            _RAY_SERVE + "deployment_state.py (1 per healthy replica)",
        ),
        Metric(
            "ray_serve_autoscaling_target_replicas",
            "gauge",
            ("application", "deployment"),
            _RAY_SERVE + "deployment_state.py",
        ),
        Metric(
            "ray_serve_deployment_queued_queries",
            "gauge",
            ("application", "deployment"),
            _RAY_SERVE + "router.py",
        ),
        Metric(
            "ray_serve_replica_processing_queries",
            "gauge",
            ("application", "deployment", "replica"),
            _RAY_SERVE + "replica.py",
        ),
        Metric("ray_vllm_time_to_first_token_seconds", "histogram", ("model_name", "le"), _VLLM),
        Metric("ray_vllm_inter_token_latency_seconds", "histogram", ("model_name", "le"), _VLLM),
        Metric(
            "ray_vllm_request_time_per_output_token_seconds",
            "histogram",
            ("model_name", "le"),
            _VLLM,
        ),
        Metric("ray_vllm_generation_tokens_total", "counter", ("model_name",), _VLLM),
        Metric("ray_vllm_num_requests_running", "gauge", ("model_name",), _VLLM),
        Metric("ray_vllm_num_requests_waiting", "gauge", ("model_name",), _VLLM),
        Metric("ray_vllm_kv_cache_usage_perc", "gauge", ("model_name",), _VLLM + " (1 = full)"),
        Metric("haproxy_backend_http_requests_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_http_responses_total", "counter", ("proxy", "code"), _PROMEX),
        Metric("haproxy_backend_connection_errors_total", "counter", ("proxy",), _PROMEX),
        # A server timeout before the response headers (an app's deadline) is a response error
        # answered 504 (src/http_ana.c, SF_ERR_SRVTO); one mid-stream is a server abort.
        Metric("haproxy_backend_response_errors_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_server_aborts_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_internal_errors_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_retry_warnings_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_redispatch_warnings_total", "counter", ("proxy",), _PROMEX),
        Metric("haproxy_backend_active_servers", "gauge", ("proxy",), _PROMEX),
        Metric("haproxy_backend_current_queue", "gauge", ("proxy",), _PROMEX),
        Metric("haproxy_server_status", "gauge", ("proxy", "server", "state"), _PROMEX),
        Metric("DCGM_FI_DEV_GPU_UTIL", "gauge", ("Hostname", "gpu"), _DCGM),
        Metric("DCGM_FI_DEV_FB_USED", "gauge", ("Hostname", "gpu"), _DCGM),
        Metric("DCGM_FI_DEV_POWER_USAGE", "gauge", ("Hostname", "gpu"), _DCGM),
        Metric("DCGM_FI_DEV_GPU_TEMP", "gauge", ("Hostname", "gpu"), _DCGM),
        # Prometheus' own per-target series (job = the PodMonitoring's name, instance =
        # <pod>:<port name>: GoogleCloudPlatform/prometheus-engine pod_config.go; a Ray pod's
        # node type from the PodMonitoring's targetLabels.fromPod).
        Metric("up", "gauge", ("job", "instance", NODE_TYPE_TARGET_LABEL), "Prometheus scrape"),
    )
}


def _m(name: str) -> str:
    """A catalog name; a typo fails at import, never in a live query."""
    if name not in CATALOG:
        raise KeyError(f"{name} is not in CATALOG")
    return name


REQUESTS = {
    "http": _m("ray_serve_num_http_requests_total"),
    "grpc": _m("ray_serve_num_grpc_requests_total"),
}
LATENCY = {
    "http": _m("ray_serve_http_request_latency_ms"),
    "grpc": _m("ray_serve_grpc_request_latency_ms"),
}
RUNNING = 6  # ServeApplicationStatus RUNNING's number (application_state.py's gauge description)
# Server-side failures only: HTTP 5xx, and the gRPC codes a server (not a bad request) returns
# (grpc.io status codes; Ray names them, replica.py). Clients' 4xx and 499 are not the stack's.
SERVER_ERROR_CODES = (
    "5..|UNKNOWN|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|INTERNAL|UNAVAILABLE|DATA_LOSS"
)
TIER_BACKENDS = f"{HTTP_BACKEND}|{GRPC_BACKEND}"  # our haproxy.cfg's backends; Ray's have others

# Histogram bounds, for an objective's bucket: Ray Serve's request latency (serve/_private/
# constants.py DEFAULT_LATENCY_BUCKET_MS) and vLLM's (v1/metrics/loggers.py). A test reads both
# from the installed sources.
SERVE_LATENCY_BUCKETS_MS = (
    1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 60000, 120000, 300000,
    600000,
)  # fmt: skip
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip


def bucket_at_or_above(objective: float, buckets: Sequence[float], what: str) -> float:
    """The smallest bound >= objective: the alert counts requests over it, never over less than
    the objective (a bound below it would page on requests that met it)."""
    for bound in buckets:
        if bound >= objective:
            return bound
    raise ValueError(
        f"{what} {objective:g} is above the histogram's largest bound ({buckets[-1]:g}); "
        "no bucket can count requests over it: lower it"
    )


def le_matcher(bound: float) -> str:
    """`le` of a bound, as the exporter writes it ("1000.0") or as Prometheus 3 and Cloud
    Monitoring normalize it ("1000")."""
    if float(bound).is_integer():
        return f'le=~"{int(bound)}(\\\\.0)?"'
    return f'le="{float(bound)!r}"'


# ------------------------------------------------------------------------------------ the dashboards
@dataclass(frozen=True)
class Query:
    promql: str
    legend: str  # what the data set is; not rendered (the chart labels series by their labels)


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str  # the y axis' label


@dataclass(frozen=True)
class Dashboard:
    key: str  # serving | tier | llm | gpu
    title: str
    panels: tuple[Panel, ...]


WINDOW = "5m"  # dashboards' rate window: four 30 s scrapes, as the PodMonitorings scrape


def promql_regex(values: Iterable[str]) -> str:
    """An alternation matching exactly `values`, for a PromQL `=~` string: regex-escaped, then each
    backslash doubled (PromQL strings take Go's escapes, where `\\.` alone is an error)."""
    return "|".join(re.escape(v) for v in values).replace("\\", "\\\\")


def _apps_re(apps: Iterable[ObservedApp]) -> str:
    return promql_regex(a.name for a in apps)


def _models_re(apps: Iterable[ObservedApp]) -> str:
    return promql_regex(a.model or "" for a in apps)


def _serving(spec: ObservabilitySpec) -> Dashboard:
    apps = f'application=~"{_apps_re(spec.apps)}"'

    def per_protocol(make: Any) -> tuple[Query, ...]:
        return tuple(Query(make(p), p) for p in spec.protocols)

    def quantile(q: float) -> Any:
        return lambda p: (
            f"histogram_quantile({q}, sum by (application, le) "
            f"(rate({LATENCY[p]}_bucket{{{apps}}}[{WINDOW}])))"
        )

    deployments = "by (application, deployment)"
    panels = (
        Panel(
            "Requests/s by app and protocol",
            per_protocol(
                lambda p: f"sum by (application) (rate({REQUESTS[p]}{{{apps}}}[{WINDOW}]))"
            ),
            "requests/s",
        ),
        Panel("p50 latency by app and protocol", per_protocol(quantile(0.5)), "ms"),
        Panel("p99 latency by app and protocol", per_protocol(quantile(0.99)), "ms"),
        Panel(
            "Server errors/s by app, protocol and code",
            per_protocol(
                lambda p: (
                    f"sum by (application, status_code) (rate({REQUESTS[p]}"
                    f'{{{apps}, status_code=~"{SERVER_ERROR_CODES}"}}[{WINDOW}]))'
                )
            ),
            "errors/s",
        ),
        Panel(
            "Replicas per deployment: healthy and target",
            (
                Query(
                    f"sum {deployments} (ray_serve_deployment_replica_healthy{{{apps}}})", "healthy"
                ),
                Query(
                    f"max {deployments} (ray_serve_autoscaling_target_replicas{{{apps}}})", "target"
                ),
            ),
            "replicas",
        ),
        Panel(
            "Queued requests per deployment",
            (
                Query(
                    f"sum {deployments} (ray_serve_deployment_queued_queries{{{apps}}})", "queued"
                ),
            ),
            "requests",
        ),
        Panel(
            "Requests in replicas per deployment",
            (
                Query(
                    f"sum {deployments} (ray_serve_replica_processing_queries{{{apps}}})", "ongoing"
                ),
            ),
            "requests",
        ),
        Panel(
            "Application status (6 is RUNNING)",
            (Query(f"max by (application) (ray_serve_application_status{{{apps}}})", "status"),),
            "status",
        ),
    )
    return Dashboard("serving", f"{spec.stack}: Ray Serve applications", panels)


def _tier(spec: ObservabilitySpec) -> Dashboard:
    be = f'proxy=~"{TIER_BACKENDS}"'

    def rate(metric: str, by: str = "proxy", extra: str = "") -> str:
        return f"sum by ({by}) (rate({_m(metric)}{{{be}{extra}}}[{WINDOW}]))"

    panels = (
        Panel(
            "Tier requests/s by backend",
            (Query(rate("haproxy_backend_http_requests_total"), "requests"),),
            "requests/s",
        ),
        Panel(
            "Tier responses/s by backend and class",
            (Query(rate("haproxy_backend_http_responses_total", "proxy, code"), "responses"),),
            "responses/s",
        ),
        Panel(
            "Tier 5xx/s by cause",
            (
                Query(
                    rate("haproxy_backend_http_responses_total", extra=', code="5xx"'), "all 5xx"
                ),
                Query(rate("haproxy_backend_connection_errors_total"), "connection errors"),
                Query(rate("haproxy_backend_response_errors_total"), "response errors"),
                Query(rate("haproxy_backend_internal_errors_total"), "internal errors"),
            ),
            "responses/s",
        ),
        Panel(
            "Tier deadline hits/s: before the first byte (504) and mid-stream",
            (
                Query(rate("haproxy_backend_response_errors_total"), "before the first byte"),
                Query(rate("haproxy_backend_server_aborts_total"), "mid-stream"),
            ),
            "requests/s",
        ),
        Panel(
            "Tier retries and redispatches/s",
            (
                Query(rate("haproxy_backend_retry_warnings_total"), "retries"),
                Query(rate("haproxy_backend_redispatch_warnings_total"), "redispatches"),
            ),
            "events/s",
        ),
        Panel(
            "Tier servers by state",
            (Query(f"sum by (proxy, state) (haproxy_server_status{{{be}}})", "servers"),),
            "servers",
        ),
        Panel(
            "Tier UP servers per backend (fewest over the tier's pods)",
            (Query(f"min by (proxy) (haproxy_backend_active_servers{{{be}}})", "UP"),),
            "servers",
        ),
        Panel(
            "Tier queued requests",
            (Query(f"sum by (proxy) (haproxy_backend_current_queue{{{be}}})", "queued"),),
            "requests",
        ),
    )
    return Dashboard("tier", f"{spec.stack}: HAProxy ingress tier", panels)


def _llm(spec: ObservabilitySpec) -> Dashboard:
    models = f'model_name=~"{_models_re(spec.llm_apps)}"'

    def quantiles(metric: str) -> tuple[Query, ...]:
        return tuple(
            Query(
                f"histogram_quantile({q}, sum by (model_name, le) "
                f"(rate({_m(metric)}_bucket{{{models}}}[{WINDOW}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.99)
        )

    panels = (
        Panel(
            "Time to first token p50 and p99",
            quantiles("ray_vllm_time_to_first_token_seconds"),
            "s",
        ),
        Panel(
            "Inter-token latency p50 and p99",
            quantiles("ray_vllm_inter_token_latency_seconds"),
            "s",
        ),
        Panel(
            "Time per output token (per request) p50 and p99",
            quantiles("ray_vllm_request_time_per_output_token_seconds"),
            "s",
        ),
        Panel(
            "Output tokens/s",
            (
                Query(
                    f"sum by (model_name) (rate(ray_vllm_generation_tokens_total{{{models}}}[{WINDOW}]))",
                    "tokens",
                ),
            ),
            "tokens/s",
        ),
        Panel(
            "Running and waiting requests",
            (
                Query(
                    f"sum by (model_name) (ray_vllm_num_requests_running{{{models}}})", "running"
                ),
                Query(
                    f"sum by (model_name) (ray_vllm_num_requests_waiting{{{models}}})", "waiting"
                ),
            ),
            "requests",
        ),
        Panel(
            "KV-cache usage (highest replica, 1 is full)",
            (Query(f"max by (model_name) (ray_vllm_kv_cache_usage_perc{{{models}}})", "usage"),),
            "fraction",
        ),
    )
    return Dashboard("llm", f"{spec.stack}: LLM serving (vLLM)", panels)


def _gpu(spec: ObservabilitySpec) -> Dashboard:
    per_gpu = "by (Hostname, gpu)"
    panels = [
        Panel(
            "GPU utilization",
            (Query(f"avg {per_gpu} (DCGM_FI_DEV_GPU_UTIL{{}})", "utilization"),),
            "%",
        ),
        Panel(
            "GPU memory used", (Query(f"max {per_gpu} (DCGM_FI_DEV_FB_USED{{}})", "used"),), "MiB"
        ),
        Panel("GPU power", (Query(f"avg {per_gpu} (DCGM_FI_DEV_POWER_USAGE{{}})", "power"),), "W"),
        Panel(
            "GPU temperature",
            (Query(f"max {per_gpu} (DCGM_FI_DEV_GPU_TEMP{{}})", "temperature"),),
            "C",
        ),
    ]
    if spec.gpu_node_hourly_usd is not None:
        # GPU nodes reporting now x the price table's node price for the pool's capacity mode
        # (infra/cost.py): what the pool costs at this moment, at list prices.
        usd_per_hour = f"(count(count by (Hostname) (DCGM_FI_DEV_GPU_UTIL{{}})) * {spec.gpu_node_hourly_usd:g})"
        apps = f'application=~"{_apps_re(spec.apps)}"'
        # Every protocol's requests in one vector: `or` keeps both sides, whose routes differ.
        requests = " or ".join(f"rate({REQUESTS[p]}{{{apps}}}[{WINDOW}])" for p in spec.protocols)
        panels += [
            Panel("GPU nodes' list cost", (Query(usd_per_hour, "USD/h"),), "USD/hour"),
            # USD/h over requests/h in thousands (requests/s x 3.6).
            Panel(
                "List cost per 1k requests",
                (Query(f"{usd_per_hour} / (3.6 * sum({requests}))", "USD per 1k"),),
                "USD",
            ),
        ]
        if spec.llm_apps:
            models = f'model_name=~"{_models_re(spec.llm_apps)}"'
            # USD/h over output tokens/h in millions (tokens/s x 0.0036).
            tokens = f"sum(rate(ray_vllm_generation_tokens_total{{{models}}}[{WINDOW}]))"
            panels.append(
                Panel(
                    "List cost per million output tokens",
                    (Query(f"{usd_per_hour} / (0.0036 * {tokens})", "USD per 1M"),),
                    "USD",
                )
            )
    return Dashboard("gpu", f"{spec.stack}: GPUs (DCGM)", tuple(panels))


def dashboards(spec: ObservabilitySpec) -> tuple[Dashboard, ...]:
    """The stack's dashboards: serving and the tier always, LLM with an llm app, GPUs with a pool."""
    result = [_serving(spec), _tier(spec)]
    if spec.llm_apps:
        result.append(_llm(spec))
    if spec.gpus:
        result.append(_gpu(spec))
    return tuple(result)


def dashboard_queries(
    spec: ObservabilitySpec, keys: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every data set of the stack's dashboards (or of `keys` only)."""
    wanted = None if keys is None else set(keys)
    return [
        (panel.title, query.promql)
        for board in dashboards(spec)
        if wanted is None or board.key in wanted
        for panel in board.panels
        for query in panel.queries
    ]


# Cloud Monitoring REST `projects.dashboards` (monitoring/api/ref_v3/rest/v1/projects.dashboards):
# MosaicLayout.columns is 1..48; a Tile's xPos/yPos are zero-indexed grid blocks, its width and
# height at least 1, and it must lie within the columns; XyChart.dataSets[].timeSeriesQuery holds
# one of timeSeriesFilter, timeSeriesFilterRatio, timeSeriesQueryLanguage, prometheusQuery;
# plotType is LINE, STACKED_AREA, STACKED_BAR or HEATMAP.
COLUMNS = 48
TILE_WIDTH = 24
TILE_HEIGHT = 16
PLOT_TYPES = ("LINE", "STACKED_AREA", "STACKED_BAR", "HEATMAP")


def render_dashboard(board: Dashboard) -> dict[str, Any]:
    """The JSON body of one dashboard (`google_monitoring_dashboard.dashboard_json`): two charts a row."""
    per_row = COLUMNS // TILE_WIDTH
    tiles = [
        {
            "xPos": (i % per_row) * TILE_WIDTH,
            "yPos": (i // per_row) * TILE_HEIGHT,
            "width": TILE_WIDTH,
            "height": TILE_HEIGHT,
            "widget": {
                "title": panel.title,
                "xyChart": {
                    "dataSets": [
                        {
                            "timeSeriesQuery": {"prometheusQuery": q.promql},
                            "plotType": "LINE",
                            "targetAxis": "Y1",
                        }
                        for q in panel.queries
                    ],
                    "yAxis": {"label": panel.unit, "scale": "LINEAR"},
                },
            },
        }
        for i, panel in enumerate(board.panels)
    ]
    body = {"displayName": board.title, "mosaicLayout": {"columns": COLUMNS, "tiles": tiles}}
    if problems := dashboard_problems(body):
        raise ValueError(f"dashboard {board.key}: " + "; ".join(problems))
    return body


def render_dashboards(spec: ObservabilitySpec) -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON body, by key."""
    return {board.key: render_dashboard(board) for board in dashboards(spec)}


_BOX = ("xPos", "yPos", "width", "height")
_QUERY_KINDS = (
    "timeSeriesFilter",
    "timeSeriesFilterRatio",
    "timeSeriesQueryLanguage",
    "prometheusQuery",
)


def dashboard_problems(body: Any) -> list[str]:
    """What in a dashboard body the REST reference refuses (or this package never writes: every
    data set a PromQL query): required keys, tiles within the columns, no overlaps."""
    if not isinstance(body, dict):
        return ["the dashboard must be an object"]
    problems = []
    if not isinstance(body.get("displayName"), str) or not body["displayName"]:
        problems.append("displayName is required")
    layout = body.get("mosaicLayout")
    if not isinstance(layout, dict):
        return [*problems, "mosaicLayout is required"]
    columns = layout.get("columns")
    if not isinstance(columns, int) or not 1 <= columns <= COLUMNS:
        problems.append(f"mosaicLayout.columns must be 1..{COLUMNS}; got {columns!r}")
        columns = COLUMNS
    tiles = layout.get("tiles")
    if not isinstance(tiles, list) or not tiles:
        return [*problems, "mosaicLayout.tiles must list at least one tile"]
    taken: dict[tuple[int, int], int] = {}
    for i, tile in enumerate(tiles):
        where = f"tiles[{i}]"
        if not isinstance(tile, dict) or not all(isinstance(tile.get(k), int) for k in _BOX):
            shown = [tile.get(k) if isinstance(tile, dict) else None for k in _BOX]
            problems.append(f"{where}: xPos, yPos, width and height must be integers; got {shown}")
            continue
        x, y, w, h = (int(tile[k]) for k in _BOX)
        box = [x, y, w, h]
        if x < 0 or y < 0 or w < 1 or h < 1:
            problems.append(
                f"{where}: xPos and yPos must be >= 0, width and height >= 1; got {box}"
            )
            continue
        if x + w > columns:
            problems.append(f"{where}: xPos + width ({x + w}) exceeds the {columns} columns")
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            if cell in taken:
                problems.append(
                    f"{where} overlaps tiles[{taken[cell]}] at column {cell[0]}, row {cell[1]}"
                )
                break
            taken[cell] = i
        problems += _widget_problems(where, tile.get("widget"))
    return problems


def _widget_problems(where: str, widget: Any) -> list[str]:
    if (
        not isinstance(widget, dict)
        or not isinstance(widget.get("title"), str)
        or not widget["title"]
    ):
        return [f"{where}.widget needs a title"]
    chart = widget.get("xyChart")
    data_sets = chart.get("dataSets") if isinstance(chart, dict) else None
    if not isinstance(data_sets, list) or not data_sets:
        return [f"{where}.widget.xyChart.dataSets must list at least one data set"]
    problems = []
    for j, data_set in enumerate(data_sets):
        here = f"{where}.widget.xyChart.dataSets[{j}]"
        query = data_set.get("timeSeriesQuery") if isinstance(data_set, dict) else None
        kinds = [k for k in _QUERY_KINDS if isinstance(query, dict) and k in query]
        promql = query.get("prometheusQuery") if isinstance(query, dict) else None
        if kinds != ["prometheusQuery"] or not str(promql or "").strip():
            problems.append(
                f"{here}.timeSeriesQuery must hold one non-empty prometheusQuery; got {kinds}"
            )
        if isinstance(data_set, dict) and data_set.get("plotType", "LINE") not in PLOT_TYPES:
            problems.append(f"{here}.plotType must be one of {', '.join(PLOT_TYPES)}")
    return problems


# --------------------------------------------------------------------------------------- the alerts
# Burn rates and windows from Google's SRE workbook ("Alerting on SLOs", multiwindow, multi-burn-
# rate): 14.4x over 1 h (and 5 m) spends 2% of a 30-day budget; 6x over 6 h (and 30 m) spends 5%.
FAST_BURN = (14.4, "1h", "5m", "2m", "critical")
SLOW_BURN = (6.0, "6h", "30m", "15m", "warning")
# A p99 objective leaves 1% of requests over it.
P99_BUDGET = 0.01
# smoke.maxErrorRate is a smoke run's gate (0 in the shipped stacks: no error at all); as an
# alerting budget, 0 would page on one failed request, so the alerts allow at least 0.1%.
MIN_ERROR_BUDGET = 0.001
RULE_INTERVAL = "30s"  # as often as the PodMonitorings scrape
_CAMEL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")
SEVERITIES = ("critical", "warning")


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    runbook: str  # one line: what to check first
    # What the alert compares, without the comparison: these return series on a healthy stack
    # where `expr` returns none, so a live check can tell a quiet alert from a wrong query.
    inputs: tuple[str, ...]


def _burn_alerts(
    name: str, ratio: Any, budget: float, summary: str, runbook: str, by: str
) -> list[Alert]:
    """A fast and a slow multi-window burn-rate alert on `ratio(window)`, the bad fraction."""
    alerts = []
    for burn, long, short, for_, severity in (FAST_BURN, SLOW_BURN):
        threshold = burn * budget
        speed = "Fast" if burn == FAST_BURN[0] else "Slow"
        alerts.append(
            Alert(
                f"{name}{speed}Burn",
                f"({ratio(long)}) > {threshold:g}\nand on ({by})\n({ratio(short)}) > {threshold:g}",
                for_,
                severity,
                f"{summary}: over {burn:g}x the budget ({budget:g}) for {long} and {short}",
                runbook,
                (ratio(long), ratio(short)),
            )
        )
    return alerts


def _protocols_sum(
    spec: ObservabilitySpec, apps: Sequence[ObservedApp], series: Any, window: str
) -> str:
    """sum by (application) of one rate per protocol the apps serve; `or` joins them (HTTP and
    gRPC series never share a label set: their methods and codes differ)."""
    protocols = [p for p in spec.protocols if any(p in a.protocols for a in apps)]
    return (
        "sum by (application) ("
        + " or ".join(f"rate({series(p)}[{window}])" for p in protocols)
        + ")"
    )


def alerts(spec: ObservabilitySpec) -> tuple[Alert, ...]:
    """Every alert of the stack, in the order the Rules list them."""
    o = spec.objectives
    apps = f'application=~"{_apps_re(spec.apps)}"'
    ns = spec.namespace
    titles = {board.key: board.title for board in dashboards(spec)}  # runbooks name them
    serving, tier_board = titles["serving"], titles["tier"]
    describe = f"kubectl -n {ns} describe rayservice {spec.rayservice}"
    result: list[Alert] = []

    def error_ratio(window: str) -> str:
        bad = _protocols_sum(
            spec,
            spec.apps,
            lambda p: f'{REQUESTS[p]}{{{apps}, status_code=~"{SERVER_ERROR_CODES}"}}',
            window,
        )
        total = _protocols_sum(spec, spec.apps, lambda p: f"{REQUESTS[p]}{{{apps}}}", window)
        return f"{bad}\n/\n{total}"

    result += _burn_alerts(
        "ServeErrorBudget",
        error_ratio,
        max(o.max_error_rate, MIN_ERROR_BUDGET),
        "An app's server errors burn its error budget",
        f"Dashboard '{serving}', panel 'Server errors/s by app, protocol and code'; then {describe}",
        "application",
    )

    # Latency: the fraction of requests over the p99 objective; llm apps are held to TTFT and TPOT
    # instead (a stream's whole duration is no latency objective).
    timed = [a for a in spec.apps if a.kind != "llm"]
    if timed:
        bound = bucket_at_or_above(o.p99_ms, SERVE_LATENCY_BUCKETS_MS, "smoke.p99Ms")
        timed_apps = f'application=~"{_apps_re(timed)}"'

        def slow_ratio(window: str) -> str:
            good = _protocols_sum(
                spec,
                timed,
                lambda p: f"{LATENCY[p]}_bucket{{{timed_apps}, {le_matcher(bound)}}}",
                window,
            )
            total = _protocols_sum(
                spec, timed, lambda p: f"{LATENCY[p]}_count{{{timed_apps}}}", window
            )
            return f"1 - {good}\n/\n{total}"

        result += _burn_alerts(
            "ServeLatencyBudget",
            slow_ratio,
            P99_BUDGET,
            f"More than 1% of an app's requests take over {bound:g} ms (smoke.p99Ms {o.p99_ms:g})",
            f"Dashboard '{serving}', panels 'p99 latency by app and protocol' and 'Queued requests per deployment'",
            "application",
        )

    if spec.llm_apps:
        models = f'model_name=~"{_models_re(spec.llm_apps)}"'
        for key, metric, objective_ms, buckets, panel in (
            ("Ttft", "ray_vllm_time_to_first_token_seconds", o.ttft_ms, TTFT_BUCKETS_S, "Time to first token p50 and p99"),
            ("Tpot", "ray_vllm_request_time_per_output_token_seconds", o.tpot_ms, TPOT_BUCKETS_S, "Time per output token (per request) p50 and p99"),
        ):  # fmt: skip
            stack_key = f"smoke.llm.{key.lower()}Ms"
            bound_s = bucket_at_or_above(objective_ms / 1000, buckets, f"{stack_key} (in seconds)")

            def llm_ratio(window: str, metric: str = metric, bound_s: float = bound_s) -> str:
                return (
                    f"1 - sum by (model_name) (rate({metric}_bucket{{{models}, {le_matcher(bound_s)}}}[{window}]))\n/\n"
                    f"sum by (model_name) (rate({metric}_count{{{models}}}[{window}]))"
                )

            result += _burn_alerts(
                f"Llm{key}Budget",
                llm_ratio,
                P99_BUDGET,
                f"More than 1% of a model's requests have {key.upper()} over {bound_s:g} s ({stack_key} {objective_ms:g})",
                f"Dashboard '{titles['llm']}', panels '{panel}', 'Running and waiting requests' and 'KV-cache usage (highest replica, 1 is full)'",
                "model_name",
            )

    # The highest status over the clusters: during an upgrade the serving one is RUNNING.
    app_status = f"max by (application) (ray_serve_application_status{{{apps}}})"
    deployment_status = f"max by (application, deployment) (ray_serve_deployment_status{{{apps}}})"
    tier_up = f'haproxy_backend_active_servers{{proxy=~"{TIER_BACKENDS}"}}'
    head = ray_head_selector(spec)
    result += [
        Alert(
            "ServeApplicationNotRunning",
            f"{app_status} != {RUNNING}",
            "10m",
            "critical",
            "A Serve application has not been RUNNING for 10 minutes",
            f"{describe} (status.activeServiceStatus.applicationStatuses)",
            (app_status,),
        ),
        Alert(
            "ServeDeploymentUnhealthy",
            f"{deployment_status} <= 2",
            "5m",
            "critical",
            "A Serve deployment is UNHEALTHY or DEPLOY_FAILED",
            f"{describe}; then kubectl -n {ns} logs -l ray.io/node-type=head --tail=200",
            (deployment_status,),
        ),
        Alert(
            "IngressTierNoBackendUp",
            f"{tier_up} == 0",
            "2m",
            "critical",
            "A tier pod has no UP Ray server in a backend: its clients get 503",
            f"kubectl -n {ns} get endpoints {serve_service_name(spec.rayservice)}; "
            f"dashboard '{tier_board}', panel 'Tier servers by state'",
            (tier_up,),
        ),
        Alert(
            "RayHeadDown",
            f"sum(up{{{head}}}) < 1 or absent(up{{{head}}})",
            "5m",
            "critical",
            "No Ray head answers its metrics scrape: the Serve controller and GCS are down",
            f"kubectl -n {ns} get pods -l ray.io/node-type=head -o wide",
            (f"sum(up{{{head}}})",),
        ),
    ]
    return tuple(result)


def ray_head_selector(spec: ObservabilitySpec) -> str:
    """The Ray heads' metrics targets: the RayService's PodMonitoring (its name is the `job`), the
    pod's KubeRay node type (which the PodMonitoring copies onto its targets, in the cluster as on
    the local run) and Ray's metrics port (`instance` is <pod>:<port name>)."""
    job = ray_pod_monitoring_name(spec.rayservice)
    return f'job="{job}", {NODE_TYPE_TARGET_LABEL}="head", instance=~".+:metrics"'


def alert_expressions(spec: ObservabilitySpec) -> list[tuple[str, str]]:
    """(alert name, PromQL) for every alert of the stack."""
    return [(a.name, a.expr) for a in alerts(spec)]


def alert_inputs(spec: ObservabilitySpec) -> list[tuple[str, str]]:
    """(alert name, PromQL) for each value an alert compares (a burn alert: its ratio over each
    window), in the order of `alerts`."""
    return [(a.name, value) for a in alerts(spec) for value in a.inputs]


def rule_groups(spec: ObservabilitySpec) -> list[dict[str, Any]]:
    """The alerts as Prometheus rule groups (a rule file's `groups`, the Rules' `spec.groups`)."""
    return [
        {
            "name": f"{spec.rayservice}-alerts",
            "interval": RULE_INTERVAL,
            "rules": [
                {
                    "alert": a.name,
                    "expr": a.expr,
                    "for": a.for_,
                    "labels": {"severity": a.severity},
                    "annotations": {"summary": a.summary, "runbook": a.runbook},
                }
                for a in alerts(spec)
            ],
        }
    ]


def render_rules(spec: ObservabilitySpec) -> dict[str, Any]:
    """The Managed Service for Prometheus `Rules` resource: namespaced, so the managed rule
    evaluator reads only this namespace's series (prometheus-engine rules_types.go)."""
    body = {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "Rules",
        "metadata": {"name": f"{spec.rayservice}-alerts", "namespace": spec.namespace},
        "spec": {"groups": rule_groups(spec)},
    }
    if problems := rules_problems(body):
        raise ValueError("alert rules: " + "; ".join(problems))
    return body


def rules_problems(body: Any) -> list[str]:
    """What a Rules resource lacks: each rule an alert with a CamelCase name, an expr, a known
    severity, a summary and a runbook line; names unique."""
    groups = body.get("spec", {}).get("groups") if isinstance(body, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["spec.groups must list at least one group"]
    problems: list[str] = []
    seen: set[str] = set()
    for g, group in enumerate(groups):
        rules = group.get("rules") if isinstance(group, dict) else None
        if not isinstance(rules, list) or not rules or not group.get("name"):
            problems.append(f"groups[{g}] needs a name and at least one rule")
            continue
        for r, rule in enumerate(rules):
            where = f"groups[{g}].rules[{r}]"
            if not isinstance(rule, dict):
                problems.append(f"{where} must be a mapping")
                continue
            name = rule.get("alert")
            where = f"{where} ({name})" if name else where
            if not isinstance(name, str) or not _CAMEL.match(name):
                problems.append(f"{where}: alert must be a CamelCase name; got {name!r}")
            elif name in seen:
                problems.append(f"{where}: alert {name} is defined twice")
            seen.add(str(name))
            if not str(rule.get("expr") or "").strip():
                problems.append(f"{where}: expr is required")
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                problems.append(
                    f"{where}: labels.severity must be one of {', '.join(SEVERITIES)}; got {severity!r}"
                )
            annotations = rule.get("annotations") or {}
            for key in ("summary", "runbook"):
                text = annotations.get(key)
                if not isinstance(text, str) or not text.strip() or "\n" in text:
                    problems.append(f"{where}: annotations.{key} must be one non-empty line")
    return problems


def metric_names(promql: str) -> set[str]:
    """The metric names a query reads (identifiers right before a selector's `{`), a histogram's
    `_bucket` and `_count` series under its base name: what a test holds to CATALOG."""
    names = set()
    for name in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", promql):
        base = re.sub(r"_(bucket|count)$", "", name)
        names.add(base if CATALOG.get(base) and CATALOG[base].type == "histogram" else name)
    return names
