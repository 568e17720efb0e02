"""raygke/local_prometheus.py: the scrape config derived from every stack's rendered PodMonitorings
(pure), and a real Prometheus (Debian's) started, checked, queried and stopped by PID on free
127.0.0.1 ports, scraping plain HTTP servers that stand in for Ray's and HAProxy's exporters.

The live check on a real local run is in tests/test_local_run.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bounds import CLI_START_S, CLUSTER_CHANGE_S, PROCESS_EXIT_S
from conftest import RAYGKE
from exporter import exporter
from procs import alive
from stackfiles import STACKS

from components.render.rayservice import NODE_TYPE_LABEL, NODE_TYPE_TARGET_LABEL
from infra.rendered import RenderedStack, render_stack
from infra.stack_file import load_stack_config
from raygke import host, local_prometheus
from raygke.local_prometheus import (
    DEFAULT_METRICS_PATH,
    LOCAL_SCRAPE_INTERVAL,
    RAY_POD_PORTS,
    PrometheusError,
    local_pods,
    pod_monitorings,
    scrape_config,
    scrape_config_for_run,
)
from raygke.local_ray import LocalRay, Ports, WorkerNode

TIER_PORTS = {"http": 18080, "grpc": 19000, "stats": 18404, "metrics": 18405}


def fake_run(workers: int) -> LocalRay:
    """A local run's ports as `raygke local up` records them (distinct numbers; nothing runs)."""
    numbers = iter(range(20000, 30000))

    def ports() -> Ports:
        return Ports(**{f.name: next(numbers) for f in dataclasses.fields(Ports)})

    nowhere = Path("/nonexistent")
    return LocalRay(
        pid=1,
        run_dir=nowhere,
        temp_dir=nowhere,
        haproxy_dir=nowhere,
        ports=ports(),
        env={},
        log_path=nowhere,
        start_s=0.0,
        workers=[WorkerNode(i, 0, ports(), 1, nowhere) for i in range(1, workers + 1)],
    )


def nodes(ray: LocalRay) -> dict[str, Ports]:
    return {"ray-head": ray.ports, **{w.name: w.ports for w in ray.workers}}


# ---------------------------------------------------------------------------------------------
# The derivation (pure)


@pytest.mark.pure
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stack", STACKS)
def test_every_podmonitoring_endpoint_is_a_job_on_the_local_ports(stack: str, workers: int):
    """Each endpoint of each rendered PodMonitoring is one job named as GMP names it, with the
    endpoint's path and interval, and a target per selected local pod at that pod's own port for
    the endpoint's port name, labelled as GMP labels it."""
    rendered = render_stack(load_stack_config(stack))
    ray = fake_run(workers)
    config = scrape_config_for_run(rendered, ray, TIER_PORTS, interval=None)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    monitorings = pod_monitorings(rendered)
    expected = {
        f"PodMonitoring/{m['metadata']['namespace']}/{m['metadata']['name']}/{e['port']}": (m, e)
        for m in monitorings
        for e in m["spec"]["endpoints"]
    }
    assert set(jobs) == set(expected)
    for job_name, (monitoring, endpoint) in expected.items():
        job = jobs[job_name]
        assert job["metrics_path"] == endpoint.get("path", DEFAULT_METRICS_PATH)
        assert job["scrape_interval"] == job["scrape_timeout"] == endpoint["interval"]
        for target in job["static_configs"]:
            labels = target["labels"]
            assert labels["job"] == monitoring["metadata"]["name"]
            assert labels["namespace"] == monitoring["metadata"]["namespace"]
            assert labels["instance"] == f"{labels['pod']}:{endpoint['port']}"

    # The Ray pods' PodMonitoring: both its endpoints on every node, each at that node's port.
    ray_monitoring = rendered.ray_pod_monitoring
    assert [e["port"] for e in ray_monitoring["spec"]["endpoints"]] == [
        "metrics",
        "haproxy-metrics",
    ]
    name, namespace = ray_monitoring["metadata"]["name"], ray_monitoring["metadata"]["namespace"]
    for endpoint in ray_monitoring["spec"]["endpoints"]:
        job = jobs[f"PodMonitoring/{namespace}/{name}/{endpoint['port']}"]
        field = RAY_POD_PORTS[endpoint["port"]]
        got = {t["labels"]["pod"]: t["targets"] for t in job["static_configs"]}
        assert got == {
            node: [f"127.0.0.1:{getattr(ports, field)}"] for node, ports in nodes(ray).items()
        }
        containers = {t["labels"]["pod"]: t["labels"]["container"] for t in job["static_configs"]}
        assert containers == {n: "ray-head" if n == "ray-head" else "ray-worker" for n in got}
        # targetLabels.fromPod: each pod's KubeRay node type, as the cluster's pods carry it.
        types = {
            t["labels"]["pod"]: t["labels"][NODE_TYPE_TARGET_LABEL] for t in job["static_configs"]
        }
        assert types == {n: "head" if n == "ray-head" else "worker" for n in got}

    # Our tier: its metrics port, whichever PodMonitoring selects its pods.
    tier_targets = [
        t
        for j in jobs.values()
        for t in j["static_configs"]
        if t["labels"]["pod"] == rendered.tier["deployment"]["metadata"]["name"]
    ]
    assert [t["targets"] for t in tier_targets] == [[f"127.0.0.1:{TIER_PORTS['metrics']}"]]
    assert tier_targets[0]["labels"]["container"] == "haproxy"


@pytest.mark.pure
def test_the_local_interval_replaces_every_endpoints_interval():
    config = scrape_config_for_run(render_stack(load_stack_config("dev")), fake_run(2), TIER_PORTS)
    assert {(j["scrape_interval"], j["scrape_timeout"]) for j in config["scrape_configs"]} == {
        (LOCAL_SCRAPE_INTERVAL, LOCAL_SCRAPE_INTERVAL)
    }


def _with_tier_monitoring(rendered: RenderedStack, **endpoint: Any) -> RenderedStack:
    """`rendered` with a PodMonitoring of its own for our tier's pods, as the cluster may render."""
    deployment = rendered.tier["deployment"]
    monitoring = {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": {"name": "tier-own", "namespace": deployment["metadata"]["namespace"]},
        "spec": {
            "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
            "endpoints": [{"port": "metrics", "interval": "15s", **endpoint}],
        },
    }
    return dataclasses.replace(rendered, tier={**rendered.tier, "pod_monitoring": monitoring})


@pytest.mark.pure
def test_our_tier_is_scraped_as_its_podmonitoring_says_or_as_the_ray_pods_without_one():
    rendered = render_stack(load_stack_config("dev"))
    tier_name = rendered.tier["deployment"]["metadata"]["name"]
    without = dataclasses.replace(
        rendered, tier={k: v for k, v in rendered.tier.items() if k != "pod_monitoring"}
    )
    [stand_in] = [m for m in pod_monitorings(without) if m["metadata"]["name"] == tier_name]
    ray_interval = rendered.ray_pod_monitoring["spec"]["endpoints"][0]["interval"]
    assert stand_in["spec"]["endpoints"] == [{"port": "metrics", "interval": ray_interval}]
    own = _with_tier_monitoring(without, path="/stats/prometheus")
    assert [m["metadata"]["name"] for m in pod_monitorings(own)] == ["serving-ray", "tier-own"]
    config = scrape_config_for_run(own, fake_run(1), TIER_PORTS, interval=None)
    [job] = [j for j in config["scrape_configs"] if j["job_name"].endswith("/tier-own/metrics")]
    assert job["metrics_path"] == "/stats/prometheus" and job["scrape_interval"] == "15s"


@pytest.mark.pure
def test_what_the_local_run_cannot_map_is_refused_naming_it():
    rendered = render_stack(load_stack_config("dev"))
    pods = local_pods(rendered, fake_run(1), TIER_PORTS)
    ray_monitoring = rendered.ray_pod_monitoring

    def monitoring(**spec: Any) -> dict[str, Any]:
        return {**ray_monitoring, "spec": {**ray_monitoring["spec"], **spec}}

    with pytest.raises(PrometheusError, match=r"scrapes port 'dashboard-metrics', which local pod"):
        scrape_config(
            [monitoring(endpoints=[{"port": "dashboard-metrics", "interval": "30s"}])], pods
        )
    with pytest.raises(PrometheusError, match=r"selects none of the local run's pods"):
        scrape_config([monitoring(selector={"matchLabels": {"app": "other"}})], pods)
    with pytest.raises(PrometheusError, match=r"matchExpressions"):
        scrape_config(
            [monitoring(selector={"matchExpressions": [{"key": "a", "operator": "Exists"}]})], pods
        )
    with pytest.raises(PrometheusError, match=r"port 8080 by number"):
        scrape_config([monitoring(endpoints=[{"port": 8080, "interval": "30s"}])], pods)
    with pytest.raises(PrometheusError, match=r"maps pod label 'ray.io/node-type' to 'job'"):
        scrape_config(
            [monitoring(targetLabels={"fromPod": [{"from": NODE_TYPE_LABEL, "to": "job"}]})], pods
        )


@pytest.mark.pure
def test_from_pod_copies_a_pod_label_or_sets_nothing_as_gmp_does():
    """`to` defaults to `from`; a pod without the label gets no such target label (our tier's pod
    has no KubeRay node type)."""
    rendered = render_stack(load_stack_config("dev"))
    pods = local_pods(rendered, fake_run(1), TIER_PORTS)
    tier = next(p for p in pods if p.name == rendered.tier["deployment"]["metadata"]["name"])
    assert NODE_TYPE_LABEL not in tier.labels
    ray_monitoring = rendered.ray_pod_monitoring
    monitoring = {
        **ray_monitoring,
        "spec": {**ray_monitoring["spec"], "targetLabels": {"fromPod": [{"from": "ray.io/group"}]}},
    }
    [job, _] = scrape_config([monitoring], pods)["scrape_configs"]
    groups = {t["labels"]["pod"]: t["labels"]["ray.io/group"] for t in job["static_configs"]}
    worker_group = rendered.rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert groups == {"ray-head": "headgroup", "ray-worker-1": worker_group["groupName"]}


@pytest.mark.pure
def test_a_missing_prometheus_names_the_fix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        PrometheusError, match=r"not installed .*`make prometheus`.*apt-get install"
    ):
        local_prometheus.find_prometheus()


@pytest.mark.pure
def test_prometheus_goes_with_up_only(capsys: pytest.CaptureFixture[str]):
    from raygke.cli import main

    assert main(["local", "status", "--prometheus", "--state-dir", "/nonexistent/x"]) == 2
    assert "--prometheus starts with the run: `raygke local up --prometheus`" in (
        capsys.readouterr().err
    )


# ---------------------------------------------------------------------------------------------
# A real Prometheus


def _prometheus_installed() -> None:
    assert shutil.which("prometheus") and shutil.which("promtool"), (
        "Prometheus is missing: `make prometheus` installs Debian's package"
    )


@pytest.fixture
def ray_exporter() -> Iterator[int]:
    """Stands in for a Ray node's metrics agent."""
    page = (
        "# TYPE ray_serve_num_http_requests_total counter\n"
        'ray_serve_num_http_requests_total{application="echo"} 7\n'
    )
    with exporter(lambda _: page) as port:
        yield port


@pytest.fixture
def haproxy_exporter() -> Iterator[int]:
    """Stands in for Ray's HAProxy's Prometheus exporter."""
    with exporter(
        lambda _: "# TYPE haproxy_process_nbthread gauge\nhaproxy_process_nbthread 2\n"
    ) as port:
        yield port


@pytest.mark.process
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_every_stacks_derived_config(stack: str, tmp_path: Path):
    _prometheus_installed()
    config = scrape_config_for_run(render_stack(load_stack_config(stack)), fake_run(2), TIER_PORTS)
    local_prometheus.write_config(config, tmp_path)  # raises with promtool's message otherwise


@pytest.mark.process
def test_prometheus_scrapes_a_podmonitorings_targets_and_stops_by_pid(
    tmp_path: Path, ray_exporter: int, haproxy_exporter: int
):
    """The dev stack's Ray PodMonitoring over one local pod whose two named ports are the stand-in
    exporters: both targets come UP with GMP's labels, a series is queried back, and the process
    stops on SIGTERM by PID."""
    _prometheus_installed()
    rendered = render_stack(load_stack_config("dev"))
    monitoring = rendered.ray_pod_monitoring
    head = local_pods(rendered, fake_run(0), TIER_PORTS)[0]
    pod = dataclasses.replace(
        head, ports={"ray-head": {"metrics": ray_exporter, "haproxy-metrics": haproxy_exporter}}
    )
    config = scrape_config([monitoring], [pod], interval="1s")
    port = host.plan_ports(["prometheus"])["prometheus"]
    pid = local_prometheus.start(config, tmp_path, port)
    url = local_prometheus.url(port)
    try:
        local_prometheus.wait_ready(url, pid=pid, run_dir=tmp_path)
        job = monitoring["metadata"]["name"]
        both = f'count(up{{job="{job}"}} == 1) == 2'
        local_prometheus.wait_for_series(url, both, CLUSTER_CHANGE_S)
        up = local_prometheus.query(url, f'up{{job="{job}"}}')
        assert {s["metric"]["instance"] for s in up} == {
            "ray-head:metrics",
            "ray-head:haproxy-metrics",
        }
        [series] = local_prometheus.wait_for_series(
            url, "ray_serve_num_http_requests_total", CLUSTER_CHANGE_S
        )
        assert series["metric"] == {
            "__name__": "ray_serve_num_http_requests_total",
            "application": "echo",
            "namespace": monitoring["metadata"]["namespace"],
            "job": job,
            "pod": "ray-head",
            "container": "ray-head",
            "instance": "ray-head:metrics",
            NODE_TYPE_TARGET_LABEL: "head",
        }
        assert series["value"][1] == "7"
        assert {t["health"] for t in local_prometheus.targets(url)} == {"up"}
        with pytest.raises(PrometheusError, match=r"bad_data"):
            local_prometheus.query(url, "sum(")
        with pytest.raises(PrometheusError, match=r"no series within 0 s; targets: ray-head:"):
            local_prometheus.wait_for_series(url, "no_such_metric", 0)
    finally:
        local_prometheus.stop(pid, timeout_s=PROCESS_EXIT_S)
    assert not alive(pid)


@pytest.mark.process
def test_a_port_taken_meanwhile_fails_the_start_with_prometheus_own_words(tmp_path: Path):
    _prometheus_installed()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: a probe is refused at once
        port = taken.getsockname()[1]
        pid = local_prometheus.start({"scrape_configs": []}, tmp_path, port)
        try:
            with pytest.raises(PrometheusError, match=r"exited before it was ready: .*in use"):
                local_prometheus.wait_ready(
                    local_prometheus.url(port), pid=pid, run_dir=tmp_path, timeout_s=PROCESS_EXIT_S
                )
        finally:
            local_prometheus.stop(pid, timeout_s=PROCESS_EXIT_S)
    assert not alive(pid)


@pytest.mark.process
def test_up_with_prometheus_missing_fails_before_anything_starts(tmp_path: Path):
    done = subprocess.run(
        [*RAYGKE, "local", "up", "--prometheus", "--state-dir", str(tmp_path / "state")],
        env={**os.environ, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=CLI_START_S,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("raygke: Prometheus is not installed (no `promtool` on PATH)")
    assert not (tmp_path / "state").exists()
