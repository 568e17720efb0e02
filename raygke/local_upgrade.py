"""`raygke local upgrade`: a NewCluster upgrade of a local run, as KubeRay runs one for a RayService.

KubeRay v1.7.0 (controllers/ray/rayservice_controller.go): a change to the RayService's cluster starts a
pending RayCluster beside the active one; only once its Serve apps are all RUNNING does it point the serve
Service at it (reconcileServices, through common/service.go BuildServeService's selector), and it
deletes the old cluster `rayClusterDeletionDelaySeconds` later (cleanUpRayClusterInstance), whose pods
then run their preStop. Our tier follows the serve Service's records. Here, the same steps on one
machine: a second local cluster with the new stack's flags and Serve config, its apps waited for as
KubeRay waits, our tier switched the way its DNS resolvers switch it (the new nodes' servers in once
their checks pass, the old ones into maintenance: what they have in flight goes on, nothing new
reaches them), and after the stack's deletion delay the old cluster's nodes stopped as the kubelet
stops a deleted pod (the rendered preStop inside each node, then SIGTERM, SIGKILL at the grace).
A pending cluster whose apps never become healthy is stopped; nothing is switched and the command
fails saying why, the old cluster serving throughout.

Owns: the order of those steps, their bounds, and what the upgrade measured (`upgrade.json`).
Does not own: starting or deploying a cluster (raygke/local_ray.py), our tier's runtime commands
(raygke/tier.py), a pod's deletion (raygke/kubelet.py), the preStop scripts and the deletion delay
(components/render/rayservice.py, infra/specs.py), the run's state file (raygke/local.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.render.haproxy import (
    IngressSpec,
    StaticBackends,
    StaticServer,
    render_haproxy_cfg,
)
from components.render.rayservice import head_pre_stop, worker_pre_stop
from infra.config import ServeProfile, ShutdownConfig, StackConfig, with_serve_profile
from infra.specs import SERVE_LOG_ENV, cluster_deletion_delay_s
from infra.stack_file import load_stack_config
from raygke import host, kubelet, local, local_ray, tier
from raygke.local_ray import LocalRay, LocalRayError, Progress

# How long the new nodes' servers may take to pass our tier's checks once the apps are RUNNING:
# `rise` checks `downinter` apart, on a loaded machine (the same bound as a run's first start).
PROMOTE_TIMEOUT_S = tier.SERVING_TIMEOUT_S
# Servers whose requests HAProxy still holds cannot be removed; it lets go of them within this.
SERVER_RELEASE_S = 10.0
SAMPLE_EVERY_S = 2.0  # how often the peak of both clusters' memory is sampled
PROGRESS_EVERY_S = 10.0


class UpgradeError(local.LocalError):
    """The new cluster never served: it was stopped, nothing was switched, the old one serves."""


class PeakUsage:
    """The most memory (PSS) and processes seen while it runs, summed over what `pids()` lists."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.pss_bytes = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_EVERY_S)

    def sample(self) -> None:
        now = usage(self._pids())
        self.pss_bytes = max(self.pss_bytes, now["pss_bytes"])
        self.processes = max(self.processes, now["processes"])

    def __enter__(self) -> PeakUsage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, Any]:
        return figures_of({"pss_bytes": self.pss_bytes, "processes": self.processes})


def usage(pids: list[int]) -> dict[str, int]:
    """Memory (PSS, each shared page counted once) and the count of `pids`."""
    return {"pss_bytes": sum(host.pss_bytes(p) for p in pids), "processes": len(pids)}


def figures_of(used: dict[str, int]) -> dict[str, Any]:
    return {"pss_gib": round(used["pss_bytes"] / 2**30, 2), "processes": used["processes"]}


def _wait(what: str, done: Callable[[], bool], limit_s: float, say: Progress) -> bool:
    """Polls `done` until it holds (True) or `limit_s` passes (False), saying what it waits for."""
    t0 = time.monotonic()
    next_report = t0 + PROGRESS_EVERY_S
    while not done():
        now = time.monotonic()
        if now - t0 > limit_s:
            return False
        if now >= next_report:
            say(f"waiting for {what} ({now - t0:.0f} s of at most {limit_s:.0f} s)")
            next_report = now + PROGRESS_EVERY_S
        time.sleep(0.25)
    return True


def start_pending(
    old: LocalRay,
    serve_config: dict[str, Any],
    *,
    env: dict[str, str],
    num_cpus: int,
    workers: int,
    run_dir: Path,
    say: Progress,
) -> LocalRay:
    """The pending cluster, its apps RUNNING and routable on every node (KubeRay's condition for
    switching the serve Service). UpgradeError, with it stopped, if it never gets there."""
    try:
        pending = local_ray.start(
            run_dir,
            env=env,
            num_cpus=num_cpus,
            workers=workers,
            redis_address=old.redis_address,  # the same Redis, a namespace of its own
            on_progress=say,
        )
    except LocalRayError as exc:
        raise UpgradeError(
            f"the new cluster did not start ({exc}); nothing was switched, the old cluster serves"
        ) from None
    try:
        local_ray.deploy(pending, serve_config, on_progress=say)
    except BaseException as exc:
        say("the new cluster's apps did not become healthy: stopping it")
        local_ray.stop(pending, check=False)
        if isinstance(exc, LocalRayError):
            raise UpgradeError(
                f"the new cluster never served ({exc}); nothing was switched, the old cluster "
                "serves"
            ) from None
        raise
    return pending


def promote(
    spec: IngressSpec,
    old: set[str],
    new: tuple[StaticServer, ...],
    say: Progress,
    switching: Callable[[], None],
) -> None:
    """Our tier's switch, as its resolvers make it when the serve Service's records change: the new
    nodes' servers added in maintenance, their checks waited for, then (`switching` told just
    before) they take new requests and the old servers stop taking any (in-flight requests go on:
    maintenance ends none)."""
    names = {s.name for s in new}
    tier.add_servers(spec, new)
    if not _wait(
        "the new nodes' checks in our tier",
        lambda: tier.checks_pass(spec, names),
        PROMOTE_TIMEOUT_S,
        say,
    ):
        tier.delete_servers(spec, names)
        raise UpgradeError(
            f"the new nodes never passed our tier's checks within {PROMOTE_TIMEOUT_S:.0f} s; "
            "nothing was switched, the old cluster serves"
        )
    switching()
    tier.set_servers_state(spec, names, "ready")
    tier.set_servers_state(spec, old, "maint")


def delete_cluster(shutdown: ShutdownConfig, ray: LocalRay, say: Progress) -> dict[str, Any]:
    """What follows KubeRay's deletion of a RayCluster: every pod at once runs its preStop (the
    scripts rendered for that cluster's pods, inside its node), then gets SIGTERM, and SIGKILL at
    the grace period. Without PID namespaces a preStop's `ray stop` would reach every node here:
    the nodes are stopped by PID."""
    grace = shutdown.termination_grace_period_seconds
    nodes: dict[str, tuple[local_ray.WorkerNode | None, str]] = {
        "ray-head": (None, head_pre_stop()),
        **{w.name: (w, worker_pre_stop(shutdown.drain_deadline_seconds)) for w in ray.workers},
    }
    found: dict[str, Any] = {}
    if not kubelet.can_run_pre_stop():
        say("no PID namespaces on this machine: stopping the old cluster by PID, without preStop")
        local_ray.stop(ray)
        return {"pre_stop": "not run: no PID namespaces on this machine"}

    def stop_node(name: str, worker: local_ray.WorkerNode | None, script: str) -> None:
        t0 = time.monotonic()
        result = kubelet.run_in_node(ray, worker, script, timeout_s=grace)
        ran = time.monotonic() - t0
        left = kubelet.terminate_node(ray, worker, grace_s=max(grace - ran, 1))
        found[name] = {"pre_stop_s": round(ran, 1), "rc": result.returncode, "killed": len(left)}

    threads = [
        threading.Thread(target=stop_node, args=(name, worker, script), daemon=True)
        for name, (worker, script) in nodes.items()
    ]
    for t in threads:
        t.start()
    say(
        f"old cluster deleted: {len(nodes)} nodes run their preStop (drain deadline "
        f"{shutdown.drain_deadline_seconds} s, grace {grace} s)"
    )
    for t in threads:
        t.join()
    local_ray.stop(ray)  # what no node's stop reached (none, normally), and its temp dir
    return {"nodes": found, "killed_at_grace": sum(n["killed"] for n in found.values())}


def upgrade_cluster(
    old: LocalRay,
    old_shutdown: ShutdownConfig,
    config: StackConfig,
    serve_config: dict[str, Any],
    *,
    spec: IngressSpec,
    tier_dir: Path,
    run_dir: Path,
    cluster: str,
    env: dict[str, str],
    num_cpus: int,
    workers: int,
    on_progress: Progress | None = None,
    on_step: Callable[[str, LocalRay], None] | None = None,
) -> tuple[LocalRay, dict[str, Any]]:
    """Upgrades the cluster behind our running tier (`spec`, with an admin socket) from `old` (its
    pods stop as `old_shutdown` says) to a new one named `cluster` with the stack `config`, as the
    module docstring says; returns the new cluster and the figures.
    `on_step` hears each step as it is reached (`apps_running`, `switching`: our tier is about to
    send to the new cluster, `promoted`, `old_stopped`) with the new cluster: `raygke local upgrade`
    records the run's state at `promoted`, so an upgrade stopped while the old cluster waits for its
    deletion leaves a state `raygke local down` can stop."""
    say = on_progress or (lambda _msg: None)
    told = on_step or (lambda _step, _ray: None)
    started = time.monotonic()
    figures: dict[str, Any] = {}

    def mark(step: str) -> float:
        """Seconds from the upgrade's start to `step`, kept as the figure `<step>_s`."""
        figures[f"{step}_s"] = seconds = round(time.monotonic() - started, 1)
        return seconds

    clusters: list[LocalRay] = [old]

    def pids() -> list[int]:
        return [p for ray in clusters for p in local_ray.processes(ray)]

    old_names = {s.name for s in spec.backends.servers}  # type: ignore[union-attr]
    with PeakUsage(pids) as peak:
        figures["before"] = figures_of(usage(pids()))
        say(f"starting the new cluster {cluster} beside the one serving")
        new = start_pending(
            old, serve_config, env=env, num_cpus=num_cpus, workers=workers, run_dir=run_dir, say=say
        )
        clusters.append(new)
        mark("apps_running")
        told("apps_running", new)
        new_servers = local.node_servers(config, new, cluster=cluster)
        try:
            promote(spec, old_names, new_servers, say, lambda: told("switching", new))
        except BaseException:
            local_ray.stop(new, check=False)
            raise
        promoted = mark("promoted")
        new_spec = dataclasses.replace(spec, backends=StaticBackends(new_servers))
        tier.write_config(new_spec, tier_dir)
        told("promoted", new)
        figures["old_in_flight_at_promotion"] = tier.in_flight(spec, old_names)
        delay = cluster_deletion_delay_s(config)
        say(
            f"our tier sends to {cluster} ({promoted:.1f} s after the upgrade began); the old "
            f"cluster is deleted in {delay} s (rayClusterDeletionDelaySeconds)"
        )
        t_promoted = time.monotonic()
        _wait(
            "the old cluster's deletion delay",
            lambda: time.monotonic() - t_promoted >= delay,
            delay + 1,
            lambda msg: say(f"{msg}; in flight on it: {tier.in_flight(spec, old_names)}"),
        )
        figures["old_in_flight_at_deletion"] = tier.in_flight(spec, old_names)
        figures["deletion_delay_s"] = delay
        figures["old_cluster"] = delete_cluster(old_shutdown, old, say)
        mark("old_stopped")
        clusters.remove(old)
        told("old_stopped", new)
        _wait(
            "our tier to let go of the old servers",
            lambda: tier.in_flight(spec, old_names) == 0,
            SERVER_RELEASE_S,
            say,
        )
        tier.delete_servers(spec, old_names)
    figures["peak"] = peak.figures()
    return new, figures


def upgrade(
    stack: str,
    *,
    profile: ServeProfile | None = None,
    state_dir: str | Path | None = None,
    config: StackConfig | None = None,
    on_step: Callable[[str, LocalRay], None] | None = None,
) -> int:
    """`raygke local upgrade`: the running local run to the stack's config as it is now (or to
    `config`, already read: bench/upgrade.py). `on_step` hears the steps as `upgrade_cluster`'s."""
    state_dir = Path(state_dir or local.DEFAULT_STATE_DIR).resolve()
    state = local.read_state(state_dir)
    if state is None:
        raise local.LocalError(
            f"no local run in {state_dir}; start one with `raygke local up` first"
        )
    tier_state = state.get("tier") or {}
    if not tier_state.get("admin_socket") or not host.alive(tier_state.get("pid", 0)):
        raise local.LocalError(
            f"the run in {state_dir} has no running tier with an admin socket; "
            "`raygke local down` and `raygke local up` it again"
        )
    if config is None:
        config = load_stack_config(stack)
    if profile is not None:
        config = with_serve_profile(config, profile)
    old = local.ray_from_state(state)
    generation = state.get("generation", 1) + 1
    cluster = f"c{generation}"
    spec = local.tier_spec(
        config,
        old,
        tier_state["http"],
        tier_state["grpc"],
        tier_state["stats"],
        state_dir / "haproxy.pid",
        admin_socket=Path(tier_state["admin_socket"]),
        cluster=state.get("cluster", ""),
        metrics=tier_state.get("metrics"),
    )
    running = (state_dir / "haproxy.cfg").read_text()
    if render_haproxy_cfg(spec) != running:
        raise local.LocalError(
            f"stack {stack!r} changes our tier itself (its routes, deadlines, ports or gRPC), not "
            "only the Ray cluster: in the cluster that rolls the tier's pods, apart from KubeRay's "
            "upgrade; here, `raygke local down` and `raygke local up --stack ...`"
        )
    serve_config = local.local_serve_config(config, state_dir / "models")
    env = {**local.local_flags(config), **SERVE_LOG_ENV}
    num_cpus = max(local.logical_cpus(config, serve_config), os.cpu_count() or 1)
    say = local.say
    say(f"upgrading stack {stack} (serveProfile {config.ray.serve_profile}) to a new cluster")

    def record(step: str, new: LocalRay) -> None:
        if on_step is not None:
            on_step(step, new)
        if step != "promoted":
            return
        state.update(
            stack=stack,
            profile=config.ray.serve_profile,
            generation=generation,
            cluster=cluster,
            pids=[tier_state["pid"], new.pid, *(w.pid for w in new.workers)],
            shutdown=local.shutdown_state(config),
            ray=local.ray_state(new),
            old_ray=local.ray_state(old),
        )
        local.write_state(state_dir, state)

    new, figures = upgrade_cluster(
        old,
        ShutdownConfig.model_validate(state["shutdown"]),
        config,
        serve_config,
        spec=spec,
        tier_dir=state_dir,
        run_dir=state_dir / f"ray-{cluster}",
        cluster=cluster,
        env=env,
        num_cpus=num_cpus,
        workers=len(old.workers),
        on_progress=say,
        on_step=record,
    )
    state.pop("old_ray", None)
    local.write_state(state_dir, state)
    shutil.rmtree(old.run_dir, ignore_errors=True)
    local.write_outputs(
        state_dir, config, serve_config, new, tier_state["http"], tier_state["grpc"]
    )
    (state_dir / "upgrade.json").write_text(json.dumps(figures, indent=2) + "\n")
    say(
        f"upgraded: serving from {cluster} {figures['promoted_s']} s after the upgrade began; the old "
        f"cluster stopped at {figures['old_stopped_s']} s; peak {figures['peak']['pss_gib']} GiB in "
        f"{figures['peak']['processes']} processes with two clusters (before: "
        f"{figures['before']['pss_gib']} GiB); figures in {state_dir / 'upgrade.json'}"
    )
    return 0
