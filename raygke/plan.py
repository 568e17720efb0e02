"""`raygke plan --stack STACK`: the program under Pulumi's mocks, printed as a deterministic resource tree.

Shows what `pulumi up -s STACK` would create, without a cloud account or the Pulumi CLI: each resource's type,
name and parent, the inputs a reviewer cares about, the stack outputs (secrets masked) and the GPU cost
estimate. `plan_document` is the versioned JSON form (`--format json`) that `raygke plan --base` diffs.
Does not own the diff of two plans (raygke/diff.py) nor the cost figures (infra/cost.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.checks import reliability_lines
from infra.cost import render_cost_lines
from infra.prerequisites import Prerequisite, prerequisites
from infra.program import run_program
from infra.scheduling import scheduling_plan
from infra.stack_file import parse_stack_config, read_stack_file
from policy import Violation, evaluate, mandatory, render_violations, violations_json
from policy.inventory import lookup
from raygke.diff import SECRET, short
from raygke.mocks import Inventory, Registration, Secret, run_with_mocks
from raygke.plan_schema import PLAN_KIND, PLAN_SCHEMA_VERSION

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
}  # fmt: skip
TREE_VALUE_CHARS = 120  # a value on its line of the plan text: an input in the tree, an output
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    stack: str
    inventory: Inventory
    outputs: dict[str, Any]
    violations: list[Violation]  # the policy pack's controls, for the stack's environment
    headroom: list[str] = field(default_factory=list)  # per pool: pods at peak vs what nodes give
    reliability: list[str] = field(default_factory=list)  # per app: deadline, hung-replica bound
    prerequisites: list[Prerequisite] = field(default_factory=list)  # what `pulumi up` needs first


def plan_stack(stack: str, stacks_dir: Path | None = None) -> Plan:
    """Run the program for `stack` under mocks (raises ConfigError on a bad stack file)."""
    config = read_stack_file(stack, stacks_dir)
    inventory, outputs = run_with_mocks(run_program, stack=stack, config=config)
    parsed = parse_stack_config(stack, config)
    violations = evaluate(inventory, parsed.environment)
    return Plan(
        stack,
        inventory,
        outputs,
        violations,
        scheduling_plan(parsed).headroom(),
        reliability_lines(parsed),
        prerequisites(parsed),
    )


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
    return [(p, v) for p in paths if (v := lookup(resource.inputs, p)) is not None]


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
                lines.append(f"{indent}{more}    {path} = {short(value, TREE_VALUE_CHARS)}")
            walk(r.urn, indent + more)

    walk("", "")
    lines.append("outputs:")
    for key in sorted(plan.outputs):
        if key == "cost":
            continue  # printed as its own section below
        value = plan.outputs[key]
        shown = SECRET if isinstance(value, Secret) else short(value, TREE_VALUE_CHARS)
        lines.append(f"  {key}: {shown}")
    cost = plan.outputs.get("cost")
    if isinstance(cost, dict):
        lines.extend(render_cost_lines(cost))
    if plan.headroom:
        lines.append("scheduling headroom (checked before deploy; docs/scheduling.md):")
        lines.extend(f"  {line}" for line in plan.headroom)
    if plan.reliability:
        lines.append("deadlines and hung replicas (checked before deploy; docs/reliability.md):")
        lines.extend(f"  {line}" for line in plan.reliability)
    if plan.prerequisites:
        lines.append("before `pulumi up`, have (in this order; the program creates the rest):")
        for i, item in enumerate(plan.prerequisites, 1):
            key = f" [{item.key}]" if item.key else ""
            lines.append(f"  {i}. {item.what}{key}")
            lines.append(f"     {item.how}")
    lines.append(render_violations(plan.violations))
    return "\n".join(lines)


def _secret_marker(value: Any) -> dict[str, Any]:
    # A digest lets a diff say "changed" without the value; under mocks the values are fakes anyway.
    text = json.dumps(value, sort_keys=True, default=repr)
    return {"secret": True, "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as versioned, JSON-ready data: resources sorted by URN, secret outputs masked."""
    resources = sorted(plan.inventory.resources, key=lambda r: r.urn)
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "kind": PLAN_KIND,
        "stack": plan.stack,
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "parent": r.parent,
                "custom": r.custom,
                "inputs": r.inputs,
            }
            for r in resources
        ],
        "outputs": {
            key: _secret_marker(value.value) if isinstance(value, Secret) else value
            for key, value in sorted(plan.outputs.items())
        },
        "violations": violations_json(plan.violations),
        "prerequisites": [p.as_json() for p in plan.prerequisites],
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_document(plan), indent=2, sort_keys=True, default=repr)


def render_markdown(plan: Plan) -> str:
    """The plan as a PR comment body: a summary line and the tree folded away."""
    return "\n".join(
        [
            f"### `raygke plan` — stack `{plan.stack}`",
            "",
            f"**{len(plan.inventory.resources)} resources** (planned offline under Pulumi mocks), "
            f"**{len(mandatory(plan.violations))} mandatory policy violations**",
            "",
            "<details>",
            "<summary>resources, outputs and cost</summary>",
            "",
            "```",
            render_text(plan),
            "```",
            "",
            "</details>",
        ]
    )


class PlanBaseError(ValueError):
    """The base side of `raygke plan --base` could not be planned; the message is one line."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120, check=False
    )


def plan_at_ref(
    stack: str, ref: str, repo: Path = PROJECT_ROOT, timeout: float = 600
) -> dict[str, Any]:
    """The plan document of `stack` as the code and stack files at git `ref` define it.

    Checks `ref` out into a temporary worktree and plans there in a subprocess whose cwd and PYTHONPATH are
    that worktree, so the base's own program, components and price table run. The worktree is always
    removed, whatever happens.
    """
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise PlanBaseError(f"--base needs a git repository; {repo} is not in one")
    toplevel = Path(top.stdout.strip())
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0 or not commit.stdout.strip():
        raise PlanBaseError(
            f"--base {ref!r} is not a commit in {toplevel} (use a branch, tag or SHA, e.g. origin/main or HEAD~1)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="raygke-plan-base-"))
    tree = scratch / "base"
    try:
        added = _git(
            toplevel, "worktree", "add", "--detach", "--quiet", str(tree), commit.stdout.strip()
        )
        if added.returncode != 0:
            raise PlanBaseError(
                f"git worktree add for --base {ref!r} failed: {_last_line(added.stderr)}"
            )
        project = (
            tree / PROJECT_ROOT.relative_to(toplevel)
            if PROJECT_ROOT.is_relative_to(toplevel)
            else tree
        )
        # the base's own code first: its program, components and price table, not this working tree's
        pythonpath = os.pathsep.join(
            p for p in (str(project), os.environ.get("PYTHONPATH", "")) if p
        )
        try:
            done = subprocess.run(
                [sys.executable, "-m", "raygke.cli", "plan", "--stack", stack, "--format", "json"],
                cwd=project,
                env={**os.environ, "PYTHONPATH": pythonpath},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise PlanBaseError(
                f"planning stack {stack} at {ref} took over {timeout:.0f} s"
            ) from None
        if done.returncode != 0 and "unrecognized arguments: --format" in done.stderr:
            raise PlanBaseError(
                f"{ref} predates `raygke plan --format json`, so it cannot be planned for a diff; "
                "use a later base"
            )
        if done.returncode != 0:
            raise PlanBaseError(
                f"planning stack {stack} at {ref} failed (exit {done.returncode}): {_last_line(done.stderr)}"
            )
        try:
            document = json.loads(done.stdout)
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("kind") != PLAN_KIND:
            raise PlanBaseError(
                f"{ref} printed no plan document for stack {stack}: is it older than "
                "`raygke plan --format json`?"
            )
        return document
    finally:
        _git(toplevel, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(scratch, ignore_errors=True)
        _git(toplevel, "worktree", "prune")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"
