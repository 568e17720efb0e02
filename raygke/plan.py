"""`raygke plan --stack STACK`: the program under Pulumi's mocks, printed as a deterministic resource tree.

Shows what `pulumi up -s STACK` would create, without a cloud account or the Pulumi CLI: each resource's type,
name and parent, the inputs a reviewer cares about, and the stack outputs (secrets masked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import read_stack_file
from infra.program import run_program
from raygke.mocks import Inventory, Registration, Secret, run_with_mocks

# The inputs worth a reviewer's eye, per type (dotted paths); other types show their short scalar inputs.
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "gcp:container/cluster:Cluster": (
        "location", "releaseChannel.channel", "privateClusterConfig.enablePrivateNodes",
        "masterAuthorizedNetworksConfig.cidrBlocks", "datapathProvider", "deletionProtection",
        "workloadIdentityConfig.workloadPool", "databaseEncryption.state",
    ),
    "gcp:container/nodePool:NodePool": (
        "nodeConfig.machineType", "nodeConfig.guestAccelerators", "nodeConfig.taints", "nodeConfig.spot",
        "nodeConfig.flexStart", "nodeConfig.reservationAffinity.consumeReservationType",
        "nodeConfig.shieldedInstanceConfig.enableSecureBoot", "nodeLocations", "autoscaling",
        "placementPolicy.type", "queuedProvisioning.enabled",
    ),
    "kubernetes:helm.sh/v3:Release": ("chart", "version", "namespace", "skipCrds"),
    "kubernetes:ray.io/v1:RayService": (
        "metadata.name", "metadata.namespace", "spec.upgradeStrategy.type",
        "spec.rayClusterConfig.rayVersion", "spec.rayClusterConfig.headGroupSpec.template.spec.containers",
    ),
    "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition": ("metadata.name",),
}  # fmt: skip
MAX_VALUE_CHARS = 120


@dataclass(frozen=True)
class Plan:
    stack: str
    inventory: Inventory
    outputs: dict[str, Any]


def plan_stack(stack: str, stacks_dir: Path | None = None) -> Plan:
    """Run the program for `stack` under mocks (raises ConfigError on a bad stack file)."""
    config = read_stack_file(stack, stacks_dir)
    inventory, outputs = run_with_mocks(run_program, stack=stack, config=config)
    return Plan(stack, inventory, outputs)


def _lookup(inputs: dict[str, Any], path: str) -> Any:
    node: Any = inputs
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def key_inputs(resource: Registration) -> list[tuple[str, Any]]:
    paths = KEY_INPUTS.get(resource.type)
    if paths is None:
        # a CustomResource registers under its own kind; show its identity
        if resource.type.startswith("kubernetes:") and "metadata" in resource.inputs:
            paths = ("metadata.name", "metadata.namespace")
        else:
            paths = tuple(
                k
                for k, v in sorted(resource.inputs.items())
                if isinstance(v, str | int | float | bool) and len(str(v)) <= 60
            )[:6]
    return [(p, v) for p in paths if (v := _lookup(resource.inputs, p)) is not None]


def render_text(plan: Plan) -> str:
    children: dict[str, list[Registration]] = {}
    urns = {r.urn for r in plan.inventory.resources}
    for r in plan.inventory.resources:
        parent = r.parent if r.parent in urns else ""
        children.setdefault(parent, []).append(r)
    for group in children.values():
        group.sort(key=lambda r: (r.type, r.name))

    lines = [f"stack {plan.stack}: {len(plan.inventory.resources)} resources"]

    def walk(parent: str, indent: str) -> None:
        group = children.get(parent, [])
        for i, r in enumerate(group):
            last = i == len(group) - 1
            branch, more = ("└─ ", "   ") if last else ("├─ ", "│  ")
            lines.append(f"{indent}{branch}{r.type}  {r.name}")
            for path, value in key_inputs(r):
                lines.append(f"{indent}{more}    {path} = {_short(value)}")
            walk(r.urn, indent + more)

    walk("", "")
    lines.append("outputs:")
    for key in sorted(plan.outputs):
        value = plan.outputs[key]
        shown = "[secret]" if isinstance(value, Secret) else _short(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
