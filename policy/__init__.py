"""The policy pack's controls (CIS GKE + Kubernetes) as plain Python, and their report.

Owns: `evaluate(inventory, environment)` and `render_violations(violations)`; the thin pulumi_policy
pack in policy/pack/ only adapts Pulumi's arguments to them. Imports neither `pulumi` nor
`pulumi_policy`.
"""

from policy.controls import (
    CONTROLS,
    CONTROLS_BY_ID,
    ENVIRONMENTS,
    UNKNOWN,
    Control,
    Resource,
    Resources,
    Violation,
    evaluate,
    mandatory,
)
from policy.report import render_violations, violations_json

__all__ = [
    "CONTROLS",
    "CONTROLS_BY_ID",
    "ENVIRONMENTS",
    "UNKNOWN",
    "Control",
    "Resource",
    "Resources",
    "Violation",
    "evaluate",
    "mandatory",
    "render_violations",
    "violations_json",
]
