"""The policy controls (CIS GKE Benchmark v1.6 + Kubernetes hardening): the catalogue and `evaluate`.

Owns: each control's id (the CIS GKE id where one exists, RAYGKE-* otherwise), title, severity,
environment scope and remediation, which check it runs, and `evaluate`, which runs them over a
resource inventory in a deterministic order. Does not own: the checks themselves (policy/gke_checks.py,
policy/k8s_checks.py), what they read (policy/inventory.py), printing (policy/report.py), the
pulumi_policy adapter (policy/pack/__main__.py), or any resource definition. Neither it nor the modules
it imports import `pulumi` or `pulumi_policy`, so the policy pack's own environment can load it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from policy import gke_checks as gke
from policy import k8s_checks as k8s
from policy import project_checks as project
from policy.inventory import (
    UNKNOWN,
    Check,
    InventoryLike,
    Resource,
    ResourceLike,
    Resources,
    all_of,
)

# UNKNOWN and Resource(s) live where the checks use them and are re-exported here, so
# `from policy.controls import X` serves every caller (policy/__init__.py, the pack).
__all__ = [
    "ALL_ENVIRONMENTS",
    "CONTROLS",
    "CONTROLS_BY_ID",
    "ENVIRONMENTS",
    "UNKNOWN",
    "Control",
    "Environment",
    "Resource",
    "Resources",
    "Severity",
    "Violation",
    "binds",
    "evaluate",
    "mandatory",
]

Severity = Literal["mandatory", "advisory"]
Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
ALL_ENVIRONMENTS: frozenset[str] = frozenset(ENVIRONMENTS)


@dataclass(frozen=True)
class Violation:
    control_id: str
    title: str
    severity: Severity
    resource_type: str
    resource_name: str
    message: str
    remediation: str
    urn: str = ""


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    severity: Severity
    remediation: str
    check: Check = field(repr=False)
    environments: frozenset[str] = ALL_ENVIRONMENTS
    """Where the control applies at all (secrets encryption, deletion protection: prod)."""
    advisory_in: frozenset[str] = frozenset()
    """Where a mandatory control only advises (dev's open control plane, for laptops)."""

    @property
    def cis(self) -> bool:
        return not self.id.startswith("RAYGKE-")

    def applies_to(self, environment: str) -> bool:
        return environment in self.environments

    def severity_in(self, environment: str) -> Severity:
        return "advisory" if environment in self.advisory_in else self.severity


# ---------------------------------------------------------------------------------------------- catalogue
NO_KEY = "no stack key sets this: "
PROD_ONLY = frozenset({"prod"})

CONTROLS: tuple[Control, ...] = (
    Control(
        "5.2.1",
        "Node pools do not run as the Compute Engine default service account",
        "mandatory",
        NO_KEY + "components/cluster.py creates a dedicated node service account and "
        "infra/program.py passes it to every pool (node_service_account_email); keep it",
        gke.pool_check(gke.node_service_account),
    ),
    Control(
        "5.2.2",
        "Workload Identity is enabled on the cluster",
        "mandatory",
        NO_KEY + "components/cluster.py sets workloadIdentityConfig.workloadPool from gcp:project "
        "(<project>.svc.id.goog); keep it",
        gke.cluster_check(gke.workload_identity),
    ),
    Control(
        "5.4.2",
        "Nodes use the GKE metadata server",
        "mandatory",
        NO_KEY + "components/cluster.py and components/gpu_node_pool.py set "
        "nodeConfig.workloadMetadataConfig.mode GKE_METADATA; keep it",
        gke.pool_check(gke.metadata_server),
    ),
    Control(
        "5.3.1",
        "Kubernetes Secrets are encrypted with a Cloud KMS key",
        "mandatory",
        "set ray-serve-gke:cluster.kmsKey to projects/P/locations/L/keyRings/R/cryptoKeys/K "
        "(`gcloud kms keys list`)",
        gke.cluster_check(gke.secrets_encryption),
        environments=PROD_ONLY,
    ),
    Control(
        "5.5.1",
        "Nodes run Container-Optimized OS with containerd",
        "mandatory",
        NO_KEY + "components/cluster.py and components/gpu_node_pool.py set nodeConfig.imageType "
        "COS_CONTAINERD; keep it",
        gke.pool_check(gke.cos_containerd),
    ),
    Control(
        "5.5.2",
        "Node auto-repair is on",
        "mandatory",
        NO_KEY + "the node pool components set management.autoRepair true (false only on "
        "flex-start pools, as GKE requires); keep it",
        gke.pool_check(gke.management("autoRepair")),
    ),
    Control(
        "5.5.3",
        "Node auto-upgrade is on",
        "mandatory",
        NO_KEY + "the node pool components set management.autoUpgrade true; keep it",
        gke.pool_check(gke.management("autoUpgrade")),
    ),
    Control(
        "5.5.4",
        "The cluster follows a release channel",
        "mandatory",
        "set ray-serve-gke:cluster.releaseChannel to RAPID, REGULAR or STABLE",
        gke.cluster_check(gke.release_channel),
    ),
    Control(
        "5.5.5",
        "Shielded GKE nodes are on",
        "mandatory",
        NO_KEY + "components/cluster.py sets enableShieldedNodes true; keep it",
        gke.cluster_check(gke.shielded_nodes),
    ),
    Control(
        "5.5.6",
        "Shielded nodes monitor their integrity",
        "mandatory",
        NO_KEY + "the node pool components set nodeConfig.shieldedInstanceConfig."
        "enableIntegrityMonitoring true; keep it",
        gke.pool_check(gke.integrity_monitoring),
    ),
    Control(
        "5.5.7",
        "Shielded nodes boot securely",
        "mandatory",
        NO_KEY + "the node pool components set nodeConfig.shieldedInstanceConfig.enableSecureBoot "
        "true (changing it replaces the pool); keep it",
        gke.pool_check(gke.secure_boot),
    ),
    Control(
        "5.6.3",
        "Control-plane authorized networks are on and exclude 0.0.0.0/0",
        "mandatory",
        "list your VPN and CI ranges in ray-serve-gke:cluster.authorizedNetworks instead of 0.0.0.0/0",
        gke.cluster_check(gke.authorized_networks),
        advisory_in=frozenset({"dev"}),  # dev opens the control plane to laptops on purpose
    ),
    Control(
        "5.6.5",
        "Nodes are private (no public IPs)",
        "mandatory",
        NO_KEY + "components/cluster.py sets privateClusterConfig.enablePrivateNodes true; keep it "
        "(turning it on later recreates the cluster)",
        gke.private_nodes,
    ),
    Control(
        "5.6.7",
        "NetworkPolicy is enforced (Dataplane V2 or the network-policy add-on)",
        "mandatory",
        NO_KEY
        + "components/cluster.py sets datapathProvider ADVANCED_DATAPATH (Dataplane V2); keep it",
        gke.cluster_check(gke.network_policy),
    ),
    Control(
        "5.8.1",
        "Client certificate authentication is off",
        "mandatory",
        NO_KEY + "components/cluster.py sets masterAuth.clientCertificateConfig."
        "issueClientCertificate false; keep it",
        gke.cluster_check(gke.client_certificates),
    ),
    Control(
        "5.8.3",
        "Legacy authorization (ABAC) is off",
        "mandatory",
        NO_KEY + "components/cluster.py sets enableLegacyAbac false; keep it",
        gke.cluster_check(gke.legacy_abac),
    ),
    Control(
        "RAYGKE-GKE-1",
        "The cluster has deletion protection",
        "mandatory",
        "set ray-serve-gke:cluster.deletionProtection: true",
        gke.cluster_check(gke.deletion_protection),
        environments=PROD_ONLY,
    ),
    Control(
        "RAYGKE-GKE-3",
        "GPU serving never scales to zero (GPU pools and Ray worker groups keep one)",
        "mandatory",
        "set ray-serve-gke:gpuPool.minNodes and ray-serve-gke:rayService.workers.minReplicas to 1 "
        "or more",
        all_of(gke.pool_check(gke.gpu_pool_floor), k8s.ray_worker_floor),
        environments=PROD_ONLY,
    ),
    Control(
        "RAYGKE-GKE-2",
        "GPU node pools are tainted nvidia.com/gpu:NO_SCHEDULE",
        "mandatory",
        NO_KEY + "components/gpu_node_pool.py taints every GPU pool nvidia.com/gpu=present:"
        "NO_SCHEDULE and the Ray workers tolerate it; keep both",
        gke.pool_check(gke.gpu_taint),
    ),
    Control(
        "RAYGKE-NET-1",
        "External load balancers restrict their source ranges",
        "mandatory",
        "list the client ranges in ray-serve-gke:ingress.sourceRanges instead of 0.0.0.0/0, or set "
        "ray-serve-gke:ingress.exposure: internal",
        k8s.load_balancer_ranges,
        advisory_in=frozenset({"dev"}),
    ),
    Control(
        "RAYGKE-K8S-1",
        "Ray dashboard, GCS and client ports (8265/6379/10001) are closed by a NetworkPolicy",
        "mandatory",
        NO_KEY + "components/render/rayservice.py (render_network_policy) admits the head's "
        "control ports only from the RayService's own pods and the KubeRay operator's; keep it so",
        k8s.ray_ports_closed,
    ),
    Control(
        "RAYGKE-K8S-2",
        "Every container requests CPU and memory and limits memory",
        "mandatory",
        NO_KEY
        + "components/render/ingress_tier.py sizes the ingress containers; keep requests.cpu, "
        "requests.memory and limits.memory on every container",
        k8s.container_check(
            k8s.container_resources,
            ray_remediation="set ray-serve-gke:rayService.head {cpu, memory} and "
            "ray-serve-gke:rayService.workers {cpu, memory}",
        ),
    ),
    Control(
        "4.6.3",
        "Every container has a restrictive securityContext",
        "mandatory",
        NO_KEY + "components/render/rayservice.py and components/render/ingress_tier.py set "
        "allowPrivilegeEscalation false and capabilities.drop [ALL] on every container; keep it",
        k8s.container_check(k8s.security_context),
    ),
    Control(
        "RAYGKE-K8S-3",
        "Container images are pinned (a tag other than latest, or a digest)",
        "mandatory",
        "pin ray-serve-gke:ingress.image to a version tag (e.g. haproxy:3.2.8-alpine)",
        k8s.container_check(
            k8s.image_pinned,
            ray_remediation="the Ray image is ray-serve-gke:ray.imageRepository tagged "
            "<ray.version>-py311-gpu; set ray-serve-gke:ray.version to a release such as 2.60.0",
        ),
    ),
    Control(
        "RAYGKE-K8S-5",
        "RayServices keep their apps through a head restart (GCS fault tolerance on Redis)",
        "mandatory",
        "set ray-serve-gke:rayService.faultTolerance {enabled: true, redisAddress, redisPassword}",
        k8s.gcs_fault_tolerance,
        environments=PROD_ONLY,
    ),
    Control(
        "RAYGKE-DEP-1",
        "Every GCP resource's API, and every API a cluster feature calls, is enabled by the stack",
        "mandatory",
        NO_KEY + "the program enables what components/render/apis.py lists for the stack "
        "(components/project_apis.py, infra/specs.py stack_apis); a new resource type or feature "
        "is one row there",
        project.apis_enabled,
    ),
    Control(
        "RAYGKE-DEP-2",
        "Every feature that acts as a Google identity has its IAM grant in the stack",
        "mandatory",
        NO_KEY + "components/cluster.py grants GKE's service agent the Secrets key and the nodes "
        "Artifact Registry reads; components/ray_serve_app.py grants the workers the model bucket",
        project.feature_grants,
    ),
    # Advisory: a digest exists only once CI has pushed the image, and the shipped stacks cannot
    # invent one. The deploy workflow sets ray.imageDigest from the build (and the HAProxy digest
    # it resolved) before `pulumi up`.
    Control(
        "RAYGKE-K8S-4",
        "Prod images are pinned by digest",
        "advisory",
        "pin ray-serve-gke:ingress.image as repo:tag@sha256:<digest> (e.g. from `docker "
        "buildx imagetools inspect haproxy:3.2.8-alpine`)",
        k8s.container_check(
            k8s.image_digest,
            ray_remediation="set ray-serve-gke:ray.imageDigest to the sha256 digest CI pushed for "
            "<ray.imageRepository>:<ray.version>-py311-gpu (the deploy workflow does)",
        ),
        environments=PROD_ONLY,
    ),
)
CONTROLS_BY_ID: dict[str, Control] = {c.id: c for c in CONTROLS}


# ---------------------------------------------------------------------------------------------- evaluate
def _as_inventory(inventory: InventoryLike | Iterable[ResourceLike]) -> InventoryLike:
    resources = getattr(inventory, "resources", None)
    if resources is None:  # a plain iterable of resources
        resources = cast("Iterable[ResourceLike]", inventory)
    return Resources(list(resources))


def evaluate(
    inventory: InventoryLike | Iterable[ResourceLike],
    environment: str,
    controls: Sequence[Control] = CONTROLS,
) -> list[Violation]:
    """Every violation of `controls` (all by default) that applies to `environment`.

    Ordered by the catalogue's order, then resource type, name and message, so the output of one
    inventory never changes between runs.
    """
    if environment not in ENVIRONMENTS:
        raise ValueError(
            f"environment must be one of {', '.join(ENVIRONMENTS)} (ray-serve-gke:environment); "
            f"got {environment!r}"
        )
    inv = _as_inventory(inventory)
    violations: list[Violation] = []
    for control in controls:
        if not control.applies_to(environment):
            continue
        found = sorted(
            control.check(inv), key=lambda f: (f.resource.type, f.resource.name, f.message)
        )
        for f in found:
            violations.append(
                Violation(
                    control_id=control.id,
                    title=control.title,
                    severity=control.severity_in(environment),
                    resource_type=f.resource.type,
                    resource_name=f.resource.name,
                    message=f.message,
                    remediation=f.remediation or control.remediation,
                    urn=f.resource.urn,
                )
            )
    return violations


def binds(control_id: str, environment: str) -> bool:
    """Whether a control fails a plan in `environment`: where a stack rule that enforces it binds."""
    control = CONTROLS_BY_ID[control_id]
    return control.applies_to(environment) and control.severity_in(environment) == "mandatory"


def mandatory(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "mandatory"]
