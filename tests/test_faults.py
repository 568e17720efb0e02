"""The fault suite: the serving path under faults, on one local run (real Ray, HAProxy and gRPC).

One Ray head for the whole module, with its own Serve config: the dev stack's echo app with two
replicas of its ingress and inner deployments (so a replica can die while the other serves), and
`tight`, a copy of it whose ingress takes one request and queues one (the overload case). Our
HAProxy tier runs in front with two Ray ingresses as its servers, Ray's HAProxy and Ray's fallback
proxy, as the cluster's tier has one per Ray pod.

Each case runs steady load over HTTP and gRPC through our tier while it breaks one thing, counts
what failed, and times the recovery. Figures are printed at the end of the module (past pytest's
capture) and written to out/faults/figures.json; docs/reliability.md quotes them. Limits on time
are the liveness bounds users are promised (30 s, 45 s, 2 s), never performance thresholds. The load, Ray's
HAProxy log and the figures' file are tests/fault_harness.py's, shared with tests/test_faults_cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bounds import CLUSTER_CHANGE_S, PROCESS_EXIT_S, REQUEST_S
from fault_harness import (
    ECHO,
    FAILURE_CLASSES,
    RawKeepAlive,
    RayHaproxyLog,
    SteadyLoad,
    classify_failures,
    fault_serve_config,
    long_stream,
    publish_figures,
    stream_figures,
    wait_for,
)
from procs import alive, cmdline, listening_ports, parent_pid, pids_matching

from components.render.haproxy import GRPC_BACKEND, HTTP_BACKEND, IngressSpec
from infra.config import StackConfig
from infra.stack_file import load_stack_config
from raygke import host, local, local_ray, tier
from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.transport import Client, Result

pytestmark = [pytest.mark.process, pytest.mark.faults]

TIGHT = AppEndpoint("tight", "echo", "/tight", "raygke.echo.v1.EchoService", "tight")
MIN_REQUESTS = 500  # per transport, per case: at least 500 over HTTP and gRPC
USERS = 2  # closed-loop users per transport: at most 2 x USERS requests are in flight at a fault
# RAYGKE_FAULTS_STRICT_RETRIES=1 runs the tier without `retry-on empty-response` (it then never
# replays a request a dying Ray ingress may have passed on), to measure what that costs: the
# cases then allow up to the requests in flight to fail instead of none.
STRICT_RETRIES = os.environ.get("RAYGKE_FAULTS_STRICT_RETRIES") == "1"
TIER_SERVERS = ("ray-head", "ray-fallback")


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class FaultRun:
    config: StackConfig
    ray: local_ray.LocalRay
    spec: IngressSpec
    state_dir: Path
    tier_pid: int
    tier_pids: list[int]
    endpoints: Endpoints
    ray_log: RayHaproxyLog
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def stats_port(self) -> int:
        assert self.spec.stats is not None
        return self.spec.stats.port

    def report(self, case: str, **figures: Any) -> None:
        self.figures[case] = figures
        print(f"[faults] {case}: {json.dumps(figures)}")


@pytest.fixture(scope="module")
def fault_run(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[FaultRun]:
    state_dir = tmp_path_factory.mktemp("faults")
    config = load_stack_config("dev")
    t0 = time.monotonic()
    ray_log = RayHaproxyLog()
    # Ray's HAProxy logs every request (`option httplog`) to this target: ours, to tell which
    # requests it had sent to a replica that died (the replica-kill case).
    env = {**config.ray.serve_flags, "RAY_SERVE_HAPROXY_LOG_TARGET": ray_log.target}
    try:
        ray = local_ray.start(state_dir / "ray", env=env, num_cpus=16)
    except BaseException:
        ray_log.close()
        raise
    tier_pids: list[int] = []
    run: FaultRun | None = None
    try:
        local_ray.deploy(ray, fault_serve_config(config, apps=("echo",), version="v1", tight=True))
        ports = host.plan_ports(local.TIER_PORTS)
        spec = local.tier_spec(
            config,
            ray,
            ports["http"],
            ports["grpc"],
            ports["stats"],
            state_dir / "haproxy.pid",
            routes=(ECHO.route_prefix, TIGHT.route_prefix),
            fallback=True,
            admin_socket=state_dir / "tier.sock",
        )
        if STRICT_RETRIES:
            spec = dataclasses.replace(spec, retry_empty_response=False)
        tier_pids.append(tier.start(spec, state_dir))
        run = FaultRun(
            config,
            ray,
            spec,
            state_dir,
            tier_pids[0],
            tier_pids,
            Endpoints(f"http://127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"),
            ray_log,
        )
        wait_for("both tier servers UP", lambda: all_up(run), CLUSTER_CHANGE_S)
        run.figures["setup"] = {"seconds": round(time.monotonic() - t0, 1)}
        yield run
    finally:
        started = set(tier_pids) | set(ray.pids) | set(local_ray.processes(ray))
        for pid in tier_pids:
            tier.stop(pid)
        local_ray.stop(ray)
        ray_log.close()
        started |= set(pids_matching(str(ray.temp_dir)))
        left = [pid for pid in started if alive(pid)]
        if run is not None:
            publish_figures(request, "cases", run.figures)
        assert not left, f"processes left after the fault run: {left}"
        assert not ray.temp_dir.exists()


# ---------------------------------------------------------------------------------------------
# Helpers


def server_states(run: FaultRun) -> dict[tuple[str, str], str]:
    return tier.server_states(run.stats_port)


def all_up(run: FaultRun) -> bool:
    states = server_states(run)
    return all(
        states.get((be, s)) == "UP" for be in (HTTP_BACKEND, GRPC_BACKEND) for s in TIER_SERVERS
    )


def tier_counter(run: FaultRun, column: str) -> int:
    """A column summed over our tier's backend rows (e.g. `wretr`, retries; `hrsp_5xx`)."""
    rows = [r for r in tier.stats(run.stats_port) if r["svname"] == "BACKEND"]
    return sum(int(r[column] or 0) for r in rows)


def tier_retries(run: FaultRun) -> tuple[int, int]:
    """(retries, redispatches) our tier made so far, over every backend."""
    return tier_counter(run, "wretr"), tier_counter(run, "wredis")


def retried_since(run: FaultRun, before: tuple[int, int]) -> dict[str, int]:
    now = tier_retries(run)
    return {"tier_retries": now[0] - before[0], "tier_redispatches": now[1] - before[1]}


def ray_haproxy_reloads(run: FaultRun) -> int:
    """Reloads Ray's HAProxy manager has done so far (its log says so once each)."""
    logs = run.ray.temp_dir.glob("session_*/logs/serve/proxy_*.log")
    return sum(
        path.read_text(errors="replace").count("Successfully performed graceful HAProxy reload")
        for path in logs
    )


def ray_haproxy_stats(run: FaultRun) -> list[dict[str, str]]:
    """Ray's own HAProxy's `show stat`, through its admin socket (in our run's dir, per node)."""
    [path] = run.ray.haproxy_dir.glob("*/admin.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return tier.parse_stats(b"".join(chunks).decode())


def tier_admin(run: FaultRun, command: str) -> str:
    """One command on our tier's admin socket (the running process's)."""
    assert run.spec.admin_socket is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(run.spec.admin_socket)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@contextlib.contextmanager
def tier_fallback_drained(run: FaultRun) -> Iterator[None]:
    """Our tier sends nothing new to Ray's fallback proxy while inside: every request goes
    through Ray's HAProxy, as in the cluster (where every tier server is a pod's Ray HAProxy)."""
    for backend in (HTTP_BACKEND, GRPC_BACKEND):
        said = tier_admin(run, f"set server {backend}/ray-fallback state drain")
        assert not said.strip(), said
    try:
        yield
    finally:
        for backend in (HTTP_BACKEND, GRPC_BACKEND):
            tier_admin(run, f"set server {backend}/ray-fallback state ready")


def ours(run: FaultRun, title: str) -> list[int]:
    """This run's processes whose command line is `title` (how Ray names actor processes)."""
    return [p for p in local_ray.processes(run.ray) if cmdline(p) == title]


def ray_haproxies(run: FaultRun) -> list[int]:
    return [
        p
        for p in local_ray.processes(run.ray)
        if "haproxy" in cmdline(p).split(" ", 1)[0] and str(run.ray.haproxy_dir) in cmdline(p)
    ]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=tier.PROBE_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def assert_none_failed(figures: dict[str, Any]) -> None:
    """No failed request; in the strict-retries measurement, no more than were in flight."""
    allowed = 2 * USERS if STRICT_RETRIES else 0
    assert figures["failed"] <= allowed, figures


# ---------------------------------------------------------------------------------------------
# The cases


def test_each_run_gets_its_own_direct_ingress_ports(tmp_path: Path) -> None:
    """Ray's fixed replica port windows are replaced by free ones per run, away from the rest."""
    a, b = local_ray.node_ports(), local_ray.node_ports()
    env = local_ray.ray_env({}, {}, a, tmp_path)
    http = range(a.direct_http_min, a.direct_http_max + 1)
    grpc = range(a.direct_grpc_min, a.direct_grpc_max + 1)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == str(http.start)
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] == str(grpc.stop - 1)
    workers = set(range(a.worker_min, a.worker_max + 1))
    assert not (set(http) | set(grpc)) & workers and not set(http) & set(grpc)
    assert len(http) == len(grpc) == 50
    assert (a.direct_grpc_min, a.direct_http_min) != (b.direct_grpc_min, b.direct_http_min)


def test_replicas_listen_in_the_runs_own_port_windows(fault_run: FaultRun) -> None:
    """Ray's HAProxy reaches each ingress replica on ports from this run's windows: with Ray's
    fixed defaults a concurrent run's replica shares the gRPC port (SO_REUSEPORT) and answers for
    ours, NOT_FOUND (found by the overload case while another Ray ran on this machine)."""
    p = fault_run.ray.ports
    windows = (
        range(p.direct_http_min, p.direct_http_max + 1),
        range(p.direct_grpc_min, p.direct_grpc_max + 1),
    )
    servers = [r for r in ray_haproxy_stats(fault_run) if r["svname"].startswith("SERVE_REPLICA")]
    assert len(servers) == 2 * 3  # (2 echo + 1 tight ingress replicas) x (HTTP, gRPC)
    for row in servers:
        port = int(row["addr"].rsplit(":", 1)[1])
        assert any(port in w for w in windows), (row["svname"], port, windows)


def test_overload_is_turned_away_fast_and_recovers(fault_run: FaultRun) -> None:
    run = fault_run
    retries_before = tier_counter(run, "wretr") + tier_counter(run, "wredis")
    http_5xx_before = tier_counter(run, "hrsp_5xx")
    burst = 16  # per transport, each asking for a 1.5 s wait before its only chunk

    async def one(client: Client, transport: str) -> Result:
        start = time.perf_counter()
        if transport == "http":
            return await client.http_stream(TIGHT, 1, 8, start, ttft_ms=1500)
        return await client.grpc_stream(TIGHT, 1, 8, start, ttft_ms=1500)

    async def fire() -> list[tuple[str, Result]]:
        async with Client(run.endpoints, timeout_s=REQUEST_S, grpc_channels=2) as client:
            kinds = ["http", "grpc"] * burst
            results = await asyncio.gather(*(one(client, k) for k in kinds))
            return list(zip(kinds, results, strict=True))

    t0 = time.monotonic()
    results = asyncio.run(fire())
    burst_s = time.monotonic() - t0
    rejected = {"http": "http_503", "grpc": "grpc_RESOURCE_EXHAUSTED"}
    turned_away = [(k, r) for k, r in results if r.error == rejected[k]]
    served = [(k, r) for k, r in results if r.ok]
    other = [(k, r.error, r.message) for k, r in results if not r.ok and r.error != rejected[k]]
    # Recovery: the first request after the burst that is served.
    recovered_s = wait_for(
        "tight to serve again",
        lambda: http_ok(f"{run.endpoints.http_url}/tight/unary"),
        CLUSTER_CHANGE_S,
    )
    retries = tier_counter(run, "wretr") + tier_counter(run, "wredis") - retries_before
    http_5xx = tier_counter(run, "hrsp_5xx") - http_5xx_before
    slowest_rejection = max((r.latency_s for _, r in turned_away), default=0.0)
    run.report(
        "overload",
        requests=len(results),
        served=len(served),
        turned_away_http_503=sum(1 for k, _ in turned_away if k == "http"),
        turned_away_grpc_resource_exhausted=sum(1 for k, _ in turned_away if k == "grpc"),
        other_errors=len(other),
        slowest_rejection_s=round(slowest_rejection, 3),
        burst_s=round(burst_s, 2),
        recovery_s=round(recovered_s, 2),
        tier_retries=retries,
    )
    assert not other, other
    assert {k for k, _ in turned_away} == {"http", "grpc"} and served
    assert slowest_rejection < 2.0  # the promised bound: turned away within 2 s, no hang
    # Our tier passed each 503 through once: no retry, and as many 503s as the clients got.
    assert retries == 0
    assert http_5xx == sum(1 for k, _ in turned_away if k == "http")


def _replica_port_serving(run: FaultRun, pid: int) -> bool:
    """Ray's HAProxy has a server on one of the replica's ports, UP, that has taken requests."""
    ports = listening_ports(pid)
    for row in ray_haproxy_stats(run):
        addr = row.get("addr") or ""
        on_replica = ":" in addr and int(addr.rsplit(":", 1)[1]) in ports
        if on_replica and row["status"] == "UP" and int(row["stot"] or 0) > 0:
            return True
    return False


def test_replica_kill_under_load(fault_run: FaultRun) -> None:
    """SIGKILL one of two `EchoIngress` replicas under steady load; every failed request is
    classified, and those that were safe to retry must be none.

    Our tier sends everything to Ray's HAProxy meanwhile (its fallback-proxy server drained), so
    Ray's HAProxy log (one line per request, sent to this run's syslog sink) says which replica
    each request went to and how it ended. The rule: a failed request *reached the victim* when
    Ray's HAProxy logged it as sent to one of the killed replica's servers and cut by that server
    (`SH`/`SD`): matched by its id for HTTP (`rid=` in the URL), by count for gRPC (the log
    carries no per-call id: the failed gRPC calls are at most the gRPC lines so cut). Any other
    failed request never reached a replica and was *retry-safe*: there must be none. Replica
    logs cannot tell: Serve writes a request's line when it ends, and the victim's never do."""
    run = fault_run
    before = ours(run, "ray::ServeReplica:echo:EchoIngress")
    assert len(before) == 2, before
    victim = before[0]
    victim_ports = listening_ports(victim)
    rows = [
        r
        for r in ray_haproxy_stats(run)
        if ":" in (r.get("addr") or "") and int(r["addr"].rsplit(":", 1)[1]) in victim_ports
    ]
    assert len(rows) == 2, rows  # its HTTP and its gRPC server, one name in both backends
    victim_servers = {r["svname"] for r in rows}
    retries = tier_retries(run)
    with tier_fallback_drained(run), SteadyLoad(run) as load:
        t0 = time.monotonic()
        load.wait_for_requests(50)
        os.kill(victim, signal.SIGKILL)
        new: list[int] = []

        def replaced() -> bool:
            new[:] = [p for p in ours(run, "ray::ServeReplica:echo:EchoIngress") if p not in before]
            return bool(new) and _replica_port_serving(run, new[0])

        recovery_s = wait_for("the replacement replica serving", replaced, CLUSTER_CHANGE_S)
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    run.ray_log.settle()
    figures = load.figures(since=t0)
    mine = [s for s in load.samples if s.at >= t0]
    lines = run.ray_log.lines(since=t0)
    classes = classify_failures([s for s in mine if not s.ok], lines, victim_servers)
    cut = Counter(line.transport for line in lines if line.cut_by_server_on(victim_servers))
    http_rids = {s.rid for s in mine if s.transport == "http"}
    logged = {line.rid for line in lines} & http_rids
    run.report(
        "replica_kill",
        **figures,
        failed_reached_victim=sum(classes["reached_victim"].values()),
        failed_retry_safe=sum(classes["retry_safe"].values()),
        failures={
            name: {"errors": dict(errors), "why": FAILURE_CLASSES[name]}
            for name, errors in classes.items()
            if errors
        },
        cut_on_victim_by_ray_haproxy={"http": cut["http"], "grpc": cut["grpc"]},
        ray_haproxy_retried=sum(1 for line in lines if line.retries not in ("0", "+0")),
        ray_haproxy_abnormal_ends=dict(
            Counter(f"{line.status} {line.term[:2]}" for line in lines if line.term[:2] != "--")
        ),
        ray_haproxy_http_logged=f"{len(logged)}/{len(http_rids)}",
        replacement_serving_s=round(recovery_s, 1),
        **retried_since(run, retries),
    )
    assert not alive(victim)
    # The log covered the run (all HTTP went through Ray's HAProxy), else the rule cannot hold.
    assert len(logged) >= 0.99 * len(http_rids), (len(logged), len(http_rids))
    assert not classes["retry_safe"], classes
    # What reached the victim is bounded by what was in flight on it: one request per user.
    assert sum(cut.values()) <= 2 * USERS, cut
    assert recovery_s <= 30


def test_redeploy_under_load(fault_run: FaultRun) -> None:
    run = fault_run
    chunks, tpot = 80, 250  # 20 s streams: longer than the redeploy
    retries, reloads = tier_retries(run), ray_haproxy_reloads(run)
    with SteadyLoad(run) as load:
        t0 = time.monotonic()
        load.wait_for_requests(50)
        streams = {t: load.submit(long_stream(t, ECHO, chunks, tpot)) for t in ("http", "grpc")}
        submitted = time.monotonic()
        local_ray.deploy(
            run.ray, fault_serve_config(run.config, apps=("echo",), version="v2", tight=True)
        )
        deployed = time.monotonic()

        def switched() -> bool:
            recent = [s for s in list(load.samples) if s.ok and s.at > time.monotonic() - 1.0]
            return bool(recent) and all(s.version == "v2" for s in recent)

        wait_for("responses to switch to v2", switched, CLUSTER_CHANGE_S)
        load.wait_for_requests(MIN_REQUESTS, since=t0)
        stream_results = {
            t: f.result(timeout=REQUEST_S + chunks * tpot / 1000) for t, f in streams.items()
        }
    samples = [s for s in load.samples if s.ok]
    first_v2 = min(s.at for s in samples if s.version == "v2")
    last_v1 = max(s.at for s in samples if s.version == "v1")
    figures = load.figures(since=t0)
    run.report(
        "redeploy",
        **figures,
        deploy_s=round(deployed - submitted, 1),
        first_v2_s=round(first_v2 - submitted, 1),
        last_v1_s=round(last_v1 - submitted, 1),
        streams={t: stream_figures(r, chunks) for t, r in stream_results.items()},
        ray_haproxy_reloads=ray_haproxy_reloads(run) - reloads,
        **retried_since(run, retries),
    )
    assert_none_failed(figures)
    assert last_v1 - submitted <= 30
    for result in stream_results.values():
        assert result.ok and result.chunks == chunks, result


def test_stream_during_tier_reload(fault_run: FaultRun) -> None:
    run = fault_run
    chunks, tpot = 40, 200  # 8 s streams
    old = run.tier_pid
    with SteadyLoad(run) as load:
        t0 = time.monotonic()
        load.wait_for_requests(50)
        streams = {t: load.submit(long_stream(t, ECHO, chunks, tpot)) for t in ("http", "grpc")}
        time.sleep(2.0)
        new = _reload_tier(run, run.spec)
        reloaded = time.monotonic()
        stream_results = {
            t: f.result(timeout=REQUEST_S + chunks * tpot / 1000) for t, f in streams.items()
        }
        load.wait_for_requests(MIN_REQUESTS, since=t0)
        wait_for("the old tier process to exit", lambda: not alive(old), PROCESS_EXIT_S)
        old_gone = time.monotonic()
    figures = load.figures(since=t0)
    run.report(
        "tier_reload",
        **figures,
        streams={t: stream_figures(r, chunks) for t, r in stream_results.items()},
        old_process_gone_after_reload_s=round(old_gone - reloaded, 1),
    )
    assert alive(new)
    assert_none_failed(figures)
    for result in stream_results.values():
        assert result.ok and result.chunks == chunks, result


def _reload_tier(run: FaultRun, spec: IngressSpec) -> int:
    new = tier.reload(spec, run.state_dir, run.tier_pid)
    run.tier_pids.append(new)
    run.tier_pid = new
    return new


def test_tier_reloads_with_keepalive_clients_that_never_retry(fault_run: FaultRun) -> None:
    """The known reload race, measured without and with `option idle-close-on-response`: the old
    process closing idle keep-alive connections under clients about to reuse them."""
    run = fault_run
    reloads = 5
    off = dataclasses.replace(run.spec, idle_close_on_response=False)
    port = run.spec.http.port
    figures: dict[str, Any] = {"reloads": reloads}
    # What decides is how the process being replaced treats idle connections: first make the
    # running process one without the option, then reload under load into the same config.
    for name, spec in (("without_option", off), ("with_option", run.spec)):
        _reload_tier(run, spec)
        time.sleep(1.0)
        with RawKeepAlive(port) as load:
            time.sleep(1.0)
            for _ in range(reloads):
                _reload_tier(run, spec)
                time.sleep(1.0)
        figures[name] = load.figures()
    run.report("tier_reload_keepalive", **figures)
    assert figures["with_option"]["failed"] == 0, figures
    assert figures["with_option"]["requests"] > 0
    wait_for(
        "all but the last tier process to exit",
        lambda: _tier_alive(run) == [run.tier_pid],
        PROCESS_EXIT_S,
    )


def _tier_alive(run: FaultRun) -> list[int]:
    return [p for p in run.tier_pids if alive(p)]


def test_ray_haproxy_manager_killed(fault_run: FaultRun) -> None:
    run = fault_run
    [manager] = ours(run, "ray::HAProxyManager")
    old_haproxies = ray_haproxies(run)
    assert old_haproxies
    direct = f"{run.ray.http_url}/echo/unary?size=8"
    retries = tier_retries(run)
    with SteadyLoad(run) as load:
        t0 = time.monotonic()
        load.wait_for_requests(50)
        os.kill(manager, signal.SIGKILL)
        killed = time.monotonic()
        wait_for("Ray's ingress to stop answering", lambda: not http_ok(direct), CLUSTER_CHANGE_S)
        back_s = wait_for("Ray's ingress to serve again", lambda: http_ok(direct), CLUSTER_CHANGE_S)
        recovery_s = time.monotonic() - killed
        wait_for("our tier to see Ray's HAProxy UP", lambda: all_up(run), CLUSTER_CHANGE_S)
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    [new_manager] = ours(run, "ray::HAProxyManager")
    orphans = [p for p in old_haproxies if alive(p)]
    figures = load.figures(since=t0)
    run.report(
        "haproxy_manager_killed",
        **figures,
        ray_ingress_back_s=round(recovery_s, 1),
        orphan_haproxy=len(orphans),
        **retried_since(run, retries),
    )
    assert not orphans, [(p, cmdline(p)) for p in orphans]
    assert all(parent_pid(p) == new_manager for p in ray_haproxies(run))
    assert recovery_s <= 45, back_s
    assert_none_failed(figures)


def test_one_tier_backend_down(fault_run: FaultRun) -> None:
    run = fault_run
    assert all_up(run)
    retries = tier_retries(run)
    with SteadyLoad(run) as load:
        t0 = time.monotonic()
        load.wait_for_requests(50)
        for pid in ray_haproxies(run):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        def marked_down() -> bool:
            states = server_states(run)
            return all(
                states[(be, "ray-head")].startswith("DOWN") for be in (HTTP_BACKEND, GRPC_BACKEND)
            )

        detect_s = wait_for("ray-head marked DOWN", marked_down, CLUSTER_CHANGE_S)
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    during = [s for s in load.samples if killed - 0.5 <= s.at <= killed + detect_s]
    figures = load.figures(since=t0)
    run.report(
        "one_tier_backend_down",
        **figures,
        detection_s=round(detect_s, 2),
        requests_during_detection=len(during),
        failed_during_detection=sum(1 for s in during if not s.ok),
        **retried_since(run, retries),
    )
    assert_none_failed(figures)
