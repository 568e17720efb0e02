"""What a hardened pod means here, once for every renderer (Ray pods, our tier).

Owns the pod-level securityContext shape: a fixed non-root UID and group, fsGroup so volumes that
support ownership are writable by that user, and RuntimeDefault seccomp. Does not own which UID a
workload runs as (its renderer knows its image) nor container-level settings that differ by image
(read-only root for our tier, not for Ray).
"""

from __future__ import annotations

from typing import Any


def non_root_pod_security_context(uid: int, gid: int) -> dict[str, Any]:
    """A fresh pod securityContext: a changed image cannot silently run as root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
