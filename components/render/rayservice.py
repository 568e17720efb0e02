"""The KubeRay `RayService` manifest and the objects that guard it, rendered from a plain spec.

Owns: the `RayServiceSpec` dataclasses, `render_rayservice(spec)` (apiVersion ray.io/v1, kind
RayService), the worker PodDisruptionBudget, the NetworkPolicy and the Managed Prometheus
PodMonitoring for the Ray pods, the label selector of the pods that serve, and the checks KubeRay
itself only makes after apply (`check_rayservice_name`, `check_rayservice_spec`), the GCS FUSE
model-bucket mount on the workers (`ModelBucket`, `check_bucket_name`, `check_mount_path`), and how
Ray pods leave and spread: termination grace, the preStop drain (`worker_pre_stop`,
`check_shutdown`) and the workers' topology spread over nodes, how long KubeRay keeps the old
cluster after an upgrade (`rayClusterDeletionDelaySeconds`, as the caller derives it), and the pods'
hardening: a non-root pod securityContext (the rayproject image's UID/GID), no service-account token
where nothing uses one, Ray's token authentication (`authOptions`), and a NetworkPolicy that admits
Ray's control ports only from this RayService's own pods and the KubeRay operator. Probes are
KubeRay's (see `_container`).
Does not own: the serve config (built in infra/ from the apps and handed in as a dict), the env
flags' values (the caller's), registering anything with Pulumi (components/ray_serve_app.py), or the
operator. Pure: no `pulumi` import, so config validation, the CLI and property tests call it
directly.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import yaml

from components.render import names
from components.render.monitoring import MONITORING_NAMESPACE
from components.render.node_pool import GPU_TAINT_KEY, GPU_TAINT_VALUE, POOL_LABEL, SYSTEM_POOL
from components.render.security import non_root_pod_security_context

# KubeRay names the RayCluster `<name>-<5 chars>` and its Services `<name>-head-svc`,
# `<name>-serve-svc`; its validation rejects RayService names over 47 characters so those fit the
# 63-character limit.
MAX_NAME_LENGTH = 47

# POOL_LABEL (components/render/node_pool.py) is on every pool of this project; the operator and the
# Ray head go to the system/CPU pools, workers to the H100 pools.
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# Our own pod label: KubeRay guarantees `ray.io/originated-from-cr-name` only on the RayCluster
# object, and `ray.io/cluster` changes with every blue/green RayCluster, so selectors that must
# survive upgrades use a label we put on the pod templates ourselves.
APP_LABEL = "raygke.io/rayservice"
# KubeRay sets `ray.io/serve=true` on pods whose Serve proxy is healthy, in every RayCluster of a
# RayService; `<name>-serve-svc` selects on it together with the active cluster's `ray.io/cluster`.
SERVE_LABEL = "ray.io/serve"
NODE_TYPE_LABEL = "ray.io/node-type"

# The H100 pools' taint (components/render/node_pool.py); only worker pods tolerate it, so nothing
# else lands on an H100.
GPU_TOLERATION = {
    "key": GPU_TAINT_KEY,
    "operator": "Equal",
    "value": GPU_TAINT_VALUE,
    "effect": "NoSchedule",
}

RAY_SERVE_HTTP_PORT = 8000
"""Serve's HTTP ingress on every Ray pod (Ray's HAProxy, or its Python proxy): serveConfigV2's
`http_options.port`, and where our tier sends HTTP."""
RAY_SERVE_GRPC_PORT = 9000
"""Serve's gRPC ingress on every Ray pod: serveConfigV2's `grpc_options.port`, and where our tier
sends gRPC. Not the load balancer's gRPC port (components/render/haproxy.py LB_GRPC_PORT), which
only happens to share the number by default."""

# Container ports. KubeRay 1.6+ adds every head port named `serve` or `serve-*` to
# `<name>-serve-svc`.
HEAD_PORTS: tuple[tuple[str, int], ...] = (
    ("gcs-server", 6379),
    ("dashboard", 8265),
    ("client", 10001),
    ("serve", RAY_SERVE_HTTP_PORT),
    ("serve-grpc", RAY_SERVE_GRPC_PORT),
    ("metrics", 8080),
    ("haproxy-metrics", 9101),
)
# Workers run Ray's HAProxy too (RAY_SERVE_ENABLE_HA_PROXY on every node), and export metrics.
WORKER_PORTS: tuple[tuple[str, int], ...] = (
    ("serve", RAY_SERVE_HTTP_PORT),
    ("serve-grpc", RAY_SERVE_GRPC_PORT),
    ("metrics", 8080),
    ("haproxy-metrics", 9101),
)
SERVE_PORTS = (RAY_SERVE_HTTP_PORT, RAY_SERVE_GRPC_PORT)
# Replicas listen on their own ports in HAProxy mode (HTTP 30000-31000, gRPC 40000-41000).
REPLICA_PORT_RANGES = ((30000, 31000), (40000, 41000))
HAPROXY_METRICS_PORT = 9101
RAY_METRICS_PORT = 8080
# Ray's control ports: reachable only from this RayService's own pods (every RayCluster of it, so
# blue/green upgrades work) and the KubeRay operator, which needs the dashboard (8265). The
# dashboard accepts job submissions: code execution for whoever reaches it.
CONTROL_PORTS = (8265, 6379, 10001)
# Labels of the KubeRay operator's pods as its chart 1.7.0 sets them (nameOverride and
# componentOverride are both `kuberay-operator` in its values.yaml); components/kuberay_operator.py
# installs that chart with those defaults.
KUBERAY_OPERATOR_POD_LABELS = {
    "app.kubernetes.io/name": "kuberay-operator",
    "app.kubernetes.io/component": "kuberay-operator",
}
# The operator talks to the head's dashboard (serve config submission, Serve status) and probes
# Serve's health on its HTTP port.
OPERATOR_PORTS = (8265, RAY_SERVE_HTTP_PORT)

# The rayproject/ray images (and ours, built FROM them) run as `ray`, UID 1000, primary group
# `users` (GID 100); its home and the conda install are owned by them.
RAY_UID = 1000
RAY_GID = 100
# Ray's token authentication (KubeRay 1.7 `authOptions`): KubeRay generates a random token per
# RayCluster in a Secret named after the cluster and sets RAY_AUTH_MODE / RAY_AUTH_TOKEN on the Ray
# containers, the autoscaler and its own dashboard client. KubeRay refuses token mode below Ray 2.52,
# and `enableK8sTokenAuth` for a RayService, so neither is offered here.
AuthMode = Literal["token", "disabled"]
MIN_RAY_FOR_TOKEN_AUTH = (2, 52)

# The GKE GCS FUSE CSI driver (a cluster addon): the annotation makes GKE inject its sidecar into the
# pod; the sidecar mounts the bucket with the pod's Kubernetes service account (Workload Identity).
GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
GCSFUSE_ANNOTATION = "gke-gcsfuse/volumes"
MODEL_VOLUME = "model-bucket"
# GCS bucket naming, the dot-free form: 3-63 characters.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")

UpgradeType = Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
# After an upgrade promotes the new RayCluster, KubeRay deletes the old one this long later unless
# `spec.rayClusterDeletionDelaySeconds` says otherwise (KubeRay v1.7.0:
# controllers/ray/rayservice_controller.go L48 RayClusterDeletionDelayDuration, used by
# cleanUpRayClusterInstance L1255-1300). KubeRay refuses a negative delay (utils/validation.go
# L702-704); the CRD's field is an int32.
KUBERAY_CLUSTER_DELETION_DELAY_S = 60
MAX_CLUSTER_DELETION_DELAY_S = 2**31 - 1

# How worker pods of one group spread over nodes: `required` is a scheduling rule (DoNotSchedule),
# `preferred` a tie-breaker (ScheduleAnyway), `none` leaves placement to the GPU request alone.
SpreadMode = Literal["none", "preferred", "required"]
HOSTNAME_KEY = "kubernetes.io/hostname"
# KubeRay's pod labels: the RayCluster (new for every blue/green cluster) and the worker group.
CLUSTER_LABEL = "ray.io/cluster"
GROUP_LABEL = "ray.io/group"

# Pod shutdown. A worker's preStop asks Ray to drain its node with a deadline (Serve then starts
# replacement replicas elsewhere and gracefully stops the ones here, at the latest at the deadline
# minus their graceful_shutdown_timeout_s), waits out that deadline, then runs `ray stop`. The
# kubelet kills whatever still runs at terminationGracePeriodSeconds, counted from the start of the
# preStop, so the grace must hold the drain deadline plus `ray stop`.
RAY_STOP_GRACE_S = 10  # `ray stop --grace-period`: SIGTERM, then SIGKILL after this long
STOP_MARGIN_S = RAY_STOP_GRACE_S + 5  # ray stop, plus slack for the kubelet and the preStop's start
# The head serves through its own HAProxy (it is in `<name>-serve-svc` and behind our tier): its
# preStop waits this long for Services and our tier's checks (3 x 2 s, DNS held 5 s) to drop it.
HEAD_DEREGISTRATION_S = 15
DEFAULT_TERMINATION_GRACE_S = 90
# 70: Serve's 35 s ingress floor (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S + 5) plus the 30 s a
# replacement echo/recsys replica gets to start, and 5 spare (infra/config.py, replicaStartS).
DEFAULT_DRAIN_DEADLINE_S = 70


@dataclass(frozen=True)
class Resources:
    """Requests = limits for CPU and memory: Ray sees what the kubelet gives."""

    cpu: str
    memory: str


@dataclass(frozen=True)
class HeadGroup:
    """The Ray head: no GPU and `num-cpus: 0`, so Serve replicas never land on it."""

    resources: Resources = Resources(cpu="2", memory="8Gi")
    pool: str | None = SYSTEM_POOL  # value of POOL_LABEL; None leaves the head unpinned


@dataclass(frozen=True)
class WorkerGroup:
    """One KubeRay worker group on an H100 pool."""

    name: str
    pool: str  # value of POOL_LABEL on the H100 node pool
    accelerator: str  # cloud.google.com/gke-accelerator value, e.g. nvidia-h100-80gb
    gpus_per_worker: int
    resources: Resources
    min_replicas: int = 0
    max_replicas: int = 1
    replicas: int | None = None  # initial count; defaults to min_replicas
    spread: SpreadMode = "preferred"  # over nodes (kubernetes.io/hostname), per RayCluster


@dataclass(frozen=True)
class IncrementalUpgrade:
    """`clusterUpgradeOptions` of NewClusterWithIncrementalUpgrade (HTTPRoute only, no gRPC)."""

    gateway_class_name: str
    step_size_percent: int
    interval_seconds: int
    max_surge_percent: int = 100


@dataclass(frozen=True)
class GcsFaultTolerance:
    """External Redis (Memorystore) for head fault tolerance; its password from a Secret key."""

    redis_address: str  # host:port; REDIS_ADDRESS_AT_DEPLOY for a Redis created with the stack
    password_secret_name: str
    password_secret_key: str = "password"


# Stands in for the address of a Redis that is created with the stack (a Memorystore instance):
# known only once it exists, when the component fills it in. `.invalid` never resolves (RFC 2606).
REDIS_ADDRESS_AT_DEPLOY = "redis-at-deploy.invalid:6379"


@dataclass(frozen=True)
class ModelBucket:
    """A GCS bucket mounted read-only on every worker (model weights); heads do not load models."""

    bucket: str
    mount_path: str  # absolute, e.g. /gcs/models
    service_account: str  # the worker pods' Kubernetes service account, granted read on the bucket


@dataclass(frozen=True)
class RayServiceSpec:
    """Everything `render_rayservice` needs; plain values, validated before any resource exists."""

    name: str
    namespace: str
    ray_version: str  # rayClusterConfig.rayVersion, e.g. "2.60.0"
    image: str  # one image for head and workers, e.g. rayproject/ray:2.60.0-py311-gpu
    workers: tuple[WorkerGroup, ...]
    serve_config: Mapping[str, Any]  # serveConfigV2 as a dict; rendered to YAML here
    env: Mapping[str, str] = field(
        default_factory=dict
    )  # serve flags, on the head and every worker
    head: HeadGroup = HeadGroup()
    upgrade_type: UpgradeType = "NewCluster"
    incremental_upgrade: IncrementalUpgrade | None = None
    # spec.rayClusterDeletionDelaySeconds: how long the old RayCluster stays after an upgrade
    # promotes the new one; None leaves KubeRay's default (KUBERAY_CLUSTER_DELETION_DELAY_S).
    cluster_deletion_delay_s: int | None = None
    gcs_fault_tolerance: GcsFaultTolerance | None = None
    enable_in_tree_autoscaling: bool = False
    model_bucket: ModelBucket | None = None
    # Seconds the kubelet gives a Ray pod to stop (preStop included), and the drain deadline a
    # worker's preStop hands Ray (see STOP_MARGIN_S).
    termination_grace_s: int = DEFAULT_TERMINATION_GRACE_S
    drain_deadline_s: int = DEFAULT_DRAIN_DEADLINE_S
    # Ray's token authentication on the dashboard, the job API and Ray's internal gRPC (GCS,
    # raylets, workers, Serve's inter-deployment gRPC). Serve's HTTP/gRPC ingress is not covered.
    auth_mode: AuthMode = "token"


def check_rayservice_name(name: str) -> str | None:
    """The error KubeRay would report only after apply, or None when the name is fine."""
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"RayService name {name!r} is {len(name)} characters; KubeRay allows at most "
            f"{MAX_NAME_LENGTH} (it appends suffixes for the RayCluster and its Services)"
        )
    if not names.DNS_1035_LABEL.match(name):
        return (
            f"RayService name {name!r} must be a DNS-1035 label: lower-case letters, digits "
            "and '-', starting with a letter and ending with a letter or digit"
        )
    return None


def check_bucket_name(name: str) -> str | None:
    """The error GCS would report for bucket `name` (only when the sidecar mounts it), or None."""
    if not _BUCKET_NAME.match(name):
        return (
            f"bucket name {name!r} must be 3-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (GCS bucket naming)"
        )
    return None


def check_mount_path(path: str) -> str | None:
    """The error for a model-bucket mount path the pod could not have, or None."""
    reserved = sorted(m["mountPath"] for m in _MOUNTS)
    parts = path.split("/")
    if not path.startswith("/") or path == "/" or ".." in parts or "" in parts[1:]:
        return f"mount path {path!r} must be an absolute, normalized path such as /gcs/models"
    if path in reserved:
        return f"mount path {path!r} is already used by the Ray pods' own volumes ({', '.join(reserved)})"
    return None


def check_rayservice_spec(spec: RayServiceSpec) -> list[str]:
    """Every problem with `spec` that KubeRay or the scheduler would reveal only after apply."""
    errors: list[str] = []
    if (name_error := check_rayservice_name(spec.name)) is not None:
        errors.append(name_error)
    if not spec.workers:
        errors.append("a RayService needs at least one worker group: the head runs no replicas")
    seen: set[str] = set()
    for group in spec.workers:
        where = f"worker group {group.name!r}"
        if group.name in seen:
            errors.append(f"{where} appears twice; group names must be unique")
        seen.add(group.name)
        if group.gpus_per_worker < 1:
            errors.append(
                f"{where}: gpus_per_worker must be at least 1; got {group.gpus_per_worker}"
            )
        if not 0 <= group.min_replicas <= group.max_replicas:
            errors.append(
                f"{where}: need 0 <= min_replicas <= max_replicas; "
                f"got {group.min_replicas} and {group.max_replicas}"
            )
        if group.replicas is not None and not (
            group.min_replicas <= group.replicas <= group.max_replicas
        ):
            errors.append(
                f"{where}: replicas must lie in [{group.min_replicas}, {group.max_replicas}]; "
                f"got {group.replicas}"
            )
        if group.spread not in get_args(SpreadMode):
            errors.append(
                f"{where}: spread must be one of {', '.join(get_args(SpreadMode))}; "
                f"got {group.spread!r}"
            )
    errors += check_shutdown(spec.termination_grace_s, spec.drain_deadline_s)
    errors += check_auth(spec.auth_mode, spec.ray_version)
    if spec.upgrade_type not in get_args(UpgradeType):
        errors.append(
            f"upgrade_type must be one of {', '.join(get_args(UpgradeType))}; "
            f"got {spec.upgrade_type!r}"
        )
    if spec.upgrade_type == "NewClusterWithIncrementalUpgrade":
        options = spec.incremental_upgrade
        if options is None:
            errors.append(
                "upgrade_type NewClusterWithIncrementalUpgrade needs incremental_upgrade options "
                "(gateway_class_name, step_size_percent, interval_seconds)"
            )
        else:
            if not 1 <= options.step_size_percent <= 100:
                errors.append(
                    f"incremental_upgrade.step_size_percent must be 1-100; "
                    f"got {options.step_size_percent}"
                )
            if not 1 <= options.max_surge_percent <= 100:
                errors.append(
                    f"incremental_upgrade.max_surge_percent must be 1-100; "
                    f"got {options.max_surge_percent}"
                )
            if options.interval_seconds < 1:
                errors.append(
                    f"incremental_upgrade.interval_seconds must be at least 1; "
                    f"got {options.interval_seconds}"
                )
        # Incremental upgrades move capacity with target_capacity, which only the autoscaler acts
        # on.
        if not spec.enable_in_tree_autoscaling:
            errors.append(
                "upgrade_type NewClusterWithIncrementalUpgrade requires enable_in_tree_autoscaling"
            )
    elif spec.incremental_upgrade is not None:
        errors.append(
            f"incremental_upgrade options are only used with NewClusterWithIncrementalUpgrade; "
            f"upgrade_type is {spec.upgrade_type}"
        )
    delay = spec.cluster_deletion_delay_s
    if delay is not None and not 0 <= delay <= MAX_CLUSTER_DELETION_DELAY_S:
        errors.append(
            f"cluster_deletion_delay_s must be between 0 and {MAX_CLUSTER_DELETION_DELAY_S} "
            f"seconds (KubeRay refuses a negative delay); got {delay}"
        )
    if spec.model_bucket is not None:
        bucket = spec.model_bucket
        for problem in (check_bucket_name(bucket.bucket), check_mount_path(bucket.mount_path)):
            if problem is not None:
                errors.append(f"model_bucket: {problem}")
        problem = names.check_service_account_name(bucket.service_account)
        if problem is not None:
            errors.append(f"model_bucket: service_account: {problem}")
    return errors


def check_auth(mode: str, ray_version: str) -> list[str]:
    """Problems KubeRay's validation would report for `authOptions` only after apply."""
    if mode not in get_args(AuthMode):
        return [f"auth_mode must be one of {', '.join(get_args(AuthMode))}; got {mode!r}"]
    if mode != "token":
        return []
    match = re.match(r"^(\d+)\.(\d+)\.", ray_version)
    if match is None:
        return [f"auth_mode token needs a ray_version such as 2.60.0; got {ray_version!r}"]
    if (int(match[1]), int(match[2])) < MIN_RAY_FOR_TOKEN_AUTH:
        need = ".".join(map(str, MIN_RAY_FOR_TOKEN_AUTH))
        return [
            f"auth_mode token needs Ray {need}+ (KubeRay refuses it below); got ray_version "
            f"{ray_version}: use 2.60.0, or auth_mode disabled"
        ]
    return []


def check_shutdown(
    termination_grace_s: int,
    drain_deadline_s: int,
    *,
    grace_key: str = "termination_grace_s",
    drain_key: str = "drain_deadline_s",
) -> list[str]:
    """Problems with a pod termination grace and a worker drain deadline that cannot work together.
    The keys name the two values as the caller's user wrote them (the stack config passes its own)."""
    if drain_deadline_s < 1:
        return [f"{drain_key} must be at least 1; got {drain_deadline_s}"]
    room = termination_grace_s - STOP_MARGIN_S
    if drain_deadline_s > room:
        need = max(drain_deadline_s, HEAD_DEREGISTRATION_S) + STOP_MARGIN_S
        return [
            f"{drain_key} ({drain_deadline_s}) must leave {STOP_MARGIN_S} s of {grace_key} "
            f"({termination_grace_s}) for `ray stop`, or the kubelet kills the pod mid-drain; "
            f"allowed: 1..{room} (or raise {grace_key} to {need})"
        ]
    if termination_grace_s < HEAD_DEREGISTRATION_S + STOP_MARGIN_S:
        return [
            f"{grace_key} ({termination_grace_s}) must be at least "
            f"{HEAD_DEREGISTRATION_S + STOP_MARGIN_S}: the head waits {HEAD_DEREGISTRATION_S} s to "
            f"leave the Services, then {STOP_MARGIN_S} s for `ray stop`"
        ]
    return []


def ray_pod_labels(name: str) -> dict[str, str]:
    """Labels on every Ray pod of RayService `name`, across RayCluster upgrades."""
    return {APP_LABEL: name}


def serve_service_name(name: str) -> str:
    """The Service KubeRay keeps pointed at the active RayCluster's serving pods (KubeRay's own
    default name, utils.GenerateServeServiceName; `render_serve_service` keeps it)."""
    return f"{name}-serve-svc"


# KubeRay v1.7.0 puts `ray.io/serve=true` on the pods of *both* RayClusters during a NewCluster
# upgrade (common/pod.go BuildPod L839-844: "true" on every worker; rayservice_controller.go
# Reconcile L222-227 runs updateHeadPodServeLabel, L2074-2119, on the active and the pending head
# alike), so no selector we write can tell the pending cluster's pods from the active one's:
# `ray.io/cluster` is `<name>-<5 random characters>`, known only once KubeRay has made the cluster.
# Only KubeRay's serve Service follows the promotion: BuildServeService (common/service.go
# L181-296) selects `ray.io/cluster: <cluster>` + `ray.io/serve: true` (L200-205), and Reconcile
# points it at the pending cluster only once that cluster's Serve apps are ready (L284-297, through
# reconcileServices L1927-1983). So our tier resolves that Service, given to KubeRay as
# `spec.serveService`, which KubeRay keeps as we write it (a DeepCopy, service.go L236) except:
# - the selector, always replaced by the cluster's (L238-239);
# - the ports, replaced by the head container's `serve`/`serve-*` ports, keeping our definition of
#   each port whose name matches one of them (L245-265): hence the names `serve` and `serve-grpc`;
# - labels merged, namespace forced, type defaulted only when empty (L267-270).
# Our name and `clusterIP: None` are kept: on a switch reconcileServices copies the live Service's
# clusterIP onto the new spec (rayservice_controller.go L1960-1961), so `None` stays `None`, and it
# rewrites the Service only when the cluster changes (L1951-1954). The same copy means a
# `<name>-serve-svc` made before this field existed stays a ClusterIP Service: delete it once and
# KubeRay makes it again from this spec (docs/decisions.md, "Which pods our tier sends to").
# KubeRay ignores spec.serveService under NewClusterWithIncrementalUpgrade (service.go L233); the
# stack checks refuse that strategy together with our tier (infra/platform_rules.py).
SERVE_SERVICE_PORTS: tuple[tuple[str, int], ...] = (
    ("serve", RAY_SERVE_HTTP_PORT),
    ("serve-grpc", RAY_SERVE_GRPC_PORT),
)


def render_serve_service(name: str) -> dict[str, Any]:
    """`spec.serveService`: KubeRay's serve Service, headless so that its DNS name answers with one
    A record per ready serving pod of the active RayCluster (our tier's server-template resolves
    it; a ClusterIP would hide the pods behind one address). No selector: KubeRay writes it."""
    return {
        "metadata": {"name": serve_service_name(name)},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "ports": [
                {"name": n, "port": p, "targetPort": p, "protocol": "TCP"}
                for n, p in SERVE_SERVICE_PORTS
            ],
        },
    }


def _env(spec: RayServiceSpec) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in sorted(spec.env.items())]


def _resources(res: Resources, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    if gpus:
        amounts["nvidia.com/gpu"] = gpus
    return {"requests": dict(amounts), "limits": dict(amounts)}


# Ray writes sessions, logs and spilled objects under /tmp; an emptyDir keeps that off the image's
# layer and is cleaned with the pod. /dev/shm as a memory emptyDir lets the object store use shared
# memory instead of the container runtime's 64 MiB default.
_VOLUMES = [
    {"name": "ray-tmp", "emptyDir": {}},
    {"name": "dshm", "emptyDir": {"medium": "Memory"}},
]
_MOUNTS = [
    {"name": "ray-tmp", "mountPath": "/tmp"},
    {"name": "dshm", "mountPath": "/dev/shm"},
]
_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# The pod's: a fixed non-root UID, so a changed image cannot silently run as root; fsGroup so the
# emptyDirs (and any volume that supports ownership) are writable by the `ray` user. No read-only
# root filesystem: Ray, pip runtime_envs and vLLM write caches under $HOME and the Python tree
# (docs/security.md lists the trade-off).
def pod_security_context() -> dict[str, Any]:
    """The securityContext of every Ray pod (a fresh copy)."""
    return non_root_pod_security_context(RAY_UID, RAY_GID)


def head_needs_service_account_token(spec: RayServiceSpec) -> bool:
    """Only KubeRay's autoscaler sidecar (in-tree autoscaling) calls the Kubernetes API from a Ray
    pod: it scales the RayCluster with the head's service-account token. Ray itself never does."""
    return spec.enable_in_tree_autoscaling


def worker_pre_stop(drain_deadline_s: int) -> str:
    """The worker's preStop script: drain this Ray node with a deadline, wait it out, stop Ray.

    The drain is best effort (a head already gone, as when KubeRay deletes an old cluster, refuses
    it): the wait still lets Services and our tier's checks drop the pod before Ray stops.
    """
    return (
        f"end=$(( $(date +%s) + {drain_deadline_s} )); "
        'node=$(python -c \'import ray; ray.init(address="auto", logging_level="ERROR"); '
        "print(ray.get_runtime_context().get_node_id())' 2>/dev/null) && "
        'ray drain-node --node-id "$node" --reason DRAIN_NODE_REASON_PREEMPTION '
        '--reason-message "pod $HOSTNAME is terminating" '
        f"--deadline-remaining-seconds {drain_deadline_s} >/dev/null 2>&1; "
        'while [ "$(date +%s)" -lt "$end" ]; do sleep 1; done; '
        f"ray stop --grace-period {RAY_STOP_GRACE_S} >/dev/null 2>&1; true"
    )


def head_pre_stop() -> str:
    """The head's preStop: stay up while Services and our tier drop it, then stop Ray."""
    return (
        f"sleep {HEAD_DEREGISTRATION_S}; "
        f"ray stop --grace-period {RAY_STOP_GRACE_S} >/dev/null 2>&1; true"
    )


def _container(
    spec: RayServiceSpec,
    name: str,
    ports: tuple[tuple[str, int], ...],
    resources: dict[str, Any],
    pre_stop: str,
) -> dict[str, Any]:
    # No readinessProbe/livenessProbe: KubeRay 1.7 injects its own when none is set, and for a
    # RayService worker its readiness probe also asks Serve's proxy (`/-/healthz` on the port named
    # `serve`), so a worker whose Serve ingress is not healthy (or drains) leaves the serve Service.
    # Setting our own would replace that check.
    return {
        "name": name,
        "image": spec.image,
        "env": _env(spec),
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
        "resources": resources,
        "volumeMounts": copy.deepcopy(_MOUNTS),
        "securityContext": copy.deepcopy(_SECURITY_CONTEXT),
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/bash", "-c", pre_stop]}}},
    }


def _head_group(spec: RayServiceSpec) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "containers": [
            _container(
                spec, "ray-head", HEAD_PORTS, _resources(spec.head.resources), head_pre_stop()
            ),
        ],
        "volumes": copy.deepcopy(_VOLUMES),
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": head_needs_service_account_token(spec),
    }
    if spec.head.pool is not None:
        pod_spec["nodeSelector"] = {POOL_LABEL: spec.head.pool}
    return {
        # num-cpus 0: the head schedules nothing, so replicas and their GPUs stay on workers.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {"metadata": {"labels": ray_pod_labels(spec.name)}, "spec": pod_spec},
    }


def _mount_model_bucket(
    metadata: dict[str, Any], pod_spec: dict[str, Any], bucket: ModelBucket
) -> None:
    """Add the read-only GCS FUSE volume, its mount and the reader's service account to a pod."""
    metadata["annotations"] = {GCSFUSE_ANNOTATION: "true"}
    pod_spec["serviceAccountName"] = bucket.service_account
    pod_spec["volumes"].append(
        {
            "name": MODEL_VOLUME,
            "csi": {
                "driver": GCSFUSE_DRIVER,
                "readOnly": True,
                # implicit-dirs: buckets written by `gcloud storage cp` have no directory objects.
                "volumeAttributes": {"bucketName": bucket.bucket, "mountOptions": "implicit-dirs"},
            },
        }
    )
    for container in pod_spec["containers"]:
        container["volumeMounts"].append(
            {"name": MODEL_VOLUME, "mountPath": bucket.mount_path, "readOnly": True}
        )


def _spread(spec: RayServiceSpec, group: WorkerGroup) -> dict[str, Any]:
    """One worker per node where possible (preferred) or always (required), within one RayCluster:
    during a blue/green upgrade the new cluster's workers spread among themselves."""
    return {
        "maxSkew": 1,
        "topologyKey": HOSTNAME_KEY,
        "whenUnsatisfiable": "DoNotSchedule" if group.spread == "required" else "ScheduleAnyway",
        "labelSelector": {
            "matchLabels": {
                **ray_pod_labels(spec.name),
                NODE_TYPE_LABEL: "worker",
                GROUP_LABEL: group.name,
            }
        },
        "matchLabelKeys": [CLUSTER_LABEL],
    }


def _worker_group(spec: RayServiceSpec, group: WorkerGroup) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": ray_pod_labels(spec.name)}
    pod_spec: dict[str, Any] = {
        "containers": [
            _container(
                spec,
                "ray-worker",
                WORKER_PORTS,
                _resources(group.resources, group.gpus_per_worker),
                worker_pre_stop(spec.drain_deadline_s),
            )
        ],
        "volumes": copy.deepcopy(_VOLUMES),
        "nodeSelector": {POOL_LABEL: group.pool, ACCELERATOR_LABEL: group.accelerator},
        "tolerations": [copy.deepcopy(GPU_TOLERATION)],
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": pod_security_context(),
        # Workers never call the Kubernetes API. The GCS FUSE CSI driver does not need the token
        # mounted either: its CSIDriver object asks the kubelet for a pod token (tokenRequests,
        # audience <project>.svc.id.goog) and exchanges it through Workload Identity itself.
        "automountServiceAccountToken": False,
    }
    if group.spread != "none":
        pod_spec["topologySpreadConstraints"] = [_spread(spec, group)]
    if spec.model_bucket is not None:
        _mount_model_bucket(metadata, pod_spec, spec.model_bucket)
    return {
        "groupName": group.name,
        "replicas": group.min_replicas if group.replicas is None else group.replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": {},
        "template": {"metadata": metadata, "spec": pod_spec},
    }


def render_rayservice(spec: RayServiceSpec) -> dict[str, Any]:
    """The RayService manifest for `spec`; raises ValueError listing every problem `spec` has."""
    errors = check_rayservice_spec(spec)
    if errors:
        raise ValueError("invalid RayService spec:\n- " + "\n- ".join(errors))
    cluster: dict[str, Any] = {
        "rayVersion": spec.ray_version,
        "enableInTreeAutoscaling": spec.enable_in_tree_autoscaling,
        "headGroupSpec": _head_group(spec),
        "workerGroupSpecs": [_worker_group(spec, g) for g in spec.workers],
        # No secretName: KubeRay makes one token per RayCluster (blue/green clusters do not share
        # one) and owns its Secret, so no token passes through Pulumi's state.
        "authOptions": {"mode": spec.auth_mode},
    }
    if spec.gcs_fault_tolerance is not None:
        ft = spec.gcs_fault_tolerance
        cluster["gcsFaultToleranceOptions"] = {
            "redisAddress": ft.redis_address,
            "redisPassword": {
                "valueFrom": {
                    "secretKeyRef": {"name": ft.password_secret_name, "key": ft.password_secret_key}
                }
            },
        }
    upgrade: dict[str, Any] = {"type": spec.upgrade_type}
    if spec.incremental_upgrade is not None:
        opts = spec.incremental_upgrade
        upgrade["clusterUpgradeOptions"] = {
            "gatewayClassName": opts.gateway_class_name,
            "stepSizePercent": opts.step_size_percent,
            "intervalSeconds": opts.interval_seconds,
            "maxSurgePercent": opts.max_surge_percent,
        }
    body: dict[str, Any] = {"upgradeStrategy": upgrade}
    if spec.cluster_deletion_delay_s is not None:
        body["rayClusterDeletionDelaySeconds"] = spec.cluster_deletion_delay_s
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": spec.name, "namespace": spec.namespace},
        "spec": {
            **body,
            "serveConfigV2": yaml.safe_dump(dict(spec.serve_config), sort_keys=False),
            "serveService": render_serve_service(spec.name),
            "rayClusterConfig": cluster,
        },
    }


def default_pdb_min_available(min_replicas: int) -> int:
    """Worker pods a voluntary disruption (drain, upgrade) must leave running: all but one of the
    floor (min_replicas), so a drain takes one worker at a time and is never blocked outright."""
    return max(0, min_replicas - 1)


def check_pdb_min_available(
    min_available: object,
    min_replicas: int,
    *,
    floor_key: str = "pdb_min_available",
    replicas_key: str = "the workers' min_replicas",
) -> str | None:
    """The problem with a worker PDB floor that blocks every drain, or None (also for an Output,
    which is only known at deploy time). The keys name the values as the caller's user wrote them."""
    if isinstance(min_available, int) and min_available > 0 and min_available >= min_replicas:
        allowed = "0" if min_replicas <= 1 else f"0..{min_replicas - 1}"
        return (
            f"{floor_key} ({min_available}) must be below {replicas_key} ({min_replicas}) or 0: at "
            "that many workers no eviction is allowed, so every node drain and upgrade blocks; "
            f"allowed: {allowed}"
        )
    return None


def worker_floor(spec: RayServiceSpec) -> int:
    """The workers the spec keeps at least: every group's min_replicas."""
    return sum(g.min_replicas for g in spec.workers)


def render_model_reader(spec: RayServiceSpec) -> dict[str, Any]:
    """The workers' Kubernetes ServiceAccount, whose Workload Identity principal reads the bucket."""
    if spec.model_bucket is None:
        raise ValueError("the spec has no model bucket, so its workers need no reader account")
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": spec.model_bucket.service_account, "namespace": spec.namespace},
    }


def render_redis_secret(spec: RayServiceSpec, password: str) -> dict[str, Any]:
    """The Secret the head reads the Redis password from, for a Redis created with the stack."""
    if spec.gcs_fault_tolerance is None:
        raise ValueError("the spec has no GCS fault tolerance, so no Redis password Secret")
    ft = spec.gcs_fault_tolerance
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ft.password_secret_name, "namespace": spec.namespace},
        "type": "Opaque",
        "stringData": {ft.password_secret_key: password},
    }


def render_worker_pdb(spec: RayServiceSpec, min_available: int) -> dict[str, Any]:
    """PDB for the worker pods. KubeRay makes none; integer minAvailable (maxUnavailable fails)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{spec.name}-workers", "namespace": spec.namespace},
        "spec": {
            "minAvailable": min_available,
            "selector": {"matchLabels": {**ray_pod_labels(spec.name), NODE_TYPE_LABEL: "worker"}},
        },
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _in_namespace(ns: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}


def render_network_policy(
    spec: RayServiceSpec,
    ingress_pod_labels: Mapping[str, str],
    ingress_namespace: str | None = None,
    operator_namespace: str = "kuberay-system",
    monitoring_namespace: str = MONITORING_NAMESPACE,
    operator_pod_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Ingress rules for the Ray pods; everything not admitted here is dropped.

    - 8000/9000 only from the ingress tier's pods (in `ingress_namespace`, default: this namespace).
    - Ray pods to Ray pods on every port: GCS, raylets, object transfer and workers use many dynamic
      ports besides the replica ranges 30000-31000 / 40000-41000 and HAProxy metrics 9101, so a port
      list would break Ray. "Ray pods" is APP_LABEL, on every pod of every RayCluster this
      RayService makes (`ray.io/cluster` would admit only one side of a blue/green upgrade).
    - The control ports 8265/6379/10001 from nothing else: no rule admits other pods of the
      namespace (the internet-facing tier included) to them.
    - 8265/8000 from the KubeRay operator's pods in its namespace: it submits serve configs to the
      dashboard and probes Serve health on the head. `kubectl port-forward` enters the pod's own
      network namespace and is not subject to this policy.
    - 8080/9101 from Managed Prometheus's collectors (`monitoring_namespace`: GKE's, by default).
    """
    ray_pods = {"podSelector": {"matchLabels": ray_pod_labels(spec.name)}}
    ingress_peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(ingress_pod_labels)}}
    if ingress_namespace is not None and ingress_namespace != spec.namespace:
        ingress_peer.update(_in_namespace(ingress_namespace))
    operator_peer = {
        **_in_namespace(operator_namespace),
        "podSelector": {"matchLabels": dict(operator_pod_labels or KUBERAY_OPERATOR_POD_LABELS)},
    }
    replica_ports = [
        {"protocol": "TCP", "port": lo, "endPort": hi} for lo, hi in REPLICA_PORT_RANGES
    ]

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{spec.name}-ray", "namespace": spec.namespace},
        "spec": {
            "podSelector": {"matchLabels": ray_pod_labels(spec.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [ingress_peer], "ports": _tcp(*SERVE_PORTS)},
                # Stated explicitly (though the next rule covers them) so the intent survives edits.
                {
                    "from": [ray_pods],
                    "ports": [*replica_ports, *_tcp(HAPROXY_METRICS_PORT)],
                },
                {"from": [ray_pods]},
                {"from": [operator_peer], "ports": _tcp(*OPERATOR_PORTS)},
                {
                    "from": [_in_namespace(monitoring_namespace)],
                    "ports": _tcp(RAY_METRICS_PORT, HAPROXY_METRICS_PORT),
                },
            ],
        },
    }


# The metric label a Ray pod's scrape carries its KubeRay node type in (head | worker), copied from
# the pod's `ray.io/node-type` by the PodMonitoring's targetLabels.fromPod (prometheus-engine
# pod_types.go labelMappingRelabelConfigs: a replace from __meta_kubernetes_pod_label_<from> to
# `to`); the local run's Prometheus derives it the same way (raygke/local_prometheus.py).
NODE_TYPE_TARGET_LABEL = "ray_node_type"


def ray_pod_monitoring_name(name: str) -> str:
    """The PodMonitoring of RayService `name`'s pods: also the `job` label of their series."""
    return f"{name}-ray"


def render_pod_monitoring(spec: RayServiceSpec, interval: str = "30s") -> dict[str, Any]:
    """Managed Prometheus scraping Ray metrics (8080) and Ray's HAProxy (9101) on each Ray pod,
    each series labelled with its pod's node type (an alert tells the head by it)."""
    return {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": {"name": ray_pod_monitoring_name(spec.name), "namespace": spec.namespace},
        "spec": {
            "selector": {"matchLabels": ray_pod_labels(spec.name)},
            "endpoints": [
                {"port": "metrics", "interval": interval},
                {"port": "haproxy-metrics", "interval": interval},
            ],
            "targetLabels": {
                "fromPod": [{"from": NODE_TYPE_LABEL, "to": NODE_TYPE_TARGET_LABEL}],
            },
        },
    }
