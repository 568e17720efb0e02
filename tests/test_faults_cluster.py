"""The fault suite, part two: the cluster's shape and its failures, on one local run.

One local run in a RayService's shape for the whole module: a head with num-cpus 0 and two worker
nodes, each its own raylet in a PID namespace of its own with its own Ray HAProxy, our tier in
front with one server per node, and GCS fault tolerance on a real Redis (Debian's `redis-server`,
started and stopped here, as Memorystore is in prod). Its Serve config comes from the dev stack
with three echo apps: `echo` (two replicas of each deployment), `solo` (one of each) and `auto`
(Serve autoscaling on its Streamer deployment), each with a short deadline so a hung request ends fast.

Each case runs steady load over HTTP and gRPC through our tier while it breaks one thing, counts
what failed, and times the recovery; figures go to stdout and out/faults/figures.json. Limits on
time are the promised bounds (deadline + 5 s, 60 s), never performance thresholds. The cases run in
file order and replace the nodes they take away, as KubeRay replaces a lost pod.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bounds import CLUSTER_CHANGE_S, PROCESS_EXIT_S, REQUEST_S
from fault_harness import (
    ECHO,
    LogLine,
    RayHaproxyLog,
    SteadyLoad,
    fault_serve_config,
    long_stream,
    publish_figures,
    stream_figures,
    wait_for,
)
from procs import alive, cmdline, pids_matching
from stackfiles import NS, mutated

from components.render.haproxy import GRPC_BACKEND, HTTP_BACKEND, IngressSpec
from components.render.rayservice import worker_pre_stop
from infra.config import StackConfig, hung_replica_bound_s
from infra.specs import tier_backends
from infra.stack_file import parse_stack_config
from raygke import host, kubelet, local, local_faults, local_ray, local_upgrade, tier
from raygke.smoke.contract import AppEndpoint, Endpoints

pytestmark = [pytest.mark.process, pytest.mark.faults]

SERVICE = "raygke.echo.v1.EchoService"
SOLO = AppEndpoint("solo", "echo", "/solo", SERVICE, "solo")
AUTO = AppEndpoint("auto", "echo", "/auto", SERVICE, "auto")
DEADLINE_S = 5  # each app's deadlineS here: a hung request ends at our tier after this long
USERS = 2  # closed-loop users per transport: at most 2 x USERS requests in flight at a fault
MIN_REQUESTS = 300  # per transport, per case
WORKERS = 2
# A one-replica app serves again within this after its replica hung: Serve's health-check bound
# (hung_replica_bound_s, 21 s here) plus its replacement's start, with room for a loaded machine.
SERVES_AGAIN_BOUND_S = 60


def fault_stack() -> StackConfig:
    """The dev stack with the three apps above (Streamer's autoscaling reacts within seconds)."""

    def apps(config: dict[str, Any]) -> None:
        [echo] = [a for a in config[f"{NS}:apps"] if a["kind"] == "echo"]
        config[f"{NS}:apps"] = [
            {**echo, "deadlineS": DEADLINE_S},
            {**echo, "name": "solo", "routePrefix": "/solo", "deadlineS": DEADLINE_S},
            {**echo, "name": "auto", "routePrefix": "/auto", "deadlineS": DEADLINE_S,
             "deployments": {
                 "EchoIngress": {"numReplicas": 1, "numCpus": 1},
                 "Streamer": {"numCpus": 1, "autoscaling": {
                     "minReplicas": 1, "maxReplicas": 4, "targetOngoingRequests": 1,
                     "upscaleDelayS": 1, "downscaleDelayS": 5}},
             }},
        ]  # fmt: skip

    # The old cluster's deletion delay at the least the stack checks allow (our tier's forget time
    # plus these apps' deadline), which the upgrade case waits out.
    least = tier_backends(parse_stack_config("dev", mutated("dev", apps))).forget_s + DEADLINE_S

    def apps_and_delay(config: dict[str, Any]) -> None:
        apps(config)
        config[f"{NS}:rayService"]["upgradeStrategy"]["oldClusterDeletionDelaySeconds"] = least

    return parse_stack_config("dev", mutated("dev", apps_and_delay))


# ---------------------------------------------------------------------------------------------
# Redis, as Memorystore is in prod


@dataclass
class Redis:
    pid: int
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _redis_answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def start_redis(run_dir: Path) -> Redis:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: `make test` installs Debian's redis-server"
    [port] = host.free_ports(1)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "redis.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(run_dir),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    redis = Redis(proc.pid, port)
    try:
        wait_for("redis-server to answer PING", lambda: _redis_answers(port), PROCESS_EXIT_S)
    except AssertionError:
        stop_redis(redis)
        raise
    return redis


def stop_redis(redis: Redis) -> None:
    tier.stop(redis.pid)  # SIGTERM, SIGKILL if needed, and reap: the same as any child of ours


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class ClusterRun:
    config: StackConfig
    serve_config: dict[str, Any]
    ray: local_ray.LocalRay
    redis: Redis
    ray_log: RayHaproxyLog
    state_dir: Path
    ports: dict[str, int]  # our tier's, by name (local.TIER_PORTS)
    tier_pids: list[int]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    upgrades: list[local_ray.LocalRay] = field(default_factory=list)  # clusters an upgrade started

    @property
    def tier_pid(self) -> int:
        return self.tier_pids[-1]

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            f"http://127.0.0.1:{self.ports['http']}", f"127.0.0.1:{self.ports['grpc']}"
        )

    def spec(self) -> IngressSpec:
        spec = local.tier_spec(
            self.config,
            self.ray,
            self.ports["http"],
            self.ports["grpc"],
            self.ports["stats"],
            self.state_dir / "haproxy.pid",
            admin_socket=self.state_dir / "tier.sock",
        )
        return dataclasses.replace(spec, access_log=True)

    def report(self, case: str, **figures: Any) -> None:
        self.figures[case] = figures
        print(f"[faults] {case}: {json.dumps(figures)}")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ClusterRun]:
    state_dir = tmp_path_factory.mktemp("cluster")
    config = fault_stack()
    t0 = time.monotonic()
    redis = start_redis(state_dir / "redis")
    ray_log = RayHaproxyLog()
    ray: local_ray.LocalRay | None = None
    run: ClusterRun | None = None
    started: set[int] = {redis.pid}
    try:
        ray = local_ray.start(
            state_dir / "ray",
            env={**config.ray.serve_flags, "RAY_SERVE_HAPROXY_LOG_TARGET": ray_log.target},
            num_cpus=24,
            workers=WORKERS,
            redis_address=redis.address,
        )
        serve_config = fault_serve_config(config)
        local_ray.deploy(ray, serve_config)
        ports = host.plan_ports(local.TIER_PORTS)
        run = ClusterRun(config, serve_config, ray, redis, ray_log, state_dir, ports, [])
        run.tier_pids.append(tier.start(run.spec(), state_dir))
        wait_for(
            "every node UP in our tier",
            lambda: servers_up(run) == node_names(run),
            CLUSTER_CHANGE_S,
        )
        run.figures["setup"] = {"seconds": round(time.monotonic() - t0, 1)}
        yield run
    finally:
        clusters = [ray] if ray is not None else []
        if run is not None:
            started |= set(run.tier_pids)
            for pid in run.tier_pids:
                tier.stop(pid)
            clusters += run.upgrades
        for each in clusters:
            started |= set(each.pids) | set(local_ray.processes(each))
            local_ray.stop(each)
            started |= set(pids_matching(str(each.temp_dir)))
        stop_redis(redis)
        ray_log.close()
        left = [pid for pid in started if alive(pid)]
        if run is not None:
            publish_figures(request, "cluster", run.figures)
        assert not left, f"processes left after the cluster fault run: {left}"


# ---------------------------------------------------------------------------------------------
# Helpers


def node_names(run: ClusterRun) -> set[str]:
    return {"ray-head", *(w.name for w in run.ray.workers)}


def tier_servers(run: ClusterRun) -> set[str]:
    """The servers our tier has on its HTTP and gRPC backends, whatever their state."""
    rows = tier.stats(run.ports["stats"])
    return {r["svname"] for r in rows if r["pxname"] in (HTTP_BACKEND, GRPC_BACKEND)} - {"BACKEND"}


def servers_up(run: ClusterRun) -> set[str]:
    """The nodes our tier holds UP on both its HTTP and gRPC backends."""
    rows = [
        r for r in tier.stats(run.ports["stats"]) if r["pxname"] in (HTTP_BACKEND, GRPC_BACKEND)
    ]
    up = {(r["pxname"], r["svname"]) for r in rows if r["status"] == "UP"}
    names = {r["svname"] for r in rows} - {"BACKEND"}
    return {n for n in names if (HTTP_BACKEND, n) in up and (GRPC_BACKEND, n) in up}


def replicas(run: ClusterRun, app: str, deployment: str) -> dict[str, list[int]]:
    """{node name: PIDs of the app's replica processes of `deployment` on it}."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    nodes = {"ray-head": run.ray.pid, **{w.name: w.pid for w in run.ray.workers}}
    return {
        name: [p for p in local_ray.node_processes(leader) if cmdline(p) == title]
        for name, leader in nodes.items()
    }


def all_replicas(run: ClusterRun, app: str, deployment: str) -> list[int]:
    return sorted(p for pids in replicas(run, app, deployment).values() for p in pids)


def replace_worker(run: ClusterRun) -> local_ray.WorkerNode:
    """A new worker node joins (as KubeRay replaces a lost pod) and our tier gets a server for it
    (as the headless Service lists the new pod); a gone node's server leaves with the reload. The
    new node serves once Serve places a replica on it (until then its Ray HAProxy says not ready,
    as KubeRay's readiness probe keeps such a pod out of the Service)."""
    worker = local_ray.add_worker(run.ray, 12)
    run.tier_pids.append(tier.reload(run.spec(), run.state_dir, run.tier_pid))
    return worker


def poll_until(predicate: Callable[[], bool], limit_s: float) -> float | None:
    """Seconds until `predicate()` held, polled every half second; None after `limit_s` (the
    caller reports what it saw, then fails)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if predicate():
            return round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    return None


def slowest(load: SteadyLoad, since: float) -> float:
    return max((s.took for s in load.samples if s.at >= since), default=0.0)


def last_failed_sent(load: SteadyLoad, since: float) -> float:
    """Seconds from `since` to when the last request that failed was sent (0: none failed)."""
    return round(
        max((s.at - since for s in load.samples if s.at >= since and not s.ok), default=0), 1
    )


def hung_capacity(run: ClusterRun) -> int:
    """Requests one hung Echo replica of `echo` can hold: each ingress replica's router sends a
    replica at most its max_ongoing_requests (Ray's default 5 where the config leaves it)."""
    [app] = [a for a in run.serve_config["applications"] if a["name"] == "echo"]
    deps = {d["name"]: d for d in app["deployments"]}
    return deps["EchoIngress"]["num_replicas"] * deps["Echo"].get("max_ongoing_requests", 5)


def health_check_bound(run: ClusterRun) -> float:
    """Seconds within which Serve marks a hung Echo replica of `echo` unhealthy, from the health
    check the run deployed (the bound `raygke plan` states)."""
    [app] = [a for a in run.serve_config["applications"] if a["name"] == "echo"]
    [echo] = [d for d in app["deployments"] if d["name"] == "Echo"]
    return hung_replica_bound_s(echo["health_check_period_s"], echo["health_check_timeout_s"])


def serves_again_after(load: SteadyLoad, since: float) -> float | None:
    """Seconds from `since` to the start of the last unbroken run of successes (None: no success)."""
    mine = sorted((s for s in load.samples if s.at >= since), key=lambda s: s.at)
    last_failure = max((s.at + s.took for s in mine if not s.ok), default=None)
    if last_failure is None:
        return 0.0
    after = [s for s in mine if s.ok and s.at >= last_failure]
    return round(after[0].at - since, 1) if after else None


def failed_routes(run: ClusterRun, load: SteadyLoad, since: float) -> list[dict[str, Any]]:
    """Where each failed HTTP request went, by its id: the node our tier sent it to and the server
    Ray's HAProxy there chose (a replica, or `fallback`: Serve's proxy, its backup when the app has
    no replica UP), with each one's termination state. What tells a routing defect (sent to a
    draining node or a stopped replica) from a slow machine."""
    tier_lines = (run.state_dir / "haproxy.log").read_text(errors="replace").splitlines()
    ray_lines = run.ray_log.lines(since=since)
    found = []
    for s in load.samples:
        if s.at < since or s.ok or s.transport != "http":
            continue
        mark = f"rid={s.rid} "
        tier_line = next((t for t in reversed(tier_lines) if mark in t), "")
        ray = next((r for r in reversed(ray_lines) if r.rid == s.rid), None)
        found.append({
            "sent_s": round(s.at - since, 1),
            "error": s.error,
            "tier": " ".join(tier_line.split()[3:4] + tier_line.split()[9:10]),
            "ray_haproxy": ray and f"{'fallback' if 'fallback' in ray.server else ray.server} {ray.term}",
        })  # fmt: skip
    return found


# ---------------------------------------------------------------------------------------------
# The cases


def test_worker_node_loss_under_load(cluster: ClusterRun) -> None:
    """Every process of one worker node SIGKILLed at once (a preempted Spot VM): failures bounded
    by what was in flight there, none after recovery, replicas back on the surviving node."""
    run = cluster
    victim, survivor = run.ray.workers
    placed = {d: replicas(run, "echo", d) for d in ("EchoIngress", "Echo")}
    # First case of the module: Serve spread the two replicas of each over the two workers, so
    # either node serves echo alone.
    assert all(p[victim.name] and p[survivor.name] for p in placed.values()), placed
    lost = {d: len(p[victim.name]) for d, p in placed.items()}
    with SteadyLoad(run, ECHO, users=USERS) as load:
        load.wait_for_requests(50)
        t0 = time.monotonic()
        killed = local_faults.kill_node(victim.pid)
        run.ray.workers.remove(victim)

        def recovered() -> bool:
            back = {d: all_replicas(run, "echo", d) for d in ("EchoIngress", "Echo")}
            return all(len(p) == 2 for p in back.values())

        recovered_s = wait_for(
            "echo's replicas back on the surviving node", recovered, CLUSTER_CHANGE_S
        )
        after = time.monotonic()
        load.wait_for_requests(MIN_REQUESTS, since=after)
    figures = load.figures(since=t0)
    after_recovery = load.figures(since=after)
    down_detect = [s for s in load.samples if s.at >= t0 and not s.ok]
    run.report(
        "worker_node_loss",
        **figures,
        processes_killed=len(killed),
        replicas_lost=lost,
        replicas_back_s=round(recovered_s, 1),
        failed_after_recovery=after_recovery["failed"],
        last_failure_s=round(max((s.at - t0 for s in down_detect), default=0.0), 1),
    )
    assert figures["failed"] <= 2 * USERS, figures
    assert after_recovery["failed"] == 0, after_recovery
    replace_worker(run)


def test_hung_replica_ends_at_the_deadline_and_is_replaced(cluster: ClusterRun) -> None:
    """SIGSTOP one of echo's two Echo replicas and solo's only one (a stuck CUDA call looks like
    this from outside). No request waits past its deadline + 5 s: our tier answers 504 /
    DEADLINE_EXCEEDED; echo fails at most what was in flight on the hung replica, solo serves again
    once Serve's health check replaces it."""
    run = cluster
    [echo_victim, *_] = all_replicas(run, "echo", "Echo")
    [solo_victim] = all_replicas(run, "solo", "Echo")
    with (
        SteadyLoad(run, ECHO, users=USERS) as echo_load,
        SteadyLoad(run, SOLO, users=1) as solo_load,
    ):
        echo_load.wait_for_requests(50)
        solo_load.wait_for_requests(20)
        t0 = time.monotonic()
        for victim in (echo_victim, solo_victim):
            os.kill(victim, signal.SIGSTOP)
        try:
            # Serve starts the replacement first; the hung process goes only after the
            # graceful-shutdown timeout (here our finally kills it once the case is measured).
            replaced_s = wait_for(
                "Serve to start a replacement for each hung replica",
                lambda: len(set(all_replicas(run, "echo", "Echo")) - {echo_victim}) == 2
                and len(set(all_replicas(run, "solo", "Echo")) - {solo_victim}) == 1,
                CLUSTER_CHANGE_S,
            )  # fmt: skip
            wait_for("solo to serve again", lambda: solo_load.count("http", time.monotonic() - 1) > 0
                     and serves_again_after(solo_load, t0) is not None, SERVES_AGAIN_BOUND_S)  # fmt: skip
            echo_load.wait_for_requests(MIN_REQUESTS, since=t0)
        finally:
            for victim in (echo_victim, solo_victim):
                if alive(victim):
                    os.kill(victim, signal.SIGKILL)
    echo, solo = echo_load.figures(since=t0), solo_load.figures(since=t0)
    figures = {
        "deadline_s": DEADLINE_S,
        "replacements_started_s": round(replaced_s, 1),
        "echo_two_replicas": {
            **echo,
            "slowest_s": round(slowest(echo_load, t0), 2),
            "last_failed_sent_s": last_failed_sent(echo_load, t0),
            "hung_replica_capacity": hung_capacity(run),
            "health_check_bound_s": health_check_bound(run),
        },
        "solo_one_replica": {
            **solo,
            "slowest_s": round(slowest(solo_load, t0), 2),
            "serves_again_s": serves_again_after(solo_load, t0),
        },
    }
    run.report("hung_replica", **figures)
    timed_out = {"http:http_504", "grpc:grpc_DEADLINE_EXCEEDED"}
    for load, name in ((echo_load, "echo"), (solo_load, "solo")):
        assert slowest(load, t0) <= DEADLINE_S + 5, (name, figures)
        assert set(load.figures(since=t0)["errors"]) <= timed_out, (name, figures)
    # What the hung replica can hold in flight: each ingress replica's router sends it at most its
    # max_ongoing_requests. Routers stop choosing it once its queue-length probes time out, and
    # Serve takes it out of routing within its health-check bound: no request sent later fails.
    assert echo["failed"] <= hung_capacity(run), (hung_capacity(run), figures)
    assert figures["echo_two_replicas"]["last_failed_sent_s"] <= health_check_bound(run), figures
    assert solo["failed"] > 0 and figures["solo_one_replica"]["serves_again_s"] is not None
    assert figures["solo_one_replica"]["serves_again_s"] <= SERVES_AGAIN_BOUND_S, figures


def test_autoscaling_adds_replicas_across_workers_and_removes_them(cluster: ClusterRun) -> None:
    """A load step on `auto` (slow streams, more at once than its target of 1 ongoing request per
    replica): Serve adds Streamer replicas, spread over the worker nodes, and removes them after."""
    run = cluster
    timeline: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def sample() -> dict[str, int]:
        per_node = {n: len(p) for n, p in replicas(run, "auto", "Streamer").items() if p}
        timeline.append({"t": round(time.monotonic() - t0, 1), **per_node})
        return per_node

    def stream(client: Any) -> Any:
        return long_stream("http", AUTO, 20, 50)(client)  # 1 s each

    with SteadyLoad(run, AUTO, users=1, pause_s=0.05) as load:
        load.wait_for_requests(10)
        step = time.monotonic()
        in_flight: list[Any] = []
        peak: dict[str, int] = {}

        def scaled_out() -> bool:
            nonlocal peak
            in_flight[:] = [f for f in in_flight if not f.done()]
            while len(in_flight) < 6:
                in_flight.append(load.submit(stream))
            now = sample()
            if sum(now.values()) > sum(peak.values()):
                peak = now
            return sum(now.values()) >= 3 and len(now) >= 2

        up_s = poll_until(scaled_out, CLUSTER_CHANGE_S)
        for f in in_flight:
            f.result(timeout=REQUEST_S)
        load_end = time.monotonic()
        down_s = poll_until(lambda: sum(sample().values()) == 1, CLUSTER_CHANGE_S)
    figures = load.figures(since=step)
    run.report(
        "autoscaling",
        **figures,
        step_to_spread_s=up_s,
        peak_replicas_per_node=peak,
        load_end_to_one_replica_s=down_s,
        load_s=round(load_end - step, 1),
        timeline=timeline[:: max(1, len(timeline) // 40)],
    )
    assert figures["failed"] == 0, figures
    assert up_s is not None and down_s is not None, timeline
    assert len(peak) >= 2 and "ray-head" not in peak, timeline


def test_drain_with_the_rendered_prestop_fails_nothing(cluster: ClusterRun) -> None:
    """The preStop command the RayService renders for workers, run inside a worker node (its PID
    namespace and env, as the kubelet runs it in the pod) under load: Ray drains the node, Serve
    moves its replicas, the node stops; no request fails."""
    run = cluster
    drain_s = run.config.ray_service.shutdown.drain_deadline_seconds
    # The worker holding echo's replicas (after the node loss, all of them; the other is new).
    victim = max(run.ray.workers, key=lambda w: len(replicas(run, "echo", "Echo")[w.name]))
    script = worker_pre_stop(drain_s)
    moved = {d: replicas(run, "echo", d)[victim.name] for d in ("EchoIngress", "Echo")}
    assert any(moved.values()), "no echo replica on the drained worker: nothing to show"
    with SteadyLoad(run, ECHO, users=USERS) as load:
        load.wait_for_requests(50)
        t0 = time.monotonic()
        result = kubelet.run_in_node(run.ray, victim, script, timeout_s=drain_s + CLUSTER_CHANGE_S)
        pre_stop_s = time.monotonic() - t0
        # The kubelet's part once the preStop returned: SIGTERM to the container's main process.
        grace = run.config.ray_service.shutdown.termination_grace_period_seconds - pre_stop_s
        left_for_sigkill = kubelet.terminate_node(run.ray, victim, grace_s=max(grace, 1))
        stopped_s = time.monotonic() - t0 - pre_stop_s
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    run.ray.workers.remove(victim)
    run.ray_log.settle()
    survivors = {d: all_replicas(run, "echo", d) for d in ("EchoIngress", "Echo")}
    figures = load.figures(since=t0)
    run.report(
        "drain",
        **figures,
        drain_deadline_s=drain_s,
        pre_stop_s=round(pre_stop_s, 1),
        node_gone_after_pre_stop_s=round(stopped_s, 1),
        killed_at_grace=len(left_for_sigkill),
        replicas_moved={d: len(p) for d, p in moved.items()},
        failed_http_routes=failed_routes(run, load, t0),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not left_for_sigkill  # the node stopped within the pod's grace
    assert figures["failed"] == 0, figures
    assert all(len(p) == 2 for p in survivors.values()), survivors
    replace_worker(run)


def test_head_restart_with_gcs_fault_tolerance(cluster: ClusterRun) -> None:
    """The head node's processes SIGKILLed, then started again on the same Redis: our tier keeps
    serving through the workers while the head is down, and the apps are still deployed (the same
    replicas, no redeploy) when it is back."""
    run = cluster
    before = {d: all_replicas(run, "echo", d) for d in ("EchoIngress", "Echo")}
    with SteadyLoad(run, ECHO, users=USERS) as load:
        load.wait_for_requests(50)
        t0 = time.monotonic()
        local_faults.kill_node(run.ray.pid)
        wait_for(
            "our tier to mark the head DOWN",
            lambda: "ray-head" not in servers_up(run),
            CLUSTER_CHANGE_S,
        )
        down_since = time.monotonic()
        time.sleep(10)  # the head stays down a while: traffic must not need it
        served_while_down = load.count("http", down_since) + load.count("grpc", down_since)
        failed_while_down = sum(1 for s in load.samples if s.at >= down_since and not s.ok)
        restart = time.monotonic()
        head_starts = local_faults.restart_head(run.ray)
        statuses: dict[str, str] = {}

        def apps_running() -> bool:
            statuses.update(local_faults.app_statuses(run.ray))
            return bool(statuses) and all(v == "RUNNING" for v in statuses.values())

        running_s = wait_for(
            "the apps RUNNING under the restarted head", apps_running, CLUSTER_CHANGE_S
        )
        head_up_s = wait_for("the head's ingress UP in our tier",
                             lambda: "ray-head" in servers_up(run), CLUSTER_CHANGE_S)  # fmt: skip
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    after = {d: all_replicas(run, "echo", d) for d in ("EchoIngress", "Echo")}
    figures = load.figures(since=t0)
    run.report(
        "head_restart",
        **figures,
        served_while_head_down=served_while_down,
        failed_while_head_down=failed_while_down,
        apps_running_after_restart_s=round(running_s, 1),
        head_ingress_up_after_restart_s=round(time.monotonic() - restart, 1),
        head_up_wait_s=round(head_up_s, 1),
        same_replicas=before == after,
        head_start_attempts=head_starts,
        statuses=statuses,
    )
    assert served_while_down > 0 and failed_while_down == 0, figures
    assert figures["failed"] <= 2 * USERS, figures
    assert set(statuses) == {"echo", "solo", "auto"}, statuses
    assert before == after, (before, after)


def upgrade_run(
    run: ClusterRun,
    serve_config: dict[str, Any],
    cluster: str,
    *,
    env: dict[str, str],
    workers: int,
    on_step: Callable[[str, local_ray.LocalRay], None],
) -> tuple[local_ray.LocalRay, dict[str, Any]]:
    """`raygke local upgrade`'s steps on the module's run: a new cluster `cluster` with this Serve
    config behind our running tier; the old one's pods stop as the fault stack renders them."""
    return local_upgrade.upgrade_cluster(
        run.ray,
        run.config.ray_service.shutdown,
        run.config,
        serve_config,
        spec=run.spec(),
        tier_dir=run.state_dir,
        run_dir=run.state_dir / f"ray-{cluster}",
        cluster=cluster,
        env=env,
        num_cpus=24,
        workers=workers,
        on_progress=print,
        on_step=on_step,
    )


def _app_requests(lines: list[LogLine]) -> list[LogLine]:
    """The apps' requests among Ray's HAProxy log lines (not its own paths: checks, routes)."""
    return [ln for ln in lines if not [*ln.request.split(), "", ""][1].startswith("/-/")]


def test_upgrade_whose_new_cluster_never_serves_switches_nothing(cluster: ClusterRun) -> None:
    """A NewCluster upgrade to new code that never deploys (echo's builder is gone): the pending
    cluster is stopped, our tier never sends to it, the old cluster serves throughout, and the
    upgrade fails saying why (`raygke local upgrade` exits 1 with that line)."""
    run = cluster
    broken = json.loads(json.dumps(run.serve_config))
    [echo] = [a for a in broken["applications"] if a["name"] == "echo"]
    echo["import_path"] = "app.echo:no_such_builder"
    broken["applications"] = [echo]  # the others would only slow the failure down
    servers_before = tier_servers(run)
    with SteadyLoad(run, ECHO, users=USERS) as load:
        load.wait_for_requests(50)
        t0 = time.monotonic()
        with pytest.raises(local_upgrade.UpgradeError) as refused:
            upgrade_run(
                run,
                broken,
                "broken",
                env=dict(run.config.ray.serve_flags),
                workers=0,  # the failure is the app's, whatever the shape: the cheapest cluster
                on_step=lambda _step, new: run.upgrades.append(new),
            )
        failed_after_s = time.monotonic() - t0
        load.wait_for_requests(MIN_REQUESTS, since=t0)
    figures = load.figures(since=t0)
    # The pending cluster's processes name its temp dir, one of ours (not Ray's own /tmp/ray).
    strays = [p for p in pids_matching("/tmp/raygke-") if str(run.ray.temp_dir) not in cmdline(p)]
    run.report(
        "upgrade_never_healthy",
        **figures,
        failed_after_s=round(failed_after_s, 1),
        message=str(refused.value),
        pending_processes_left=len(strays),
    )
    assert "never served" in str(refused.value) and "no_such_builder" in str(refused.value)
    assert "nothing was switched, the old cluster serves" in str(refused.value)
    assert figures["failed"] == 0, figures
    assert not run.upgrades  # it never got its apps RUNNING
    assert not strays, [cmdline(p) for p in strays]
    assert tier_servers(run) == servers_before == node_names(run)


def test_upgrade_to_a_new_cluster_under_load(cluster: ClusterRun) -> None:
    """A NewCluster upgrade (echo's version v1 -> v2, a cluster of the same shape on the same
    Redis) under HTTP and gRPC load, with streams in flight at the switch: the pending cluster gets
    no request before our tier switches to it, nothing fails, the streams complete on the old
    cluster, and the old cluster stops with the rendered preStop after the deletion delay. Runs last:
    the module's cluster is the new one afterwards."""
    run = cluster
    new_log = RayHaproxyLog()
    serve_config = fault_serve_config(run.config, version="v2")
    chunks, tpot_ms = 20, 500  # 10 s streams, started as the new apps are RUNNING
    streams: dict[str, Any] = {}
    switched: dict[str, float] = {}

    def step(name: str, new: local_ray.LocalRay) -> None:
        switched[name] = time.monotonic()
        if name == "apps_running":
            run.upgrades.append(new)
            for transport in ("http", "grpc"):
                streams[transport] = load.submit(long_stream(transport, ECHO, chunks, tpot_ms))

    try:
        with SteadyLoad(run, ECHO, users=USERS) as load:
            load.wait_for_requests(50)
            t0 = time.monotonic()
            old = run.ray
            new, upgrade = upgrade_run(
                run,
                serve_config,
                "c2",
                env={**run.config.ray.serve_flags, "RAY_SERVE_HAPROXY_LOG_TARGET": new_log.target},
                workers=WORKERS,
                on_step=step,
            )
            run.ray = new
            load.wait_for_requests(50, since=time.monotonic())
            done = {t: f.result(REQUEST_S) for t, f in streams.items()}
        new_log.settle()
        early = _app_requests(new_log.lines(until=switched["switching"]))
        served_by_new = len(_app_requests(new_log.lines()))
    finally:
        new_log.close()
    mine = [s for s in load.samples if s.at >= t0]
    versions = {v: [s.at - t0 for s in mine if s.ok and s.version == v] for v in ("v1", "v2")}
    started = switched["apps_running"]  # when the streams were sent
    spanned = {t: started < switched["switching"] < started + r.latency_s for t, r in done.items()}
    figures = load.figures(since=t0)
    run.report(
        "upgrade",
        **figures,
        requests_to_pending_before_promotion=len(early),
        requests_served_by_new_cluster=served_by_new,
        first_v2_sent_s=round(min(versions["v2"]), 1) if versions["v2"] else None,
        last_v1_sent_s=round(max(versions["v1"]), 1) if versions["v1"] else None,
        streams_in_flight_at_promotion={
            t: {**stream_figures(r, chunks), "spanned_promotion": spanned[t]}
            for t, r in done.items()
        },
        **upgrade,
        failed_http_routes=failed_routes(run, load, t0),
    )
    assert not early, [ln.request for ln in early]
    assert figures["failed"] == 0, figures
    assert all(r.ok and r.chunks == chunks for r in done.values()), done
    assert all(spanned.values()), spanned
    assert versions["v2"] and served_by_new > 0
    assert upgrade["old_in_flight_at_deletion"] == 0, upgrade
    assert not local_ray.processes(old)
    if kubelet.can_run_pre_stop():
        # Each preStop ran to its `ray stop`, which ends the node: its PID 1 may take the preStop's
        # shell with it (SIGKILL to the whole PID namespace, as in a pod). What a worker still had
        # at the grace period was SIGKILLed, as the kubelet does; it served nothing by then.
        nodes = upgrade["old_cluster"]["nodes"]
        grace = run.config.ray_service.shutdown.termination_grace_period_seconds
        assert all(n["rc"] in (0, -signal.SIGKILL) for n in nodes.values()), nodes
        assert all(n["pre_stop_s"] <= grace for n in nodes.values()), nodes
    new_names = {s.name for s in local.node_servers(run.config, new, cluster="c2")}
    assert servers_up(run) == new_names
