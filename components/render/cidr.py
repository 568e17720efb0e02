"""What "open to anywhere" means for an address range, once for every rule that asks.

Owns the predicates the stack's rules and the policy pack's checks share: one range open to every
address (`is_anywhere`), and a set of ranges whose union is (`covers_everything`).
Does not own which ranges a rule looks at, nor whether an open range is allowed (its rule's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any


def is_anywhere(cidr: str) -> bool:
    """Whether `cidr` admits every address of its family (0.0.0.0/0, ::/0, or written otherwise,
    such as 0.0.0.0/0 with host bits); raises ValueError for a value that is not a CIDR."""
    return ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def open_cidrs(cidrs: Iterable[Any]) -> list[str]:
    """The CIDRs among `cidrs` that admit every address; a value that is not a CIDR (unknown during
    preview) is skipped: GKE itself rejects a malformed one."""
    open_ones = []
    for cidr in cidrs:
        try:
            if is_anywhere(str(cidr)):
                open_ones.append(str(cidr))
        except ValueError:
            continue
    return open_ones


def covers_everything(cidrs: Iterable[str]) -> str | None:
    """The family ("IPv4" or "IPv6") whose every address the UNION of `cidrs` admits, or None:
    0.0.0.0/1 with 128.0.0.0/1 opens as much as 0.0.0.0/0. Raises ValueError for a non-CIDR."""
    by_family: dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {4: [], 6: []}
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        by_family[net.version].append(net)
    for version, nets in by_family.items():
        collapsed = ipaddress.collapse_addresses(nets)  # type: ignore[arg-type]
        if any(net.prefixlen == 0 for net in collapsed):
            return f"IPv{version}"
    return None
