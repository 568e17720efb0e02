"""The pure specs the stack config asks for, as the components and renderers take them.

Owns: mapping a validated StackConfig to the RayService spec (components/render/rayservice.py, with
how long the old cluster stays after an upgrade: `cluster_deletion_delay_s`), our tier's args
(components/render/ingress_tier.py) and the GPU pool's capacity (components/render/node_pool.py),
for the program, which registers them, and the rendered graph (infra/rendered.py), which renders
them before anything registers. Imports no Pulumi SDK. Does not own the rules of any (the renderers
do) nor registering anything (infra/program.py).
"""

from __future__ import annotations

from typing import Any, cast

from components.render import rayservice as rs
from components.render.apis import apis_for, in_artifact_registry
from components.render.haproxy import DnsBackends, Timeouts
from components.render.ingress_tier import TierSpec, cluster_ingress_spec
from components.render.node_fit import TWO_CLUSTER_UPGRADES
from components.render.node_pool import Capacity
from components.render.observability import Objectives, ObservabilitySpec, ObservedApp
from infra.config import StackConfig
from infra.cost import Mode, mode_price, shipped_price_table
from infra.serve_config import build_serve_config

# Serve's logs on the container's stderr, which GKE's logging agent ships to Cloud Logging (Serve's
# own log files are in the pod's /tmp and go with it). Ray 2.60 defaults RAY_SERVE_LOG_TO_STDERR to
# 1 (ray/serve/_private/constants.py:396) and, under RAY_SERVE_THROUGHPUT_OPTIMIZED, to 0
# (constants.py:1108-1119): with the stacks' flags the controller, proxies and replicas wrote to
# those files only. The local run sets it too (raygke/local.py), so it logs as the cluster does.
SERVE_LOG_ENV = {"RAY_SERVE_LOG_TO_STDERR": "1"}

# The cluster's Ray pods listen on every interface; the local run binds 127.0.0.1 instead. Every
# replica change reloads Ray's HAProxy, and its old process is killed `hard-stop-after` later with
# the streams it still serves (Ray's 120 s cuts long LLM streams: docs/reliability.md): give them
# as long as our tier does.
CLUSTER_ENV = {
    "RAY_SERVE_DEFAULT_HTTP_HOST": "0.0.0.0",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(Timeouts().tunnel_s),
    **SERVE_LOG_ENV,
}


def gpu_capacity(config: StackConfig) -> Capacity:
    capacity = config.gpu_pool.capacity
    if capacity.mode == "flex-start":
        return {"mode": "flex-start", "max_run_duration_hours": capacity.max_run_duration_hours}
    if capacity.mode == "reservation":
        out: Capacity = {"mode": "reservation", "reservation_affinity": capacity.affinity}
        if capacity.name:
            out["reservation_name"] = capacity.name
        if capacity.project:
            out["reservation_project"] = capacity.project
        return out
    return {"mode": capacity.mode}


def gcs_fault_tolerance(config: StackConfig) -> rs.GcsFaultTolerance | None:
    """The head's Redis: one the stack creates (its address known at deploy, its password in a
    Secret the program makes) or one the user brings (address and Secret given)."""
    ft = config.ray_service.fault_tolerance
    if not ft.enabled:
        return None
    if ft.memorystore is not None:
        return rs.GcsFaultTolerance(
            redis_address=rs.REDIS_ADDRESS_AT_DEPLOY,
            password_secret_name=f"{config.ray_service.name}-redis",
        )
    if ft.redis_address is None or ft.redis_password is None:  # the model requires both
        raise ValueError("rayService.faultTolerance.redisAddress needs redisPassword")
    return rs.GcsFaultTolerance(
        redis_address=ft.redis_address,
        password_secret_name=ft.redis_password.name,
        password_secret_key=ft.redis_password.key,
    )


def rayservice_spec(config: StackConfig) -> rs.RayServiceSpec:
    """The RayService the stack asks for: one worker group on the H100 pool, a whole node per worker."""
    svc, pool = config.ray_service, config.gpu_pool
    upgrade = svc.upgrade_strategy
    bucket = svc.model_bucket
    return rs.RayServiceSpec(
        name=svc.name,
        namespace=svc.namespace,
        ray_version=config.ray.version,
        image=config.ray.image,
        workers=(
            rs.WorkerGroup(
                name=pool.name,
                pool=pool.name,
                accelerator=pool.accelerator_type,
                gpus_per_worker=pool.accelerator_count,
                resources=rs.Resources(cpu=svc.workers.cpu, memory=svc.workers.memory),
                min_replicas=svc.workers.min_replicas,
                max_replicas=svc.workers.max_replicas,
                spread=svc.workers.spread,
            ),
        ),
        serve_config=build_serve_config(config),
        env={**config.ray.node_flags, **config.ray.prometheus_env, **CLUSTER_ENV},
        head=rs.HeadGroup(resources=rs.Resources(cpu=svc.head.cpu, memory=svc.head.memory)),
        upgrade_type=upgrade.type,
        incremental_upgrade=(
            rs.IncrementalUpgrade(
                gateway_class_name=upgrade.gateway_class_name or "",
                step_size_percent=upgrade.step_size_percent,
                interval_seconds=upgrade.interval_seconds,
            )
            if upgrade.type == "NewClusterWithIncrementalUpgrade"
            else None
        ),
        # Only an upgrade that starts a new cluster leaves an old one for KubeRay to delete.
        cluster_deletion_delay_s=(
            cluster_deletion_delay_s(config) if upgrade.type in TWO_CLUSTER_UPGRADES else None
        ),
        gcs_fault_tolerance=gcs_fault_tolerance(config),
        enable_in_tree_autoscaling=True,
        termination_grace_s=svc.shutdown.termination_grace_period_seconds,
        drain_deadline_s=svc.shutdown.drain_deadline_seconds,
        model_bucket=(
            rs.ModelBucket(
                bucket=bucket.bucket,
                mount_path=bucket.mount_path,
                service_account=f"{svc.name}-model-reader",
            )
            if bucket is not None
            else None
        ),
    )


INGRESS_NAME = "ingress"  # the tier's component name: its objects are named after it


def ingress_args(config: StackConfig) -> dict[str, Any]:
    """Our tier's args (HaproxyIngressArgs), every one a plain value from the stack."""
    ingress = config.ingress
    args: dict[str, Any] = {
        "namespace": config.ray_service.namespace,
        "ray_service_name": config.ray_service.name,
        # KubeRay's serve Service: it follows the RayCluster KubeRay promotes (render_serve_service).
        "backends_service": rs.serve_service_name(config.ray_service.name),
        "routes": [app.route_prefix for app in config.apps],
        "deadlines": config.app_deadlines,
        "image": ingress.image,
        "replicas": ingress.replicas,
        "max_replicas": ingress.max_replicas,
        "min_available": ingress.replicas - 1,  # node drains evict one pod at a time
        "load_balancer": ingress.exposure,
        "source_ranges": ingress.source_ranges,
        "lb_http_port": ingress.http_port,
        "lb_grpc_port": ingress.grpc_port,
    }
    if ingress.tls_secret:
        args["tls_secret_name"] = ingress.tls_secret
        args["lb_https_port"] = ingress.https_port
    return args


def tier_spec(config: StackConfig) -> TierSpec:
    """The tier the program's HaproxyIngress renders, from the same args."""
    return TierSpec(name=INGRESS_NAME, **ingress_args(config))


def tier_backends(config: StackConfig) -> DnsBackends:
    """How the tier's haproxy.cfg finds the Ray pods (KubeRay's serve Service, through DNS): the
    backends its renderer builds from `tier_spec`, for what they decide beyond the cfg (`forget_s`)."""
    tier = tier_spec(config)
    backends = cluster_ingress_spec(tier.backends_fqdn, slots=tier.backend_slots).backends
    if not isinstance(backends, DnsBackends):  # the cluster's tier always resolves them
        raise TypeError(f"the tier's backends are not resolved through DNS: {backends!r}")
    return backends


def cluster_deletion_delay_s(config: StackConfig) -> int:
    """How long KubeRay keeps the old RayCluster after an upgrade promotes the new one: the stack's
    `rayService.upgradeStrategy.oldClusterDeletionDelaySeconds`, or KubeRay's 60 s raised to our
    tier's forget time plus the longest app deadline.

    At promotion KubeRay switches its serve Service to the new cluster, but our tier resolves it
    through DNS and keeps sending new requests to the old cluster's pods for up to its `forget_s`;
    a request admitted just before then may wait up to its app's `deadlineS` for its answer (a
    non-streamed completion arrives whole). Deleting the old cluster earlier cuts such requests
    (the drain on deletion is best effort: the head goes too). infra/checks.py refuses an explicit
    value below that floor.
    """
    explicit = config.ray_service.upgrade_strategy.old_cluster_deletion_delay_seconds
    if explicit is not None:
        return explicit
    longest = max(app.deadline_s for app in config.apps)
    return max(rs.KUBERAY_CLUSTER_DELETION_DELAY_S, tier_backends(config).forget_s + longest)


def stack_apis(config: StackConfig) -> list[str]:
    """The APIs the stack's resources and the cluster's features call (the policy control
    RAYGKE-DEP-1 checks every registered resource against the same table)."""
    types = [
        "gcp:compute/network:Network",
        "gcp:container/cluster:Cluster",
        "gcp:serviceaccount/account:Account",
        "gcp:projects/iAMMember:IAMMember",
    ]
    if config.ray_service.model_bucket is not None:
        types.append("gcp:storage/bucketIAMMember:BucketIAMMember")
    if config.cluster.kms_key:
        types.append("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    if config.ray_service.fault_tolerance.memorystore is not None:
        types += ["gcp:redis/instance:Instance", "gcp:servicenetworking/connection:Connection"]
    # Every pool streams images, the cluster runs Managed Prometheus and Cloud Logging, and nodes
    # pull the Ray image from Artifact Registry (components/cluster.py).
    features = ["image_streaming", "managed_prometheus", "logging"]
    if in_artifact_registry(config.ray.image_repository):
        features.append("artifact_registry")
    return apis_for(types, features)


def observability_spec(config: StackConfig) -> ObservabilitySpec:
    """The stack's dashboards' and alerts' inputs: its apps, its smoke objectives (what the alerts
    hold it to) and one GPU node's list price for the pool's capacity mode (infra/cost.py)."""
    prices, _ = shipped_price_table().lookup(config.region, config.gpu_pool.machine_type)
    node_hourly, _ = mode_price(prices, cast(Mode, config.gpu_pool.capacity.mode))
    smoke = config.smoke
    return ObservabilitySpec(
        stack=config.stack,
        namespace=config.ray_service.namespace,
        rayservice=config.ray_service.name,
        tier=INGRESS_NAME,
        apps=tuple(
            ObservedApp(
                name=app.name,
                kind=app.kind,
                protocols=tuple(app.protocols),
                model=app.args.get("model_id") if app.kind == "llm" else None,
            )
            for app in config.apps
        ),
        objectives=Objectives(
            p99_ms=smoke.p99_ms,
            max_error_rate=smoke.max_error_rate,
            ttft_ms=smoke.llm.ttft_ms,
            tpot_ms=smoke.llm.tpot_ms,
        ),
        gpus=True,  # every stack has a GPU pool (StackConfig.gpu_pool)
        gpu_node_hourly_usd=node_hourly,
    )
