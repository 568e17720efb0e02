"""The stack's pods and node pools, read from its rendered graph, for the scheduling check.

Owns: which pods the rendered graph (infra/rendered.py) holds and how their figures map back to stack
keys: the RayService's head and workers, the KubeRay operator from its chart values, our tier from
its rendered Deployment (every container, at the autoscaler's ceiling plus the rollout's surge), and
the pools from the node-pool planner and the cluster's system-pool settings. Does not own the
arithmetic (components/render/node_fit.py) nor when it runs (infra/checks.py, before any resource
registers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.render import node_fit as sched
from components.render.node_pool import (
    POOL_LABEL,
    SYSTEM_POOL,
    plan_node_pool,
)
from components.render.rayservice import ACCELERATOR_LABEL
from infra.config import StackConfig
from infra.rendered import RenderedStack, render_stack
from infra.specs import gpu_capacity

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


def stack_pods(c: StackConfig, rendered: RenderedStack) -> list[sched.PodDemand]:
    """Every pod of the rendered graph, named and keyed as the stack file writes it."""
    head, workers = sched.rayservice_pods(rendered.rayservice)
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
    pods.append(
        dataclasses.replace(
            sched.helm_values_pod("kuberay operator", rendered.operator_values, OPERATOR_REPLICAS),
            count_why="the chart's one replica",
        )
    )
    deployment = rendered.tier["deployment"]["spec"]
    most = rendered.tier["hpa"]["spec"]["maxReplicas"]
    surge = deployment["strategy"]["rollingUpdate"]["maxSurge"]  # one pod above the ceiling
    pods.append(
        sched.template_pod(
            "ingress (HAProxy tier)",
            deployment["template"],
            most + surge,
            f"ingress.maxReplicas {most} + {surge} rollout surge",
        )
    )
    return pods


def scheduling_plan(c: StackConfig, rendered: RenderedStack | None = None) -> SchedulingPlan:
    """The pools, the pods and what does not fit; renders `c` unless given its graph."""
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
    if rendered is None:
        try:
            rendered = render_stack(c)
        except ValueError:  # a spec a renderer refuses: the rule that names its key reports it
            return SchedulingPlan(tuple(pools), (), tuple(problems), ())
    pods = stack_pods(c, rendered)
    found, fits = sched.check_scheduling(pods, pools, system_pool=SYSTEM_POOL)
    return SchedulingPlan(tuple(pools), tuple(pods), tuple(problems + found), tuple(fits))


def scheduling_problems(c: StackConfig, rendered: RenderedStack | None = None) -> list[str]:
    return list(scheduling_plan(c, rendered).problems)
