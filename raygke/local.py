"""`raygke local up|status|down`: a stack's serving path on this machine.

The same stack config, the same Serve config the RayService carries (scaled to one machine: CPU only, one
replica each, `localArgs`), the same Ray env flags, Serve's logs on stderr as in the cluster's pods
(`SERVE_LOG_ENV`), and our HAProxy tier rendered by the same function as the cluster's, in front of Ray's
own ingress. Everything it starts is isolated (its own temp dirs, free ports on 127.0.0.1), recorded in a
state file, and stopped by PID on `down`.

Does not own: starting Ray itself (raygke/local_ray.py), the Serve config (infra/serve_config.py), the
haproxy.cfg text and the IngressSpec builder (components/render/haproxy.py), running haproxy
(raygke/tier.py), the outputs contract (infra/outputs.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.tiny_llm import write_tiny_llm
from components.render.haproxy import (
    HEALTH_PATH,
    IngressSpec,
    StaticBackends,
    StaticServer,
    ingress_spec,
)
from infra.config import PROMETHEUS_HOST_ENV, ServeProfile, StackConfig, with_serve_profile
from infra.outputs import smoke_contract
from infra.rendered import render_stack
from infra.serve_config import build_serve_config, scale_flags_for_local, scale_for_local
from infra.specs import SERVE_LOG_ENV
from infra.stack_file import load_stack_config
from raygke import host, local_prometheus, local_ray, tier

DEFAULT_STATE_DIR = Path(".raygke/local")
# Ray worker nodes of a local run, beside the head (num-cpus 0), as a RayService has worker pods.
DEFAULT_WORKERS = 2
MAX_WORKERS = 8  # each node costs this machine a raylet, agents and a Ray HAProxy
# Logical CPUs an llm app holds besides its engine's bundle: the LLMServer replica, and OpenAiIngress
# unless Ray Serve LLM builds the app in direct streaming (RayConfig.llm_direct_streaming), where the
# LLMServer is the ingress and its LLMRouter asks for no CPU (ray/llm/_internal/serve/core/ingress/
# builder.py, _build_openai_ingress_request_router: num_cpus 0).
LLM_SERVE_CPUS = 1
LLM_INGRESS_CPUS = 1
# The first request `up` sends through our tier (an echo unary call, or the health path).
FIRST_REQUEST_TIMEOUT_S = 30.0
# Our tier's ports, by name: its pods' container port names (the metrics port is what its
# PodMonitoring scrapes, as in the cluster).
TIER_PORTS = ("http", "grpc", "stats", "metrics")


def up_bound_s(workers: int = DEFAULT_WORKERS, prometheus: bool = False) -> float:
    """The longest `raygke local up` may take before one of its own waits gives up: each node's
    start, the deploy, our tier's first check passes, Prometheus's start (`--prometheus`) and the
    first request."""
    return (
        local_ray.NODE_START_TIMEOUT_S * (1 + workers)
        + local_ray.DEPLOY_TIMEOUT_S
        + tier.SERVING_TIMEOUT_S
        + (local_prometheus.START_BOUND_S if prometheus else 0.0)
        + FIRST_REQUEST_TIMEOUT_S
    )


# The longest `raygke local down` may take: Prometheus's and our tier's stops, then every node's
# at once.
DOWN_BOUND_S = (
    local_prometheus.STOP_TIMEOUT_S
    + tier.STOP_TIMEOUT_S
    + local_ray.STOP_GRACE_S
    + local_ray.KILLED_WAIT_S
)


class LocalError(RuntimeError):
    """A local run that cannot start or stop; the message is one line for the user."""


def say(message: str) -> None:
    print(f"[raygke local] {message}", flush=True)


def _state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = _state_path(state_dir)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def ray_state(ray: local_ray.LocalRay) -> dict[str, Any]:
    """A cluster as the state file keeps it (`ray_from_state` reads it back)."""
    return _jsonable(asdict(ray))


def shutdown_state(config: StackConfig) -> dict[str, Any]:
    """How the run's Ray pods stop (their preStop and grace), kept for the day an upgrade deletes
    them: the stack file may say otherwise by then."""
    return config.ray_service.shutdown.model_dump()


def ray_from_state(state: dict[str, Any], key: str = "ray") -> local_ray.LocalRay:
    ray = dict(state[key])
    ray["ports"] = local_ray.Ports(**ray["ports"])
    for key in ("run_dir", "temp_dir", "haproxy_dir", "log_path"):
        ray[key] = Path(ray[key])
    ray["workers"] = [
        local_ray.WorkerNode(
            **{**w, "ports": local_ray.Ports(**w["ports"]), "log_path": Path(w["log_path"])}
        )
        for w in ray.get("workers", [])
    ]
    return local_ray.LocalRay(**ray)


def local_flags(config: StackConfig) -> dict[str, str]:
    """The env flags the stack's Ray head starts with on this machine."""
    return scale_flags_for_local(config.ray, os.cpu_count() or 1)


def local_serve_config(config: StackConfig, models_dir: Path | None = None) -> dict[str, Any]:
    """The RayService's Serve config, scaled to this machine, without apps that need a GPU.

    An llm app with `source: local` whose localArgs name no `model_source` serves the project's tiny
    Llama (app/tiny_llm.py), written into `models_dir`/<app name> (no `models_dir`: the llm app is
    left out)."""
    scaled = scale_for_local(config, build_serve_config(config))
    by_name = {app.name: app for app in config.apps}
    apps = []
    for entry in scaled["applications"]:
        app = by_name[entry["name"]]
        if not app.runs_locally:
            continue
        tiny = entry["args"].get("source") == "local" and "model_source" not in app.local_args
        if app.kind == "llm" and tiny:
            if models_dir is None:
                continue
            model_dir = models_dir / app.name
            write_tiny_llm(model_dir)
            entry = {**entry, "args": {**entry["args"], "model_source": str(model_dir)}}
        apps.append(entry)
    if not apps:
        raise LocalError(
            f"stack {config.stack!r} has no app that runs without a GPU (every kind but llm, "
            "and llm with localArgs device: cpu)"
        )
    return {**scaled, "applications": apps}


def logical_cpus(config: StackConfig, serve_config: dict[str, Any]) -> int:
    """Logical CPUs the apps reserve in Ray at their most replicas (reservations, not cores: more
    than this machine has is fine; Ray only counts them)."""
    kinds = {app.name: app.kind for app in config.apps}
    total = 0.0
    for app in serve_config["applications"]:
        for dep in app["deployments"]:
            most = dep.get("num_replicas") or dep["autoscaling_config"]["max_replicas"]
            total += dep["ray_actor_options"]["num_cpus"] * most
        if kinds[app["name"]] == "llm":
            total += LLM_SERVE_CPUS + app["args"].get("cpus_per_replica", 1)
            if not config.ray.llm_direct_streaming:
                total += LLM_INGRESS_CPUS
    return math.ceil(total)


def node_servers(
    config: StackConfig, ray: local_ray.LocalRay, *, cluster: str = "", fallback: bool = False
) -> tuple[StaticServer, ...]:
    """One server per Ray node (head first), as the serve Service lists every Ray pod; named after
    the `cluster` when given, so two clusters' servers can sit in one backend during an upgrade.

    `fallback` adds Ray's fallback proxy (its Python proxy, on its own ports) as one more server, so
    a one-node run has two Ray ingresses to balance and fail over between; `raygke local up` leaves
    it out (the proxy is slower than Ray's HAProxy)."""
    grpc_on = config.ray.grpc
    nodes = [("ray-head", ray.ports.http, ray.ports.grpc)]
    nodes += [(w.name, w.ports.http, w.ports.grpc) for w in ray.workers]
    if fallback:
        nodes.append(("ray-fallback", ray.ports.fallback_http, ray.ports.fallback_grpc))
    prefix = f"{cluster}-" if cluster else ""
    return tuple(
        StaticServer(prefix + name, "127.0.0.1", http, grpc if grpc_on else None)
        for name, http, grpc in nodes
    )


def tier_spec(
    config: StackConfig,
    ray: local_ray.LocalRay,
    http: int,
    grpc: int,
    stats: int,
    pidfile: Path,
    *,
    routes: tuple[str, ...] | None = None,
    fallback: bool = False,
    admin_socket: Path | None = None,
    cluster: str = "",
    metrics: int | None = None,
) -> IngressSpec:
    """Our ingress tier on 127.0.0.1, in front of the local Ray ingresses: the cluster's routes and
    checks, and one server per Ray node (`node_servers`); HAProxy's Prometheus exporter on
    `metrics`, as the cluster's tier pods serve it.
    `admin_socket` lets `tier.reload` replace the tier without refusing a connection, and
    `raygke local upgrade` change its servers while it runs."""
    return ingress_spec(
        "127.0.0.1",
        StaticBackends(node_servers(config, ray, cluster=cluster, fallback=fallback)),
        http=http,
        grpc=grpc if config.ray.grpc else None,
        stats=stats,
        metrics=metrics,
        routes=routes or tuple(app.route_prefix for app in config.apps),
        deadlines=config.app_deadlines,
        nbthread=None,  # one thread per usable core of this machine
        pidfile=str(pidfile),
        admin_socket=str(admin_socket) if admin_socket is not None else None,
    )


def _check_asked_ports(http: int | None, grpc: int | None) -> None:
    """The ports the user asked for are free, before anything starts."""
    for what, port in (("--port", http), ("--grpc-port", grpc)):
        if port is not None and host.port_in_use(port):
            raise LocalError(
                f"{what} {port} is in use on this machine; pick another or leave it out"
            )


def _sample_requests(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for app in outputs["apps"]:
        prefix = outputs["http_url"] + app["route_prefix"]
        if app["kind"] == "echo":
            lines.append(f"curl -s '{prefix}/unary?size=16'")
            lines.append(f"curl -sN '{prefix}/stream?chunks=5&tpot_ms=200'")
        elif app["kind"] == "recsys":
            lines.append(f"curl -s -XPOST {prefix}/rank -d '{{\"rows\": 4}}'")
        elif app["kind"] == "llm":
            chat = {"model": app["model"], "max_tokens": 32, "stream": True,
                    "messages": [{"role": "user", "content": "Hello!"}]}  # fmt: skip
            lines.append(
                f"curl -sN {prefix}/v1/chat/completions -H 'Content-Type: application/json' "
                f"-d '{json.dumps(chat)}'"
            )
    echo = next((a for a in outputs["apps"] if a["kind"] == "echo" and a["grpc_service"]), None)
    if echo:  # gRPC: the stubs in app/protos, the app chosen by `application` metadata
        lines.append(
            f'{sys.executable} -c "import grpc; from app.protos import echo_pb2 as m, echo_pb2_grpc as g; '
            f"print(g.EchoServiceStub(grpc.insecure_channel('{outputs['grpc_target']}'))"
            f".Unary(m.EchoRequest(message='hi', size=8), metadata=[('application', '{echo['name']}')]))\""
        )
    return lines


def _first_request(outputs: dict[str, Any]) -> str:
    echo = next((a for a in outputs["apps"] if a["kind"] == "echo"), None)
    url = outputs["http_url"] + (
        f"{echo['route_prefix']}/unary?size=16" if echo else outputs["health_path"]
    )
    with urllib.request.urlopen(url, timeout=FIRST_REQUEST_TIMEOUT_S) as response:
        return f"GET {url} -> {response.status} {response.read().decode()[:200]}"


def up(
    stack: str,
    *,
    profile: ServeProfile | None = None,
    state_dir: str | Path | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    workers: int | None = None,
    prometheus: bool = False,
) -> int:
    state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    workers = DEFAULT_WORKERS if workers is None else workers
    existing = read_state(state_dir)
    if existing is not None:
        pids = [p for p in existing["pids"] if host.alive(p)]
        if pids:
            raise LocalError(
                f"a local run of stack {existing['stack']!r} is already up in {state_dir} (PIDs {pids}); "
                "run `raygke local down` first"
            )
        say(f"removing the state of a run that is no longer alive ({state_dir})")
        shutil.rmtree(state_dir, ignore_errors=True)

    config = load_stack_config(stack)
    if profile is not None:  # the other side of an A/B: the same stack, another profile
        config = with_serve_profile(config, profile)
    flags = local_flags(config)
    serve_config = local_serve_config(config, state_dir / "models")
    served = {a["name"] for a in serve_config["applications"]}
    for app in config.apps:
        if app.name not in served:
            say(
                f"skipping app {app.name!r} (kind {app.kind}): it needs an H100 "
                "(give it localArgs with device: cpu to run it on vLLM's CPU build)"
            )
    tier.find_haproxy()  # fail before starting anything
    if prometheus:
        local_prometheus.find_prometheus()
    _check_asked_ports(http_port, grpc_port)
    # Picked before Ray starts, unlike the others: the nodes' RAY_PROMETHEUS_HOST must name it, for
    # the llm app's `autoscale_on` policy (app/autoscaling.py), which Serve's controller runs. Ray's
    # mixin answers None until Prometheus is up (a refused query is only logged), so the policy
    # decides as Ray's default does meanwhile.
    prometheus_port = host.plan_ports(["prometheus"])["prometheus"] if prometheus else None
    prometheus_env = (
        {PROMETHEUS_HOST_ENV: local_prometheus.url(prometheus_port)} if prometheus_port else {}
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(
        f"stack {stack}, serveProfile {config.ray.serve_profile}: "
        + (" ".join(f"{k}={v}" for k, v in flags.items()) or "Ray's defaults")
    )
    ray = local_ray.start(
        state_dir / "ray",
        # Logged as the cluster's pods log (infra/specs.py), whatever the profile turns off: an A/B
        # then compares what the cluster would run, and each replica's stderr file holds its lines.
        env={**flags, **SERVE_LOG_ENV, **prometheus_env},
        num_cpus=max(logical_cpus(config, serve_config), os.cpu_count() or 1),
        workers=workers,
        on_progress=say,
    )
    state: dict[str, Any] = {
        "stack": stack,
        "profile": config.ray.serve_profile,
        "pids": [ray.pid, *(w.pid for w in ray.workers)],
        "ray": ray_state(ray),
        "shutdown": shutdown_state(config),
    }
    write_state(state_dir, state)
    try:
        local_ray.deploy(ray, serve_config, on_progress=say)
        # Picked only now, just before the tier binds them: a port found free before Ray started
        # may be a Ray process's by then (every connection Ray makes takes a local port from the
        # same range), and a long deploy gives it time to.
        ports = host.plan_ports(TIER_PORTS, asked={"http": http_port, "grpc": grpc_port})
        http, grpc = ports["http"], ports["grpc"]
        socket = state_dir / "tier.sock"
        spec = tier_spec(
            config,
            ray,
            http,
            grpc,
            ports["stats"],
            state_dir / "haproxy.pid",
            admin_socket=socket,
            metrics=ports["metrics"],
        )
        tier_pid = tier.start(spec, state_dir)
        state["pids"].append(tier_pid)
        state["tier"] = {"pid": tier_pid, **ports, "admin_socket": str(socket)}
        write_state(state_dir, state)
        tier.wait_serving(spec, pid=tier_pid, run_dir=state_dir, on_progress=say)
        if prometheus:  # scraping the run as the stack's rendered PodMonitorings say
            say("starting Prometheus")
            state["prometheus"] = local_prometheus.start_for_run(
                render_stack(config),
                ray,
                state["tier"],
                state_dir / "prometheus",
                port=prometheus_port,  # the one the nodes' RAY_PROMETHEUS_HOST names
            )
            state["pids"].append(state["prometheus"]["pid"])
            write_state(state_dir, state)
    except BaseException:
        say("start failed: stopping what was started")
        _stop(state_dir, state)
        raise

    outputs = write_outputs(state_dir, config, serve_config, ray, http, grpc)
    outputs_path = state_dir / "outputs.json"
    say(f"up in {time.monotonic() - started:.1f} s")
    print(f"outputs:     {outputs_path}")
    print(
        f"HTTP:        {outputs['http_url']}   (Ray's own ingress: {outputs['direct']['http_url']})"
    )
    print(f"gRPC:        {outputs['grpc_target']}   (send metadata application=<app name>)")
    if prometheus:
        print(
            f"Prometheus:  {state['prometheus']['url']}   (scrapes as the stack's PodMonitorings)"
        )
    print(_first_request(outputs))
    print("try:")
    for line in _sample_requests(outputs):
        print(f"  {line}")
    print(
        "stop with:   raygke local down"
        + (f" --state-dir {state_dir}" if state_dir != DEFAULT_STATE_DIR.resolve() else "")
    )
    return 0


def write_outputs(
    state_dir: Path,
    config: StackConfig,
    serve_config: dict[str, Any],
    ray: local_ray.LocalRay,
    http: int,
    grpc: int,
) -> dict[str, Any]:
    """The run's `outputs.json` (the `smoke` contract, our tier's endpoints and the serving
    cluster's own) and `serve-config.json`; returns the outputs."""
    outputs = smoke_contract(
        config,
        source="local",
        http_url=f"http://127.0.0.1:{http}",
        grpc_target=f"127.0.0.1:{grpc}",
        apps=[a["name"] for a in serve_config["applications"]],
        direct={"http_url": ray.http_url, "grpc_target": ray.grpc_target},
    )
    (state_dir / "outputs.json").write_text(json.dumps(outputs, indent=2) + "\n")
    (state_dir / "serve-config.json").write_text(json.dumps(serve_config, indent=2) + "\n")
    return outputs


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    _state_path(state_dir).write_text(json.dumps(state, indent=2) + "\n")


def _stop(state_dir: Path, state: dict[str, Any]) -> list[int]:
    stopped: list[int] = []
    prometheus = state.get("prometheus")
    if prometheus and host.alive(prometheus["pid"]):
        local_prometheus.stop(prometheus["pid"])
        stopped.append(prometheus["pid"])
    tier_state = state.get("tier")
    if tier_state and host.alive(tier_state["pid"]):
        tier.stop(tier_state["pid"])
        stopped.append(tier_state["pid"])
    if "old_ray" in state:  # an upgrade stopped while the old cluster waited for its deletion
        stopped += local_ray.stop(ray_from_state(state, "old_ray"))
    stopped += local_ray.stop(ray_from_state(state))
    shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def down(*, state_dir: str | Path | None = None) -> int:
    state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    state = read_state(state_dir)
    if state is None:
        say(f"nothing is running ({state_dir} holds no local run)")
        return 0
    stopped = _stop(state_dir, state)
    say(f"stopped stack {state['stack']}: {len(stopped)} processes; removed {state_dir}")
    return 0


def _gib(pids: list[int]) -> str:
    return f"{sum(host.pss_bytes(p) for p in pids) / 2**30:.2f}"


def run_processes(state: dict[str, Any]) -> list[int]:
    """PIDs of a local run's live processes (from its state): its Ray cluster's, our tier's and
    its Prometheus's (`--prometheus`)."""
    own = [state[name]["pid"] for name in ("tier", "prometheus") if state.get(name)]
    return [*local_ray.processes(ray_from_state(state)), *(pid for pid in own if host.alive(pid))]


def _prometheus_status(prometheus: dict[str, Any]) -> str:
    """'running at <url>, N of M targets up', or why not."""
    if not host.alive(prometheus["pid"]):
        return "gone"
    try:
        health = [t["health"] for t in local_prometheus.targets(prometheus["url"])]
    except local_prometheus.PrometheusError as exc:
        return f"running, not answering ({exc})"
    return (
        f"running at {prometheus['url']}, {health.count('up')} of {len(health)} targets up, "
        f"{_gib([prometheus['pid']])} GiB"
    )


def status(*, state_dir: str | Path | None = None) -> int:
    state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    state = read_state(state_dir)
    if state is None:
        print(f"down (no local run in {state_dir})")
        return 1
    alive = {pid: host.alive(pid) for pid in state["pids"]}
    tier_state = state.get("tier", {})
    healthy = False
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(
            f"http://127.0.0.1:{tier_state.get('http')}{HEALTH_PATH}", timeout=tier.PROBE_TIMEOUT_S
        ) as r,
    ):
        healthy = r.status == 200
    print(f"stack {state['stack']} (serveProfile {state['profile']})")
    ray = ray_from_state(state)
    nodes = {"ray-head": ray.pid, **{w.name: w.pid for w in ray.workers}}
    for name, leader in nodes.items():
        pids = local_ray.node_processes(leader)
        print(
            f"  {name} (pid {leader}): {'running' if alive.get(leader) else 'gone'}, "
            f"{len(pids)} processes, {_gib(pids)} GiB"
        )
    if tier_state:
        up_ = alive.get(tier_state["pid"])
        print(f"  tier (pid {tier_state['pid']}): {'running' if up_ else 'gone'}")
    if prometheus := state.get("prometheus"):
        print(f"  prometheus (pid {prometheus['pid']}): {_prometheus_status(prometheus)}")
    everything = run_processes(state)
    print(f"  memory: {_gib(everything)} GiB (PSS) in {len(everything)} processes")
    print(
        f"  HTTP 127.0.0.1:{tier_state.get('http')} {'healthy' if healthy else 'not answering'}; "
        f"outputs {state_dir / 'outputs.json'}"
    )
    return 0 if healthy and all(alive.values()) else 1
