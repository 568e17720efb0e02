"""The KubeRay operator v1.7.0: its CRDs, its namespace and its Helm release.

Owns: applying the CRDs shipped in components/crds (server-side apply, the provider's default in
pulumi-kubernetes 4; they are ~1 MB each, too big for client-side apply's annotation), then the
`kuberay-operator` chart 1.7.0, its feature gates, its placement on the system pool and its resources.
Helm installs a chart's CRDs once and never upgrades them, so the ones we serve with (RayCluster,
RayService) are applied here, first; the chart still installs those we ship no copy of (RayJob, which
the operator needs to start) and skips those already present.
Does not own: the Kubernetes provider (the program passes it in `opts`), any RayService
(components/ray_service.py), or the node pools' labels and taints.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.render.node_pool import SYSTEM_POOL_SELECTOR

KUBERAY_VERSION = "1.7.0"
CHART = "kuberay-operator"
CHART_REPO = "https://ray-project.github.io/kuberay-helm/"
CRD_DIR = Path(__file__).resolve().parent / "crds"
DEFAULT_NAMESPACE = "kuberay-system"
# The chart's own default limits (100m CPU, 512Mi, "about 500 Ray pods"), with requests so the
# scheduler reserves them; CPU limit raised so reconciles of a large serve config are not throttled.
DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "512Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}

# The full feature-gate list of KubeRay 1.7.0 (ray-operator/pkg/features/features.go), each set
# explicitly so an operator upgrade cannot change behaviour behind a version bump.
FEATURE_GATES: dict[str, bool] = {
    # Beta, default on: Ready/HeadPodReady/... conditions on RayCluster status, which RayService
    # health and `kubectl wait` rely on.
    "RayClusterStatusConditions": True,
    # Beta: RayJob deletion policies. Harmless for RayService users; kept at the chart's value.
    "RayJobDeletionPolicy": True,
    # Beta: indexes multi-host (TPU-style) worker replicas. Unused on single-host H100 workers.
    "RayMultiHostIndexing": True,
    # Beta: enables upgradeStrategy NewClusterWithIncrementalUpgrade (Gateway API traffic shifting),
    # zero-downtime upgrades without twice the GPUs.
    "RayServiceIncrementalUpgrade": True,
    # Alpha: scheduled RayJobs. Not needed for serving.
    "RayCronJob": False,
    # Alpha, needs Kubernetes 1.35+: per-container restart for RayJob sidecar submitters. GKE 1.33.
    "SidecarSubmitterRestart": False,
    # Alpha: KubeRay-managed NetworkPolicies (spec.networkPolicy). We write our own, reviewed ones.
    "RayClusterNetworkPolicy": False,
    # Alpha: RocksDB GCS fault-tolerance backend. We use external Redis (Memorystore).
    "GCSFaultToleranceEmbeddedStorage": False,
    # Alpha: mTLS between Ray pods via cert-manager, which this platform does not install.
    "RayClusterMTLS": False,
    # Alpha: history-server collector sidecars. Not part of this platform.
    "RayClusterHistoryServer": False,
    # Alpha: gang scheduling through Kubernetes Workload-Aware Scheduling, absent on GKE 1.33.
    "KubernetesWAS": False,
}


@functools.cache
def crd_documents() -> tuple[str, ...]:
    """The CRD files in components/crds, as text, unchanged (read once per process)."""
    return tuple(p.read_text() for p in sorted(CRD_DIR.glob("ray.io_*.yaml")))


def crd_names() -> list[str]:
    """`ray.io_rayservices.yaml` holds `rayservices.ray.io`."""
    return [f"{p.stem.split('_', 1)[1]}.ray.io" for p in sorted(CRD_DIR.glob("ray.io_*.yaml"))]


def helm_values(
    feature_gates: Mapping[str, bool],
    resources: Mapping[str, Any],
    node_selector: Mapping[str, str],
) -> dict[str, Any]:
    """The chart values: feature gates as the chart's list, placement and resources."""
    return {
        "featureGates": [{"name": k, "enabled": v} for k, v in feature_gates.items()],
        "nodeSelector": dict(node_selector),
        # No GPU toleration: GKE taints GPU nodes, so the operator can never land on one.
        "tolerations": [],
        "resources": dict(resources),
    }


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
