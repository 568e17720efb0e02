"""The Serve config (a RayService's `serveConfigV2`), built from the stack config.

One builder for both places the serving stack runs: the RayService in the cluster and `raygke local`,
which asks for the same config (and Ray's env flags) scaled to one machine. Apps are referenced by
import path and args only; nothing here imports app/. Does not own the env flags themselves
(`RayConfig.serve_flags` in infra/config.py), which this module imports, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT
from infra.config import (
    HAPROXY_THREADS_ENV,
    AppConfig,
    DeploymentConfig,
    RayConfig,
    StackConfig,
    TuningConfig,
)


@dataclass(frozen=True)
class AppKindSpec:
    import_path: str
    grpc_service: str | None
    grpc_servicer_functions: tuple[str, ...]


APP_KIND_SPECS: dict[str, AppKindSpec] = {
    "echo": AppKindSpec(
        "app.echo:build_app",
        "raygke.echo.v1.EchoService",
        ("app.protos.echo_pb2_grpc.add_EchoServiceServicer_to_server",),
    ),
    "recsys": AppKindSpec(
        "app.recsys:build_app",
        "raygke.recsys.v1.RecsysService",
        ("app.protos.recsys_pb2_grpc.add_RecsysServiceServicer_to_server",),
    ),
    "llm": AppKindSpec("app.llm:build_app", None, ()),
}


def app_kind(app: AppConfig) -> AppKindSpec:
    """How the app is served: its kind's builder and gRPC service, or a custom app's own."""
    if app.kind == "custom":
        base = AppKindSpec(
            app.import_path or "", app.grpc_service, tuple(app.grpc_servicer_functions)
        )
    else:
        base = APP_KIND_SPECS[app.kind]
    grpc = "grpc" in app.protocols
    return AppKindSpec(
        app.import_path or base.import_path,
        base.grpc_service if grpc else None,
        base.grpc_servicer_functions if grpc else (),
    )


def _deployment(name: str, dep: DeploymentConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if dep.autoscaling is not None:
        out["autoscaling_config"] = {
            "min_replicas": dep.autoscaling.min_replicas,
            "max_replicas": dep.autoscaling.max_replicas,
            "target_ongoing_requests": dep.autoscaling.target_ongoing_requests,
        }
        for key in ("upscale_delay_s", "downscale_delay_s"):
            if (delay := getattr(dep.autoscaling, key)) is not None:
                out["autoscaling_config"][key] = delay
    elif dep.num_replicas is not None:
        out["num_replicas"] = dep.num_replicas
    actor: dict[str, Any] = {}
    if dep.num_cpus is not None:
        actor["num_cpus"] = dep.num_cpus
    if dep.num_gpus:
        actor["num_gpus"] = dep.num_gpus
    if actor:
        out["ray_actor_options"] = actor
    if dep.max_ongoing_requests is not None:
        out["max_ongoing_requests"] = dep.max_ongoing_requests
    if dep.max_queued_requests is not None:
        out["max_queued_requests"] = dep.max_queued_requests
    # Replica lifecycle: only what the stack sets, so Ray's defaults stay Ray's.
    for key in ("graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s"):
        if (value := getattr(dep, key)) is not None:
            out[key] = value
    return out


def _tuned(app: AppConfig, entry: dict[str, Any], tuning: TuningConfig) -> dict[str, Any]:
    """The app's entry with `serveProfile: tuned`'s serve-config half; what the stack sets wins.
    The llm app's deployments come from Ray Serve LLM's builder, which sizes its own limits."""
    if app.kind == "llm":
        return entry
    deployments = [
        {"max_ongoing_requests": tuning.max_ongoing_requests, **dep} for dep in entry["deployments"]
    ]
    return {**entry, "deployments": deployments}


def _health_checked(app: AppConfig, entry: dict[str, Any]) -> dict[str, Any]:
    """Every deployment's health check as the stack config resolves it (its own, else the
    project's defaults): Ray's defaults leave a hung replica in place for two minutes."""
    checks = app.health_checks()
    listed = {d["name"]: d for d in entry["deployments"]}
    deployments = []
    for name in sorted(set(listed) | set(checks)):
        dep = listed.get(name, {"name": name})
        if name in checks:
            period, timeout = checks[name]
            dep = {**dep, "health_check_period_s": period, "health_check_timeout_s": timeout}
        deployments.append(dep)
    return {**entry, "deployments": deployments}


def build_serve_config(config: StackConfig) -> dict[str, Any]:
    """The `serveConfigV2` document the RayService carries."""
    servicers: list[str] = []
    applications = []
    for app in config.apps:
        kind = app_kind(app)
        servicers += [f for f in kind.grpc_servicer_functions if f not in servicers]
        entry = {
            "name": app.name,
            "route_prefix": app.route_prefix,
            "import_path": kind.import_path,
            "args": dict(app.args),
            "deployments": [_deployment(n, d) for n, d in sorted(app.deployments.items())],
        }
        if (tuning := config.ray.effective_tuning) is not None:
            entry = _tuned(app, entry, tuning)
        applications.append(_health_checked(app, entry))
    document: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": "0.0.0.0",
            "port": RAY_SERVE_HTTP_PORT,
        },  # the pod's every interface
        "applications": applications,
    }
    if config.ray.grpc and servicers:
        document["grpc_options"] = {
            "port": RAY_SERVE_GRPC_PORT,
            "grpc_servicer_functions": servicers,
        }
    return document


RAY_HAPROXY_THREADS = 4  # RAY_SERVE_HAPROXY_NBTHREAD's default in Ray 2.60


def scale_flags_for_local(ray: RayConfig, cores: int) -> dict[str, str]:
    """The env flags on one machine (the `ray` section's, `RayConfig.node_flags`, as on the cluster's
    pods): under `tuned`, Ray's HAProxy gets half the cores (at most Ray's 4 threads) unless the
    stack says otherwise, leaving the rest to the replicas. The cluster's pods have 20 CPUs and keep
    Ray's 4 (docs/performance.md has the measurement)."""
    flags, tuning = ray.node_flags, ray.effective_tuning
    if tuning is None or tuning.haproxy_threads is not None:
        return flags
    return {**flags, HAPROXY_THREADS_ENV: str(max(1, min(RAY_HAPROXY_THREADS, cores // 2)))}


# Replicas an autoscaling deployment may grow to on one machine: enough to watch Serve add them
# across the local worker nodes and remove them, without starving a 2-core machine.
LOCAL_MAX_REPLICAS = 4


def scale_for_local(config: StackConfig, serve_config: dict[str, Any]) -> dict[str, Any]:
    """The same Serve config on one machine without GPUs: CPU only (at most one logical CPU per
    replica), local args, one replica per deployment, or Serve autoscaling kept from at most one
    replica up to at most LOCAL_MAX_REPLICAS.

    Everything else (apps, routes, servicers, deployment names, options) stays as the cluster has it.
    """
    local_args = {app.name: app.local_args for app in config.apps}
    applications = []
    for app in serve_config["applications"]:
        deployments = []
        for dep in app["deployments"]:
            dep = dict(dep)
            if "autoscaling_config" in dep:
                auto = dep["autoscaling_config"]
                dep["autoscaling_config"] = {
                    **auto,
                    "min_replicas": min(auto["min_replicas"], 1),
                    "max_replicas": min(auto["max_replicas"], LOCAL_MAX_REPLICAS),
                }
            else:
                dep["num_replicas"] = 1
            actor = {k: v for k, v in dep.get("ray_actor_options", {}).items() if k != "num_gpus"}
            actor["num_cpus"] = min(actor.get("num_cpus", 1), 1)
            dep["ray_actor_options"] = actor
            deployments.append(dep)
        applications.append(
            {
                **app,
                "args": {**app["args"], **local_args.get(app["name"], {})},
                "deployments": deployments,
            }
        )
    return {
        **serve_config,
        "http_options": {"host": "127.0.0.1", "port": RAY_SERVE_HTTP_PORT},
        "applications": applications,
    }
