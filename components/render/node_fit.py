"""Will every pod the program renders find a node? The scheduler's arithmetic, done at plan time.

Owns: the machine shapes of the system pool (the H100 shapes stay in components/render/gpu_machines.py,
read from there), a node's allocatable CPU and memory by GKE's published formula, a documented budget
for the DaemonSets GKE runs on every node, what a rendered pod asks (sum of its containers, sidecars
GKE or KubeRay inject, init containers), which pool a pod's nodeSelector and tolerations send it to,
the fit of one pod on one node, the fit of all of a pool's pods in its maxNodes, and the node-pool
limits (min <= max, GKE's nodes per pool, the pod secondary range). Does not own: what the stack asks
for (infra/scheduling.py reads the pods from the stack's rendered graph and the pools from the config),
nor quantity syntax (components/render/quantity.py).

The scheduler counts requests, never limits: a pod whose container sets only limits is given requests
equal to them (Kubernetes' defaulting), and a limit above the request (our tier's memory) is burst room
that the check rightly ignores.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.render.gpu_machines import H100_MACHINES
from components.render.quantity import cpu_millis, format_cpu, format_gib, memory_bytes

GIB = 2**30
MIB = 2**20
GPU_RESOURCE = "nvidia.com/gpu"


# ---------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class MachineShape:
    machine_type: str
    vcpus: int
    memory_gib: float
    gpus: int = 0


def _family(prefix: str, sizes: Iterable[int], gib_per_vcpu: int) -> dict[str, MachineShape]:
    return {f"{prefix}-{n}": MachineShape(f"{prefix}-{n}", n, n * gib_per_vcpu) for n in sizes}


# CPU shapes a system pool may use (Compute Engine "General-purpose machine family": e2/n2/n2d
# standard carry 4 GB per vCPU, highmem 8 GB; Google's "GB" here is GiB). Shared-core e2 types
# (micro/small/medium) are left out: GKE reserves too much of them to host the Ray head.
SYSTEM_MACHINES: dict[str, MachineShape] = {
    **_family("e2-standard", (2, 4, 8, 16, 32), 4),
    **_family("e2-highmem", (2, 4, 8, 16), 8),
    **_family("n2-standard", (2, 4, 8, 16, 32, 48, 64), 4),
    **_family("n2-highmem", (2, 4, 8, 16, 32), 8),
    **_family("n2d-standard", (2, 4, 8, 16, 32, 48, 64), 4),
}


def machine_shape(machine_type: str) -> MachineShape | None:
    """The shape of a system-pool or H100 machine type; None when this package does not know it."""
    if (gpu := H100_MACHINES.get(machine_type)) is not None:
        return MachineShape(gpu.machine_type, gpu.vcpus, gpu.memory_gib, gpu.accelerator_count)
    return SYSTEM_MACHINES.get(machine_type)


# ---------------------------------------------------------------------------------------------- allocatable
@dataclass(frozen=True)
class Amount:
    """CPU in millicores, memory in bytes, GPUs: what a pod asks or a node gives."""

    cpu_m: int = 0
    memory: int = 0
    gpus: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpu_m + other.cpu_m, self.memory + other.memory, self.gpus + other.gpus)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.cpu_m - other.cpu_m, self.memory - other.memory, self.gpus - other.gpus)

    def __mul__(self, n: int) -> Amount:
        return Amount(self.cpu_m * n, self.memory * n, self.gpus * n)

    def fits_in(self, room: Amount) -> bool:
        return self.cpu_m <= room.cpu_m and self.memory <= room.memory and self.gpus <= room.gpus

    def text(self) -> str:
        gpus = f" / {self.gpus} GPU" if self.gpus else ""
        return f"{format_cpu(self.cpu_m)} / {format_gib(self.memory)}{gpus}"


# GKE's node allocatable ("Standard cluster architecture: node allocatable resources"; the figures
# per machine are in docs/scheduling.md): kube-reserved CPU is 6% of the first core, 1% of the next,
# 0.5% of the next two and 0.25% of every core above four; memory 25% of the first 4 GiB, 20% of the
# next 4, 10% of the next 8, 6% of the next 112 and 2% above 128 GiB; the kubelet's hard eviction
# threshold holds 100 MiB more.
CPU_RESERVED_TIERS: tuple[tuple[float, float], ...] = (
    (1, 0.06),
    (1, 0.01),
    (2, 0.005),
    (math.inf, 0.0025),
)
MEMORY_RESERVED_TIERS_GIB: tuple[tuple[float, float], ...] = (
    (4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02),
)  # fmt: skip
EVICTION_THRESHOLD = 100 * MIB


def _tiered(total: float, tiers: Sequence[tuple[float, float]]) -> float:
    reserved, left = 0.0, total
    for width, rate in tiers:
        step = min(left, width)
        reserved += step * rate
        left -= step
        if left <= 0:
            break
    return reserved


def allocatable(shape: MachineShape) -> Amount:
    """What the kubelet offers pods on one node of `shape`, before any DaemonSet."""
    cpu_reserved_m = round(_tiered(shape.vcpus, CPU_RESERVED_TIERS) * 1000)
    memory_reserved = (
        _tiered(shape.memory_gib, MEMORY_RESERVED_TIERS_GIB) * GIB + EVICTION_THRESHOLD
    )
    return Amount(
        shape.vcpus * 1000 - cpu_reserved_m,
        int(shape.memory_gib * GIB - memory_reserved),
        shape.gpus,
    )


# ---------------------------------------------------------------------------------------------- DaemonSets
@dataclass(frozen=True)
class Reserved:
    """A GKE-run workload's requests (per node for a DaemonSet, per pod for a Deployment)."""

    name: str
    cpu_m: int
    memory_mib: int
    why: str

    @property
    def amount(self) -> Amount:
        return Amount(self.cpu_m, self.memory_mib * MIB)


# A budget, not a measurement: the requests of the DaemonSets GKE 1.33 Standard runs on every node of
# a cluster configured as components/cluster.py configures it, as GKE's manifests set them, rounded up.
# No cluster is reachable from here: compare with `kubectl describe node` (Non-terminated Pods,
# Allocated resources) after the first deploy, and raise a figure here if GKE's is higher.
# kube-proxy does not run: Dataplane V2 (anetd) replaces it.
EVERY_NODE_DAEMONSETS: tuple[Reserved, ...] = (
    Reserved("anetd", 100, 150, "Dataplane V2 agent (datapath_provider ADVANCED_DATAPATH)"),
    Reserved("netd", 5, 30, "node networking setup"),
    Reserved("fluentbit-gke", 100, 200, "Cloud Logging agent (SYSTEM_COMPONENTS and WORKLOADS)"),
    Reserved("gke-metrics-agent", 10, 60, "Cloud Monitoring system metrics"),
    Reserved("collector", 10, 50, "Managed Service for Prometheus collector"),
    Reserved("gke-metadata-server", 100, 100, "Workload Identity (GKE_METADATA)"),
    Reserved("node-local-dns", 25, 30, "NodeLocal DNSCache addon"),
    Reserved("pdcsi-node", 10, 20, "Compute Engine Persistent Disk CSI driver"),
    Reserved("gcsfusecsi-node", 10, 30, "Cloud Storage FUSE CSI driver"),
)
# On GPU nodes GKE adds the NVIDIA device plugin and the driver installer (its init container's
# 150m counts: the scheduler takes the larger of init and regular containers). dcgm-exporter runs
# only with the DCGM monitoring component, which components/cluster.py does not turn on.
GPU_NODE_DAEMONSETS: tuple[Reserved, ...] = (
    Reserved("nvidia-gpu-device-plugin", 50, 100, "advertises nvidia.com/gpu"),
    Reserved("nvidia-driver-installer", 150, 100, "installs the GPU driver (gpu_driver_version)"),
)
# GKE's own Deployments land on the system pool too, since every GPU node is tainted: kube-dns
# (two replicas: kubedns 100m/70Mi, dnsmasq 150m/20Mi, sidecar 10m/20Mi) and the small ones
# (metrics-server, konnectivity-agent, event-exporter, kube-dns-autoscaler, l7-default-backend,
# gmp-operator), budgeted together.
GKE_SYSTEM_PODS: tuple[tuple[Reserved, int], ...] = (
    (Reserved("kube-dns", 260, 110, "cluster DNS"), 2),
    (Reserved("gke-system-deployments", 300, 500, "metrics-server, konnectivity-agent, ..."), 1),
)


def daemonset_budget(gpu_node: bool) -> Amount:
    sets = EVERY_NODE_DAEMONSETS + (GPU_NODE_DAEMONSETS if gpu_node else ())
    total = Amount()
    for ds in sets:
        total = total + ds.amount
    return total


# ---------------------------------------------------------------------------------------------- node pools
# GKE quotas and limits ("Quotas and limits", GKE docs): at most 1,000 nodes per node pool per zone.
MAX_NODES_PER_POOL_ZONE = 1000
# GKE's default maximum pods per node on Standard clusters; the pod range of each node holds twice
# that, rounded up to a power of two ("Configure maximum Pods per node": 110 -> a /24).
DEFAULT_MAX_PODS_PER_NODE = 110


@dataclass(frozen=True)
class NodePool:
    """One node pool as the scheduler sees it: its nodes' labels and taints, shape and size."""

    name: str  # for messages: "system", "h100"
    key: str  # the stack key of its settings: "cluster.systemPool", "gpuPool"
    machine_type: str
    min_nodes: int  # totals across zones (GKE's total_*_node_count)
    max_nodes: int
    zones: int
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...] = ()  # {"key", "value", "effect"} (Kubernetes spelling)
    max_surge: int = 0  # extra nodes per zone during a surge upgrade

    @property
    def shape(self) -> MachineShape:
        shape = machine_shape(self.machine_type)
        if shape is None:
            raise ValueError(f"{self.key}.machineType {self.machine_type!r} has no known shape")
        return shape

    @property
    def gpu(self) -> bool:
        return self.shape.gpus > 0

    @property
    def allocatable(self) -> Amount:
        return allocatable(self.shape)

    @property
    def daemonsets(self) -> Amount:
        return daemonset_budget(self.gpu)

    @property
    def room(self) -> Amount:
        """What one node gives our pods: allocatable less GKE's DaemonSets."""
        return self.allocatable - self.daemonsets

    def describe_room(self) -> str:
        return (
            f"one {self.machine_type} node of the {self.name} pool gives {self.allocatable.text()} "
            f"(allocatable) less {self.daemonsets.text()} for GKE's DaemonSets: {self.room.text()}"
        )


def pods_range_nodes(prefix_length: int, max_pods_per_node: int = DEFAULT_MAX_PODS_PER_NODE) -> int:
    """How many nodes a pod secondary range of /`prefix_length` can serve."""
    return 2 ** (32 - prefix_length) // node_pod_range_size(max_pods_per_node)


def node_pod_range_size(max_pods_per_node: int) -> int:
    return 2 ** math.ceil(math.log2(2 * max_pods_per_node))


def peak_nodes(pools: Sequence[NodePool]) -> int:
    """The most nodes the pools may run at once: every pool at maxNodes, plus its surge nodes in
    every zone while it upgrades."""
    return sum(p.max_nodes + p.max_surge * p.zones for p in pools)


def node_pool_problems(
    pools: Sequence[NodePool],
    pods_cidr: str,
    *,
    pods_cidr_key: str = "network.podsCidr",
    max_pods_per_node: int = DEFAULT_MAX_PODS_PER_NODE,
) -> list[str]:
    """min <= max on every pool, GKE's per-pool node limit, and a pod range for every node."""
    problems = []
    for pool in pools:
        if pool.min_nodes > pool.max_nodes:
            problems.append(
                f"{pool.key}.minNodes ({pool.min_nodes}) must be <= {pool.key}.maxNodes ({pool.max_nodes})"
            )
        limit = MAX_NODES_PER_POOL_ZONE * pool.zones
        if pool.max_nodes > limit:
            problems.append(
                f"{pool.key}.maxNodes ({pool.max_nodes}) is over GKE's limit of "
                f"{MAX_NODES_PER_POOL_ZONE} nodes per node pool per zone ({pool.zones} zone"
                f"{'s' if pool.zones != 1 else ''}); allowed: 1..{limit}, or add zones or a pool"
            )
    network = ipaddress.ip_network(pods_cidr)
    per_node = node_pod_range_size(max_pods_per_node)
    fits = pods_range_nodes(network.prefixlen, max_pods_per_node)
    need = peak_nodes(pools)
    if need > fits:
        parts = " + ".join(
            f"{p.key}.maxNodes {p.max_nodes}"
            + (f" + {p.max_surge * p.zones} surge" if p.max_surge else "")
            for p in pools
        )
        # the smallest prefix that holds `need` node ranges
        wanted = 32 - math.ceil(math.log2(need * per_node))
        problems.append(
            f"{pods_cidr_key} ({pods_cidr}) holds pod ranges for {fits} nodes, but the pools may reach "
            f"{need} ({parts}): GKE gives every node a /{32 - int(math.log2(per_node))} "
            f"({per_node} addresses, twice its {max_pods_per_node} max pods rounded up to a power of two) "
            f"and a node without one fails to join; allowed: /{wanted} or larger, or fewer maxNodes"
        )
    return problems


# ---------------------------------------------------------------------------------------------- pods
@dataclass(frozen=True)
class PodDemand:
    """One rendered pod template, as the scheduler will see it, and how many may run at once."""

    name: str  # for messages, e.g. "rayService.head"
    asks: Amount
    count: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    cpu_key: str | None = None  # stack keys that size it, when the stack can
    memory_key: str | None = None
    count_why: str = ""  # why `count` pods at once, e.g. "rayService.workers.maxReplicas"
    sized: Amount | None = None  # the part cpu_key/memory_key set; None: all of `asks`
    extras: str = (
        ""  # what else the pod carries, e.g. "KubeRay's autoscaler sidecar 0.50 CPU / 0.5 GiB"
    )


def _quantity(resources: Mapping[str, Any], name: str) -> str | None:
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    value = requests.get(name, limits.get(name))  # requests default to limits
    return None if value is None else str(value)


def container_asks(container: Mapping[str, Any]) -> Amount:
    resources = container.get("resources") or {}
    cpu = _quantity(resources, "cpu")
    memory = _quantity(resources, "memory")
    gpus = _quantity(resources, GPU_RESOURCE)
    return Amount(
        cpu_millis(cpu) if cpu else 0,
        memory_bytes(memory) if memory else 0,
        int(gpus) if gpus else 0,
    )


def pod_asks(pod_spec: Mapping[str, Any], injected: Iterable[Amount] = ()) -> Amount:
    """The pod's effective request: its containers and sidecars (native sidecars are init containers
    with restartPolicy Always) plus `injected` ones, or its largest init container if that is more."""
    total = Amount()
    for container in pod_spec.get("containers") or ():
        total = total + container_asks(container)
    for extra in injected:
        total = total + extra
    init_peak = Amount()
    for container in pod_spec.get("initContainers") or ():
        asks = container_asks(container)
        if container.get("restartPolicy") == "Always":
            total = total + asks
        else:
            init_peak = Amount(
                max(init_peak.cpu_m, asks.cpu_m),
                max(init_peak.memory, asks.memory),
                max(init_peak.gpus, asks.gpus),
            )
    return Amount(
        max(total.cpu_m, init_peak.cpu_m),
        max(total.memory, init_peak.memory),
        max(total.gpus, init_peak.gpus),
    )


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, str]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def pools_for(pod: PodDemand, pools: Sequence[NodePool]) -> list[NodePool]:
    """The pools whose nodes carry every label of the pod's nodeSelector and whose every
    scheduling taint the pod tolerates."""
    return [
        pool
        for pool in pools
        if all(pool.labels.get(k) == v for k, v in pod.node_selector.items())
        and all(
            tolerates(pod.tolerations, taint)
            for taint in pool.taints
            if taint.get("effect") in ("NoSchedule", "NoExecute")
        )
    ]


# ---------------------------------------------------------------------------------------------- the check
def _allowed(pod: PodDemand, room: Amount) -> str:
    """The most each stack key may ask so the pod fits `room`."""
    unsized = pod.asks - (pod.sized or pod.asks)  # sidecars the stack does not size
    parts = []
    if pod.asks.cpu_m > room.cpu_m:
        most = room.cpu_m - unsized.cpu_m
        key = pod.cpu_key or f"{pod.name}'s CPU request"
        parts.append(f"{key} at most {most}m" if most > 0 else f"no {key}")
    if pod.asks.memory > room.memory:
        most = room.memory - unsized.memory
        key = pod.memory_key or f"{pod.name}'s memory request"
        parts.append(f"{key} at most {most // MIB}Mi" if most > 0 else f"no {key}")
    if pod.asks.gpus > room.gpus:
        parts.append(f"at most {room.gpus} GPUs per pod")
    return " and ".join(parts)


def _asks_text(pod: PodDemand) -> str:
    sized = pod.sized.text() if pod.sized is not None else pod.asks.text()
    extras = f" ({sized} of its own, with {pod.extras})" if pod.extras else ""
    return f"{pod.name} asks {pod.asks.text()} per pod{extras}"


def _pack(items: Sequence[Amount], room: Amount) -> list[Amount]:
    """First-fit decreasing: the nodes' loads after placing every item, largest first, as the
    scheduler and the cluster autoscaler would; items must each fit `room`."""
    loads: list[Amount] = []
    for asks in sorted(items, key=lambda a: (a.gpus, a.cpu_m, a.memory), reverse=True):
        for n, load in enumerate(loads):
            if (load + asks).fits_in(room):
                loads[n] = load + asks
                break
        else:
            loads.append(asks)
    return loads


@dataclass(frozen=True)
class PoolFit:
    """How a pool's pods pack at their peak count: the headroom figures the plan reports."""

    pool: NodePool
    pods: tuple[PodDemand, ...]
    nodes_needed: int

    @property
    def spare_nodes(self) -> int:
        return self.pool.max_nodes - self.nodes_needed

    def pod_room(self, pod: PodDemand) -> Amount:
        """What one node still gives after one `pod` alone: the per-pod headroom."""
        return self.pool.room - pod.asks

    @property
    def pool_room(self) -> Amount:
        """maxNodes nodes' room less every pod at its peak count: the pool's total headroom."""
        demand = Amount()
        for pod in self.pods:
            demand = demand + pod.asks * pod.count
        return self.pool.room * self.pool.max_nodes - demand

    def text(self) -> str:
        pods = ", ".join(f"{p.count} x {p.name} ({p.asks.text()})" for p in self.pods)
        each = "; ".join(f"{p.name} leaves {self.pod_room(p).text()}" for p in self.pods)
        return (
            f"{self.pool.name} pool ({self.pool.max_nodes} x {self.pool.machine_type}, each giving "
            f"{self.pool.room.text()} after allocatable and DaemonSets): {pods} need "
            f"{self.nodes_needed} nodes at peak, {self.spare_nodes} spare; on one node, {each}; "
            f"left over at maxNodes: {self.pool_room.text()}"
        )


def per_node_count(asks: Amount, room: Amount) -> int:
    """How many pods asking `asks` one node with `room` holds."""
    counts = [room.cpu_m // asks.cpu_m if asks.cpu_m else None]
    counts.append(room.memory // asks.memory if asks.memory else None)
    counts.append(room.gpus // asks.gpus if asks.gpus else None)
    known = [n for n in counts if n is not None]
    return min(known) if known else 0


def _is_key(text: str) -> bool:
    return bool(text) and " " not in text


def _reserved_pods() -> list[PodDemand]:
    return [PodDemand(f"GKE's {r.name}", r.amount, count) for r, count in GKE_SYSTEM_PODS]


def check_scheduling(
    pods: Sequence[PodDemand], pools: Sequence[NodePool], *, system_pool: str | None = None
) -> tuple[list[str], list[PoolFit]]:
    """Problems (each names the pod, the pool, what it asks and what a node gives) and, per pool, how
    its pods pack at their peak count. GKE's own Deployments go to `system_pool` (by name)."""
    problems: list[str] = []
    placed: dict[str, list[PodDemand]] = {pool.name: [] for pool in pools}
    for pod in pods:
        candidates = pools_for(pod, pools)
        if not candidates:
            problems.append(
                f"{pod.name}: no node pool matches its nodeSelector {dict(pod.node_selector)} and "
                f"tolerations {[dict(t) for t in pod.tolerations]}; pools: "
                + ", ".join(f"{p.name} (labels {dict(p.labels)})" for p in pools)
            )
            continue
        fitting = [p for p in candidates if pod.asks.fits_in(p.room)]
        if not fitting:
            pool = candidates[0]
            problems.append(
                f"{_asks_text(pod)}; {pool.describe_room()}; allowed: {_allowed(pod, pool.room)}, "
                f"or a bigger {pool.key}.machineType"
            )
            continue
        placed[fitting[0].name].append(pod)
    fits = []
    for pool in pools:
        mine = placed[pool.name]
        if pool.name == system_pool:
            mine = mine + _reserved_pods()
        if not mine:
            continue
        items = [pod.asks for pod in mine for _ in range(pod.count)]
        fit = PoolFit(pool, tuple(mine), len(_pack(items, pool.room)))
        fits.append(fit)
        if fit.nodes_needed > pool.max_nodes and len(mine) == 1 and _is_key(mine[0].count_why):
            pod = mine[0]
            per_node = per_node_count(pod.asks, pool.room)
            problems.append(
                f"{pod.count_why} ({pod.count}) must be <= {pool.key}.maxNodes ({pool.max_nodes}) x "
                f"{per_node} {pod.name} pod{'s' if per_node != 1 else ''} per {pool.machine_type} node "
                f"({pod.asks.text()} each; {pool.describe_room()}); allowed: {pod.count_why} <= "
                f"{pool.max_nodes * per_node}, or raise {pool.key}.maxNodes"
            )
        elif fit.nodes_needed > pool.max_nodes:
            counts = "; ".join(
                f"{p.count} x {p.name} ({p.asks.text()}{': ' + p.count_why if p.count_why else ''})"
                for p in mine
            )
            problems.append(
                f"{pool.key}.maxNodes ({pool.max_nodes}) is too few for the {pool.name} pool's pods at "
                f"their peak: {counts} need {fit.nodes_needed} {pool.machine_type} nodes; "
                f"{pool.describe_room()}; allowed: {pool.key}.maxNodes >= {fit.nodes_needed}, a bigger "
                f"{pool.key}.machineType, or fewer or smaller pods"
            )
    return problems, fits


# ---------------------------------------------------------------------------------------------- rendered pods
# Containers others inject into our pods, with their default requests:
# - KubeRay adds an `autoscaler` container to the head when enableInTreeAutoscaling is on, 500m / 512Mi
#   requests = limits unless autoscalerOptions.resources says otherwise (ray-operator
#   controllers/ray/common/pod.go, BuildAutoscalerContainer, v1.7.0).
# - GKE's webhook adds `gke-gcsfuse-sidecar` to pods annotated gke-gcsfuse/volumes: "true", 250m / 256Mi
#   requests on Standard clusters unless the pod's gke-gcsfuse/*-request annotations say otherwise
#   (GKE "Configure the Cloud Storage FUSE CSI driver sidecar container"; gcs-fuse-csi-driver
#   pkg/webhook).
KUBERAY_AUTOSCALER = Amount(500, 512 * MIB)
GCSFUSE_SIDECAR = Amount(250, 256 * MIB)
# Upgrade types under which KubeRay runs a second RayCluster (with its own head) beside the first.
TWO_CLUSTER_UPGRADES = ("NewCluster", "NewClusterWithIncrementalUpgrade")


def gcsfuse_sidecar(metadata: Mapping[str, Any]) -> Amount | None:
    annotations = metadata.get("annotations") or {}
    if annotations.get("gke-gcsfuse/volumes") != "true":
        return None
    cpu = annotations.get("gke-gcsfuse/cpu-request")
    memory = annotations.get("gke-gcsfuse/memory-request")
    return Amount(
        cpu_millis(cpu) if cpu else GCSFUSE_SIDECAR.cpu_m,
        memory_bytes(memory) if memory else GCSFUSE_SIDECAR.memory,
    )


def template_pod(
    name: str,
    template: Mapping[str, Any],
    count: int,
    count_why: str,
    injected: Sequence[tuple[str, Amount]] = (),
) -> PodDemand:
    metadata, spec = template.get("metadata") or {}, template.get("spec") or {}
    sidecars = list(injected)
    if (fuse := gcsfuse_sidecar(metadata)) is not None:
        sidecars.append(("GKE's GCS FUSE sidecar", fuse))
    return PodDemand(
        name=name,
        asks=pod_asks(spec, [a for _, a in sidecars]),
        count=count,
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
        count_why=count_why,
        sized=pod_asks(spec),
        extras=", ".join(f"{n} {a.text()}" for n, a in sidecars),
    )


def rayservice_pods(manifest: Mapping[str, Any]) -> tuple[PodDemand, list[PodDemand]]:
    """The head pod and each worker group's pods of a rendered RayService, at their peak counts."""
    spec = manifest["spec"]
    cluster = spec["rayClusterConfig"]
    upgrade = (spec.get("upgradeStrategy") or {}).get("type", "NewCluster")
    injected = []
    if cluster.get("enableInTreeAutoscaling"):
        options = (cluster.get("autoscalerOptions") or {}).get("resources")
        asks = container_asks({"resources": options}) if options else KUBERAY_AUTOSCALER
        injected.append(("KubeRay's autoscaler sidecar", asks))
    heads = 2 if upgrade in TWO_CLUSTER_UPGRADES else 1
    head = template_pod(
        "head",
        cluster["headGroupSpec"]["template"],
        heads,
        f"upgradeStrategy {upgrade} runs a second head beside the first" if heads == 2 else "",
        injected,
    )
    workers = [
        template_pod(
            group["groupName"], group["template"], int(group["maxReplicas"]), "maxReplicas"
        )
        for group in cluster.get("workerGroupSpecs") or ()
    ]
    return head, workers


def helm_values_pod(name: str, values: Mapping[str, Any], replicas: int = 1) -> PodDemand:
    """A chart's single-container pod from its values (resources, nodeSelector, tolerations)."""
    spec = {
        "containers": [{"resources": values.get("resources") or {}}],
        "nodeSelector": values.get("nodeSelector") or {},
        "tolerations": values.get("tolerations") or [],
    }
    return template_pod(name, {"spec": spec}, replicas, "")
