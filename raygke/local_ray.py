"""An isolated local Ray cluster running Serve apps: what `raygke local up` and the live tests use.

Owns: starting a Ray head (`ray start --head --block`) and worker nodes (`ray start --address`),
each a subprocess in a PID namespace of its own where the machine allows, with one temp dir,
the ports each node needs (`node_ports`: its free ports by name and its port windows) and the given
env flags (set where `ray start` runs, so replicas inherit them); a head that keeps its GCS state
in an external Redis (GCS fault tolerance);
token authentication on, as in the cluster, with a token of its own (never the user's
~/.ray/auth_token, address or mode: the run does not depend on the user's own Ray);
pointing Ray's HAProxy at our own free ports and paths; deploying a Serve config (the shape of a
RayService's serveConfigV2) and waiting until every app is RUNNING and routable; stopping exactly
the processes it started, by PID, and checking none are left.
Does not own: which flags or apps to run (callers pass the env and the serve config), our own
HAProxy tier in front (raygke/local.py, raygke/tier.py), finding the haproxy binary
(raygke/tier.py), picking free ports and /proc reading (raygke/host.py), the `smoke` outputs file,
losing a node, restarting the head or running a command inside a node (the fault drills:
raygke/local_faults.py).

Isolation limits (Ray 2.60, checked in its code): Ray replaces 127.0.0.1 as the node IP with the
machine's address, so GCS, raylet and agents listen on all interfaces; only Serve's HTTP/gRPC
ingress (http_options.host) and the free ports here are ours to choose. HAProxy's stats and
metrics frontends bind every interface on the ports we give them (their host is fixed in Ray's
template).

The deploy step runs in a short-lived child Python (`python -m raygke.local_ray deploy`), so the
caller never imports ray or connects a driver, and the driver sees exactly the same env flags.
"""

import contextlib
import functools
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from raygke import host, tier

Progress = Callable[[str], None]

# HAProxy caps unix socket paths at 97 bytes and Ray puts its sockets at
# <temp dir>/hap/<56-hex node id>/metrics.sock (74 bytes past the temp dir), so a run dir deeper
# than this gets its Ray files in a short /tmp dir instead.
_MAX_TEMP_DIR_LEN = 23
_WORKER_PORTS = 200  # one port per Ray worker process; plenty for one head
# One port per ingress replica (HTTP and gRPC each). Ray's default windows (30000-31000,
# 40000-41000) are the same for every run on a machine, and replicas bind their gRPC port with
# SO_REUSEPORT: two runs' replicas then share a port and take each other's requests (seen: a
# gRPC request for one run's app answered NOT_FOUND by another run's replica). Each run gets
# windows of its own.
_DIRECT_INGRESS_PORTS = 50
_STARTED_MARKER = "Ray runtime started"
# Variables of the user's own Ray that would attach our head or driver to their cluster or token.
_USER_RAY_ENV = (
    "RAY_ADDRESS",
    "RAY_NAMESPACE",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
)
NODE_SITE = Path(__file__).resolve().parent / "node_site"
AUTH_TOKEN_FILE = "auth_token"  # in the run's temp dir, removed with it
# How long a worker (and the Serve replicas on it) waits for a restarted head when the GCS is
# fault tolerant; KubeRay's default for RayServices (Ray's own is 60 s).
GCS_RECONNECT_TIMEOUT_S = 120

# Bounds on each wait below. Every wait ends on its condition; these only turn a hang into an
# error that names what was missing, so they are set well above what a loaded 2-core machine takes.
# One `ray start` until it says "Ray runtime started" (a head and two workers: 7.8-12.5 s in all on a
# 2-core machine, idle or loaded).
NODE_START_TIMEOUT_S = 90.0
# Submitting the Serve config until every app is RUNNING and every node's ingress lists its route:
# an llm app loads vLLM's CPU build and its model first (prod's local deploy: 52-69 s on a 2-core
# machine, idle or loaded).
DEPLOY_TIMEOUT_S = 240.0
# A child driver's own start (importing Ray, `ray.init`) and exit, beyond the deadline it keeps.
DRIVER_OVERHEAD_S = 30.0
# One probe of a node's ingress (`/-/routes`): Ray's HAProxy answers it from its own config.
PROBE_TIMEOUT_S = 2.0
# `unshare ... true`: exits at once where PID namespaces work; a hang counts as "they do not".
ISOLATION_PROBE_S = 10.0
# Stopping: SIGTERM, this long for Ray to exit, then SIGKILL and KILLED_WAIT_S to see them gone.
STOP_GRACE_S = 2.0
KILLED_WAIT_S = 10.0


class LocalRayError(RuntimeError):
    """Starting, deploying or stopping the local Ray head failed; the message is one line."""


@dataclass(frozen=True)
class Ports:
    """Every port the head uses, all chosen free on 127.0.0.1 when it started."""

    gcs: int
    node_manager: int
    object_manager: int
    client_server: int
    dashboard: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    worker_min: int
    worker_max: int
    http: int  # Serve HTTP ingress (Ray's HAProxy in HAProxy mode)
    grpc: int  # Serve gRPC ingress
    haproxy_stats: int
    haproxy_metrics: int
    fallback_http: int  # Serve's fallback proxy (HAProxy mode), 8500 by default
    fallback_grpc: int  # 9500 by default
    # Ingress replicas' own ports in HAProxy mode (Ray: 30000-31000 and 40000-41000); 0: Ray's.
    direct_http_min: int = 0
    direct_http_max: int = 0
    direct_grpc_min: int = 0
    direct_grpc_max: int = 0

    def held(self) -> set[int]:
        """Every port and port window this node uses."""
        single = {getattr(self, name) for name in _SINGLE_PORTS}
        windows = [
            range(self.worker_min, self.worker_max + 1),
            range(self.direct_http_min, self.direct_http_max + 1),
            range(self.direct_grpc_min, self.direct_grpc_max + 1),
        ]
        return single.union(*windows) - {0}


# A port each; the other fields are the bounds of port windows.
_SINGLE_PORTS = tuple(f.name for f in fields(Ports) if not f.name.endswith(("_min", "_max")))


@dataclass
class WorkerNode:
    """A Ray worker node of the local run: its own raylet (`ray start --address ... --block`, the
    leader of its own session), ports and Ray HAProxy, as each worker pod has in the cluster."""

    index: int
    pid: int
    ports: Ports  # head-only fields (gcs, dashboard, client server, fallback proxy) unused
    num_cpus: int
    log_path: Path

    @property
    def name(self) -> str:
        return f"ray-worker-{self.index}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"


@dataclass
class LocalRay:
    """A running local Ray cluster: a head and `workers`. `pid` is the head's `ray start --block`
    process, also the leader of the session that every process Ray starts on the head belongs to
    (unless it leaves it; see `processes`); each worker node leads a session of its own."""

    pid: int
    run_dir: Path
    temp_dir: Path
    haproxy_dir: Path
    ports: Ports
    env: dict[str, str]
    log_path: Path
    start_s: float
    deploy_s: float | None = None
    pids: list[int] = field(default_factory=list)  # last snapshot of `processes(self)`
    workers: list[WorkerNode] = field(default_factory=list)
    head_cpus: int = 0  # the head's logical CPUs: 0 with workers, as in the cluster
    # GCS fault tolerance: the external Redis ("host:port") the head's GCS keeps its state in, under
    # a key prefix of this cluster's own (KubeRay uses the RayCluster's UID: two clusters of one
    # RayService, during an upgrade, share the Redis and never each other's state).
    redis_address: str | None = None
    storage_namespace: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"


# ---------------------------------------------------------------------------------------------
# Ports and processes


def _port_window(taken: Iterable[int], size: int) -> tuple[int, int]:
    """A window of `size` free ports, away from Ray's defaults (10002-19999 for workers,
    30000-31000 and 40000-41000 for ingress replicas) and from the kernel's ephemeral range, so
    concurrent heads rarely collide."""
    avoid = set(taken)
    for _ in range(50):
        low = random.randrange(20000, 29999 - size, 10)
        window = range(low, low + size)
        if avoid.isdisjoint(window) and not any(host.port_in_use(p) for p in window[::10]):
            return low, low + size - 1
    raise LocalRayError(f"no free window of {size} ports found in 20000-29999")


def _worker_port_range(taken: Iterable[int]) -> tuple[int, int]:
    return _port_window(taken, _WORKER_PORTS)


def node_ports(taken_before: Iterable[int] = ()) -> Ports:
    """A node's ports: a free one for each of `Ports`' single ports, and port windows away from
    each other, from Ray's defaults and from `taken_before` (the other nodes' ports: every node
    of a local run is on this machine)."""
    before = set(taken_before)
    single = host.plan_ports(_SINGLE_PORTS, avoid=before)
    taken = [*before, *single.values()]
    worker_min, worker_max = _worker_port_range(taken)
    taken += range(worker_min, worker_max + 1)
    direct_http = _port_window(taken, _DIRECT_INGRESS_PORTS)
    taken += range(direct_http[0], direct_http[1] + 1)
    direct_grpc = _port_window(taken, _DIRECT_INGRESS_PORTS)
    return Ports(
        **single,
        worker_min=worker_min,
        worker_max=worker_max,
        direct_http_min=direct_http[0],
        direct_http_max=direct_http[1],
        direct_grpc_min=direct_grpc[0],
        direct_grpc_max=direct_grpc[1],
    )


def command_line(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def live_processes() -> dict[int, host.ProcStat]:
    stats: dict[int, host.ProcStat] = {}
    for entry in os.listdir("/proc"):
        # A zombie holds no resources; its parent reaps it.
        if entry.isdigit() and (st := host.proc_stat(int(entry))) and st.state != "Z":
            stats[int(entry)] = st
    return stats


def _sessions(stats: Mapping[int, host.ProcStat], leaders: set[int], seed: set[int]) -> set[int]:
    """`seed`, the live leaders, every process in their sessions, and all their descendants
    (Ray daemons may setsid)."""
    ours = set(seed) | {pid for pid, st in stats.items() if st.session in leaders}
    ours |= leaders & stats.keys()
    grew = True
    while grew:
        kids = {pid for pid, st in stats.items() if st.ppid in ours} - ours
        ours |= kids
        grew = bool(kids)
    ours.discard(os.getpid())
    return ours


def processes(ray: LocalRay) -> list[int]:
    """PIDs of the live processes of this cluster: each node's `ray start` process, everything in
    their sessions or below them, and anything naming our temp or HAProxy dir (HAProxy reloads
    re-exec; matching our unique paths keeps it found even if it left the session)."""
    markers = (str(ray.temp_dir), str(ray.haproxy_dir))
    stats = live_processes()
    named = {pid for pid in stats if any(m in command_line(pid) for m in markers)}
    leaders = {ray.pid, *(w.pid for w in ray.workers)}
    return sorted(_sessions(stats, leaders, named))


def node_processes(leader: int) -> list[int]:
    """PIDs of one node's processes: its `ray start` process (`leader`), its session, and their
    descendants: what a lost pod takes with it."""
    return sorted(_sessions(live_processes(), {leader}, set()))


# ---------------------------------------------------------------------------------------------
# Start


def ray_env(
    base: Mapping[str, str],
    flags: Mapping[str, str],
    ports: Ports,
    temp_dir: Path,
    *,
    head_address: str | None = None,
    redis_address: str | None = None,
    storage_namespace: str = "",
) -> dict[str, str]:
    """The environment `ray start` and the deploy driver run with: the caller's, minus anything
    that ties it to the user's own Ray (another cluster's address, their token), plus the serve
    flags, token authentication with this run's own token, and Ray's HAProxy pinned to our ports
    and paths. With `head_address`, a worker node's: its Ray HAProxy gets ports of its own (in the
    cluster each pod has its own address; here every node shares 127.0.0.1), and RAY_ADDRESS names
    the head, as KubeRay sets it in worker pods (`ray.init(address="auto")` and `ray drain-node`
    in the preStop rely on it). `redis_address` turns on GCS fault tolerance,
    as KubeRay's gcsFaultToleranceOptions does: the head keeps the GCS state in that Redis, under
    `storage_namespace` (KubeRay v1.7.0 common/pod.go configureRedisFT sets
    RAY_external_storage_namespace to the RayCluster's UID), and workers wait for a restarted head
    instead of exiting."""
    env = {k: v for k, v in base.items() if k not in _USER_RAY_ENV}
    env.update(flags)
    # Every Python process of the node loads raygke/node_site/sitecustomize.py (see there).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(NODE_SITE), base.get("PYTHONPATH"))))
    # `python` and `ray` are this interpreter's, as the image's are in a pod (a preStop calls both).
    env["PATH"] = os.pathsep.join(
        filter(None, (str(Path(sys.executable).parent), base.get("PATH")))
    )
    if head_address:
        env["RAY_ADDRESS"] = head_address
        env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(ports.http)
        env["RAY_SERVE_WORKER_PROXY_GRPC_PORT"] = str(ports.grpc)
    if redis_address:
        env["RAY_REDIS_ADDRESS"] = redis_address
        env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(GCS_RECONNECT_TIMEOUT_S)
        if storage_namespace:
            env["RAY_external_storage_namespace"] = storage_namespace
    h = str(_haproxy_dir(temp_dir))
    env.update(
        {
            # Explicit on both sides. Left unset, `ray start` turns token auth on when
            # ~/.ray/auth_token exists, while a driver connecting by address does not: the deploy
            # then failed with "Failed to connect to Ray cluster" for every Ray user.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(temp_dir / AUTH_TOKEN_FILE),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{h}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{h}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": h,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{h}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{h}/metrics.sock",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(ports.haproxy_stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports.haproxy_metrics),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports.fallback_http),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(ports.fallback_grpc),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Replica logs otherwise go to the driver's terminal and to dedup machinery.
            "RAY_DEDUP_LOGS": "0",
        }
    )
    if ports.direct_http_min:
        env.update(
            {
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(ports.direct_http_min),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(ports.direct_http_max),
                "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(ports.direct_grpc_min),
                "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(ports.direct_grpc_max),
            }
        )
    return env


def ray_start_command(
    ray_bin: str, temp_dir: Path, ports: Ports, num_cpus: int, head_address: str | None = None
) -> list[str]:
    """`ray start` for the head, or (with `head_address`) for a worker node joining it."""
    if head_address is None:
        role = [
            "--head",
            f"--port={ports.gcs}",
            f"--ray-client-server-port={ports.client_server}",
            # The dashboard process runs even when "not included" (job/serve heads): our port.
            "--include-dashboard=false",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports.dashboard}",
        ]
    else:
        role = [f"--address={head_address}"]
    return [
        ray_bin,
        "start",
        *role,
        "--block",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
        f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
        f"--runtime-env-agent-port={ports.runtime_env_agent}",
        f"--metrics-export-port={ports.metrics_export}",
        f"--min-worker-port={ports.worker_min}",
        f"--max-worker-port={ports.worker_max}",
        "--disable-usage-stats",
        "--log-style=record",
    ]


def _find_ray_binary() -> str:
    # The ray beside this interpreter first: a `ray` elsewhere on PATH may be another version.
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if not found:
        raise LocalRayError("the `ray` command is missing: install ray[serve]==2.60.0 here")
    return found


def _check_haproxy(flags: Mapping[str, str]) -> None:
    """With the HAProxy flag on, Ray runs the wheel's binary (first in its search order) unless
    the flags name another: fail before starting Ray, not when Serve starts its proxy."""
    if flags.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or flags.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return
    try:
        tier.find_haproxy()
    except tier.TierError as e:
        raise LocalRayError(
            f"RAY_SERVE_ENABLE_HA_PROXY=1 needs Ray's HAProxy binary: {e}"
        ) from None


def _write_auth_token(path: Path) -> None:
    """A token only this run knows (Ray's own format: 256 random bits as hex), owner-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def _haproxy_dir(temp_dir: Path) -> Path:
    """Where Ray's HAProxy keeps its config, socket and state (inside the temp dir, so its paths
    stay short and unique to this run)."""
    return temp_dir / "hap"


def _temp_dir(run_dir: Path) -> Path:
    candidate = run_dir / "r"
    if len(str(candidate)) <= _MAX_TEMP_DIR_LEN:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate
    return Path(tempfile.mkdtemp(prefix="raygke-", dir="/tmp"))


@functools.cache
def pod_isolation() -> tuple[str, ...]:
    """The command prefix that gives a node its own PID namespace, as a pod has: `ray start` is
    PID 1 there, so a lost node takes every process of it along, and `ray stop` or
    `ray.init(address="auto")` run inside it (a preStop) see that node alone, not the others on this
    machine. Root gets it directly, other users through a user namespace; () where neither works
    (then a worker's preStop cannot be run here: `ray stop` would stop every node)."""
    base = ("unshare", "--pid", "--fork", "--mount-proc")
    for prefix in (base, ("unshare", "--user", "--map-root-user", *base[1:])):
        if shutil.which("unshare") is None:
            break
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run(
                [*prefix, "true"], capture_output=True, timeout=ISOLATION_PROBE_S, check=False
            )
            if probe.returncode == 0:
                return prefix
    return ()


def _launch(
    cmd: list[str], env: Mapping[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*pod_isolation(), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # Its own session: every process Ray starts on this node is findable by session id,
            # and a Ctrl-C at the caller's terminal does not reach Ray halfway through a stop.
            start_new_session=True,
        )


def _wait_started(
    proc: subprocess.Popen[bytes], log_path: Path, what: str, timeout_s: float, offset: int
) -> None:
    """Waits for `ray start` to say it started (past `offset` in its log); LocalRayError if it
    exits or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise LocalRayError(
                f"{what}: ray start exited with {proc.returncode}: {host.log_tail(log_path)}"
            )
        with log_path.open("rb") as log:
            log.seek(offset)
            if _STARTED_MARKER.encode() in log.read():
                return
        if time.monotonic() > deadline:
            raise LocalRayError(
                f"{what} did not start within {timeout_s:.0f}s: {host.log_tail(log_path)}"
            )
        time.sleep(0.2)


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def start_head(ray: LocalRay, num_cpus: int, timeout_s: float) -> None:
    """Starts the head's `ray start` on its ports and waits until it says it started."""
    offset = _log_size(ray.log_path)
    cmd = ray_start_command(_find_ray_binary(), ray.temp_dir, ray.ports, num_cpus)
    proc = _launch(cmd, node_env(ray, None), ray.log_path, ray.run_dir)
    ray.pid = proc.pid
    _wait_started(proc, ray.log_path, "the Ray head", timeout_s, offset)


def node_env(ray: LocalRay, worker: WorkerNode | None) -> dict[str, str]:
    """The environment a node's processes run with (a pod's container env): the head's (None) or
    a worker's. Only the head keeps the GCS state, so only it names its Redis key prefix."""
    head = worker is None
    return ray_env(
        os.environ,
        ray.env,
        ray.ports if worker is None else worker.ports,
        ray.temp_dir,
        head_address=None if head else ray.address,
        redis_address=ray.redis_address,
        storage_namespace=ray.storage_namespace if head else "",
    )


def add_worker(
    ray: LocalRay, num_cpus: int, *, timeout_s: float = NODE_START_TIMEOUT_S
) -> WorkerNode:
    """Starts one more worker node joining the head: its own raylet, ports and Ray HAProxy."""
    taken = set(ray.ports.held()).union(*(w.ports.held() for w in ray.workers))
    index = max((w.index for w in ray.workers), default=0) + 1
    ports = node_ports(taken)
    log_path = ray.run_dir / f"ray-worker-{index}.log"
    cmd = ray_start_command(_find_ray_binary(), ray.temp_dir, ports, num_cpus, ray.address)
    worker = WorkerNode(index, 0, ports, num_cpus, log_path)
    proc = _launch(cmd, node_env(ray, worker), log_path, ray.run_dir)
    worker.pid = proc.pid
    ray.workers.append(worker)
    _wait_started(proc, log_path, worker.name, timeout_s, 0)
    return worker


def start(
    run_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    num_cpus: int = 8,
    workers: int = 0,
    redis_address: str | None = None,
    timeout_s: float = NODE_START_TIMEOUT_S,
    on_progress: Progress | None = None,
) -> LocalRay:
    """Starts an isolated local Ray cluster. `env` holds the serve flags (None or {}: Ray's
    defaults). `num_cpus` is Ray's logical CPU count, what replicas reserve (1 each unless the
    serve config says otherwise), not a limit on cores: more than the machine has is fine for
    I/O-bound apps. With `workers`, the RayService's shape: a head with num-cpus 0 (so replicas
    never land on it) and that many worker nodes sharing `num_cpus`; without, one node holds it
    all."""
    say = on_progress or (lambda _msg: None)
    flags = dict(env or {})
    _find_ray_binary()  # fail before anything is started
    _check_haproxy(flags)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    temp_dir = _temp_dir(run_dir)
    haproxy_dir = _haproxy_dir(temp_dir)
    haproxy_dir.mkdir(parents=True, exist_ok=True)
    _write_auth_token(temp_dir / AUTH_TOKEN_FILE)
    ray = LocalRay(
        pid=0,
        run_dir=run_dir,
        temp_dir=temp_dir,
        haproxy_dir=haproxy_dir,
        ports=node_ports(),
        env=flags,
        log_path=run_dir / "ray-start.log",
        start_s=0.0,
        redis_address=redis_address,
        storage_namespace=secrets.token_hex(8) if redis_address else "",
    )
    t0 = time.monotonic()
    say(f"starting Ray head (gcs :{ray.ports.gcs}, temp dir {temp_dir})")
    try:
        ray.head_cpus = 0 if workers else num_cpus
        start_head(ray, ray.head_cpus, timeout_s)
        per_worker = math.ceil(num_cpus / workers) if workers else 0
        for _ in range(workers):
            worker = add_worker(ray, per_worker, timeout_s=timeout_s)
            say(f"{worker.name} joined ({per_worker} CPUs, Serve ingress :{worker.ports.http})")
    except BaseException:
        stop(ray, check=False)
        raise
    ray.start_s = time.monotonic() - t0
    ray.pids = processes(ray)
    say(f"Ray up in {ray.start_s:.1f}s: head + {workers} workers ({len(ray.pids)} processes)")
    return ray


# ---------------------------------------------------------------------------------------------
# Deploy


def localize_serve_config(config: Mapping[str, Any], ray: LocalRay) -> dict[str, Any]:
    """The serve config with the ingress bound to our host and ports (the cluster's 8000/9000
    would collide with other local runs)."""
    out = json.loads(json.dumps(config))  # a deep copy that also proves it is JSON
    http = dict(out.get("http_options") or {})
    http.update({"host": "127.0.0.1", "port": ray.ports.http})
    out["http_options"] = http
    grpc = dict(out.get("grpc_options") or {})
    grpc["port"] = ray.ports.grpc
    out["grpc_options"] = grpc
    return out


def ingress_urls(ray: LocalRay) -> list[str]:
    """Every node's Serve ingress (Ray's HAProxy, or its proxy), head first."""
    return [ray.http_url, *(w.http_url for w in ray.workers)]


def route_prefixes(config: Mapping[str, Any]) -> list[str]:
    return [a["route_prefix"] for a in config.get("applications", []) if a.get("route_prefix")]


def _routes_ready(http_url: str, prefixes: list[str]) -> bool:
    """True once the ingress answers /-/routes listing every prefix (HAProxy reloads lag the
    controller's RUNNING)."""
    try:
        with urllib.request.urlopen(f"{http_url}/-/routes", timeout=PROBE_TIMEOUT_S) as r:
            routes = json.loads(r.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(routes, dict) and all(p in routes for p in prefixes)


def deploy(
    ray: LocalRay,
    serve_config: Mapping[str, Any],
    *,
    timeout_s: float = DEPLOY_TIMEOUT_S,
    on_progress: Progress | None = None,
) -> dict[str, str]:
    """Deploys the serve config and waits until every app is RUNNING and routable.
    Returns {app name: status}; raises LocalRayError on DEPLOY_FAILED or timeout."""
    say = on_progress or (lambda _msg: None)
    config = localize_serve_config(serve_config, ray)
    config_path = ray.run_dir / "serve-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    t0 = time.monotonic()
    cmd = [
        *(sys.executable, "-m", "raygke.local_ray", "deploy"),
        *(ray.address, str(config_path), str(timeout_s)),
    ]
    env = ray_env(os.environ, ray.env, ray.ports, ray.temp_dir)
    with (ray.run_dir / "deploy.log").open("wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=Path.cwd(), text=True
        )
        # The child enforces the deadline itself; this only catches a hung child.
        killer = threading.Timer(timeout_s + DRIVER_OVERHEAD_S, proc.kill)
        killer.start()
        statuses: dict[str, str] = {}
        failure = ""
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue  # Ray itself may print to stdout; our events are JSON objects
                event = json.loads(line)
                if event["event"] == "progress":
                    say(event["message"])
                elif event["event"] == "done":
                    statuses = event["statuses"]
                elif event["event"] == "error":
                    failure = event["message"]
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=DRIVER_OVERHEAD_S)
    if failure or proc.returncode not in (0, -signal.SIGTERM) or not statuses:
        detail = failure or host.log_tail(ray.run_dir / "deploy.log", 1)
        raise LocalRayError(f"deploy failed: {detail}")
    prefixes = route_prefixes(config)
    for url in ingress_urls(ray):
        while not _routes_ready(url, prefixes):
            if time.monotonic() - t0 > timeout_s:
                raise LocalRayError(f"{url}/-/routes never listed {prefixes}")
            time.sleep(0.25)
    ray.deploy_s = time.monotonic() - t0
    ray.pids = processes(ray)
    say(f"apps RUNNING and routable in {ray.deploy_s:.1f}s: {statuses}")
    return statuses


def _deploy_main(address: str, config_path: str, timeout_s: float) -> int:
    """The child side of `deploy`: one JSON event per line on stdout."""

    def emit(event: str, **kw: Any) -> None:
        print(json.dumps({"event": event, **kw}), flush=True)

    import ray
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(json.loads(Path(config_path).read_text()))
    ray.init(address=address, namespace=SERVE_NAMESPACE, logging_level=logging.WARNING)
    emit("progress", message=f"connected to {address}; submitting {len(config.applications)} apps")
    client = serve_api.serve_start(
        http_options=config.http_options.model_dump(),
        grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
        proxy_location=config.proxy_location,
    )
    client.deploy_apps(config, _blocking=False)
    names = [a.name for a in config.applications]
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        apps = serve.status().applications
        statuses = {n: apps[n].status.value if n in apps else "NOT_STARTED" for n in names}
        summary = ", ".join(f"{n}={s}" for n, s in statuses.items())
        if summary != last:
            emit("progress", message=summary)
            last = summary
        failed = [n for n, s in statuses.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            # Serve puts the whole traceback in the message: its last line says what went wrong.
            detail = " ".join(host.telling_lines(apps[n].message, 1)[-400:] for n in failed)
            emit("error", message=f"{', '.join(failed)} failed: {detail}")
            return 1
        if all(s == "RUNNING" for s in statuses.values()):
            emit("done", statuses=statuses)
            return 0
        if time.monotonic() > deadline:
            emit("error", message=f"apps not RUNNING within {timeout_s:.0f}s: {summary}")
            return 1
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Stop


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Sends `sig` to each of `pids` that is still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(ray: LocalRay, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = processes(ray)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes(ray)
    return left


def stop(ray: LocalRay, *, grace_s: float = STOP_GRACE_S, check: bool = True) -> list[int]:
    """Stops every process of this head, by PID, and removes its temp dir. Returns the PIDs it
    found; raises LocalRayError if any survive SIGKILL (with check=True)."""
    live = processes(ray)
    found = sorted(set(live) | set(ray.pids))
    # SIGTERM to all at once, then SIGKILL after a short grace: `ray start --block`, GCS and the
    # raylet outlive SIGTERM for many seconds (measured), and the head's state is being thrown
    # away, so a graceful drain buys nothing.
    signal_all(live, signal.SIGTERM)
    left = _wait_gone(ray, grace_s)
    if left:
        signal_all(left, signal.SIGKILL)
        left = _wait_gone(ray, KILLED_WAIT_S)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(ray.pid, os.WNOHANG)  # reap it if it is our child
    if not left:
        shutil.rmtree(ray.temp_dir, ignore_errors=True)
    if left and check:
        raise LocalRayError(f"processes still alive after SIGKILL: {left}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "deploy":
        return _deploy_main(argv[1], argv[2], float(argv[3]))
    print("usage: python -m raygke.local_ray deploy ADDRESS CONFIG_JSON TIMEOUT_S", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
