"""The `smoke` outputs contract: what every stack exports and `raygke local` writes, for `raygke smoke`.

Versioned: a change of shape bumps SMOKE_SCHEMA_VERSION, and `raygke smoke` refuses versions it does not know.
Owns what each field means, for both producers: `serve_flags` is the Ray Serve part (`RAY_SERVE_*`)
of the stack's `RayConfig.serve_flags` (what its `ray` section sets), never what one place adds for
itself, so a cluster and a local run of the same stack report the same flags; `slo` is the stack's `smoke` section (SmokeConfig's defaults),
the cluster's objectives in every contract; `local_slo`, only in a local run's and only where the stack
sets `smoke.localSlo`, is that block as written (each key optional, an absent one keeping `slo`'s):
what `raygke smoke` gates a local run on instead.
"""

from __future__ import annotations

from typing import Any, Literal

from components.render.haproxy import HEALTH_PATH
from infra.config import LocalSloConfig, SmokeConfig, StackConfig
from infra.serve_config import app_kind

# 2: `apps[].model` and `slo.llm`, for the LLM phase; 3: `local_slo`, a local run's objectives
SMOKE_SCHEMA_VERSION = 3


def slo_output(smoke: SmokeConfig) -> dict[str, Any]:
    """The `slo` object: what `raygke smoke` gates on."""
    llm = smoke.llm
    return {
        "concurrency": smoke.concurrency,
        "p99_ms": smoke.p99_ms,
        "max_error_rate": smoke.max_error_rate,
        "llm": {
            "concurrency": llm.concurrency,
            "ttft_ms": llm.ttft_ms,
            "tpot_ms": llm.tpot_ms,
            "input_tokens": llm.input_tokens,
            "output_tokens": llm.output_tokens,
        },
    }


def local_slo_output(local: LocalSloConfig) -> dict[str, Any]:
    """The `local_slo` object: `smoke.localSlo` in `slo`'s names, only the keys it sets."""
    document: dict[str, Any] = {
        key: value
        for key, value in (
            ("concurrency", local.concurrency),
            ("p99_ms", local.p99_ms),
            ("max_error_rate", local.max_error_rate),
        )
        if value is not None
    }
    if local.llm is not None:
        llm = local.llm
        document["llm"] = {
            key: value
            for key, value in (
                ("concurrency", llm.concurrency),
                ("ttft_ms", llm.ttft_ms),
                ("tpot_ms", llm.tpot_ms),
            )
            if value is not None
        }
    return document


# A stack that sets no `smoke`, and any other producer of the contract (bench/reference_server.py).
DEFAULT_SLO = slo_output(SmokeConfig())

SERVE_FLAG_PREFIX = "RAY_SERVE_"


def serve_flags_output(config: StackConfig) -> dict[str, str]:
    """Serve's flags only: other `ray.extraEnv` entries may hold secrets, and this output is plain."""
    flags = config.ray.serve_flags
    return {k: flags[k] for k in sorted(flags) if k.startswith(SERVE_FLAG_PREFIX)}


def smoke_contract(
    config: StackConfig,
    *,
    source: Literal["pulumi", "local"],
    http_url: str,
    grpc_target: str,
    apps: list[str] | None = None,
    direct: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`apps` limits the contract to the apps actually served (the local run skips the llm app)."""
    pool = config.gpu_pool
    document: dict[str, Any] = {
        "schema_version": SMOKE_SCHEMA_VERSION,
        "source": source,
        "stack": config.stack,
        "http_url": http_url,
        "grpc_target": grpc_target,
        "health_path": HEALTH_PATH,
        "apps": [
            {
                "name": app.name,
                "kind": app.kind,
                "route_prefix": app.route_prefix,
                "grpc_service": app_kind(app).grpc_service,
                "grpc_application": app.name,
                "model": app.args.get("model_id") if app.kind == "llm" else None,
            }
            for app in config.apps
            if apps is None or app.name in apps
        ],
        "ray_version": config.ray.version,
        "image": config.ray.image,
        "serve_flags": serve_flags_output(config),
        "kuberay_version": config.kuberay.version,
        "gpu": {
            "type": pool.accelerator_type,
            "machine_type": pool.machine_type,
            "count_per_node": pool.accelerator_count,
            "nodes_min": pool.min_nodes,
            "nodes_max": pool.max_nodes,
        },
        "slo": slo_output(config.smoke),
    }
    if source == "local" and config.smoke.local_slo is not None:
        document["local_slo"] = local_slo_output(config.smoke.local_slo)
    if direct is not None:
        document["direct"] = direct
    return document
