"""The KubeRay operator v1.7.0: its CRDs, its namespace and its Helm release.

Owns: applying the CRDs shipped in components/crds (server-side apply, the provider's default in
pulumi-kubernetes 4; they are ~1 MB each, too big for client-side apply's annotation), then the
`kuberay-operator` chart 1.7.0, its feature gates, its placement on the system pool and its resources.
Helm installs a chart's CRDs once and never upgrades them, so the ones we serve with (RayCluster,
RayService) are applied here, first; the chart still installs those we ship no copy of (RayJob, which
the operator needs to start) and skips those already present.
Does not own: the Kubernetes provider (the program passes it in `opts`), any RayService
(components/ray_serve_app.py), or the node pools' labels and taints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.render.kuberay_chart import (
    CHART,
    CHART_REPO,
    CRD_DIR,
    DEFAULT_NAMESPACE,
    DEFAULT_RESOURCES,
    FEATURE_GATES,
    KUBERAY_VERSION,
    crd_documents,
    crd_names,
    helm_values,
)
from components.render.node_pool import SYSTEM_POOL_SELECTOR

__all__ = [
    "CHART",
    "CHART_REPO",
    "CRD_DIR",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RESOURCES",
    "FEATURE_GATES",
    "KUBERAY_VERSION",
    "KubeRayOperator",
    "KubeRayOperatorArgs",
    "crd_documents",
    "crd_names",
    "helm_values",
]


class KubeRayOperatorArgs(TypedDict):
    """Inputs of KubeRayOperator; every key is optional."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace created for the operator. Default: kuberay-system."""
    feature_gates: NotRequired[Mapping[str, bool]]
    """Overrides merged over FEATURE_GATES; unknown gate names are rejected."""
    resources: NotRequired[pulumi.Input[Mapping[str, Any]]]
    """Operator container resources. Default: DEFAULT_RESOURCES."""
    node_selector: NotRequired[pulumi.Input[Mapping[str, str]]]
    """Default: {"raygke.io/pool": "system"}."""


class KubeRayOperator(pulumi.ComponentResource):
    """KubeRay CRDs (server-side applied), then the operator's Helm release that depends on them."""

    namespace: pulumi.Output[str]
    """The operator's namespace (a RayService's NetworkPolicy admits it to the dashboard)."""
    release_name: pulumi.Output[str | None]
    """The Helm release's name."""
    crd_names: pulumi.Output[list[str]]
    """Names of the CRDs applied, e.g. rayservices.ray.io."""
    version: pulumi.Output[str]
    """KubeRay version installed (chart and CRDs): 1.7.0."""

    def __init__(
        self,
        name: str,
        args: KubeRayOperatorArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygke:kuberay_operator:KubeRayOperator", name, None, opts)
        args = args or KubeRayOperatorArgs()
        gates = dict(FEATURE_GATES)
        overrides = dict(args.get("feature_gates", {}))
        unknown = sorted(set(overrides) - set(FEATURE_GATES))
        if unknown:
            raise ValueError(
                f"unknown KubeRay {KUBERAY_VERSION} feature gates {unknown}; "
                f"known: {sorted(FEATURE_GATES)}"
            )
        gates.update(overrides)

        child = pulumi.ResourceOptions(parent=self)
        # One ConfigGroup of the unchanged files: applied server-side (the provider's default), and
        # registered as two strings rather than ~2 MB of nested inputs, which keeps plans fast.
        crds = k8s.yaml.v2.ConfigGroup(
            f"{name}-crds", yaml="\n---\n".join(crd_documents()), opts=child
        )

        ns = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={"name": args.get("namespace", DEFAULT_NAMESPACE)},
            opts=child,
        )
        values = pulumi.Output.all(
            args.get("resources", DEFAULT_RESOURCES),
            args.get("node_selector", SYSTEM_POOL_SELECTOR),
        ).apply(lambda rs: helm_values(gates, rs[0], rs[1]))
        release = k8s.helm.v3.Release(
            f"{name}-release",
            k8s.helm.v3.ReleaseArgs(
                name=CHART,
                chart=CHART,
                version=KUBERAY_VERSION,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
                namespace=ns.metadata.name,
                # Helm adds only the CRDs not applied above (RayJob): it skips existing ones.
                skip_crds=False,
                values=values,
                atomic=True,
                cleanup_on_fail=True,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[crds]),
        )

        self.namespace = ns.metadata.name
        self.release_name = release.name
        self.crd_names = pulumi.Output.from_input(crd_names())
        self.version = pulumi.Output.from_input(KUBERAY_VERSION)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "release_name": self.release_name,
                "crd_names": self.crd_names,
                "version": self.version,
            }
        )
