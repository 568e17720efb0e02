"""The KubeRay operator as plain data: its version, chart, CRD files, feature gates and chart values.

Owns what the operator component installs (components/kuberay_operator.py registers it) and what the
stack's scheduling check reads of the operator's pod, so both read one set of values. Pure: no pulumi.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KUBERAY_VERSION = "1.7.0"
CHART = "kuberay-operator"
CHART_REPO = "https://ray-project.github.io/kuberay-helm/"
CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
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
