"""The `smoke` outputs contract: what every stack exports and `raygke local` writes, for `raygke smoke`.

Versioned: a change of shape bumps SMOKE_SCHEMA_VERSION, and `raygke smoke` refuses versions it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from components.render.haproxy import HEALTH_PATH
from infra.config import StackConfig
from infra.serve_config import app_kind

SMOKE_SCHEMA_VERSION = 1


def smoke_contract(
    config: StackConfig,
    *,
    source: Literal["pulumi", "local"],
    http_url: str,
    grpc_target: str,
    serve_flags: dict[str, str],
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
            }
            for app in config.apps
            if apps is None or app.name in apps
        ],
        "ray_version": config.ray.version,
        "image": config.ray.image,
        "serve_flags": dict(sorted(serve_flags.items())),
        "kuberay_version": config.kuberay.version,
        "gpu": {
            "type": pool.accelerator_type,
            "machine_type": pool.machine_type,
            "count_per_node": pool.accelerator_count,
            "nodes_min": pool.min_nodes,
            "nodes_max": pool.max_nodes,
        },
        "slo": {
            "concurrency": config.smoke.concurrency,
            "p99_ms": config.smoke.p99_ms,
            "max_error_rate": config.smoke.max_error_rate,
        },
    }
    if direct is not None:
        document["direct"] = direct
    return document
