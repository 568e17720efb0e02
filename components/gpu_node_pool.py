"""One H100 node pool of a GKE cluster, for one A3 shape and one way of obtaining capacity.

Owns: the `gcp.container.NodePool` (accelerators and driver, GPU taint, pool label, gVNIC, local
NVMe, shielded COS nodes, autoscaling, capacity mode, compact placement, GPUDirect NICs, upgrade
settings). The field-by-field plan lives in components/render/node_pool.py, so it is tested without
the engine. Does not own: which shapes exist (components/render/gpu_machines.py), the cluster or its
node service account (components/cluster.py), the GPUDirect VPCs (components/network.py), or
anything scheduled onto the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp

from components.network import ExtraNetwork
from components.render.gpu_machines import H100_MACHINES
from components.render.node_pool import (
    DEFAULT_UPGRADE,
    POOL_LABEL,
    Capacity,
    GpuDriverVersion,
    UpgradeSettings,
    plan_node_pool,
)


class H100NodePoolArgs(TypedDict):
    """Keys that shape the plan are plain values, not Inputs: they decide which fields exist."""

    cluster: pulumi.Input[str]
    """The cluster's name (or id)."""
    location: pulumi.Input[str]
    """The cluster's location (region or zone)."""
    machine_type: str
    """An A3 shape from components/render/gpu_machines.py, e.g. a3-highgpu-8g."""
    zones: Sequence[str]
    """node_locations: zones that offer the shape."""
    min_nodes: int
    """Total across all zones (not per zone)."""
    max_nodes: int
    """Total across all zones (not per zone)."""
    capacity: Capacity
    """on-demand, reservation, spot, flex-start or queued-provisioning, with that mode's fields."""
    service_account: pulumi.Input[str]
    """The node service account's email (GkeCluster.node_service_account_email)."""
    project: NotRequired[str]
    """Default: the provider's project. Also tells a shared reservation from a local one."""
    gpu_driver_version: NotRequired[GpuDriverVersion]
    """DEFAULT, LATEST or INSTALLATION_DISABLED. Default DEFAULT."""
    compact_placement: NotRequired[bool]
    """COMPACT placement (one zone only). Default False."""
    placement_policy_name: NotRequired[str]
    """An existing compact resource policy to use. Default: GKE creates one."""
    extra_networks: NotRequired[Sequence[ExtraNetwork]]
    """GPUDirect NICs (Network.extra_networks); as many as the shape needs. Default: none."""
    upgrade: NotRequired[UpgradeSettings]
    """Default max_surge=0, max_unavailable=1: never needs a spare 8-GPU VM."""
    disk_size_gb: NotRequired[int]
    """Boot disk. Default 200."""
    disk_type: NotRequired[str]
    """Boot disk type. Default pd-balanced."""
    labels: NotRequired[Mapping[str, str]]
    """Extra node labels; raygke.io/pool is always the component name."""


class H100NodePool(pulumi.ComponentResource):
    name: pulumi.Output[str]
    """The GKE node pool's name."""
    accelerator_type: pulumi.Output[str]
    accelerator_count: pulumi.Output[int]
    """GPUs per node."""
    node_selector: pulumi.Output[dict[str, str]]
    """Labels that select this pool's nodes (raygke.io/pool: <component name>)."""

    def __init__(
        self, name: str, args: H100NodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:gpu_node_pool:H100NodePool", name, None, opts)
        project = args.get("project")
        plan = plan_node_pool(
            name,
            args["machine_type"],
            zones=args["zones"],
            min_nodes=args["min_nodes"],
            max_nodes=args["max_nodes"],
            capacity=args["capacity"],
            service_account=args["service_account"],
            project=project,
            gpu_driver_version=args.get("gpu_driver_version", "DEFAULT"),
            compact_placement=args.get("compact_placement", False),
            placement_policy_name=args.get("placement_policy_name"),
            extra_networks=args.get("extra_networks", ()),
            upgrade=args.get("upgrade", DEFAULT_UPGRADE),
            disk_size_gb=args.get("disk_size_gb", 200),
            disk_type=args.get("disk_type", "pd-balanced"),
            labels=args.get("labels"),
        )
        shape = H100_MACHINES[args["machine_type"]]

        pool = gcp.container.NodePool(
            f"{name}-pool",
            project=project,
            cluster=args["cluster"],
            location=args["location"],
            node_locations=plan.node_locations,
            initial_node_count=plan.initial_node_count,
            autoscaling=plan.autoscaling,
            management=plan.management,
            upgrade_settings=plan.upgrade_settings,
            node_config=plan.node_config,
            placement_policy=plan.placement_policy,
            queued_provisioning=plan.queued_provisioning,
            network_config=plan.network_config,
            opts=pulumi.ResourceOptions(
                parent=self,
                # The provider replaces a pool whose initial count changes; it only matters at
                # creation.
                ignore_changes=["initialNodeCount"],
            ),
        )

        self.name = pool.name
        self.accelerator_type = pulumi.Output.from_input(shape.accelerator_type)
        self.accelerator_count = pulumi.Output.from_input(shape.accelerator_count)
        self.node_selector = pulumi.Output.from_input({POOL_LABEL: name})
        self.register_outputs(
            {
                "name": self.name,
                "accelerator_type": self.accelerator_type,
                "accelerator_count": self.accelerator_count,
                "node_selector": self.node_selector,
            }
        )
