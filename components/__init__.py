"""Pulumi components for Ray Serve on GKE H100s, importable by any Pulumi Python program.

    from components import GkeCluster, H100NodePool, HaproxyIngress, KubeRayOperator, Network, RayServeApp

Each is a `ComponentResource` taking `(name, args, opts)`, `args` a TypedDict of `pulumi.Input`s; the pure
planning code they share lives in `components.render` and never imports pulumi.
"""

from components.cluster import GkeCluster, GkeClusterArgs
from components.gpu_node_pool import H100NodePool, H100NodePoolArgs
from components.haproxy_ingress import HaproxyIngress, HaproxyIngressArgs
from components.kuberay_operator import KubeRayOperator, KubeRayOperatorArgs
from components.network import Network, NetworkArgs
from components.ray_service import RayServeApp, RayServeAppArgs

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
    "RayServeApp",
    "RayServeAppArgs",
]
