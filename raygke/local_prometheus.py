"""A real Prometheus beside a local run, scraping it as the cluster's PodMonitorings say.

Owns: the scrape config derived from the stack's rendered PodMonitorings (`scrape_config`): each
endpoint becomes one scrape job, with GMP's job name and target labels, its path and interval, and
the local port standing in for the container port it names on each local "pod" it selects
(`local_pods`: a Ray node, our tier); finding Debian's `prometheus` and `promtool`, checking the
config, starting Prometheus on 127.0.0.1 as our child, waiting for `/-/ready`, stopping it by PID;
asking its HTTP API (`query`, `targets`, `wait_for_series`).
Does not own: the PodMonitorings and pod templates (components/render/, through infra/rendered.py),
the ports the local processes use (raygke/local_ray.py, raygke/local.py), when a run starts it
(raygke/local.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.render.rayservice import GROUP_LABEL, NODE_TYPE_LABEL
from infra.rendered import RenderedStack
from raygke import host
from raygke.local_ray import LocalRay, Ports

# The local run scrapes every 5 s where the cluster's PodMonitorings say 30 s: a local run lasts a
# minute or two, and a rate over a 1-minute window needs at least two samples in it (docs/decisions.md,
# "A Prometheus beside the local run").
LOCAL_SCRAPE_INTERVAL = "5s"
# GMP's default when an endpoint names no path (prometheus-engine buildPrometheusScrapeConfig).
DEFAULT_METRICS_PATH = "/metrics"
# The pod metadata GMP puts on every target of a PodMonitoring by default (targetLabels.metadata:
# [pod, container]), besides the namespace and job it always sets.
GMP_METADATA_LABELS = ("pod", "container")
# The labels GMP sets itself, which targetLabels.fromPod may not write (prometheus-engine
# pod_types.go isPrometheusTargetLabel / protectedLabels).
GMP_PROTECTED_LABELS = ("project_id", "location", "cluster", "namespace", "job", "instance")
# KubeRay's name of the head's group (ray-operator utils.RayNodeHeadGroupLabelValue).
HEAD_GROUP = "headgroup"

# Which local port stands for each named container port of a Ray pod: the Ports field of the
# node's own port (each local node has its own; the cluster's pods share the numbers).
RAY_POD_PORTS = {
    "gcs-server": "gcs",
    "dashboard": "dashboard",
    "client": "client_server",
    "serve": "http",
    "serve-grpc": "grpc",
    "metrics": "metrics_export",  # Ray's metrics agent (--metrics-export-port), 8080 in the pod
    "haproxy-metrics": "haproxy_metrics",  # RAY_SERVE_HAPROXY_METRICS_PORT, 9101 in the pod
}
# Our tier's container ports are named as raygke/local.py names its ports (TIER_PORTS).

# Bounds on waiting; each wait ends on its condition, these only turn a hang into an error.
# Prometheus answers /-/ready within a second or two once started; a loaded 2-core machine is slower.
READY_TIMEOUT_S = 60.0
# One request to its HTTP API (a query over a local run's few thousand series).
REQUEST_TIMEOUT_S = 10.0
# `promtool check config`: a Go binary's start and a parse.
CHECK_TIMEOUT_S = 60.0
# SIGTERM until it is gone: Prometheus closes its TSDB head on the way out; then SIGKILL.
STOP_TIMEOUT_S = 30.0
# `start_for_run` at most: the config's check, then the wait until ready.
START_BOUND_S = CHECK_TIMEOUT_S + READY_TIMEOUT_S


class PrometheusError(RuntimeError):
    """Prometheus cannot run or answer: not installed, a config it refuses, no answer in time."""


# ---------------------------------------------------------------------------------------------
# The scrape config, derived from the rendered PodMonitorings


@dataclass(frozen=True)
class LocalPod:
    """A group of local processes standing in for one pod of the cluster: the pod's name, namespace
    and labels (from its template), and for each container the local port behind each port name."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, Mapping[str, int]]  # container name -> {port name: local port}


def _template_pod(
    name: str,
    namespace: str,
    template: Mapping[str, Any],
    local: Mapping[str, int],
    added: Mapping[str, str] | None = None,
) -> LocalPod:
    """A local pod from a pod template: its labels (with `added`, the ones a controller puts on the
    pod), every named container port that has a local port."""
    ports = {
        c["name"]: {p["name"]: local[p["name"]] for p in c.get("ports", []) if p["name"] in local}
        for c in template["spec"]["containers"]
    }
    labels = {**template["metadata"].get("labels", {}), **(added or {})}
    return LocalPod(name, namespace, labels, ports)


def kuberay_labels(node_type: str, group: str) -> dict[str, str]:
    """The labels KubeRay puts on a Ray pod besides its template's, that a PodMonitoring may read:
    its node type (head | worker) and group (ray-operator common/pod.go labelPod)."""
    return {NODE_TYPE_LABEL: node_type, GROUP_LABEL: group}


def ray_node_ports(ports: Ports) -> dict[str, int]:
    """A local Ray node's port for each port name of a Ray pod."""
    return {name: getattr(ports, field) for name, field in RAY_POD_PORTS.items()}


def local_pods(
    rendered: RenderedStack, ray: LocalRay, tier_ports: Mapping[str, int]
) -> list[LocalPod]:
    """The local run's stand-ins for the cluster's pods: the head and each worker node, from the
    RayService's head and (first) worker group templates, and our tier, from its Deployment's."""
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    namespace = rendered.rayservice["metadata"]["namespace"]
    head = cluster["headGroupSpec"]["template"]
    group = cluster["workerGroupSpecs"][0]
    pods = [
        _template_pod(
            "ray-head",
            namespace,
            head,
            ray_node_ports(ray.ports),
            kuberay_labels("head", HEAD_GROUP),
        )
    ]
    pods += [
        _template_pod(
            w.name,
            namespace,
            group["template"],
            ray_node_ports(w.ports),
            kuberay_labels("worker", group["groupName"]),
        )
        for w in ray.workers
    ]
    deployment = rendered.tier["deployment"]
    pods.append(
        _template_pod(
            deployment["metadata"]["name"],
            deployment["metadata"]["namespace"],
            deployment["spec"]["template"],
            tier_ports,
        )
    )
    return pods


def pod_monitorings(rendered: RenderedStack) -> list[dict[str, Any]]:
    """Every PodMonitoring the stack renders; with none for our tier's pods, one standing in for it
    (its `metrics` port, the Ray pods' interval), so the local run scrapes the tier either way."""
    found = [o for o in rendered.objects() if o.get("kind") == "PodMonitoring"]
    deployment = rendered.tier["deployment"]
    tier_labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not any(_selects(m, deployment["metadata"]["namespace"], tier_labels) for m in found):
        interval = rendered.ray_pod_monitoring["spec"]["endpoints"][0]["interval"]
        found.append(
            {
                "apiVersion": "monitoring.googleapis.com/v1",
                "kind": "PodMonitoring",
                "metadata": {
                    "name": deployment["metadata"]["name"],
                    "namespace": deployment["metadata"]["namespace"],
                },
                "spec": {
                    "selector": {
                        "matchLabels": dict(deployment["spec"]["selector"]["matchLabels"])
                    },
                    "endpoints": [{"port": "metrics", "interval": interval}],
                },
            }
        )
    return found


def _selects(monitoring: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether a PodMonitoring selects a pod: its own namespace only, and every matchLabel."""
    selector = monitoring["spec"]["selector"]
    if selector.get("matchExpressions"):
        raise PrometheusError(
            f"PodMonitoring {monitoring['metadata']['name']} selects with matchExpressions, which "
            "the local run does not evaluate; select with matchLabels"
        )
    wanted = selector.get("matchLabels", {})
    return monitoring["metadata"]["namespace"] == namespace and all(
        labels.get(k) == v for k, v in wanted.items()
    )


def scrape_config(
    monitorings: Sequence[Mapping[str, Any]],
    pods: Sequence[LocalPod],
    *,
    interval: str | None = None,
) -> dict[str, Any]:
    """prometheus.yml for `pods`, as GMP turns each PodMonitoring endpoint into a scrape job: job
    name `PodMonitoring/<namespace>/<name>/<port>`, metrics path (default /metrics), the endpoint's
    interval (or `interval`, for the local run) and timeout, and one target per selected pod at the
    local port standing in for the named port, labelled as GMP labels it (namespace, job = the
    PodMonitoring's name, pod, container, instance = <pod>:<port name>, and each
    targetLabels.fromPod label the pod has)."""
    jobs = []
    for m in monitorings:
        name, namespace = m["metadata"]["name"], m["metadata"]["namespace"]
        from_pod = _from_pod(m)
        selected = [p for p in pods if _selects(m, p.namespace, p.labels)]
        if not selected:
            raise PrometheusError(
                f"PodMonitoring {namespace}/{name} selects none of the local run's pods "
                f"({', '.join(p.name for p in pods)})"
            )
        for endpoint in m["spec"]["endpoints"]:
            port = endpoint["port"]
            if not isinstance(port, str):
                raise PrometheusError(
                    f"PodMonitoring {namespace}/{name} scrapes port {port} by number; the local "
                    "run maps container ports by name"
                )
            every = interval or endpoint["interval"]
            targets = []
            for pod in selected:
                found = [(c, ports[port]) for c, ports in pod.ports.items() if port in ports]
                if not found:
                    raise PrometheusError(
                        f"PodMonitoring {namespace}/{name} scrapes port {port!r}, which local pod "
                        f"{pod.name} has no local port for"
                    )
                [(container, local_port)] = found
                labels = {
                    "namespace": namespace,
                    "job": name,
                    "pod": pod.name,
                    "container": container,
                    "instance": f"{pod.name}:{port}",
                    # GMP's replace from a label the pod lacks sets nothing.
                    **{to: pod.labels[key] for key, to in from_pod.items() if key in pod.labels},
                }
                targets.append({"targets": [f"127.0.0.1:{local_port}"], "labels": labels})
            # GMP scrapes with the endpoint's timeout, else its interval; a local interval
            # replaces both (a timeout may not exceed the interval).
            timeout = endpoint.get("timeout") if interval is None else None
            jobs.append(
                {
                    "job_name": f"PodMonitoring/{namespace}/{name}/{port}",
                    "metrics_path": endpoint.get("path") or DEFAULT_METRICS_PATH,
                    "scrape_interval": every,
                    "scrape_timeout": timeout or every,
                    "static_configs": targets,
                }
            )
    return {"scrape_configs": jobs}


def _from_pod(monitoring: Mapping[str, Any]) -> dict[str, str]:
    """targetLabels.fromPod as {pod label: metric label} (`to` defaults to `from`, as in GMP)."""
    name = monitoring["metadata"]["name"]
    mapping = {}
    for m in monitoring["spec"].get("targetLabels", {}).get("fromPod", []):
        to = m.get("to") or m["from"]
        if to in GMP_PROTECTED_LABELS:
            raise PrometheusError(
                f"PodMonitoring {name} maps pod label {m['from']!r} to {to!r}, a label Managed "
                f"Prometheus sets itself ({', '.join(GMP_PROTECTED_LABELS)}); pick another name"
            )
        mapping[m["from"]] = to
    return mapping


def scrape_config_for_run(
    rendered: RenderedStack,
    ray: LocalRay,
    tier_ports: Mapping[str, int],
    *,
    interval: str | None = LOCAL_SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """The scrape config of a local run: the stack's PodMonitorings over its local pods."""
    return scrape_config(
        pod_monitorings(rendered), local_pods(rendered, ray, tier_ports), interval=interval
    )


# ---------------------------------------------------------------------------------------------
# The process


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PrometheusError(
            f"Prometheus is not installed (no `{name}` on PATH): install Debian's package with "
            "`make prometheus` or `sudo apt-get install -y prometheus`"
        )
    return found


def find_prometheus() -> str:
    """Debian's `prometheus` (its package also ships `promtool`, which `start` checks with)."""
    _binary("promtool")
    return _binary("prometheus")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def write_config(config: Mapping[str, Any], run_dir: Path) -> Path:
    """Writes run_dir/prometheus.yml, checked with `promtool check config` first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    check = subprocess.run(
        [_binary("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    if check.returncode != 0:
        raise PrometheusError(
            f"promtool check config rejected {path}: {host.telling_lines(check.stderr + check.stdout)}"
        )
    return path


def start(config: Mapping[str, Any], run_dir: Path, port: int) -> int:
    """Starts Prometheus on 127.0.0.1:`port` with `config` (run_dir/prometheus.yml), its TSDB in
    run_dir/data and its log in run_dir/prometheus.log; returns its PID."""
    binary = find_prometheus()
    path = write_config(config, run_dir)
    with (run_dir / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={run_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C at the caller's terminal does not stop it halfway.
            start_new_session=True,
        )
    return proc.pid


def wait_ready(
    base_url: str, *, pid: int, run_dir: Path, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Waits until Prometheus answers 200 on /-/ready; PrometheusError with the end of its log if
    it exits first or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base_url}/-/ready", timeout=REQUEST_TIMEOUT_S) as r,
        ):
            if r.status == 200:
                return
        told = host.log_tail(run_dir / "prometheus.log")
        if not host.alive(pid):
            raise PrometheusError(f"Prometheus (pid {pid}) exited before it was ready: {told}")
        if time.monotonic() > deadline:
            raise PrometheusError(
                f"Prometheus (pid {pid}) was not ready at {base_url}/-/ready within "
                f"{timeout_s:.0f} s: {told}"
            )
        time.sleep(0.2)


def stop(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stops Prometheus by PID: SIGTERM, then SIGKILL if it is still there after `timeout_s`."""
    host.stop(pid, timeout_s)


def start_for_run(
    rendered: RenderedStack,
    ray: LocalRay,
    tier_ports: Mapping[str, int],
    run_dir: Path,
    port: int | None = None,
) -> dict[str, Any]:
    """Prometheus beside a local run, scraping it as the stack's rendered PodMonitorings say (at
    LOCAL_SCRAPE_INTERVAL), on `port` (default: a free one) of 127.0.0.1, its files in `run_dir`;
    returns what a run's state keeps of it ({"pid", "port", "url"}) once it is ready, and stops it
    if it is not."""
    config = scrape_config_for_run(rendered, ray, tier_ports)
    port = port or host.plan_ports(["prometheus"])["prometheus"]
    pid = start(config, run_dir, port)
    try:
        wait_ready(url(port), pid=pid, run_dir=run_dir)
    except BaseException:
        stop(pid)
        raise
    return {"pid": pid, "port": port, "url": url(port)}


# ---------------------------------------------------------------------------------------------
# Its HTTP API


def _api(base_url: str, path: str, params: Mapping[str, str] | None = None) -> Any:
    """The `data` of one HTTP API answer; PrometheusError with Prometheus's own error otherwise."""
    full = f"{base_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(full, timeout=REQUEST_TIMEOUT_S) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as exc:  # a bad query answers 400 with an error document
        answer = json.loads(exc.read() or b"{}")
    except OSError as exc:
        raise PrometheusError(f"Prometheus at {base_url} did not answer {path}: {exc}") from None
    if answer.get("status") != "success":
        raise PrometheusError(f"{full}: {answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]


def query(base_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query (/api/v1/query): its series, each {"metric": {labels}, "value": [t, v]}
    (a scalar or string answer comes back as one series with no labels)."""
    data = _api(base_url, "/api/v1/query", {"query": promql})
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def query_range(
    base_url: str, promql: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    """A range query (/api/v1/query_range) from `start` to `end` (Unix seconds) every `step`
    seconds: its series, each {"metric": {labels}, "values": [[t, "v"], ...]} (a range query
    always answers a matrix)."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    return _api(base_url, "/api/v1/query_range", params)["result"]


def targets(base_url: str) -> list[dict[str, Any]]:
    """The active scrape targets (/api/v1/targets): labels, `health` (up, down, unknown) and the
    last scrape's error."""
    return _api(base_url, "/api/v1/targets", {"state": "active"})["activeTargets"]


def wait_for_series(
    base_url: str,
    promql: str,
    bound_s: float,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Waits until `promql` returns at least one series (the next scrapes may bring it); returns
    them. PrometheusError after `bound_s` names the query and each target's health."""
    deadline = time.monotonic() + bound_s
    while True:
        series = query(base_url, promql)
        if series:
            return series
        if time.monotonic() > deadline:
            health = ", ".join(
                f"{t['labels'].get('instance', t['scrapeUrl'])} {t['health']}"
                + (f" ({t['lastError']})" if t.get("lastError") else "")
                for t in targets(base_url)
            )
            raise PrometheusError(
                f"{promql!r} returned no series within {bound_s:.0f} s; targets: {health or 'none'}"
            )
        if on_progress is not None:
            on_progress(f"waiting for series of {promql!r}")
        time.sleep(1.0)
