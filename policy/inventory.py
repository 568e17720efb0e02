"""What a policy control reads, and what its check returns.

Owns: the inventory protocols (a resource: a type, a name, a URN and its camelCase inputs, as
`raygke.mocks` records them or a policy pack receives them), the plain `Resource` / `Resources` built by
hand or by the pack, `UNKNOWN`, a check's `Finding`, and the helpers every check reads inputs with
(missing or malformed values read as None, [], {} or 0, never raise). Does not own any control: the
GKE checks are in policy/gke_checks.py, the Kubernetes checks in policy/k8s_checks.py, the catalogue
in policy/controls.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A value Pulumi cannot know before `pulumi up` (a policy pack sees these during preview). Checks
# never flag an unknown: it is usually another resource's output (a service account's email).
UNKNOWN = "[unknown]"


class ResourceLike(Protocol):
    """What a control reads of a resource: `raygke.mocks.Registration` and `Resource` both fit."""

    @property
    def urn(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...


class InventoryLike(Protocol):
    """`raygke.mocks.Inventory`, or anything else holding the resources of one stack."""

    @property
    def resources(self) -> Sequence[ResourceLike]: ...


@dataclass(frozen=True)
class Resource:
    """A resource built by hand (tests) or from a policy pack's arguments (policy/pack)."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    urn: str = ""


@dataclass(frozen=True)
class Resources:
    """A plain inventory: the resources of one stack."""

    resources: Sequence[ResourceLike]


@dataclass(frozen=True)
class Finding:
    """One problem a check found; `remediation` overrides the control's when the fix depends on where."""

    resource: ResourceLike
    message: str
    remediation: str | None = None


Check = Callable[[InventoryLike], Iterable[Finding]]


def all_of(*checks: Check) -> Check:
    """One check that runs several: a control whose rule spans resource kinds."""

    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for each in checks:
            yield from each(inventory)

    return check


def lookup(node: Any, path: str) -> Any:
    """The value at dotted `path`, or None where any step is missing."""
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_true(value: Any) -> bool:
    return value is True or value == "true"


def is_false(value: Any) -> bool:
    return value is False or value == "false"


def is_unknown(value: Any) -> bool:
    return value == UNKNOWN


def of_type(inventory: InventoryLike, type_: str) -> list[ResourceLike]:
    return [r for r in inventory.resources if r.type == type_]


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
