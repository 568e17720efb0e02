"""What "open to anywhere" means for an address range, once for every rule that asks.

Owns the predicate (`is_anywhere`) the stack config's prod rules and the policy pack's checks share.
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
