"""Kubernetes resource quantities (`500m`, `4`, `16Gi`, `1e3`) as exact numbers.

Owns the quantity grammar Kubernetes accepts (apimachinery's resource.Quantity) and the conversion
to millicores and bytes, for the stack config's checks and the scheduling check. Does not own what a
node can give (components/render/node_fit.py).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>[A-Za-z]*|[eE][+-]?\d+)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}  # fmt: skip
SUFFIXES = (*_BINARY, *(s for s in _DECIMAL if s))


def parse_quantity(value: str) -> Decimal:
    """The quantity's value in base units; ValueError naming what is allowed when it is not one."""
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    suffix = match["suffix"] if match else ""
    if match is None or not (suffix in _BINARY or suffix in _DECIMAL or suffix[:1] in "eE"):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: a number with an optional suffix "
            f"({', '.join(SUFFIXES)}), e.g. 500m, 4, 16Gi (note: 32GB is not one; 32G or 32Gi is)"
        )
    try:
        number = Decimal(match["number"])
        if suffix in _BINARY:
            return number * _BINARY[suffix]
        if suffix in _DECIMAL:
            return number * _DECIMAL[suffix]
        return number * Decimal(10) ** int(suffix[1:])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid numbers
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc


def cpu_millis(value: str) -> int:
    """CPU in millicores (`"500m"` -> 500, `"4"` -> 4000); Kubernetes rounds up below 1m."""
    quantity = parse_quantity(value)
    if quantity <= 0:
        raise ValueError(f"{value!r} must be a positive CPU quantity such as 500m or 4")
    return int((quantity * 1000).to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(value: str) -> int:
    """Memory in bytes (`"16Gi"` -> 17179869184)."""
    quantity = parse_quantity(value)
    if quantity <= 0:
        raise ValueError(f"{value!r} must be a positive memory quantity such as 512Mi or 16Gi")
    return int(quantity.to_integral_value(rounding="ROUND_CEILING"))


def format_gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def format_cpu(millis: float) -> str:
    return f"{millis / 1000:.2f} CPU"
