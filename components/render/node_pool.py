"""Pure planning for the H100 node pool: the inputs of one `gcp.container.NodePool`, as plain dicts.

Owns: the mapping from an A3 shape (components/render/gpu_machines.py) and a capacity mode to the
node pool's `node_config`, `autoscaling`, `management`, `upgrade_settings`, placement, queued
provisioning and extra GPUDirect NICs; and the address plan of the GPUDirect VPCs (one /24 per extra
network). Does not own: the resources themselves (components/gpu_node_pool.py,
components/network.py), nor the stack config's validation (infra/config.py). It re-checks the few
rules whose violation would otherwise surface only as an API error minutes into `pulumi up`.

Dicts are pulumi-gcp 10.2.0's own `...ArgsDict` TypedDicts, imported for the type checker only, so
pyright checks every key against the provider while nothing here imports `pulumi` at run time.
Values the plan does not inspect (the node service account email, extra network names) pass through
untouched, so they may be `pulumi.Output`s.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from components.render.gpu_machines import H100_MACHINES, GpuMachine

if TYPE_CHECKING:
    from pulumi_gcp.container import (
        NodePoolAutoscalingArgsDict,
        NodePoolManagementArgsDict,
        NodePoolNetworkConfigArgsDict,
        NodePoolNodeConfigArgsDict,
        NodePoolNodeConfigReservationAffinityArgsDict,
        NodePoolPlacementPolicyArgsDict,
        NodePoolQueuedProvisioningArgsDict,
        NodePoolUpgradeSettingsArgsDict,
    )

CapacityMode = Literal["on-demand", "reservation", "spot", "flex-start", "queued-provisioning"]
CAPACITY_MODES: tuple[CapacityMode, ...] = (
    "on-demand",
    "reservation",
    "spot",
    "flex-start",
    "queued-provisioning",
)
GpuDriverVersion = Literal["DEFAULT", "LATEST", "INSTALLATION_DISABLED"]
GPU_DRIVER_VERSIONS: tuple[GpuDriverVersion, ...] = ("DEFAULT", "LATEST", "INSTALLATION_DISABLED")

POOL_LABEL = "raygke.io/pool"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
SYSTEM_POOL = "system"  # POOL_LABEL value of the cluster's CPU pool (components/cluster.py)
SYSTEM_POOL_SELECTOR = {POOL_LABEL: SYSTEM_POOL}  # where the operator and our tier run
RESERVATION_KEY = "compute.googleapis.com/reservation-name"  # GKE's key for specific reservations
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
FLEX_START_MAX_HOURS = 7 * 24  # Google ends flex-start VMs after seven days at most


class Capacity(TypedDict):
    """How the pool obtains H100s: a closed set of modes, each with only its own fields."""

    mode: CapacityMode
    reservation_affinity: NotRequired[Literal["specific", "any"]]
    """reservation mode: "specific" (default; needs reservation_name) or "any" reservation."""
    reservation_name: NotRequired[str]
    reservation_project: NotRequired[str]
    """A shared reservation's owner project; default: the pool's own project."""
    max_run_duration_hours: NotRequired[int]
    """flex-start only: 1..168; default: Google's (seven days)."""


class UpgradeSettings(TypedDict):
    max_surge: int
    max_unavailable: int


# A surge upgrade would need a spare 8-GPU VM that usually does not exist; replace nodes one at a
# time.
DEFAULT_UPGRADE: UpgradeSettings = {"max_surge": 0, "max_unavailable": 1}


@dataclass(frozen=True)
class NodePoolPlan:
    """Planned `gcp.container.NodePool` arguments (pass each as the keyword of the same name)."""

    node_config: NodePoolNodeConfigArgsDict
    node_locations: list[str]
    initial_node_count: int
    autoscaling: NodePoolAutoscalingArgsDict
    management: NodePoolManagementArgsDict
    upgrade_settings: NodePoolUpgradeSettingsArgsDict
    placement_policy: NodePoolPlacementPolicyArgsDict | None
    queued_provisioning: NodePoolQueuedProvisioningArgsDict | None
    network_config: NodePoolNetworkConfigArgsDict | None


def machine(machine_type: str) -> GpuMachine:
    """The table's shape for `machine_type`, or an error that lists the known shapes."""
    try:
        return H100_MACHINES[machine_type]
    except KeyError:
        known = ", ".join(sorted(H100_MACHINES))
        raise ValueError(f"machine type must be one of {known}; got {machine_type!r}") from None


def _check_capacity(shape: GpuMachine, capacity: Capacity) -> None:
    mode = capacity.get("mode")
    if mode not in CAPACITY_MODES:
        raise ValueError(f"capacity mode must be one of {', '.join(CAPACITY_MODES)}; got {mode!r}")
    if shape.spot_or_flex_only and mode in ("on-demand", "reservation"):
        raise ValueError(
            f"{shape.machine_type} is sold only as spot, flex-start or queued-provisioning; "
            f"got capacity mode {mode!r}"
        )
    reservation_keys = {"reservation_affinity", "reservation_name", "reservation_project"}
    given = {key for key, value in capacity.items() if value is not None}  # None means not given
    if mode != "reservation" and reservation_keys & given:
        raise ValueError(f"reservation fields are only valid with mode 'reservation'; got {mode!r}")
    if mode != "flex-start" and "max_run_duration_hours" in given:
        raise ValueError(
            f"max_run_duration_hours is only valid with mode 'flex-start'; got {mode!r}"
        )
    if mode == "reservation":
        affinity = capacity.get("reservation_affinity") or "specific"
        has_name = bool(capacity.get("reservation_name"))
        if affinity == "specific" and not has_name:
            raise ValueError("a specific reservation needs reservation_name")
        if affinity == "any" and (has_name or "reservation_project" in given):
            raise ValueError("reservation_affinity 'any' takes no reservation_name or project")
        if affinity not in ("specific", "any"):
            raise ValueError(f"reservation_affinity must be 'specific' or 'any'; got {affinity!r}")
    hours = capacity.get("max_run_duration_hours")
    if hours is not None and not 1 <= hours <= FLEX_START_MAX_HOURS:
        raise ValueError(
            f"max_run_duration_hours must be 1..{FLEX_START_MAX_HOURS} (seven days); got {hours}"
        )


def reservation_affinity(
    capacity: Capacity, project: str | None = None
) -> NodePoolNodeConfigReservationAffinityArgsDict:
    """`node_config.reservation_affinity` for a capacity mode."""
    mode = capacity["mode"]
    if mode != "reservation":
        # DWS (flex-start, queued) capacity is not reserved capacity and GKE rejects any other
        # affinity; spot cannot use reservations; on-demand must not silently eat one bought for
        # other workloads.
        return {"consume_reservation_type": "NO_RESERVATION"}
    if capacity.get("reservation_affinity") == "any":
        return {"consume_reservation_type": "ANY_RESERVATION"}
    name = capacity.get("reservation_name", "")
    owner = capacity.get("reservation_project")
    # A reservation shared from another project is named by its full path; a local one by its name.
    value = f"projects/{owner}/reservations/{name}" if owner and owner != project else name
    return {
        "consume_reservation_type": "SPECIFIC_RESERVATION",
        "key": RESERVATION_KEY,
        "values": [value],
    }


def gpudirect_subnet_cidrs(base: str, count: int, prefix_length: int = 24) -> list[str]:
    """The first `count` /`prefix_length` subnets of `base`, one per GPUDirect VPC."""
    if count < 0:
        raise ValueError(f"extra network count must be >= 0; got {count}")
    network = ipaddress.IPv4Network(base, strict=True)
    if prefix_length < network.prefixlen:
        raise ValueError(f"extra networks CIDR {base} is smaller than one /{prefix_length}")
    available = 2 ** (prefix_length - network.prefixlen)
    if count > available:
        raise ValueError(
            f"extra networks CIDR {base} holds {available} /{prefix_length} subnets; {count} needed"
        )
    subnets = network.subnets(new_prefix=prefix_length)
    return [str(next(subnets)) for _ in range(count)]


def plan_node_pool(
    pool: str,
    machine_type: str,
    *,
    zones: Sequence[str],
    min_nodes: int,
    max_nodes: int,
    capacity: Capacity,
    service_account: Any = None,
    project: str | None = None,
    gpu_driver_version: GpuDriverVersion = "DEFAULT",
    compact_placement: bool = False,
    placement_policy_name: str | None = None,
    extra_networks: Sequence[Mapping[str, Any]] = (),
    upgrade: UpgradeSettings = DEFAULT_UPGRADE,
    disk_size_gb: int = 200,
    disk_type: str = "pd-balanced",
    labels: Mapping[str, str] | None = None,
) -> NodePoolPlan:
    """Plan one H100 node pool.

    `min_nodes`/`max_nodes` are totals across all `zones` (GKE's total_*_node_count), because a GPU
    budget is counted in nodes, not nodes per zone. `extra_networks` are `{"network", "subnetwork"}`
    pairs for GPUDirect; when given, there must be exactly as many as the shape needs.
    """
    shape = machine(machine_type)
    _check_capacity(shape, capacity)
    mode = capacity["mode"]
    if not zones:
        raise ValueError("a GPU node pool needs at least one zone (node_locations)")
    if len(set(zones)) != len(zones):
        raise ValueError(f"zones must not repeat; got {list(zones)}")
    if not 0 <= min_nodes <= max_nodes or max_nodes < 1:
        raise ValueError(
            f"need 0 <= min_nodes <= max_nodes and max_nodes >= 1; got {min_nodes}..{max_nodes}"
        )
    if mode == "queued-provisioning" and min_nodes != 0:
        raise ValueError(
            "queued provisioning obtains nodes only on request: "
            f"min_nodes must be 0; got {min_nodes}"
        )
    if gpu_driver_version not in GPU_DRIVER_VERSIONS:
        raise ValueError(
            f"gpu_driver_version must be one of {', '.join(GPU_DRIVER_VERSIONS)}; "
            f"got {gpu_driver_version!r}"
        )
    if placement_policy_name and not compact_placement:
        raise ValueError("placement_policy_name is only valid with compact_placement")
    if compact_placement and len(zones) != 1:
        raise ValueError(f"compact placement needs exactly one zone; got {list(zones)}")
    if extra_networks and len(extra_networks) != shape.extra_networks:
        raise ValueError(
            f"{machine_type} uses {shape.extra_networks} extra GPUDirect networks; "
            f"got {len(extra_networks)}"
        )
    if upgrade["max_surge"] < 0 or upgrade["max_unavailable"] < 0:
        raise ValueError(f"upgrade settings must be >= 0; got {upgrade}")
    if upgrade["max_surge"] + upgrade["max_unavailable"] < 1:
        raise ValueError(
            f"max_surge + max_unavailable must be >= 1 or upgrades stall; got {upgrade}"
        )

    node_config: NodePoolNodeConfigArgsDict = {
        "machine_type": machine_type,
        "image_type": "COS_CONTAINERD",
        "disk_size_gb": disk_size_gb,
        "disk_type": disk_type,
        "guest_accelerators": [
            {
                "type": shape.accelerator_type,
                "count": shape.accelerator_count,
                "gpu_driver_installation_config": {"gpu_driver_version": gpu_driver_version},
            }
        ],
        # The bundled NVMe disks back the node's ephemeral storage: image layers, /tmp, Ray spill.
        "ephemeral_storage_local_ssd_config": {"local_ssd_count": shape.local_ssd_count},
        "gvnic": {"enabled": True},
        "gcfs_config": {"enabled": True},  # image streaming: Ray GPU images are several GB
        "labels": {**(labels or {}), POOL_LABEL: pool},
        "taints": [{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}],
        "shielded_instance_config": {
            "enable_secure_boot": True,
            "enable_integrity_monitoring": True,
        },
        "workload_metadata_config": {"mode": "GKE_METADATA"},
        # Access is governed by the service account's IAM roles, not by legacy scopes.
        "oauth_scopes": [CLOUD_PLATFORM_SCOPE],
        "metadata": {"disable-legacy-endpoints": "true"},
        "reservation_affinity": reservation_affinity(capacity, project),
    }
    if service_account is not None:
        node_config["service_account"] = service_account
    if mode == "spot":
        node_config["spot"] = True
    if mode == "flex-start":
        node_config["flex_start"] = True
        hours = capacity.get("max_run_duration_hours")
        if hours is not None:
            node_config["max_run_duration"] = f"{hours * 3600}s"

    dws = mode in ("flex-start", "queued-provisioning")
    autoscaling: NodePoolAutoscalingArgsDict = {
        "total_min_node_count": min_nodes,
        "total_max_node_count": max_nodes,
        # ANY takes capacity wherever it exists (and unused reservations first); BALANCED spreads
        # on-demand.
        "location_policy": "BALANCED" if mode == "on-demand" else "ANY",
    }
    # initial_node_count is per zone; DWS pools must start empty. The component ignores later
    # changes to it, since the provider would otherwise replace the pool when min_nodes changes.
    initial = 0 if dws else math.ceil(min_nodes / len(zones))

    placement: NodePoolPlacementPolicyArgsDict | None = None
    if compact_placement:
        placement = {"type": "COMPACT"}
        if placement_policy_name:
            placement["policy_name"] = placement_policy_name

    network_config: NodePoolNetworkConfigArgsDict | None = None
    if extra_networks:
        network_config = {
            "additional_node_network_configs": [
                {"network": n["network"], "subnetwork": n["subnetwork"]} for n in extra_networks
            ]
        }

    return NodePoolPlan(
        node_config=node_config,
        node_locations=list(zones),
        initial_node_count=initial,
        autoscaling=autoscaling,
        # GKE requires auto-repair off for DWS pools: a repaired node would be a new capacity
        # request.
        management={"auto_upgrade": True, "auto_repair": not dws},
        upgrade_settings={
            "strategy": "SURGE",
            "max_surge": upgrade["max_surge"],
            "max_unavailable": upgrade["max_unavailable"],
        },
        placement_policy=placement,
        queued_provisioning={"enabled": True} if mode == "queued-provisioning" else None,
        network_config=network_config,
    )
