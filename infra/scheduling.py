"""The stack's pods and node pools, gathered from the renderers, for the scheduling check.

Owns: which objects the program renders and how their figures map back to stack keys: the RayService
from the same builder the program uses (infra/specs.py `rayservice_spec`, rendered by
components/render/rayservice.py), the KubeRay operator from its chart values
(components/kuberay_operator.py), our HAProxy tier from its component's resources and placement
(components/haproxy_ingress.py), and the pools from the node-pool planner and the cluster's system-pool
settings. Does not own the rule (components/render/scheduling.py) nor when it runs (infra/config.py
calls `scheduling_problems` among its cross checks, before any resource registers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components import haproxy_ingress, kuberay_operator
from components.render import scheduling as sched
from components.render.node_pool import (
    POOL_LABEL,
    SYSTEM_POOL,
    SYSTEM_POOL_SELECTOR,
    plan_node_pool,
)
from components.render.rayservice import ACCELERATOR_LABEL, render_rayservice
from infra.config import StackConfig
from infra.specs import gpu_capacity, rayservice_spec

# GKE upgrades a node pool without upgrade_settings (our system pool) by surge: one extra node per
# zone at a time (maxSurge 1, maxUnavailable 0, GKE's default).
GKE_DEFAULT_MAX_SURGE = 1
# A regional cluster's system pool runs in the region's default zones; most regions have three.
REGIONAL_ZONES = 3
# The kuberay-operator chart runs one operator pod (leader election keeps any others idle).
OPERATOR_REPLICAS = 1


@dataclass(frozen=True)
class SchedulingPlan:
    pools: tuple[sched.NodePool, ...]
    pods: tuple[sched.PodDemand, ...]
    problems: tuple[str, ...]
    fits: tuple[sched.PoolFit, ...]

    def headroom(self) -> list[str]:
        """One line per pool: what its pods need at peak and the least room left on a node."""
        return [fit.text() for fit in self.fits]


def _zonal(location: str) -> bool:
    return location.count("-") == 2  # us-central1-a (a zone) vs us-central1 (a region)


def node_pools(c: StackConfig) -> list[sched.NodePool]:
    system = c.cluster.system_pool
    system_zones = 1 if _zonal(c.cluster.location) else REGIONAL_ZONES
    pools = [
        sched.NodePool(
            name=SYSTEM_POOL,
            key="cluster.systemPool",
            machine_type=system.machine_type,
            min_nodes=system.min_nodes,
            max_nodes=system.max_nodes,
            zones=system_zones,
            labels={POOL_LABEL: SYSTEM_POOL},
            max_surge=GKE_DEFAULT_MAX_SURGE,
        )
    ]
    gpu = c.gpu_pool
    plan = plan_node_pool(
        gpu.name,
        gpu.machine_type,
        zones=gpu.zones,
        min_nodes=min(gpu.min_nodes, gpu.max_nodes),  # min > max is reported by node_pool_problems
        max_nodes=gpu.max_nodes,
        capacity=gpu_capacity(c),
    )
    node_config: Any = plan.node_config
    upgrade: Any = plan.upgrade_settings
    taint_effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}
    pools.append(
        sched.NodePool(
            name=gpu.name,
            key="gpuPool",
            machine_type=gpu.machine_type,
            min_nodes=gpu.min_nodes,
            max_nodes=gpu.max_nodes,
            zones=len(gpu.zones),
            # GKE labels every GPU node with its accelerator type
            labels={**node_config["labels"], ACCELERATOR_LABEL: gpu.accelerator_type},
            taints=tuple(
                {"key": t["key"], "value": t["value"], "effect": taint_effects.get(t["effect"], "")}
                for t in node_config["taints"]
            ),
            max_surge=int(upgrade.get("max_surge", 0)),
        )
    )
    return pools


def stack_pods(c: StackConfig) -> list[sched.PodDemand]:
    """Every pod the program renders, named and keyed as the stack file writes it."""
    manifest = render_rayservice(rayservice_spec(c))
    head, workers = sched.rayservice_pods(manifest)
    pods = [
        dataclasses.replace(
            head,
            name="rayService.head",
            cpu_key="rayService.head.cpu",
            memory_key="rayService.head.memory",
        )
    ]
    for group in workers:
        pods.append(
            dataclasses.replace(
                group,
                name="rayService.workers"
                if len(workers) == 1
                else f"rayService.workers[{group.name}]",
                cpu_key="rayService.workers.cpu",
                memory_key="rayService.workers.memory",
                count_why="rayService.workers.maxReplicas",
            )
        )
    values = kuberay_operator.helm_values(
        kuberay_operator.FEATURE_GATES,
        kuberay_operator.DEFAULT_RESOURCES,
        SYSTEM_POOL_SELECTOR,
    )
    pods.append(
        dataclasses.replace(
            sched.helm_values_pod("kuberay operator", values, OPERATOR_REPLICAS),
            count_why="the chart's one replica",
        )
    )
    tier_resources: Any = haproxy_ingress.DEFAULT_RESOURCES
    surge = haproxy_ingress.ROLLOUT_MAX_SURGE  # one pod above the autoscaler's maximum
    tier = sched.helm_values_pod(
        "ingress (HAProxy tier)",
        {"resources": tier_resources, "nodeSelector": SYSTEM_POOL_SELECTOR},
        c.ingress.max_replicas + surge,
    )
    pods.append(
        dataclasses.replace(
            tier,
            count_why=f"ingress.maxReplicas {c.ingress.max_replicas} + {surge} rollout surge",
        )
    )
    return pods


def scheduling_plan(c: StackConfig) -> SchedulingPlan:
    pools = node_pools(c)
    problems = sched.node_pool_problems(pools, c.network.pods_cidr)
    unknown = [p for p in pools if sched.machine_shape(p.machine_type) is None]
    for pool in unknown:
        problems.append(
            f"{pool.key}.machineType must be one of {sorted(sched.SYSTEM_MACHINES)} (the shapes the "
            f"scheduling check knows); got {pool.machine_type!r}"
        )
    if unknown:
        return SchedulingPlan(tuple(pools), (), tuple(problems), ())
    try:
        pods = stack_pods(c)
    except ValueError:  # a RayService spec KubeRay would refuse: the program's own check names it
        return SchedulingPlan(tuple(pools), (), tuple(problems), ())
    found, fits = sched.check_scheduling(pods, pools, system_pool=SYSTEM_POOL)
    return SchedulingPlan(tuple(pools), tuple(pods), tuple(problems + found), tuple(fits))


def scheduling_problems(c: StackConfig) -> list[str]:
    return list(scheduling_plan(c).problems)
