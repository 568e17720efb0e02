"""The offline plan diff: two plan documents (raygke/plan.py `plan_document`) in, what a reviewer needs out.

Owns: matching resources by URN into added / removed / replaced / changed, the changed inputs as dotted
paths, which changes force a replacement (REPLACE_ON_CHANGE), masking secrets, the change in outputs and in
GPU cost, and the text / JSON (versioned) / Markdown (a PR comment body) renderings, all sorted so the same
two plans always print the same bytes. Pure: no pulumi, no git (the CLI plans the base ref; see
raygke/cli.py). Does not own planning itself, nor what a real `pulumi preview` decides: the replacement
table mirrors the Google provider's ForceNew fields and `pulumi preview` stays authoritative.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from infra.cost import format_usd
from raygke.plan_schema import PLAN_KIND, PLAN_SCHEMA_VERSION

DIFF_SCHEMA_VERSION = 1
# Each of a change's old and new values, side by side on one line or one PR-comment table row.
DIFF_VALUE_CHARS = 80
SECRET = "[secret]"
Action = Literal["add", "remove", "replace", "update"]
ACTION_ORDER: dict[str, int] = {"replace": 0, "remove": 1, "add": 2, "update": 3}
ACTION_WORD = {"replace": "REPLACED", "remove": "removed", "add": "added", "update": "changed"}

# Input paths whose change makes the provider delete and re-create the resource. Source: the fields marked
# ForceNew in terraform-provider-google, which pulumi-gcp bridges (google_container_node_pool,
# google_container_cluster, google_compute_network, google_compute_subnetwork, google_service_account,
# google_project_iam_member), recorded by hand: the provider binary is not installed here, so a schema
# cannot be read. A path also covers everything under it (nodeConfig.guestAccelerators[0].count).
# Newer providers update some node-pool fields in place (machine type, node locations); on an A3 pool a
# machine type change always changes guestAccelerators too, which is ForceNew, so the pool is replaced.
REPLACE_ON_CHANGE: dict[str, tuple[str, ...]] = {
    "gcp:container/nodePool:NodePool": (
        "name", "namePrefix", "cluster", "location", "project", "nodeLocations",
        "nodeConfig.machineType", "nodeConfig.guestAccelerators", "nodeConfig.shieldedInstanceConfig",
        "nodeConfig.spot", "nodeConfig.preemptible", "nodeConfig.flexStart", "nodeConfig.reservationAffinity",
        "nodeConfig.serviceAccount", "nodeConfig.oauthScopes", "nodeConfig.localSsdCount",
        "nodeConfig.ephemeralStorageLocalSsdConfig", "nodeConfig.diskType", "nodeConfig.diskSizeGb",
        "nodeConfig.gvnic", "placementPolicy", "queuedProvisioning", "maxPodsPerNode",
        "networkConfig.additionalNodeNetworkConfigs", "networkConfig.podRange",
    ),
    "gcp:container/cluster:Cluster": (
        "name", "location", "project", "network", "subnetwork", "privateClusterConfig",
        "ipAllocationPolicy", "networkingMode", "datapathProvider", "enableAutopilot",
        "defaultMaxPodsPerNode", "enableMultiNetworking",
    ),
    "gcp:compute/network:Network": ("name", "project", "autoCreateSubnetworks", "mtu"),
    "gcp:compute/subnetwork:Subnetwork": ("name", "project", "region", "network", "ipCidrRange"),
    "gcp:serviceaccount/account:Account": ("accountId", "project"),
    "gcp:projects/iAMMember:IAMMember": ("project", "role", "member", "condition"),
    "kubernetes:helm.sh/v3:Release": ("name",),
    "kubernetes:apps/v1:Deployment": ("spec.selector",),
}  # fmt: skip
# Every Kubernetes object is replaced when its name or namespace changes (it is a different object).
KUBERNETES_REPLACE_ON_CHANGE = ("metadata.name", "metadata.namespace")
# Input keys whose values are never printed, whatever the plan says: credentials that mocks render plainly.
SECRET_KEYS = frozenset(
    {"kubeconfig", "password", "token", "accessToken", "privateKey", "clientKey"}
)


class PlanDocumentError(ValueError):
    """A plan document this version cannot diff (wrong kind or schema version)."""


@dataclass(frozen=True)
class ValueChange:
    path: str
    old: Any  # masked already: SECRET for secrets, absent values as None
    new: Any
    forces_replace: bool = False
    secret: bool = False


@dataclass(frozen=True)
class ResourceChange:
    action: Action
    urn: str
    type: str
    name: str
    changes: tuple[ValueChange, ...] = ()

    @property
    def replace_paths(self) -> list[str]:
        return [c.path for c in self.changes if c.forces_replace]


@dataclass(frozen=True)
class CostChange:
    currency: str
    prices_as_of: str
    # each side: machine_type, capacity_mode, nodes_min, nodes_max, hourly/monthly {min, max}; None if absent
    base: dict[str, Any] | None
    head: dict[str, Any] | None
    monthly_delta: dict[str, float] = field(default_factory=dict)
    hourly_delta: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanDiff:
    stack: str
    base_ref: str
    resources: tuple[ResourceChange, ...]
    outputs: tuple[ValueChange, ...]
    cost: CostChange | None
    unchanged: int

    def count(self, action: Action) -> int:
        return sum(1 for r in self.resources if r.action == action)

    @property
    def empty(self) -> bool:
        return not self.resources and not self.outputs


# ------------------------------------------------------------------------------------------------ diffing
def _check(doc: dict[str, Any], side: str) -> None:
    if doc.get("kind") != PLAN_KIND or doc.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise PlanDocumentError(
            f"the {side} plan is not a raygke plan document with schema_version {PLAN_SCHEMA_VERSION}; got kind "
            f"{doc.get('kind')!r}, schema_version {doc.get('schema_version')!r}"
        )


def _is_secret_value(value: Any) -> bool:
    return value == SECRET or (isinstance(value, dict) and value.get("secret") is True)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": [1]}}` -> `{"a.b[0]": 1}`; empty containers are kept as leaves so removals show."""
    if isinstance(value, dict) and value and not _is_secret_value(value):
        out: dict[str, Any] = {}
        for key in value:
            out.update(flatten(value[key], _join(prefix, str(key))))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _join(prefix: str, key: str) -> str:
    if any(c in key for c in '.[]" '):  # e.g. nvidia.com/gpu: quoted so the path stays unambiguous
        return f"{prefix}[{json.dumps(key)}]"
    return f"{prefix}.{key}" if prefix else key


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _segments(path: str) -> list[str]:
    return [part.split("[")[0] for part in path.split(".")]


def _masked_path(path: str) -> bool:
    return any(part in SECRET_KEYS for part in _segments(path))


def forces_replace(type_: str, path: str) -> bool:
    prefixes = REPLACE_ON_CHANGE.get(type_, ())
    if type_.startswith("kubernetes:") and not type_.startswith("kubernetes:helm.sh"):
        prefixes = (*prefixes, *KUBERNETES_REPLACE_ON_CHANGE)
    return any(_under(path, p) for p in prefixes)


def _value_changes(type_: str, old: dict[str, Any], new: dict[str, Any]) -> tuple[ValueChange, ...]:
    before, after = flatten(old), flatten(new)
    changes = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        secret = _masked_path(path) or _is_secret_value(a) or _is_secret_value(b)
        if a == b:
            continue  # equal secret markers mean equal values (the plan masks, it does not hide changes)
        changes.append(
            ValueChange(
                path=path,
                old=(SECRET if a is not None else None) if secret else a,
                new=(SECRET if b is not None else None) if secret else b,
                forces_replace=forces_replace(type_, path),
                secret=secret,
            )
        )
    return tuple(changes)


def _cost_view(cost: Any) -> dict[str, Any] | None:
    if not isinstance(cost, dict) or "monthly" not in cost:
        return None
    keys = ("machine_type", "capacity_mode", "nodes_min", "nodes_max", "hourly", "monthly")
    return {k: cost.get(k) for k in keys}


def _cost_change(base: Any, head: Any) -> CostChange | None:
    b, h = _cost_view(base), _cost_view(head)
    if b is None and h is None:
        return None
    either = head if isinstance(head, dict) else base

    def delta(per: str) -> dict[str, float]:
        return {
            end: round(
                (h or {}).get(per, {}).get(end, 0.0) - (b or {}).get(per, {}).get(end, 0.0), 2
            )
            for end in ("min", "max")
        }

    return CostChange(
        currency=str(either.get("currency", "USD")),
        prices_as_of=str(either.get("prices_as_of", "")),
        base=b,
        head=h,
        monthly_delta=delta("monthly"),
        hourly_delta=delta("hourly"),
    )


def diff_plans(base: dict[str, Any], head: dict[str, Any], *, base_ref: str = "") -> PlanDiff:
    """What changes from `base` to `head` (both plan documents of the same stack)."""
    _check(base, "base")
    _check(head, "head")
    old = {r["urn"]: r for r in base["resources"]}
    new = {r["urn"]: r for r in head["resources"]}
    changes: list[ResourceChange] = []
    unchanged = 0
    for urn in sorted(set(old) | set(new)):
        a, b = old.get(urn), new.get(urn)
        if a is None and b is not None:
            changes.append(ResourceChange("add", urn, b["type"], b["name"]))
        elif b is None and a is not None:
            changes.append(ResourceChange("remove", urn, a["type"], a["name"]))
        elif a is not None and b is not None:
            values = _value_changes(b["type"], a["inputs"], b["inputs"])
            if not values:
                unchanged += 1
                continue
            action: Action = "replace" if any(v.forces_replace for v in values) else "update"
            changes.append(ResourceChange(action, urn, b["type"], b["name"], values))
    changes.sort(key=lambda r: (ACTION_ORDER[r.action], r.type, r.name, r.urn))
    # outputs as dotted paths too, so a change deep inside `smoke` shows as that one field
    base_out = {k: v for k, v in base.get("outputs", {}).items() if k != "cost"}
    head_out = {k: v for k, v in head.get("outputs", {}).items() if k != "cost"}
    outputs = _value_changes("", base_out, head_out)
    return PlanDiff(
        stack=str(head.get("stack", "")),
        base_ref=base_ref,
        resources=tuple(changes),
        outputs=tuple(outputs),
        cost=_cost_change(base.get("outputs", {}).get("cost"), head.get("outputs", {}).get("cost")),
        unchanged=unchanged,
    )


# ------------------------------------------------------------------------------------------------ rendering
def short(value: Any, limit: int) -> str:
    """`value` as compact JSON of at most `limit` characters; secrets and absent values as words."""
    if value is None:
        return "(none)"
    if value == SECRET:
        return SECRET
    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    return short(value, DIFF_VALUE_CHARS)


def summary_line(d: PlanDiff) -> str:
    if d.empty and (d.cost is None or not any(d.cost.monthly_delta.values())):
        return f"stack {d.stack} vs {d.base_ref}: no changes ({d.unchanged} resources unchanged)"
    counts = ", ".join(
        f"{d.count(a)} {ACTION_WORD[a]}" for a in ("add", "update", "replace", "remove")
    )
    text = f"stack {d.stack} vs {d.base_ref}: {counts}, {len(d.outputs)} outputs changed"
    if d.cost is not None:
        text += f"; GPU cost {cost_delta_text(d.cost)}"
    return text


def cost_delta_text(c: CostChange) -> str:
    lo, hi = c.monthly_delta["min"], c.monthly_delta["max"]
    return (
        f"{format_usd(lo, signed=True)}..{format_usd(hi, signed=True)} per month (min..max nodes)"
    )


def _cost_side(side: dict[str, Any] | None) -> str:
    if side is None:
        return "(no cost output)"
    m = side["monthly"]
    return (
        f"{side['machine_type']} {side['capacity_mode']} x {side['nodes_min']}..{side['nodes_max']}: "
        f"{format_usd(m['min'])}..{format_usd(m['max'])}/month"
    )


def _change_line(c: ValueChange) -> str:
    flag = "  [forces replacement]" if c.forces_replace else ""
    return f"{c.path}: {_shown(c.old)} -> {_shown(c.new)}{flag}"


def render_text(d: PlanDiff) -> str:
    lines = [summary_line(d)]
    for r in d.resources:
        lines.append(f"{ACTION_WORD[r.action].upper():<9} {r.type}  {r.name}")
        for c in r.changes:
            lines.append(f"    {_change_line(c)}")
    if d.outputs:
        lines.append("outputs:")
        for c in d.outputs:
            lines.append(f"    {_change_line(c)}")
    if d.cost is not None:
        lines.append(f"cost (list prices as of {d.cost.prices_as_of}, {d.cost.currency}):")
        lines.append(f"    base {d.base_ref}: {_cost_side(d.cost.base)}")
        lines.append(f"    head: {_cost_side(d.cost.head)}")
        lines.append(f"    change: {cost_delta_text(d.cost)}")
    return "\n".join(lines)


def diff_document(d: PlanDiff) -> dict[str, Any]:
    return {
        "schema_version": DIFF_SCHEMA_VERSION,
        "kind": "raygke-plan-diff",
        "stack": d.stack,
        "base_ref": d.base_ref,
        "summary": {
            "added": d.count("add"),
            "changed": d.count("update"),
            "replaced": d.count("replace"),
            "removed": d.count("remove"),
            "unchanged": d.unchanged,
            "outputs_changed": len(d.outputs),
        },
        "resources": [
            {
                "action": r.action,
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "replace_because": r.replace_paths,
                "changes": [asdict(c) for c in r.changes],
            }
            for r in d.resources
        ],
        "outputs": [asdict(c) for c in d.outputs],
        "cost": asdict(d.cost) if d.cost is not None else None,
    }


def render_json(d: PlanDiff) -> str:
    return json.dumps(diff_document(d), indent=2, sort_keys=True, default=repr)


def _md(text: str) -> str:
    # inside a table cell's `code`: a pipe would end the cell, a backtick the code span
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def render_markdown(d: PlanDiff) -> str:
    """A PR comment body: the summary line, a table of resources, each one's changes folded away."""
    lines = [
        f"### `raygke plan` — stack `{d.stack}` vs `{d.base_ref}`",
        "",
        f"**{summary_line(d)}**",
        "",
    ]
    if d.cost is not None:
        lines += [
            f"GPU cost (list prices as of {d.cost.prices_as_of}): base {_cost_side(d.cost.base)} → "
            f"head {_cost_side(d.cost.head)}; **{cost_delta_text(d.cost)}**",
            "",
        ]
    if d.resources:
        lines += ["| action | type | name |", "|---|---|---|"]
        for r in d.resources:
            word = ACTION_WORD[r.action]
            lines.append(
                f"| {'**' + word + '**' if r.action == 'replace' else word} | `{r.type}` | `{r.name}` |"
            )
        lines.append("")
        for r in d.resources:
            if not r.changes:
                continue
            lines += [
                "<details>",
                f"<summary>{ACTION_WORD[r.action]} <code>{r.type}</code> <code>{r.name}</code>"
                f" ({len(r.changes)} inputs)</summary>",
                "",
                "| input | old | new | replaces |",
                "|---|---|---|---|",
            ]
            for c in r.changes:
                lines.append(
                    f"| `{_md(c.path)}` | `{_md(_shown(c.old))}` | `{_md(_shown(c.new))}` | "
                    f"{'yes' if c.forces_replace else ''} |"
                )
            lines += ["", "</details>", ""]
    if d.outputs:
        lines += ["<details>", f"<summary>{len(d.outputs)} outputs changed</summary>", ""]
        lines += ["| output | old | new |", "|---|---|---|"]
        for c in d.outputs:
            lines.append(f"| `{_md(c.path)}` | `{_md(_shown(c.old))}` | `{_md(_shown(c.new))}` |")
        lines += ["", "</details>", ""]
    lines.append(
        "_Planned offline under Pulumi mocks; replacements come from the Google provider's ForceNew "
        "fields. `pulumi preview` is authoritative._"
    )
    return "\n".join(lines)
