"""The pulumi_policy pack: `pulumi preview --policy-pack policy/pack` enforces policy/controls.py.

Owns only the adaptation: Pulumi's stack resources (a `PolicyResource`: resource_type, name, urn, and
props behind a proxy that raises on values unknown during preview) become plain `policy.Resource`s;
each control becomes a stack policy at its severity (plus a `<id>.advisory` twin where the control
only advises in some environments); the environment comes from the policy config, the stack's
`ray-serve-gke:environment`, or RAYGKE_ENVIRONMENT. Does not own any control.

`pulumi_policy` is imported inside `main()` only: the project's environment cannot install it (it
pins an older protobuf and grpcio), and the tests import this module from there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The pack runs in its own virtualenv; the controls are plain Python in the repository's policy/.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from policy.controls import (  # noqa: E402  (needs the path above)
    ALL_ENVIRONMENTS,
    CONTROLS,
    ENVIRONMENTS,
    UNKNOWN,
    Control,
    Resource,
    Severity,
    Violation,
    evaluate,
)

PACK_NAME = "ray-serve-gke-cis"
ENVIRONMENT_KEY = "ray-serve-gke:environment"
ENVIRONMENT_VAR = "RAYGKE_ENVIRONMENT"
# With nothing saying which environment a stack is, hold it to prod's rules.
DEFAULT_ENVIRONMENT = "prod"
# pulumi_policy's sentinels for values unknown during preview (pulumi_policy/proxy.py); props that
# bypass its proxy carry them as plain strings.
UNKNOWN_SENTINELS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",  # boolean
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",  # number
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",  # string
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",  # array
        "030794c1-ac77-496b-92df-f27374a8bd58",  # asset
        "e48ece36-62e2-4504-bad9-02848725956a",  # archive
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",  # object
    }
)


# ---------------------------------------------------------------------------------------------- adapter
def _read(container: Any, key: Any) -> Any:
    """container[key], with a value unknown during preview read as UNKNOWN instead of raising."""
    try:
        return container[key]
    except Exception as exc:
        if type(exc).__name__ == "UnknownValueError":  # pulumi_policy.proxy, not importable here
            return UNKNOWN
        raise


def plain(value: Any) -> Any:
    """Pulumi's props as plain dicts and lists, unknown values replaced by `policy.UNKNOWN`."""
    if isinstance(value, str):
        return UNKNOWN if value in UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        return {str(k): plain(_read(value, k)) for k in value}
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [plain(_read(value, i)) for i in range(len(value))]
    return value


def to_resource(policy_resource: Any) -> Resource:
    """One `pulumi_policy.PolicyResource` (or anything with its attributes) as a `policy.Resource`."""
    return Resource(
        type=str(policy_resource.resource_type),
        name=str(policy_resource.name),
        inputs=plain(policy_resource.props),
        urn=str(policy_resource.urn),
    )


def resolve_environment(
    policy_config: Mapping[str, Any] | None,
    stack_environment: str | None,
    env: Mapping[str, str],
) -> str:
    """Which environment's rules apply: the policy config's `environment`, else the stack's
    ray-serve-gke:environment, else $RAYGKE_ENVIRONMENT, else prod."""
    sources = (
        ("policy config `environment`", (policy_config or {}).get("environment")),
        (ENVIRONMENT_KEY, stack_environment),
        (f"${ENVIRONMENT_VAR}", env.get(ENVIRONMENT_VAR)),
    )
    for source, value in sources:
        if value:
            if value not in ENVIRONMENTS:
                raise ValueError(
                    f"{source} must be one of {', '.join(ENVIRONMENTS)}; got {value!r}"
                )
            return str(value)
    return DEFAULT_ENVIRONMENT


# ---------------------------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class PolicySpec:
    """One pulumi_policy policy: a control's violations at one enforcement level."""

    name: str
    control: Control
    level: Severity

    @property
    def description(self) -> str:
        scope = (
            ""
            if self.control.environments == ALL_ENVIRONMENTS
            else f" ({', '.join(sorted(self.control.environments))} only)"
        )
        return f"{self.control.title}{scope}"


def policy_specs(controls: Sequence[Control] = CONTROLS) -> list[PolicySpec]:
    """A policy per control at its severity, and an advisory twin where it only advises somewhere
    (a pulumi_policy policy has one enforcement level for every stack)."""
    specs = []
    for control in controls:
        specs.append(PolicySpec(control.id, control, control.severity))
        if control.advisory_in and control.severity == "mandatory":
            specs.append(PolicySpec(f"{control.id}.advisory", control, "advisory"))
    return specs


def violations_for(spec: PolicySpec, resources: Iterable[Any], environment: str) -> list[Violation]:
    """The violations `spec` reports: its control's, at its level in `environment`."""
    found = evaluate([to_resource(r) for r in resources], environment, controls=(spec.control,))
    return [v for v in found if v.severity == spec.level]


def violation_message(v: Violation) -> str:
    return f"{v.resource_type} {v.resource_name}: {v.message}. Fix: {v.remediation}"


def _stack_environment() -> str | None:
    # The policy pack's runtime reads the stack's config from the environment Pulumi gives it.
    from pulumi.runtime.config import get_config

    return get_config(ENVIRONMENT_KEY)


def make_validate(
    spec: PolicySpec,
    stack_environment: Callable[[], str | None] = _stack_environment,
    env: Mapping[str, str] = os.environ,
) -> Callable[[Any, Callable[[str, str | None], None]], None]:
    """The `validate` callback of a StackValidationPolicy for `spec`."""

    def validate(args: Any, report_violation: Callable[[str, str | None], None]) -> None:
        environment = resolve_environment(args.get_config(), stack_environment(), env)
        for v in violations_for(spec, args.resources, environment):
            report_violation(violation_message(v), v.urn or None)

    return validate


def main() -> None:
    import pulumi_policy as pp  # pyright: ignore[reportMissingImports]  # the pack's venv only

    levels = {"mandatory": pp.EnforcementLevel.MANDATORY, "advisory": pp.EnforcementLevel.ADVISORY}
    severities = {"mandatory": pp.Severity.HIGH, "advisory": pp.Severity.MEDIUM}
    schema = pp.PolicyConfigSchema(
        properties={"environment": {"type": "string", "enum": list(ENVIRONMENTS)}}
    )
    policies = [
        pp.StackValidationPolicy(
            name=spec.name,
            description=spec.description,
            validate=make_validate(spec),
            enforcement_level=levels[spec.level],
            config_schema=schema,
            severity=severities[spec.level],
            framework=(
                pp.PolicyComplianceFramework(
                    name="CIS Google Kubernetes Engine (GKE) Benchmark",
                    version="1.6.0",
                    reference=spec.control.id,
                )
                if spec.control.cis
                else None
            ),
            remediation_steps=spec.control.remediation,
        )
        for spec in policy_specs()
    ]
    pp.PolicyPack(name=PACK_NAME, policies=policies)  # serves the engine until it exits


if __name__ == "__main__":
    main()
