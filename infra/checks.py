"""What a stack means, beyond each section's shape: the rules that span sections or objects.

Owns every check that reads more than one section of a `StackConfig` or the objects it renders:
apps against the pools and Ray's flags, shutdown and upgrade timing, health checks, the prod rules
(their scope comes from the policy catalogue, policy/controls.py, so a stack file and the policy
pack refuse the same things in the same environments), and, over the one rendered graph of the stack
(infra/rendered.py), the tier's counts and ports, whether every pod fits its pool
(infra/scheduling.py) and whether everything an object names will exist (infra/references.py, with
the stack's declared prerequisites, infra/prerequisites.py). `stack_problems` runs them all and returns every problem at once;
infra/stack_file.py calls it after the model has parsed, before any resource registers.
Does not own: one section's types and ranges (infra/config.py), the rules' arithmetic where a
renderer also needs it (components/render/), reading stack files or formatting errors.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from app.contracts import (
    CONTRACTS,
    EMBEDDING_DIM,
    NUM_SPARSE,
    RANKER_DEPLOYMENT,
    RecsysArgs,
    embedding_bytes,
)
from components.render.cidr import is_anywhere
from components.render.gpu_machines import H100_MACHINES, H100_MEMORY_GIB
from components.render.haproxy import DNS_HOLD_OBSOLETE_S
from components.render.ingress_tier import tier_problems
from components.render.node_fit import TWO_CLUSTER_UPGRADES
from components.render.quantity import cpu_millis, memory_bytes
from components.render.rayservice import STOP_MARGIN_S
from infra.config import (
    HEALTH_CHECK_PERIOD_S,
    HEALTH_CHECK_TIMEOUT_S,
    MAX_HUNG_REPLICA_BOUND_S,
    MIN_HEALTH_CHECK_TIMEOUT_S,
    RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S,
    RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S,
    RAY_GRACEFUL_SHUTDOWN_TIMEOUT_S,
    RAY_HEALTH_CHECK_FAILURES,
    RAY_HEALTH_CHECK_PERIOD_S,
    RAY_HEALTH_CHECK_TIMEOUT_S,
    RECSYS_MAX_BATCH_SIZE,
    AppConfig,
    ModelBucketConfig,
    RayConfig,
    StackConfig,
    hung_replica_bound_s,
)
from infra.platform_rules import platform_problems
from infra.prerequisites import provided
from infra.references import reference_problems
from infra.rendered import render_stack
from infra.scheduling import scheduling_problems
from infra.serve_rules import serve_problems
from infra.specs import CLUSTER_ENV, tier_backends, tier_spec
from policy.controls import binds

# The stack keys of the tier's fields, for its check's messages.
TIER_KEYS = {
    "replicas": "ingress.replicas",
    "max_replicas": "ingress.maxReplicas",
    "lb_http_port": "ingress.httpPort",
    "lb_grpc_port": "ingress.grpcPort",
    "lb_https_port": "ingress.httpsPort",
    "load_balancer": "ingress.exposure",
}


def stack_problems(c: StackConfig) -> list[str]:
    """Every problem of the stack at once, in the order a reader of the stack file meets them."""
    problems = [
        *_environment_problems(c),
        *_cross_problems(c),
        *platform_problems(c),
        *_batching_problems(c),
        *tier_problems(tier_spec(c), TIER_KEYS),
        *serve_problems(c),
    ]
    try:
        rendered = render_stack(c)
    except ValueError:  # a spec a renderer refuses: the rule that names its key is above
        return problems
    problems += scheduling_problems(c, rendered)
    return problems + reference_problems(rendered.objects(), provided(c))


def stack_matches_environment(stack: str, environment: str) -> bool:
    return stack == environment or stack.startswith(f"{environment}-")


def _environment_problems(c: StackConfig):
    matches = stack_matches_environment(c.stack, c.environment)
    if not matches and c.environment_override is None:
        yield (
            f"environment {c.environment!r} does not match stack {c.stack!r}: the stack name must "
            f"be {c.environment!r} or start with '{c.environment}-', since the environment decides "
            "which rules apply (a prod file saying staging turns every prod-only rule off); "
            "rename the stack, fix environment, or set ray-serve-gke:environmentOverride: <why>"
        )
    elif matches and c.environment_override is not None:
        yield (
            f"environmentOverride is set but stack {c.stack!r} matches environment "
            f"{c.environment!r}; remove it, so that an override always means a mismatch"
        )


def _batching_problems(c: StackConfig):
    """A recsys Ranker batches concurrent requests, and a replica never holds more than its
    max_ongoing_requests: a smaller limit than max_batch_size means batches that never fill."""
    tuned = c.ray.effective_tuning
    for app in c.apps:
        if app.kind != "recsys":
            continue
        batch = int(app.args.get("max_batch_size", RECSYS_MAX_BATCH_SIZE))
        ranker = app.deployments.get("Ranker")
        if ranker is not None and ranker.max_ongoing_requests is not None:
            limit, key = (
                ranker.max_ongoing_requests,
                f"apps[{app.name}].deployments.Ranker.maxOngoingRequests",
            )
        elif tuned is not None:
            limit, key = tuned.max_ongoing_requests, "ray.tuning.maxOngoingRequests"
        else:
            continue  # Ray's default (5) under flags-only / ray-defaults: the profile's choice
        if limit < batch:
            yield (
                f"{key} ({limit}) must be >= apps[{app.name}].args.max_batch_size ({batch}): a "
                f"replica holds at most maxOngoingRequests requests, so batches never fill; "
                f"allowed: {batch} or more"
            )


def _cross_problems(c: StackConfig):
    """Rules that span sections, in the order a reader of the stack file meets them."""
    pool = c.gpu_pool
    for zone in pool.zones:
        if not zone.startswith(f"{c.region}-"):
            yield f"gpuPool.zones: {zone!r} is not in gcp:region {c.region!r}"
    if not (c.cluster.location == c.region or c.cluster.location.startswith(f"{c.region}-")):
        yield f"cluster.location {c.cluster.location!r} must be gcp:region {c.region!r} or one of its zones"
    if c.network.gpudirect and H100_MACHINES[pool.machine_type].gpudirect == "none":
        yield f"network.gpudirect needs a3-highgpu-8g or a3-megagpu-8g; gpuPool.machineType is {pool.machine_type}"
    yield from _policy_rules(c)
    yield from _cluster_env_problems(c)
    yield from _fit_problems(c)
    yield from _app_problems(c)
    yield from _upgrade_problems(c)
    yield from _shutdown_problems(c)
    yield from _health_check_problems(c)
    yield from _local_slo_problems(c)


def _policy_rules(c: StackConfig):
    """The stack's side of policy controls: each rule binds where its control (policy/controls.py,
    which owns the scope) fails a plan, so the stack file is refused before the policy pack would
    refuse what it renders, with the key to change."""
    env, svc = c.environment, c.ray_service
    if binds("RAYGKE-GKE-3", env) and (c.gpu_pool.min_nodes == 0 or svc.workers.min_replicas == 0):
        yield (
            f"gpuPool.minNodes and rayService.workers.minReplicas must be >= 1 in {env} (no scale "
            f"to zero); got {c.gpu_pool.min_nodes} and {svc.workers.min_replicas}"
        )
    open_nets = [n.cidr for n in c.cluster.authorized_networks if is_anywhere(n.cidr)]
    if binds("5.6.3", env) and open_nets:
        yield (
            f"cluster.authorizedNetworks must not contain 0.0.0.0/0 or ::/0 in {env}; got "
            f"{', '.join(open_nets)}: list your VPN or CI ranges"
        )
    # Stricter than the control, which reads external load balancers only: sourceRanges are the
    # client ranges, so an internal load balancer open to every address is refused too.
    open_ranges = [r for r in c.ingress.source_ranges if is_anywhere(r)]
    if binds("RAYGKE-NET-1", env) and open_ranges:
        yield (
            f"ingress.sourceRanges must not contain 0.0.0.0/0 or ::/0 in {env}; got "
            f"{', '.join(open_ranges)}: list the client ranges"
        )
    if binds("RAYGKE-GKE-1", env) and not c.cluster.deletion_protection:
        yield f"cluster.deletionProtection must be true in {env}; got false"
    if binds("RAYGKE-K8S-5", env) and not svc.fault_tolerance.enabled:
        yield (
            f"rayService.faultTolerance.enabled must be true in {env}; got false: without GCS fault "
            "tolerance (an external Redis) a head restart takes every Serve app down; set enabled, "
            "redisAddress and redisPassword"
        )


def reliability_lines(c: StackConfig) -> list[str]:
    """Per app, what `raygke plan` states: its deadline at our tier and how long a hung replica can
    stall it (the worst of its deployments), with the health check that sets that bound."""
    lines = []
    for app in c.apps:
        checks = app.health_checks()
        if checks:
            worst = max(checks, key=lambda n: hung_replica_bound_s(*checks[n]))
            period, timeout = checks[worst]
            whose = f"{worst}: " if len(set(checks.values())) > 1 else ""
            how = f"{whose}health check every {period:g} s, timeout {timeout:g} s"
        else:
            period, timeout = RAY_HEALTH_CHECK_PERIOD_S, RAY_HEALTH_CHECK_TIMEOUT_S
            why = "Ray Serve LLM builds its deployments" if app.kind == "llm" else "none listed"
            how = f"Ray's health check, every {period:g} s, timeout {timeout:g} s: {why}"
        lines.append(
            f"{app.name}: deadline {app.deadline_s} s at our tier; a hung replica is replaced "
            f"within {RAY_HEALTH_CHECK_FAILURES} x ({period:g} + {timeout:g}) = "
            f"{app.hung_replica_bound_s():g} s ({how})"
        )
    return lines


def _local_slo_problems(c: StackConfig):
    """`smoke.localSlo.llm` gates a local run's llm app: a stack whose llm apps all need a GPU
    (`raygke local` leaves them out) would carry an objective nothing is measured against."""
    local = c.smoke.local_slo
    if (
        local is None
        or local.llm is None
        or any(a.kind == "llm" and a.runs_locally for a in c.apps)
    ):
        return
    llm_apps = [a.name for a in c.apps if a.kind == "llm"]
    why = (
        f"its llm apps ({', '.join(llm_apps)}) need a GPU; give one localArgs device: cpu"
        if llm_apps
        else "it has no llm app"
    )
    yield (
        "smoke.localSlo.llm sets the llm objectives of a local run, but no llm app runs on one: "
        f"{why}, or remove smoke.localSlo.llm"
    )


def _health_check_problems(c: StackConfig):
    """A hung replica is found only by Serve's health checks: too slow a setting leaves the app
    stalled (Ray's defaults: 2 minutes), too short a timeout replaces replicas that are only busy."""
    for app in c.apps:
        for name, (period, timeout) in app.health_checks().items():
            where = f"apps[{app.name}].deployments.{name}"
            if timeout < MIN_HEALTH_CHECK_TIMEOUT_S:
                yield (
                    f"{where}.healthCheckTimeoutS must be at least {MIN_HEALTH_CHECK_TIMEOUT_S:g} s: a "
                    f"shorter one replaces replicas that are only busy; got {timeout:g}"
                )
            bound = hung_replica_bound_s(period, timeout)
            if bound > MAX_HUNG_REPLICA_BOUND_S:
                room = MAX_HUNG_REPLICA_BOUND_S / RAY_HEALTH_CHECK_FAILURES
                yield (
                    f"{where}: healthCheckPeriodS ({period:g}) and healthCheckTimeoutS ({timeout:g}) "
                    f"let a hung replica stall the app for {RAY_HEALTH_CHECK_FAILURES} x ({period:g} + "
                    f"{timeout:g}) = {bound:g} s, more than the {MAX_HUNG_REPLICA_BOUND_S:g} s allowed; "
                    f"allowed: period + timeout <= {room:g} s (unset: {HEALTH_CHECK_PERIOD_S:g} and "
                    f"{HEALTH_CHECK_TIMEOUT_S:g}, docs/reliability.md)"
                )


# Serve reserves one CPU per replica unless a deployment says otherwise (ray.serve.config's
# ray_actor_options default, also what infra/serve_config.py scales from).
SERVE_DEFAULT_REPLICA_CPUS = 1.0


def _fit_problems(c: StackConfig):
    """What Ray places must fit what hosts it: one replica in one worker pod (Ray never splits a
    replica, so an oversized one leaves its app DEPLOYING forever), every replica at peak in all
    workers, a ranker's embedding tables in its memory, and every Ray pod in our tier's slots."""
    workers = c.ray_service.workers
    worker_cpus = cpu_millis(workers.cpu) / 1000
    demand = 0.0
    for app in c.apps:
        contract = CONTRACTS.get(app.kind)
        names = (
            contract.deployments if contract and contract.deployments else tuple(app.deployments)
        )
        for name in names:
            dep = app.deployments.get(name)
            cpus = dep.num_cpus if dep and dep.num_cpus is not None else SERVE_DEFAULT_REPLICA_CPUS
            demand += cpus * (dep.peak_replicas if dep else 1)
            if dep is not None and dep.num_cpus is not None and dep.num_cpus > worker_cpus:
                yield (
                    f"apps[{app.name}].deployments.{name}.numCpus ({dep.num_cpus:g}) must fit one "
                    f"Ray worker pod: rayService.workers.cpu is {workers.cpu!r}, and Ray never "
                    f"places a replica across pods (the app would stay DEPLOYING); allowed: at "
                    f"most {worker_cpus:g}, or bigger workers"
                )
        if app.kind == "recsys":
            yield from _embedding_problems(c, app)
    capacity = workers.max_replicas * worker_cpus
    if demand > capacity:
        yield (
            f"apps: their replicas ask at least {demand:g} CPUs at peak (Serve's 1 CPU per replica "
            f"where numCpus is unset) but rayService.workers.maxReplicas ({workers.max_replicas}) x "
            f"rayService.workers.cpu ({workers.cpu!r}) holds {capacity:g}; allowed: at most "
            f"{capacity:g}, or more or bigger workers"
        )
    two_clusters = c.ray_service.upgrade_strategy.type in TWO_CLUSTER_UPGRADES
    ray_pods = (1 + workers.max_replicas) * (2 if two_clusters else 1)
    slots = tier_spec(c).backend_slots
    if ray_pods > slots:
        why = " (a NewCluster upgrade runs two clusters)" if two_clusters else ""
        yield (
            f"rayService.workers.maxReplicas ({workers.max_replicas}) makes up to {ray_pods} Ray "
            f"pods{why}, but our tier routes to at most {slots} (its backend slots): the rest "
            f"would serve nothing; allowed: maxReplicas <= {slots // (2 if two_clusters else 1) - 1}"
        )


def _embedding_problems(c: StackConfig, app: AppConfig):
    cardinality = int(app.args.get("cardinality", RecsysArgs.model_fields["cardinality"].default))
    tables = embedding_bytes(cardinality)
    ranker = app.deployments.get(RANKER_DEPLOYMENT)
    gpus = ranker.num_gpus if ranker is not None else 0
    if gpus > 0:
        room = gpus * H100_MEMORY_GIB * 2**30
        where = f"{gpus:g} x {H100_MEMORY_GIB} GB of H100 memory"
    else:
        room, where = memory_bytes(c.ray_service.workers.memory), "rayService.workers.memory"
    if tables > room:
        yield (
            f"apps[{app.name}].args.cardinality ({cardinality}) makes {tables / 2**30:.1f} GiB of "
            f"embedding tables per Ranker replica ({NUM_SPARSE} tables x {EMBEDDING_DIM} float32s "
            f"a row), more than {where} ({room / 2**30:.1f} GiB); allowed: a cardinality of at "
            f"most {int(room // embedding_bytes(1))}"
        )


def _cluster_env_problems(c: StackConfig):
    """The cluster sets a few Ray variables itself (infra/specs.py CLUSTER_ENV) and they win over
    `ray.extraEnv`, so a stack setting one would be silently ignored: refuse it instead."""
    for key in sorted(set(c.ray.extra_env) & set(CLUSTER_ENV)):
        yield (
            f"ray.extraEnv.{key} is set by the cluster itself ({key}={CLUSTER_ENV[key]!r}: "
            f"infra/specs.py) and would be ignored; remove it from extraEnv"
        )


def _app_problems(c: StackConfig):
    seen_names: set[str] = set()
    seen_prefixes: dict[str, str] = {}
    for app in c.apps:
        if app.name in seen_names:
            yield f"apps: name {app.name!r} appears twice; app names must be unique"
        seen_names.add(app.name)
        if app.route_prefix in seen_prefixes:
            yield (
                f"apps[{app.name}].routePrefix {app.route_prefix!r} is already used by "
                f"apps[{seen_prefixes[app.route_prefix]}]; route prefixes must be unique"
            )
        seen_prefixes[app.route_prefix] = app.name
        yield from _model_bucket_problems(app, c.ray_service.model_bucket)
        if "grpc" in app.protocols and not c.ray.grpc:
            yield f"apps[{app.name}].protocols includes grpc but ray.grpc is false"
        per_node = c.gpu_pool.accelerator_count
        if app.gpus_per_replica > per_node:
            yield (
                f"apps[{app.name}]: a replica needs {app.gpus_per_replica:g} GPUs, more than the "
                f"{per_node} of one {c.gpu_pool.machine_type} node; a replica cannot span nodes"
            )
    demand = sum(app.gpu_demand for app in c.apps)
    capacity = c.ray_service.workers.max_replicas * c.gpu_pool.accelerator_count
    if demand > capacity:
        yield (
            f"apps: need {demand:g} GPUs at peak replicas but rayService.workers.maxReplicas "
            f"({c.ray_service.workers.max_replicas}) x {c.gpu_pool.accelerator_count} GPUs per "
            f"{c.gpu_pool.machine_type} holds {capacity}; raise maxReplicas/gpuPool.maxNodes or lower replicas"
        )


def ingress_shutdown_floor_s(ray: RayConfig) -> float | None:
    """The graceful_shutdown_timeout_s Serve forces on ingress deployments, or None without direct
    ingress (on with Ray's HAProxy ingress, with RAY_SERVE_THROUGHPUT_OPTIMIZED unless turned off)."""
    env = ray.serve_flags
    on = env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0") == "1"
    if env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1":
        on = env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS", "1") == "1"
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        on = True
    if not on:
        return None
    try:
        period = float(
            env.get(
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
                RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S,
            )
        )
    except ValueError:
        period = RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
    return period + RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S


def _shutdown_problems(c: StackConfig):
    """A replica's replacement must be running before Serve stops it, and the drain must fit the pod.

    Serve starts replacements for the replicas on a draining node elsewhere, and stops each one once
    its replacement runs, or at the latest at the drain deadline minus the replica's
    graceful_shutdown_timeout_s (ray.serve._private.deployment_state: _partition_groups_to_stop).
    Stopped before its replacement runs, an app whose replicas were all on that node has none: Ray's
    HAProxy sends its requests to the fallback proxy, which holds them until one starts (a local drain
    on a loaded machine held them past a 5 s deadline). So the deadline must hold each deployment's
    timeout plus the app's replicaStartS; with direct ingress the ingress deployment's timeout is at
    least Serve's floor (ingress_shutdown_floor_s), whatever the config says.
    """
    shutdown = c.ray_service.shutdown
    drain, grace = shutdown.drain_deadline_seconds, shutdown.termination_grace_period_seconds
    where = (
        f"rayService.shutdown.drainDeadlineSeconds ({drain}; the pod's "
        f"terminationGracePeriodSeconds is {grace})"
    )
    floor = ingress_shutdown_floor_s(c.ray)
    room = grace - STOP_MARGIN_S
    for app in c.apps:
        start = app.replica_start_bound_s
        starts = f"apps[{app.name}].replicaStartS ({start}" + (
            ")" if app.replica_start_s else f", the {app.kind} default)"
        )
        for name, dep in sorted(app.deployments.items()):
            timeout = dep.shutdown_timeout_s
            if dep.graceful_shutdown_timeout_s is not None and timeout + start > drain:
                yield (
                    f"apps[{app.name}].deployments.{name}.gracefulShutdownTimeoutS ({timeout:g}) plus "
                    f"{starts} must fit in {where}: Serve stops a replica on a draining node at the "
                    "deadline minus this timeout, and its replacement must be running on another "
                    f"node by then; allowed: 0..{max(drain - start, 0)} (or raise drainDeadlineSeconds "
                    "and terminationGracePeriodSeconds)"
                )
        # Deployments that set no timeout: an ingress one gets Serve's floor with direct ingress,
        # the others (and every one without direct ingress) Ray's default.
        implicit = floor if floor is not None else RAY_GRACEFUL_SHUTDOWN_TIMEOUT_S
        if implicit + start > drain:
            need = math.ceil(implicit + start)
            why = (
                f"with Ray's HAProxy (direct) ingress Serve raises every ingress deployment's "
                f"graceful shutdown to {implicit:g} s (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S "
                f"+ {RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S:g})"
                if floor is not None
                else f"a deployment that sets no gracefulShutdownTimeoutS gets Ray's {implicit:g} s"
            )
            grace_too = (
                ""
                if need <= room
                else f", and terminationGracePeriodSeconds to {need + STOP_MARGIN_S}"
            )
            yield (
                f"{where} must be at least {need} s for apps[{app.name}]: {why}, and Serve stops a "
                f"replica on a draining node at the deadline minus that, before its replacement runs "
                f"unless {starts} fits in between; allowed: {need}..{max(room, need)}{grace_too} "
                "(or a lower replicaStartS)"
            )


def _model_bucket_problems(app: AppConfig, bucket: ModelBucketConfig | None):
    """An llm app reading weights from GCS needs the bucket mounted where its model_source points."""
    if app.kind != "llm" or app.args.get("source") != "gcs":
        return
    given = str(app.args.get("model_source"))
    source = PurePosixPath(given)
    if bucket is None:
        yield (
            f"apps[{app.name}].args.source is 'gcs' (model_source {given!r}) but rayService.modelBucket "
            "is not set; add rayService.modelBucket: {bucket: <name>, mountPath: /gcs/models} so the GCS "
            "FUSE CSI driver mounts the weights, or use source: hub"
        )
    elif ".." in source.parts or not source.is_relative_to(bucket.mount_path):
        yield (
            f"apps[{app.name}].args.model_source {given!r} must lie under rayService.modelBucket."
            f"mountPath {bucket.mount_path!r}, where bucket {bucket.bucket!r} is mounted "
            f"(e.g. {bucket.mount_path}/<model directory>)"
        )


def _upgrade_problems(c: StackConfig):
    upgrade = c.ray_service.upgrade_strategy
    yield from _deletion_delay_problems(c)
    demand = sum(app.gpu_demand for app in c.apps)
    pool_gpus = c.gpu_pool.max_nodes * c.gpu_pool.accelerator_count
    if (
        upgrade.type == "NewCluster"
        and demand * 2 > pool_gpus
        and not upgrade.acknowledge_no_gpu_headroom
    ):
        yield (
            f"rayService.upgradeStrategy.type NewCluster starts a second cluster during upgrades: it needs "
            f"{demand * 2:g} GPUs but gpuPool.maxNodes x acceleratorCount is {pool_gpus}; raise "
            "gpuPool.maxNodes, or set upgradeStrategy.acknowledgeNoGpuHeadroom: true to accept a stalled upgrade"
        )
    if upgrade.type == "NewClusterWithIncrementalUpgrade":
        if not upgrade.gateway_class_name:
            yield (
                "rayService.upgradeStrategy.gatewayClassName is required for NewClusterWithIncrementalUpgrade "
                "(it routes through a Gateway API HTTPRoute), e.g. gke-l7-rilb"
            )
        grpc_only = [a.name for a in c.apps if a.protocols == ["grpc"]]
        if grpc_only:
            yield (
                f"rayService.upgradeStrategy NewClusterWithIncrementalUpgrade shifts HTTP traffic only; "
                f"gRPC-only apps {grpc_only} would not be upgraded incrementally (use NewCluster)"
            )


def _deletion_delay_problems(c: StackConfig):
    """An explicit old-cluster deletion delay must outlast the requests our tier sent the old cluster:
    new ones for up to its forget time after KubeRay switches its serve Service, each waiting up to
    its app's deadline (infra/specs.py cluster_deletion_delay_s, which derives the default)."""
    upgrade = c.ray_service.upgrade_strategy
    delay = upgrade.old_cluster_deletion_delay_seconds
    if delay is None or upgrade.type not in TWO_CLUSTER_UPGRADES:
        return
    key = "rayService.upgradeStrategy.oldClusterDeletionDelaySeconds"
    dns = tier_backends(c)
    forget = dns.forget_s
    longest = max(c.apps, key=lambda app: app.deadline_s)
    need = forget + longest.deadline_s
    allowed = f"allowed: >= {need}, or leave the key out for the derived default"
    if delay < forget:
        yield (
            f"{key} ({delay}) must be at least {forget}: our tier keeps sending new requests to the "
            f"old cluster's pods for up to {forget} s after KubeRay switches its serve Service (DNS "
            f"hold valid {dns.hold_valid_s} s + hold obsolete {DNS_HOLD_OBSOLETE_S} s), and the "
            f"last of them may wait apps[{longest.name}].deadlineS {longest.deadline_s} more; "
            f"{allowed}"
        )
    elif delay < need:
        yield (
            f"{key} ({delay}) must be at least {need}: apps[{longest.name}].deadlineS "
            f"{longest.deadline_s}: a request admitted to the old cluster just before our tier "
            f"forgets it ({forget} s after KubeRay switches its serve Service) could be cut; {allowed}"
        )
