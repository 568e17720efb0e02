"""Pulumi components for Ray Serve on GKE H100s, importable by any Pulumi Python program.

    from components import GkeCluster, H100NodePool, HaproxyIngress, KubeRayOperator, Network, RayServeApp

Each is a `ComponentResource` taking `(name, args, opts)`, `args` a TypedDict of `pulumi.Input`s. The pure
planning code they share lives in `components.render` and never imports pulumi, so the exports below load
on first use: importing `components.render.*` (the local run, the config validation) stays engine-free.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GkeCluster": "components.cluster",
    "GkeClusterArgs": "components.cluster",
    "H100NodePool": "components.gpu_node_pool",
    "H100NodePoolArgs": "components.gpu_node_pool",
    "HaproxyIngress": "components.haproxy_ingress",
    "HaproxyIngressArgs": "components.haproxy_ingress",
    "KubeRayOperator": "components.kuberay_operator",
    "KubeRayOperatorArgs": "components.kuberay_operator",
    "Network": "components.network",
    "NetworkArgs": "components.network",
    "Observability": "components.observability",
    "ObservabilityArgs": "components.observability",
    "RayServeApp": "components.ray_serve_app",
    "RayServeAppArgs": "components.ray_serve_app",
}
__all__ = [
    "GkeCluster",
    "GkeClusterArgs",
    "H100NodePool",
    "H100NodePoolArgs",
    "HaproxyIngress",
    "HaproxyIngressArgs",
    "KubeRayOperator",
    "KubeRayOperatorArgs",
    "Network",
    "NetworkArgs",
    "Observability",
    "ObservabilityArgs",
    "RayServeApp",
    "RayServeAppArgs",
]

if TYPE_CHECKING:
    from components.cluster import GkeCluster as GkeCluster
    from components.cluster import GkeClusterArgs as GkeClusterArgs
    from components.gpu_node_pool import (
        H100NodePool as H100NodePool,
    )
    from components.gpu_node_pool import (
        H100NodePoolArgs as H100NodePoolArgs,
    )
    from components.haproxy_ingress import (
        HaproxyIngress as HaproxyIngress,
    )
    from components.haproxy_ingress import (
        HaproxyIngressArgs as HaproxyIngressArgs,
    )
    from components.kuberay_operator import (
        KubeRayOperator as KubeRayOperator,
    )
    from components.kuberay_operator import (
        KubeRayOperatorArgs as KubeRayOperatorArgs,
    )
    from components.network import Network as Network
    from components.network import NetworkArgs as NetworkArgs
    from components.observability import Observability as Observability
    from components.observability import ObservabilityArgs as ObservabilityArgs
    from components.ray_serve_app import (
        RayServeApp as RayServeApp,
    )
    from components.ray_serve_app import (
        RayServeAppArgs as RayServeAppArgs,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
