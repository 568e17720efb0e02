"""The typed stack config: what `stacks/Pulumi.<env>.yaml` may say, one section at a time.

Owns each section's keys, types, ranges and defaults, and the rules inside one section: each error
names the stack key, the value given and what is allowed. Every environment difference is a YAML
diff in stacks/; components never read config. A rule a renderer also needs is the renderer's,
called from here (components/render/). Imports nothing above components/render/ and never Pulumi,
so checking a stack file needs no engine. Does not own: rules that span sections or rendered objects
(infra/checks.py), defaults of the apps themselves (app/), reading the stack file or formatting
pydantic's errors (infra/stack_file.py), nor how the config becomes resources (infra/program.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from app.contracts import CONTRACTS, RecsysArgs
from components.render import names
from components.render.gpu_machines import H100_MACHINES
from components.render.haproxy import (
    DEFAULT_DEADLINE_S,
    HAPROXY_IMAGE,
    LB_GRPC_PORT,
    LB_HTTP_PORT,
    LB_HTTPS_PORT,
    ROUTE_PATH,
    AppDeadline,
    check_deadline,
)
from components.render.images import DIGEST, parse_image, pin_problem
from components.render.ingress_tier import DEFAULT_MAX_REPLICAS, DEFAULT_REPLICAS
from components.render.node_pool import FLEX_START_MAX_HOURS
from components.render.quantity import cpu_millis, memory_bytes
from components.render.rayservice import (
    DEFAULT_DRAIN_DEADLINE_S,
    DEFAULT_TERMINATION_GRACE_S,
    MAX_CLUSTER_DELETION_DELAY_S,
    SpreadMode,
    check_auth,
    check_bucket_name,
    check_mount_path,
    check_pdb_min_available,
    check_rayservice_name,
    check_shutdown,
    default_pdb_min_available,
)

# Zones that offered A3 (H100) machines on 2026-11-01, from Google's "GPU regions and zones" page.
# Stockouts are not visible here; a zone Google adds later can be used with gpuPool.allowUnlistedZones.
H100_ZONES_AS_OF = "2026-11-01"
H100_ZONES: frozenset[str] = frozenset(
    {
        "us-central1-a", "us-central1-b", "us-central1-c",
        "us-east4-a", "us-east4-b", "us-east4-c",
        "us-east5-a",
        "us-west1-a", "us-west1-b",
        "us-west4-a",
        "us-south1-b",
        "europe-west1-b", "europe-west1-c",
        "europe-west2-b",
        "europe-west3-b",
        "europe-west4-b", "europe-west4-c",
        "asia-northeast1-a", "asia-northeast1-b", "asia-northeast1-c",
        "asia-southeast1-b", "asia-southeast1-c",
        "asia-south1-b",
    }
)  # fmt: skip

MIN_RAY_FOR_HAPROXY = (2, 55)
MIN_RAY_FOR_GRPC_INGRESS = (2, 57)  # gRPC through Ray's HAProxy ingress
TUNED_MAX_ONGOING_REQUESTS = 64  # serveProfile: tuned's default (docs/performance.md)
RECSYS_MAX_BATCH_SIZE: int = RecsysArgs.model_fields["max_batch_size"].default
GKE_CLUSTER_NAME_MAX = 40  # GKE: a DNS-1035 label (components/render/names.py) of at most 40
# Pulumi's autonaming adds "-" and 7 characters to the node pool's "<gpuPool.name>-pool"; GKE allows
# node pool names of at most 40 characters.
NODE_POOL_NAME_MAX = 40 - len("-pool") - 8

# Ray Serve 2.60's per-deployment defaults (ray.serve._private.constants; a test compares them), used
# where a deployment leaves an option to Ray.
RAY_GRACEFUL_SHUTDOWN_TIMEOUT_S = 20.0
RAY_GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 2.0
# With direct ingress (implied by Ray's HAProxy ingress), Serve raises every ingress deployment's
# graceful_shutdown_timeout_s to at least this drain period plus 5 s, so load balancers can
# deregister a replica before it stops (ray.serve._private.deploy_utils).
RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S = 30.0
RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S = 5.0
# How long a replacement replica of an app may take to start on another node (actor start, imports,
# constructor, model load, first health check): `apps[].replicaStartS`, by kind where unset. Serve logs
# the real figure ("Replica(...) started successfully on node ... after N s"). echo, with a CPU-bound
# process per core beside it on 2 cores (`make test-busy`): 2.3-3.5 s on a node with an idle Ray worker
# process at hand, 14.5-22.3 s where a new one had to start (a drained node's replacements); llm: vLLM's
# start and the weights' load, not measured here.
DEFAULT_REPLICA_START_S = {"echo": 30, "recsys": 30, "custom": 30, "llm": 120}
MAX_REPLICA_START_S = 1800

# A hung replica (alive, never answering) is only found by Serve's health check: the controller kills
# it after RAY_HEALTH_CHECK_FAILURES checks in a row that time out, then starts a new one: up to
# 3 x (10 + 30) = 120 s under Ray 2.60's defaults. The project's defaults are chosen by
# bench/health_check.py; docs/reliability.md has the measured stalls.
RAY_HEALTH_CHECK_PERIOD_S = 10.0
RAY_HEALTH_CHECK_TIMEOUT_S = 30.0
# ray.serve._private.constants.REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD
RAY_HEALTH_CHECK_FAILURES = 3
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 5.0
# A hung replica is replaced within a minute, or the stack is refused.
MAX_HUNG_REPLICA_BOUND_S = 60.0
MIN_HEALTH_CHECK_TIMEOUT_S = 1.0  # shorter ones replace replicas that are merely busy


def hung_replica_bound_s(period_s: float, timeout_s: float) -> float:
    """How long a hung replica can stall its deployment before the controller replaces it:
    RAY_HEALTH_CHECK_FAILURES checks, each a period apart and failing at the timeout."""
    return RAY_HEALTH_CHECK_FAILURES * (period_s + timeout_s)


class Model(BaseModel):
    """Frozen, closed (unknown keys rejected), camelCase in YAML, snake_case in Python."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(
            f"must be an IPv4 or IPv6 CIDR such as 203.0.113.0/24 or 2001:db8::/32; got {value!r} ({exc})"
        ) from exc


def _ipv4_cidr(value: str) -> str:
    normalised = _cidr(value)
    if ipaddress.ip_network(normalised).version != 4:
        raise ValueError(
            f"must be an IPv4 CIDR such as 10.0.0.0/20 (the cluster's VPC ranges are IPv4); got {value!r}"
        )
    return normalised


# Client ranges (authorized networks, LB source ranges): either family, as GCP takes both there.
Cidr = Annotated[str, AfterValidator(_cidr)]
Ipv4Cidr = Annotated[str, AfterValidator(_ipv4_cidr)]  # the VPC's own ranges, normalised


def _scalar_text(value: Any) -> Any:
    """YAML gives `cpu: 4` as an int; a quantity is text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _cpu_quantity(value: str) -> str:
    try:
        cpu_millis(value)
    except ValueError:
        raise ValueError(
            f"must be a Kubernetes CPU quantity such as 500m, 4 or 2.5 (positive; suffixes "
            f"m, k, M, G, Ki, Mi, Gi); got {value!r}"
        ) from None
    return value


def _memory_quantity(value: str) -> str:
    try:
        memory_bytes(value)
    except ValueError:
        raise ValueError(
            "must be a Kubernetes memory quantity such as 512Mi, 16Gi or 32G (positive; binary "
            f"suffixes Ki Mi Gi Ti, decimal k M G T; 32GB is not one); got {value!r}"
        ) from None
    return value


CpuQuantity = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_cpu_quantity)]
MemoryQuantity = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_memory_quantity)]

# A Ray pod's size: KubeRay hands Ray the pod's CPUs as whole logical CPUs, and a head or a worker
# under 1 CPU or 1 GiB is a unit slip (500m for 500, 200Mi for 200Gi), never a serving node.
MIN_RAY_POD_MILLICPU = 1000
MIN_RAY_POD_MEMORY = 2**30


def _ray_pod_cpu(value: str) -> str:
    if cpu_millis(value) < MIN_RAY_POD_MILLICPU:
        raise ValueError(
            f"must be at least 1 CPU for a Ray pod (Ray counts whole CPUs; {value!r} is "
            f"{cpu_millis(value) / 1000:g} of one: 500m is half a CPU, 500 is five hundred); "
            f"got {value!r}"
        )
    return value


def _ray_pod_memory(value: str) -> str:
    if memory_bytes(value) < MIN_RAY_POD_MEMORY:
        raise ValueError(
            f"must be at least 1Gi for a Ray pod (Mi is mebibytes: 200Mi is a fifth of a GiB, "
            f"200Gi two hundred); got {value!r}"
        )
    return value


RayPodCpu = Annotated[CpuQuantity, AfterValidator(_ray_pod_cpu)]
RayPodMemory = Annotated[MemoryQuantity, AfterValidator(_ray_pod_memory)]


def _named(check: Any) -> Any:
    """An AfterValidator from a renderer's name rule (components/render/names.py)."""

    def validate(value: str) -> str:
        if (problem := check(value)) is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(validate)


Namespace = Annotated[str, _named(names.check_namespace)]
SecretName = Annotated[str, _named(names.check_secret_name)]
SecretKey = Annotated[str, _named(names.check_secret_key)]
EnvVarName = Annotated[str, _named(names.check_env_var_name)]
GatewayClassName = Annotated[str, _named(lambda v: names.dns_1123_subdomain(v, "GatewayClass"))]


# ---------------------------------------------------------------------------------------------- network
class NetworkConfig(Model):
    subnet_cidr: Ipv4Cidr = "10.10.0.0/20"
    pods_cidr: Ipv4Cidr = "10.20.0.0/14"
    services_cidr: Ipv4Cidr = "10.24.0.0/20"
    master_cidr: Ipv4Cidr = "172.16.0.0/28"
    # GPUDirect (TCPX/TCPXO) *networks only*: the extra VPCs and node NICs of the machine shape. The
    # Kubernetes side (GKE Network/GKENetworkParamSet objects, the NCCL TCPXO plugin installer,
    # the tcpxo-daemon sidecar, interface annotations on the workers) is not created, so NCCL
    # does not use them; gpudirectNetworksOnly: true acknowledges that (docs/security.md).
    gpudirect: bool = False
    gpudirect_networks_only: bool = False

    @model_validator(mode="after")
    def _ranges_disjoint(self) -> NetworkConfig:
        ranges = {
            "subnetCidr": self.subnet_cidr,
            "podsCidr": self.pods_cidr,
            "servicesCidr": self.services_cidr,
            "masterCidr": self.master_cidr,
        }
        nets = {k: ipaddress.ip_network(v) for k, v in ranges.items()}
        keys = list(nets)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    raise ValueError(
                        f"network.{a} ({ranges[a]}) overlaps network.{b} ({ranges[b]}); "
                        "the four ranges must be disjoint"
                    )
        if nets["masterCidr"].prefixlen != 28:
            raise ValueError(
                f"network.masterCidr must be a /28 (GKE's rule); got {self.master_cidr}"
            )
        return self

    @model_validator(mode="after")
    def _gpudirect_acknowledged(self) -> NetworkConfig:
        if self.gpudirect and not self.gpudirect_networks_only:
            raise ValueError(
                "network.gpudirect: true creates only the extra VPCs and node NICs; nothing on the "
                "Kubernetes side uses them (no GKE Network/GKENetworkParamSet, NCCL TCPXO plugin "
                "or tcpxo-daemon), so multi-node NCCL traffic stays on the primary NIC. Set "
                "network.gpudirectNetworksOnly: true to create them anyway (to add the Kubernetes "
                "side yourself), or set network.gpudirect: false"
            )
        if self.gpudirect_networks_only and not self.gpudirect:
            raise ValueError(
                "network.gpudirectNetworksOnly acknowledges network.gpudirect, which is false; "
                "remove it or set network.gpudirect: true"
            )
        return self


# ---------------------------------------------------------------------------------------------- cluster
class AuthorizedNetwork(Model):
    cidr: Cidr
    name: str


class SystemPoolConfig(Model):
    machine_type: str = "e2-standard-4"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=3, ge=1)


class ClusterConfig(Model):
    name: str
    location: str  # a region (regional control plane) or a zone
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    authorized_networks: list[AuthorizedNetwork] = Field(min_length=1)
    deletion_protection: bool = True
    kms_key: str | None = None  # Cloud KMS key for Kubernetes secrets encryption
    system_pool: SystemPoolConfig = SystemPoolConfig()

    @field_validator("name")
    @classmethod
    def _gke_name(cls, value: str) -> str:
        if len(value) > GKE_CLUSTER_NAME_MAX or not names.DNS_1035_LABEL.match(value):
            raise ValueError(
                f"cluster.name must be 1-40 lowercase letters, digits or '-', starting with a letter; "
                f"got {value!r}"
            )
        return value

    @field_validator("kms_key")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        pattern = r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$"
        if value is not None and not re.match(pattern, value):
            raise ValueError(
                "cluster.kmsKey must be projects/P/locations/L/keyRings/R/cryptoKeys/K "
                f"(find it with `gcloud kms keys list`); got {value!r}"
            )
        return value


# ---------------------------------------------------------------------------------------------- GPU pool
class OnDemand(Model):
    mode: Literal["on-demand"]


class Spot(Model):
    mode: Literal["spot"]


class FlexStart(Model):
    mode: Literal["flex-start"]
    max_run_duration_hours: int = Field(default=24, ge=1, le=FLEX_START_MAX_HOURS)


class QueuedProvisioning(Model):
    """Refused with its reason: GKE gives a queued-provisioning pool nodes only through a
    ProvisioningRequest (GKE's "Deploy GPUs for batch and AI workloads with ProvisioningRequest"),
    which neither KubeRay's autoscaler nor this program makes for a RayService's workers."""

    mode: Literal["queued-provisioning"]

    @model_validator(mode="after")
    def _unsupported(self) -> QueuedProvisioning:
        raise ValueError(
            "gpuPool.capacity.mode queued-provisioning cannot serve a RayService: GKE gives such a "
            "pool nodes only through ProvisioningRequests, which KubeRay's autoscaler never makes, so "
            "the workers would stay Pending; allowed: flex-start (the same Dynamic Workload "
            "Scheduler capacity, obtained by the cluster autoscaler on demand), spot, on-demand, "
            "reservation"
        )


class Reservation(Model):
    mode: Literal["reservation"]
    affinity: Literal["specific", "any"] = "specific"
    name: str | None = None
    project: str | None = None  # a shared reservation's owner project
    # How many machines the specific reservation holds (`gcloud compute reservations describe`): a
    # specific reservation never falls back to other capacity, so the pool's peak must fit it.
    nodes: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _name_when_specific(self) -> Reservation:
        if self.affinity == "specific" and not self.name:
            raise ValueError(
                "gpuPool.capacity.name is required when affinity is 'specific' "
                "(find it with `gcloud compute reservations list`); got none"
            )
        if self.affinity == "any" and self.name:
            raise ValueError(
                f"gpuPool.capacity.name must be empty when affinity is 'any'; got {self.name!r}"
            )
        if self.affinity == "specific" and self.nodes is None:
            raise ValueError(
                "gpuPool.capacity.nodes is required when affinity is 'specific': how many machines "
                "the reservation holds (`gcloud compute reservations describe <name> --format="
                "'value(specificReservation.count)'`), so the plan can check the pool's peak fits it"
            )
        return self


Capacity = Annotated[
    OnDemand | Spot | FlexStart | QueuedProvisioning | Reservation, Field(discriminator="mode")
]


class GpuPoolConfig(Model):
    name: str = "h100"  # the node pool's name and its raygke.io/pool label
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    zones: list[str] = Field(min_length=1)
    min_nodes: int = Field(ge=0)
    max_nodes: int = Field(ge=1)
    capacity: Capacity
    compact_placement: bool = False
    driver_version: Literal["DEFAULT", "LATEST"] = "LATEST"
    allow_unlisted_zones: bool = False

    @field_validator("name")
    @classmethod
    def _pool_name(cls, value: str) -> str:
        if len(value) > NODE_POOL_NAME_MAX or not names.DNS_1035_LABEL.match(value):
            raise ValueError(
                f"gpuPool.name must be 1-{NODE_POOL_NAME_MAX} lower-case letters, digits or '-', "
                "starting with a letter (GKE's node pool name is <name>-pool plus Pulumi's "
                f"8-character suffix, at most 40); got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _shape(self) -> GpuPoolConfig:
        shape = H100_MACHINES.get(self.machine_type)
        if shape is None:
            raise ValueError(
                f"gpuPool.machineType must be one of {sorted(H100_MACHINES)}; got {self.machine_type!r}"
            )
        if self.accelerator_type != shape.accelerator_type:
            raise ValueError(
                f"gpuPool.acceleratorType must be {shape.accelerator_type!r} for {self.machine_type}; "
                f"got {self.accelerator_type!r}"
            )
        if self.accelerator_count != shape.accelerator_count:
            raise ValueError(
                f"gpuPool.acceleratorCount must be {shape.accelerator_count} for {self.machine_type}; "
                f"got {self.accelerator_count}"
            )
        if shape.spot_or_flex_only and self.capacity.mode not in ("spot", "flex-start"):
            raise ValueError(
                f"gpuPool.capacity.mode must be spot or flex-start for {self.machine_type} (Google "
                f"sells 1/2/4-GPU A3 High only that way); got {self.capacity.mode!r}"
            )
        if self.compact_placement and len(self.zones) != 1:
            raise ValueError(
                f"gpuPool.compactPlacement needs exactly one zone (a placement group is zonal); "
                f"got zones {self.zones}"
            )
        reserved = self.capacity.nodes if isinstance(self.capacity, Reservation) else None
        if reserved is not None and self.max_nodes > reserved:
            raise ValueError(
                f"gpuPool.maxNodes ({self.max_nodes}) must be <= gpuPool.capacity.nodes "
                f"({reserved}): a specific reservation never falls back to other capacity, so "
                f"nodes past it never come; allowed: maxNodes <= {reserved}, a bigger "
                "reservation, or affinity: any (falls back to on-demand)"
            )
        if not self.allow_unlisted_zones:
            unknown = [z for z in self.zones if z not in H100_ZONES]
            if unknown:
                raise ValueError(
                    f"gpuPool.zones {unknown} offered no H100 (A3) machines as of {H100_ZONES_AS_OF}; "
                    f"allowed: {sorted(H100_ZONES)} (set gpuPool.allowUnlistedZones: true for a newer zone)"
                )
        return self


# ---------------------------------------------------------------------------------------------- KubeRay
class KubeRayConfig(Model):
    version: Literal["1.7.0"] = "1.7.0"
    namespace: Namespace = "kuberay-system"


# What a secret value read from a stack file outside Pulumi (`raygke plan`) stands in as: its
# ciphertext, `{secure: v1:...}`, only Pulumi can decrypt (infra/stack_file.py puts this there).
ENCRYPTED = "[encrypted]"


# ---------------------------------------------------------------------------------------------- ingress
class IngressConfig(Model):
    exposure: Literal["external", "internal"] = "internal"
    source_ranges: list[Cidr] = Field(min_length=1)
    image: str = HAPROXY_IMAGE
    replicas: int = Field(default=DEFAULT_REPLICAS, ge=1)
    max_replicas: int = Field(default=DEFAULT_MAX_REPLICAS, ge=1)
    http_port: int = Field(default=LB_HTTP_PORT, ge=1, le=65535)
    grpc_port: int = Field(default=LB_GRPC_PORT, ge=1, le=65535)
    https_port: int = Field(default=LB_HTTPS_PORT, ge=1, le=65535)
    tls_secret: SecretName | None = None  # a kubernetes.io/tls Secret; enables the HTTPS frontend
    # PEM certificate chain and key as Pulumi secrets (`pulumi config set --secret --path
    # ingress.tlsKey < key.pem`): the program creates `tls_secret` from them. Without them the
    # Secret is yours to bring (cert-manager, `kubectl create secret tls`), and the plan lists it.
    tls_certificate: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _tls(self) -> IngressConfig:
        given = [
            k for k, v in (("tlsCertificate", self.tls_certificate), ("tlsKey", self.tls_key)) if v
        ]
        if given and self.tls_secret is None:
            raise ValueError(
                f"ingress.{given[0]} needs ingress.tlsSecret: the name of the Secret the program "
                "creates from it"
            )
        if len(given) == 1:
            missing = "tlsKey" if given == ["tlsCertificate"] else "tlsCertificate"
            raise ValueError(
                f"ingress.{missing} is required with ingress.{given[0]}: the program creates the "
                "kubernetes.io/tls Secret from both; got none"
            )
        for key, value, marker in (
            ("tlsCertificate", self.tls_certificate, "-----BEGIN CERTIFICATE-----"),
            ("tlsKey", self.tls_key, "PRIVATE KEY-----"),
        ):
            if value and value != ENCRYPTED and marker not in value:
                # never the value itself: a key is a secret, and a wrong one may be too
                raise ValueError(
                    f"ingress.{key} must be PEM text holding {marker.strip('-')}; got text "
                    "without it (the value is not shown)"
                )
        return self

    @property
    def tls_from_stack(self) -> bool:
        """Whether the program creates the TLS Secret (else it is a prerequisite)."""
        return self.tls_secret is not None and self.tls_certificate is not None

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        # A version tag, or a digest (`repo@sha256:...`, `repo:tag@sha256:...`), which wins.
        if (problem := pin_problem(value)) is not None:
            raise ValueError(
                f"ingress.image must be pinned to a version tag or a digest (repo:tag or "
                f"repo:tag@sha256:<64 hex>); got {value!r}: {problem}"
            )
        return value


# ---------------------------------------------------------------------------------------------- Ray
ServeProfile = Literal["tuned", "flags-only", "ray-defaults"]


# Ray's HAProxy ingress (ray/serve/_private/constants.py: only "1" turns it on)
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# Ray's two flags, nothing else: what every user can do from the vendor's blog.
FLAGS_ONLY = {HA_PROXY_ENV: "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
HAPROXY_THREADS_ENV = "RAY_SERVE_HAPROXY_NBTHREAD"  # Ray's HAProxy threads; Ray's default: 4
# Ray Serve LLM's high-throughput mode, the other two variables of KubeRay's high-throughput Serve
# guide: with "1" (ray/llm/_internal/serve/constants.py L65-67: only "1" counts) build_openai_app
# makes the LLMServer deployment the app's ingress, with an LLMRouter deployment attached to Ray's
# HAProxy as its ingress request router (ray/llm/_internal/serve/core/ingress/builder.py L240-279):
# no OpenAiIngress hop between Ray's HAProxy and the engine. vLLM's executor: RayExecutorV2 where the
# engine runs on Ray workers (vllm/envs.py L916-917; vLLM 0.29's default is already "1": set so an
# image with another vLLM runs what was measured).
LLM_DIRECT_STREAMING_ENV = "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"
VLLM_RAY_V2_EXECUTOR_ENV = "VLLM_USE_RAY_V2_EXECUTOR_BACKEND"
# Where Ray's Prometheus-backed autoscaling policies ask (ray/serve/autoscaling_policy.py
# PrometheusQueryMixin reads it; so does Ray's dashboard): `ray.prometheusUrl` on the cluster's
# pods (infra/specs.py), the local Prometheus on a local run's nodes (raygke/local.py).
PROMETHEUS_HOST_ENV = "RAY_PROMETHEUS_HOST"
PROMETHEUS_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
# Which env vars each tuning key sets (RayConfig.node_flags): extraEnv may not set them too.
TUNING_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "haproxyThreads": (HAPROXY_THREADS_ENV,),
    "llmDirectStreaming": (LLM_DIRECT_STREAMING_ENV, VLLM_RAY_V2_EXECUTOR_ENV),
}


class TuningConfig(Model):
    """What `serveProfile: tuned` sets beyond Ray's two flags: the levers bench/ablation.py and
    bench/llm.py measured a gain for (docs/performance.md has the tables, and why others stay out)."""

    # for every deployment the stack gives none (the llm app's come from Ray Serve LLM)
    max_ongoing_requests: int = Field(default=TUNED_MAX_ONGOING_REQUESTS, ge=1)
    # None: Ray's 4 in the cluster; half the cores (at most 4) on one machine (`raygke local`)
    haproxy_threads: int | None = Field(default=None, ge=1, le=64)
    # Ray Serve LLM's direct streaming for the llm apps (LLM_DIRECT_STREAMING_ENV); read by nothing
    # else, so a stack without an llm app runs the same with it. infra/serve_rules.py refuses an app
    # Ray's builder would refuse under it.
    llm_direct_streaming: bool = True


class RayConfig(Model):
    version: str = "2.60.0"
    image_repository: str  # the image built from app/Dockerfile; tagged <version>-py311-gpu
    # tuned: Ray's two flags plus `tuning`; flags-only: the two flags; ray-defaults: neither (A/B)
    serve_profile: ServeProfile = "tuned"
    tuning: TuningConfig | None = None  # only with serveProfile: tuned; None there: the defaults
    grpc: bool = True  # gRPC ingress on :9000 (needs Ray 2.57+ with HAProxy)
    extra_env: dict[EnvVarName, str] = Field(
        default_factory=dict
    )  # values may be secrets: never shown
    # The digest CI pushed for <imageRepository>:<version>-py311-gpu (`sha256:<64 hex>`); the pods
    # then pull exactly that image. The deploy workflow sets it from the build; None: the tag.
    image_digest: str | None = None
    # The Prometheus-compatible query API the pods reach (RAY_PROMETHEUS_HOST): in the cluster, GMP's
    # query frontend Service (docs/decisions.md, "LLM autoscaling on a serving signal").
    # Required by an llm app's `autoscale_on` (infra/serve_rules.py); None: no env var.
    prometheus_url: str | None = None

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        if value is not None and not PROMETHEUS_URL.match(value):
            raise ValueError(
                f"ray.prometheusUrl must be an http(s) base URL of a Prometheus query API, without "
                f"a query string, e.g. http://frontend.gmp-public.svc:9090; got {value!r}"
            )
        return value

    @field_validator("image_repository")
    @classmethod
    def _untagged(cls, value: str) -> str:
        try:
            image = parse_image(value)
        except ValueError as exc:
            raise ValueError(f"ray.imageRepository: {exc}") from None
        if image.tag or image.digest:
            pinned = f":{image.tag}" if image.tag else f"@{image.digest}"
            raise ValueError(
                f"ray.imageRepository must be a repository without a tag or digest (the program "
                f"appends :<ray.version>-py311-gpu; pin a digest with ray.imageDigest); got "
                f"{value!r}: remove {pinned!r}, e.g. {image.repository!r}"
            )
        return value

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not DIGEST.match(value):
            raise ValueError(
                f"ray.imageDigest must be sha256:<64 lowercase hex digits> as the registry "
                f"reports it (`gcloud artifacts docker images describe <image> "
                f"--format='value(image_summary.digest)'`); got {value!r}"
            )
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not re.match(r"^\d+\.\d+\.\d+$", value):
            raise ValueError(f"ray.version must look like 2.60.0; got {value!r}")
        return value

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor, _ = self.version.split(".")
        return int(major), int(minor)

    @property
    def image(self) -> str:
        digest = f"@{self.image_digest}" if self.image_digest else ""
        return f"{self.image_repository}:{self.version}-py311-gpu{digest}"

    @property
    def effective_tuning(self) -> TuningConfig | None:
        """The tuning in effect: the stack's, the defaults, or None outside `serveProfile: tuned`."""
        if self.serve_profile != "tuned":
            return None
        return self.tuning or TuningConfig()

    @property
    def serve_flags(self) -> dict[str, str]:
        """The env flags Ray must see where `ray start` runs (head and every worker): the profile's,
        tuning's and extraEnv. Where Ray runs adds its own (infra/specs.py, `raygke local`); vLLM's
        flags are `engine_flags` (the smoke output reports Ray Serve's only)."""
        flags = {} if self.serve_profile == "ray-defaults" else dict(FLAGS_ONLY)
        tuning = self.effective_tuning
        if tuning is not None and tuning.haproxy_threads is not None:
            flags[HAPROXY_THREADS_ENV] = str(tuning.haproxy_threads)
        if tuning is not None and tuning.llm_direct_streaming:
            flags[LLM_DIRECT_STREAMING_ENV] = "1"
        return {**flags, **self.extra_env}

    @property
    def engine_flags(self) -> dict[str, str]:
        """vLLM's env flags the tuning sets on every node beside `serve_flags`."""
        tuning = self.effective_tuning
        if tuning is not None and tuning.llm_direct_streaming:
            return {VLLM_RAY_V2_EXECUTOR_ENV: "1"}
        return {}

    @property
    def node_flags(self) -> dict[str, str]:
        """Everything the `ray` section puts in the env of `ray start` on every node: `serve_flags`
        (extraEnv among them) and `engine_flags`; tuning's keys and extraEnv never overlap."""
        return {**self.serve_flags, **self.engine_flags}

    @property
    def prometheus_env(self) -> dict[str, str]:
        """RAY_PROMETHEUS_HOST for the cluster's pods, where `prometheusUrl` is set."""
        return {PROMETHEUS_HOST_ENV: self.prometheus_url} if self.prometheus_url else {}

    @property
    def llm_direct_streaming(self) -> bool:
        """Whether Ray Serve LLM builds its apps in direct streaming (the nodes' env says "1"),
        whoever set it: `tuning.llmDirectStreaming` or extraEnv under another profile."""
        return self.node_flags.get(LLM_DIRECT_STREAMING_ENV) == "1"

    @model_validator(mode="after")
    def _features_need_versions(self) -> RayConfig:
        haproxy = self.serve_profile != "ray-defaults"
        if haproxy and self.version_tuple < MIN_RAY_FOR_HAPROXY:
            raise ValueError(
                f"ray.version {self.version} has no HAProxy ingress (serveProfile: "
                f"{self.serve_profile} needs 2.55+); use 2.60.0 or serveProfile: ray-defaults"
            )
        # The RayService always runs Ray's token auth (infra/specs.py): the renderer's rule, here
        # where a stack can set the version.
        if problems := check_auth("token", self.version):
            raise ValueError(f"ray.version {self.version}: {problems[0]}")
        if self.grpc and haproxy and self.version_tuple < MIN_RAY_FOR_GRPC_INGRESS:
            raise ValueError(
                f"ray.grpc needs Ray 2.57+ for gRPC through the HAProxy ingress; got ray.version "
                f"{self.version} (set ray.grpc: false or use 2.60.0)"
            )
        if PROMETHEUS_HOST_ENV in self.extra_env:  # the value is not shown (extraEnv)
            raise ValueError(
                f"ray.extraEnv.{PROMETHEUS_HOST_ENV} is set; set ray.prometheusUrl instead, which "
                "renders it and which the llm app's autoscale_on is checked against"
            )
        if self.tuning is not None and self.serve_profile != "tuned":
            raise ValueError(
                f"ray.tuning applies only to serveProfile: tuned; got serveProfile: "
                f"{self.serve_profile} (remove ray.tuning or use serveProfile: tuned)"
            )
        if self.effective_tuning is not None:
            for key, envs in TUNING_ENV_KEYS.items():
                for env in envs:
                    if env in self.extra_env:
                        raise ValueError(  # the value is not shown: extraEnv may hold secrets
                            f"ray.extraEnv.{env} conflicts with ray.tuning.{key}, which sets it; "
                            f"set ray.tuning.{key} instead"
                        )
        return self


def with_serve_profile(config: StackConfig, profile: ServeProfile) -> StackConfig:
    """The same stack under another serve profile: the other side of an A/B. Tuning goes with
    `tuned` only, so `flags-only` and `ray-defaults` are Ray's flags and defaults, nothing else."""
    ray = config.ray.model_copy(
        update={
            "serve_profile": profile,
            "tuning": config.ray.tuning if profile == "tuned" else None,
        }
    )
    return config.model_copy(update={"ray": ray})


def with_tuning(config: StackConfig, **changes: Any) -> StackConfig:
    """The same stack under `serveProfile: tuned` with some tuning keys changed (field names, e.g.
    llm_direct_streaming=False): an A/B arm one lever away from the package profile. Validated as
    the stack file would be, so the changed tuning meets the same rules."""
    tuning = (config.ray.tuning or TuningConfig()).model_dump()
    unknown = sorted(set(changes) - set(tuning))
    if unknown:
        raise ValueError(f"tuning has no key {', '.join(unknown)}; known: {', '.join(tuning)}")
    ray = RayConfig.model_validate(
        {
            **config.ray.model_dump(),
            "serve_profile": "tuned",
            "tuning": {**tuning, **changes},
        }
    )
    return config.model_copy(update={"ray": ray})


# ---------------------------------------------------------------------------------------------- RayService
class Resources(Model):
    cpu: RayPodCpu
    memory: RayPodMemory


class WorkerGroupConfig(Model):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    cpu: RayPodCpu = "20"
    memory: RayPodMemory = "200Gi"
    # Worker pods over nodes: `preferred` (ScheduleAnyway), `required` (DoNotSchedule) or `none`.
    spread: SpreadMode = "preferred"
    # Worker pods a voluntary disruption must leave running. Default: minReplicas - 1 (one at a time).
    pdb_min_available: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _order(self) -> WorkerGroupConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"rayService.workers.minReplicas ({self.min_replicas}) must be <= "
                f"rayService.workers.maxReplicas ({self.max_replicas})"
            )
        problem = check_pdb_min_available(
            self.pdb_min_available,
            self.min_replicas,
            floor_key="rayService.workers.pdbMinAvailable",
            replicas_key="rayService.workers.minReplicas",
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def min_available(self) -> int:
        """The PodDisruptionBudget's minAvailable: given, or the renderer's default."""
        if self.pdb_min_available is not None:
            return self.pdb_min_available
        return default_pdb_min_available(self.min_replicas)


class UpgradeStrategy(Model):
    type: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] = "NewCluster"
    # NewCluster runs old and new clusters side by side: twice the GPUs during an upgrade.
    acknowledge_no_gpu_headroom: bool = False
    gateway_class_name: GatewayClassName | None = None  # incremental upgrades: Gateway API
    step_size_percent: int = Field(default=25, ge=1, le=100)
    interval_seconds: int = Field(default=30, ge=1)
    # How long KubeRay keeps the old cluster after promoting the new one; unset: derived so requests
    # our tier sent the old cluster finish (infra/specs.py cluster_deletion_delay_s, which
    # infra/checks.py holds an explicit value to).
    old_cluster_deletion_delay_seconds: int | None = Field(
        default=None, strict=True, ge=0, le=MAX_CLUSTER_DELETION_DELAY_S
    )


class SecretKeyRef(Model):
    name: SecretName
    key: SecretKey


class MemorystoreConfig(Model):
    """A Memorystore for Redis instance the program creates for GCS fault tolerance: reached over
    private service access in the cluster's VPC, AUTH on, its AUTH string in a Secret the head reads."""

    tier: Literal["BASIC", "STANDARD_HA"] = "STANDARD_HA"  # STANDARD_HA: a replica, failover
    memory_size_gb: int = Field(default=1, ge=1, le=300)  # GCS metadata: a few MB per cluster
    redis_version: Literal["REDIS_7_2", "REDIS_7_0", "REDIS_6_X"] = "REDIS_7_2"


class FaultTolerance(Model):
    enabled: bool = False
    memorystore: MemorystoreConfig | None = None  # the program creates the Redis and its Secret
    # Or a Redis you bring: its host:port, and the Secret holding its password (you create both).
    redis_address: str | None = None
    redis_password: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _redis(self) -> FaultTolerance:
        if self.enabled and (self.memorystore is None) == (self.redis_address is None):
            raise ValueError(
                "rayService.faultTolerance needs exactly one Redis when enabled is true: "
                "memorystore: {tier, memorySizeGb} (the program creates it) or redisAddress with "
                "redisPassword (a Redis you bring); got "
                + ("both" if self.memorystore is not None else "neither")
            )
        if self.memorystore is not None and self.redis_password is not None:
            raise ValueError(
                "rayService.faultTolerance.redisPassword must be empty with memorystore: the "
                "program creates the Secret from the instance's AUTH string; got "
                f"{self.redis_password.name!r}"
            )
        if self.enabled and self.redis_address and self.redis_password is None:
            raise ValueError(
                "rayService.faultTolerance.redisPassword is required with redisAddress: "
                "{name: <Secret>, key: <key>} holding that Redis's AUTH string; got none"
            )
        if self.redis_address and not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", self.redis_address):
            raise ValueError(
                f"rayService.faultTolerance.redisAddress must be host:port; got {self.redis_address!r}"
            )
        return self


class ModelBucketConfig(Model):
    """A GCS bucket of model weights, mounted read-only on every worker by the GCS FUSE CSI driver."""

    bucket: str
    mount_path: str = "/gcs/models"

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if (problem := check_bucket_name(value)) is not None:
            raise ValueError(
                f"rayService.modelBucket.bucket: {problem} (list yours with `gcloud storage ls`)"
            )
        return value

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if (problem := check_mount_path(value)) is not None:
            raise ValueError(f"rayService.modelBucket.mountPath: {problem}")
        return value


class ShutdownConfig(Model):
    """How a Ray pod stops: a worker's preStop drains its Ray node with `drainDeadlineSeconds` (Serve
    moves replicas off it first), then `ray stop`; the kubelet kills the pod at the grace period."""

    termination_grace_period_seconds: int = Field(default=DEFAULT_TERMINATION_GRACE_S, ge=1)
    drain_deadline_seconds: int = Field(default=DEFAULT_DRAIN_DEADLINE_S, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> ShutdownConfig:
        problems = check_shutdown(
            self.termination_grace_period_seconds,
            self.drain_deadline_seconds,
            grace_key="rayService.shutdown.terminationGracePeriodSeconds",
            drain_key="rayService.shutdown.drainDeadlineSeconds",
        )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class RayServiceConfig(Model):
    name: str
    namespace: Namespace = "ray-serve"
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()
    fault_tolerance: FaultTolerance = FaultTolerance()
    shutdown: ShutdownConfig = ShutdownConfig()
    head: Resources = Resources(cpu="2", memory="8Gi")  # fits an e2-standard-4 system node
    workers: WorkerGroupConfig
    model_bucket: ModelBucketConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if (problem := check_rayservice_name(value)) is not None:
            raise ValueError(f"rayService.name: {problem}")
        return value


# ---------------------------------------------------------------------------------------------- apps
AppKind = Literal["echo", "recsys", "llm", "custom"]
Protocol = Literal["http", "grpc"]


MAX_SCALE_DELAY_S = 3600


class Autoscaling(Model):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    # How long Serve waits, with the metrics past the target, before adding (removing) replicas, in
    # seconds; unset keeps Ray's (30 s up, 600 s down). An hour at most: more is milliseconds
    # written as seconds (30000), which would leave a load spike unserved for hours.
    upscale_delay_s: float | None = Field(default=None, ge=0, le=MAX_SCALE_DELAY_S)
    downscale_delay_s: float | None = Field(default=None, ge=0, le=MAX_SCALE_DELAY_S)

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class DeploymentConfig(Model):
    """Per-deployment overrides, keyed by the deployment's name in the app module."""

    num_replicas: int | None = Field(default=None, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float | None = Field(default=None, ge=0)
    # Ray gives a replica a share of one GPU, or whole GPUs: 0.5 and 2 are fine, 1.5 is not.
    num_gpus: float = Field(default=0, ge=0)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=-1)
    # Serve's replica lifecycle; unset keeps Ray's defaults (RAY_* above).
    graceful_shutdown_wait_loop_s: float | None = Field(default=None, ge=0)
    graceful_shutdown_timeout_s: float | None = Field(default=None, ge=0)
    health_check_period_s: float | None = Field(default=None, gt=0)
    health_check_timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("num_gpus")
    @classmethod
    def _whole_gpus_above_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(
                f"numGpus above 1 must be a whole number (Ray schedules a fraction of one GPU, or "
                f"whole GPUs); allowed: a fraction in (0, 1], or 2, 3, ...; got {value:g}"
            )
        return value

    @model_validator(mode="after")
    def _one_scaling(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set numReplicas or autoscaling, not both")
        return self

    @model_validator(mode="after")
    def _drain_loop_fits(self) -> DeploymentConfig:
        # A stopping replica sleeps one wait loop before it first counts its ongoing requests, and
        # the controller kills it at the timeout: a loop longer than the timeout never drains.
        loop, timeout = self.shutdown_wait_loop_s, self.shutdown_timeout_s
        if loop > timeout:
            default = "" if self.graceful_shutdown_timeout_s is not None else ", Ray's default"
            raise ValueError(
                f"gracefulShutdownWaitLoopS must be <= gracefulShutdownTimeoutS ({timeout:g}{default}); "
                f"got {loop:g}: the controller kills a stopping replica at the timeout, before its "
                f"first drain check; allowed: 0..{timeout:g}"
            )
        return self

    @property
    def shutdown_timeout_s(self) -> float:
        """graceful_shutdown_timeout_s as Ray will use it (before any ingress floor)."""
        given = self.graceful_shutdown_timeout_s
        return RAY_GRACEFUL_SHUTDOWN_TIMEOUT_S if given is None else given

    @property
    def shutdown_wait_loop_s(self) -> float:
        given = self.graceful_shutdown_wait_loop_s
        return RAY_GRACEFUL_SHUTDOWN_WAIT_LOOP_S if given is None else given

    @property
    def peak_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        return self.num_replicas or 1


class AppConfig(Model):
    name: str
    kind: AppKind
    route_prefix: str
    import_path: str | None = None  # required for kind: custom; the kind's builder otherwise
    grpc_service: str | None = None  # kind: custom with grpc: the full service name clients call
    grpc_servicer_functions: list[str] = Field(default_factory=list)  # kind: custom with grpc
    protocols: list[Protocol] = Field(default_factory=lambda: ["http", "grpc"], min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    local_args: dict[str, Any] = Field(default_factory=dict)  # merged over args by `raygke local`
    deployments: dict[str, DeploymentConfig] = Field(default_factory=dict)
    # How long our tier waits for Ray's next bytes on this app's requests (components/render/haproxy.py)
    deadline_s: int = Field(default=DEFAULT_DEADLINE_S, strict=True)
    replica_start_s: int | None = Field(default=None, strict=True, ge=1, le=MAX_REPLICA_START_S)

    @property
    def runs_locally(self) -> bool:
        """Whether `raygke local` runs this app: every kind but llm, and an llm app whose args with
        localArgs merged put it on vLLM's CPU build (`device: cpu`)."""
        device = {**self.args, **self.local_args}.get("device")
        return self.kind != "llm" or device == "cpu"

    @property
    def replica_start_bound_s(self) -> int:
        """replicaStartS, or its kind's default (DEFAULT_REPLICA_START_S)."""
        return self.replica_start_s or DEFAULT_REPLICA_START_S[self.kind]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not names.DNS_1035_LABEL.match(value):
            raise ValueError(f"app name must be lowercase letters, digits and '-'; got {value!r}")
        return value

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # the tier's route grammar (it writes prefixes into haproxy.cfg); Ray's: no trailing '/'
        if not ROUTE_PATH.match(value) or (len(value) > 1 and value.endswith("/")):
            raise ValueError(
                f"routePrefix must start with '/', hold only URL path characters and not end with '/'; "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _deadline(self) -> AppConfig:
        if (problem := check_deadline(self.deadline_s)) is not None:
            raise ValueError(f"apps[{self.name}].deadlineS {problem}")
        return self

    @model_validator(mode="after")
    def _kind(self) -> AppConfig:
        if self.kind == "custom" and not self.import_path:
            raise ValueError(
                f"apps[{self.name}].importPath is required for kind: custom (module:attribute)"
            )
        if (
            self.kind == "custom"
            and "grpc" in self.protocols
            and not (self.grpc_service and self.grpc_servicer_functions)
        ):
            raise ValueError(
                f"apps[{self.name}].grpcService and grpcServicerFunctions are required for a custom app "
                "serving grpc (or set protocols: [http])"
            )
        if self.kind == "llm":
            if "grpc" in self.protocols:
                raise ValueError(
                    f"apps[{self.name}].protocols: the llm app serves the OpenAI HTTP API only; got {self.protocols}"
                )
            if self.deployments:
                raise ValueError(
                    f"apps[{self.name}].deployments: Ray Serve LLM names and sizes its own deployments; "
                    "set args.min_replicas, args.max_replicas and args.tensor_parallel_size instead"
                )
        return self

    @model_validator(mode="after")
    def _contract(self) -> AppConfig:
        """args, localArgs and deployment keys against the app's own code (app/contracts.py).
        A `custom` app's code is not in this repository: nothing to check it against."""
        contract = CONTRACTS.get(self.kind)
        if contract is None:
            return self
        where = f"apps[{self.name}]"
        problems = []
        if contract.deployments is not None:
            unknown = sorted(set(self.deployments) - set(contract.deployments))
            for name in unknown:
                problems.append(
                    f"{where}.deployments.{name}: the {self.kind} app defines no deployment "
                    f"{name!r} (Ray Serve would say it does not exist only at deploy); allowed: "
                    f"{', '.join(contract.deployments)}"
                )
        problems += _args_problems(f"{where}.args", self.kind, contract.args, self.args)
        if self.local_args and not problems:
            merged = {**self.args, **self.local_args}
            problems += _args_problems(f"{where}.localArgs", self.kind, contract.args, merged)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def health_checks(self) -> dict[str, tuple[float, float]]:
        """(period, timeout) per deployment as Serve will run it: the stack's, else the project's
        defaults; every deployment of a kind whose names we know, a custom app's listed ones. Empty
        for llm: Ray Serve LLM builds its deployments, on Ray's defaults (docs/reliability.md)."""
        if self.kind == "llm":
            return {}
        contract = CONTRACTS.get(self.kind)
        known = contract.deployments if contract is not None and contract.deployments else ()
        names = set(self.deployments) | set(known)
        out = {}
        for name in sorted(names):
            dep = self.deployments.get(name, DeploymentConfig())
            period, timeout = dep.health_check_period_s, dep.health_check_timeout_s
            out[name] = (
                HEALTH_CHECK_PERIOD_S if period is None else period,
                HEALTH_CHECK_TIMEOUT_S if timeout is None else timeout,
            )
        return out

    def hung_replica_bound_s(self) -> float:
        """The longest a hung replica of this app stalls it before Serve replaces it."""
        checks = self.health_checks()
        if not checks:  # llm, or a custom app that lists no deployment: Ray's defaults
            return hung_replica_bound_s(RAY_HEALTH_CHECK_PERIOD_S, RAY_HEALTH_CHECK_TIMEOUT_S)
        return max(hung_replica_bound_s(p, t) for p, t in checks.values())

    @property
    def gpus_per_replica(self) -> float:
        """The widest replica's GPUs: one replica never spans nodes."""
        if self.kind == "llm":
            return int(self.args.get("tensor_parallel_size", 1))
        return max((d.num_gpus for d in self.deployments.values()), default=0)

    @property
    def gpu_demand(self) -> float:
        if self.kind == "llm":  # each replica holds tensor_parallel_size GPUs
            return self.gpus_per_replica * int(self.args.get("max_replicas", 1))
        return sum(d.num_gpus * d.peak_replicas for d in self.deployments.values())


def _args_problems(where: str, kind: str, model: type[BaseModel], args: Mapping[str, Any]):
    """The app's own args model on the stack's args: unknown keys, missing ones, bad values and
    its own cross-field rules (llm: min_replicas <= max_replicas), each naming the key."""
    try:
        model.model_validate(dict(args))
    except ValidationError as exc:
        fields = list(model.model_fields)
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                yield f"{where}.{key}: unknown key for the {kind} app; allowed: {', '.join(fields)}"
            elif err["type"] == "missing":
                yield (
                    f"{where}.{key} is required by the {kind} app; required: {', '.join(required)}"
                )
            elif not key:
                yield f"{where}: {msg}"
            else:
                yield f"{where}.{key}: {msg}; got {shown_value(err.get('input'))}"


# ---------------------------------------------------------------------------------------------- smoke
MIN_SLO_MS = 1.0
MAX_SLO_MS = 600_000.0


class LlmSmokeConfig(Model):
    """The llm apps' objectives and load: a request within both `ttftMs` and `tpotMs` counts toward
    goodput; the gates hold the p99 of each at `concurrency` streams of these lengths."""

    concurrency: int = Field(default=8, ge=1)
    # Milliseconds, from 1 ms (0.5 is seconds written as milliseconds: no network meets it) to 10 min.
    ttft_ms: float = Field(default=2000.0, ge=MIN_SLO_MS, le=MAX_SLO_MS)
    tpot_ms: float = Field(default=100.0, ge=MIN_SLO_MS, le=MAX_SLO_MS)
    input_tokens: int = Field(default=128, ge=1)
    output_tokens: int = Field(default=128, ge=2)  # TPOT needs two tokens


def _keys(model: type[BaseModel]) -> dict[str, str]:
    """A block's keys as the stack file writes them -> field names."""
    return {f.alias or name: name for name, f in model.model_fields.items()}


def _sets_nothing(block: BaseModel, where: str) -> None:
    if all(getattr(block, name) is None for name in type(block).model_fields):
        raise ValueError(
            f"{where} sets nothing; remove it, or set one of {', '.join(_keys(type(block)))}"
        )


class LocalLlmSloConfig(Model):
    """`smoke.localSlo.llm`: the llm objectives for a local run; each key unset keeps `smoke.llm`'s.
    Not the request's lengths: the local app's context is checked against `smoke.llm`'s
    (infra/serve_rules.py), and the same request keeps local and cluster figures comparable."""

    concurrency: int | None = Field(default=None, ge=1)
    ttft_ms: float | None = Field(default=None, ge=MIN_SLO_MS, le=MAX_SLO_MS)
    tpot_ms: float | None = Field(default=None, ge=MIN_SLO_MS, le=MAX_SLO_MS)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        for key in ("inputTokens", "outputTokens", "input_tokens", "output_tokens"):
            if isinstance(data, Mapping) and key in data:
                raise ValueError(
                    f"smoke.localSlo.llm.{to_camel(key)}: a local run sends the cluster's "
                    f"request (smoke.llm.{to_camel(key)}), so its figures compare and its "
                    "context check holds; allowed keys: " + ", ".join(_keys(cls))
                )
        return data

    @model_validator(mode="after")
    def _sets_something(self) -> LocalLlmSloConfig:
        _sets_nothing(self, "smoke.localSlo.llm")
        return self


class LocalSloConfig(Model):
    """`smoke.localSlo`: the objectives `raygke smoke` gates a local run (`raygke local up`) on,
    as `localArgs` is to `args`: the `smoke` section's shape, every key optional, each key unset
    keeping the cluster's. The cluster's own outputs never carry it (infra/outputs.py)."""

    concurrency: int | None = Field(default=None, ge=1)
    p99_ms: float | None = Field(default=None, ge=MIN_SLO_MS, le=MAX_SLO_MS)
    max_error_rate: float | None = Field(default=None, ge=0, lt=1)
    llm: LocalLlmSloConfig | None = None

    @model_validator(mode="after")
    def _sets_something(self) -> LocalSloConfig:
        _sets_nothing(self, "smoke.localSlo")
        return self


class SmokeConfig(Model):
    """Service-level objectives that `raygke smoke` gates on after each deploy."""

    concurrency: int = Field(default=8, ge=1)
    p99_ms: float = Field(default=500.0, ge=MIN_SLO_MS, le=MAX_SLO_MS)
    # A fraction of requests (0.01 is 1%): below 1, since a gate of 1 or more can never fail.
    max_error_rate: float = Field(default=0.0, ge=0, lt=1)
    llm: LlmSmokeConfig = LlmSmokeConfig()
    # The local run's objectives (None: a local run is gated on the ones above, and says so).
    local_slo: LocalSloConfig | None = None


# ---------------------------------------------------------------------------------------------- stack
Environment = Literal["dev", "staging", "prod"]


class StackConfig(Model):
    stack: str
    project: str
    region: str
    environment: Environment
    # Why a stack whose name is not `<environment>` or `<environment>-*` may still say `environment`
    # (docs/decisions.md): a prod file saying staging would switch every prod-only rule off.
    environment_override: str | None = Field(default=None, min_length=10)
    network: NetworkConfig = NetworkConfig()
    cluster: ClusterConfig
    gpu_pool: GpuPoolConfig
    kuberay: KubeRayConfig = KubeRayConfig()
    ingress: IngressConfig
    ray: RayConfig
    ray_service: RayServiceConfig
    apps: list[AppConfig] = Field(min_length=1)
    smoke: SmokeConfig = SmokeConfig()

    @property
    def app_deadlines(self) -> tuple[AppDeadline, ...]:
        """Each app's deadline for the tier's IngressSpec: its route prefix (HTTP) and name (gRPC)."""
        return tuple(
            AppDeadline(
                app.name,
                app.deadline_s,
                app.route_prefix if "http" in app.protocols else None,
            )
            for app in self.apps
        )


MAX_SHOWN_CHARS = 80


def shown_value(value: Any) -> str:
    """A value fit for an error message: scalars only (a mapping or list may hold secrets and is
    never dumped), cut to MAX_SHOWN_CHARS."""
    if isinstance(value, Mapping | list | tuple | set | BaseModel):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."
