"""Violations as text (for `raygke plan` and CI logs) and as JSON-ready dicts.

Owns: how violations read; nothing about what is a violation (policy/controls.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from policy.controls import Violation


def render_violations(violations: Sequence[Violation]) -> str:
    """A deterministic block of text: a count line, then mandatory violations before advisory ones,
    each with its control, resource, what is wrong and how to fix it."""
    n_mandatory = sum(v.severity == "mandatory" for v in violations)
    n_advisory = len(violations) - n_mandatory
    if not violations:
        return "policy: no violations"
    lines = [f"policy: {n_mandatory} mandatory, {n_advisory} advisory"]
    # A stable sort keeps evaluate()'s order inside each severity.
    for v in sorted(violations, key=lambda v: v.severity != "mandatory"):
        lines.append(f"  [{v.severity}] {v.control_id} {v.title}")
        lines.append(f"      {v.resource_type}  {v.resource_name}: {v.message}")
        lines.append(f"      fix: {v.remediation}")
    return "\n".join(lines)


def violations_json(violations: Sequence[Violation]) -> list[dict[str, Any]]:
    """The violations as plain dicts (for `--format json`), in evaluate()'s order."""
    return [asdict(v) for v in violations]
