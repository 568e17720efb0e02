"""The checks of what a first `pulumi up` needs besides the resources themselves (RAYGKE-DEP-*).

Owns: reading, over a whole inventory, whether each GCP resource's API and each GKE feature's API is
enabled by a `gcp:projects/service:Service` in it (the table: components/render/apis.py), and
whether each feature that acts as a Google identity has its grant there: GKE's service agent on the
Secrets-encryption key, the nodes' account on Artifact Registry, the Ray workers' principal on the
model bucket. Each finding names the resource that needs it and what is missing. Does not own a
control's id, severity or remediation (policy/controls.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from components.render.apis import (
    FEATURE_APIS,
    GKE_SERVICE_AGENT_DOMAIN,
    KMS_ENCRYPTER_ROLE,
    api_for,
    in_artifact_registry,
)
from components.render.rayservice import GCSFUSE_DRIVER
from policy.inventory import (
    Finding,
    InventoryLike,
    ResourceLike,
    as_list,
    as_map,
    is_true,
    is_unknown,
    lookup,
    of_type,
)
from policy.k8s_checks import containers, pod_specs

SERVICE = "gcp:projects/service:Service"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
KMS_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
PROJECT_GRANT = "gcp:projects/iAMMember:IAMMember"
BUCKET_GRANT = "gcp:storage/bucketIAMMember:BucketIAMMember"
REGISTRY_READERS = ("roles/artifactregistry.reader", "roles/artifactregistry.writer")
BUCKET_READERS = (
    "roles/storage.objectViewer",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
)


def _enabled(inventory: InventoryLike) -> set[str]:
    return {str(r.inputs.get("service")) for r in of_type(inventory, SERVICE)}


def _cluster_features(cluster: ResourceLike, pools: list[ResourceLike]) -> list[str]:
    inputs = cluster.inputs
    features = []
    streaming = [lookup(inputs, "nodePoolDefaults.nodeConfigDefaults.gcfsConfig.enabled")]
    streaming += [lookup(p.inputs, "nodeConfig.gcfsConfig.enabled") for p in pools]
    if any(is_true(s) for s in streaming):
        features.append("image_streaming")
    if is_true(lookup(inputs, "monitoringConfig.managedPrometheus.enabled")):
        features.append("managed_prometheus")
    if as_list(lookup(inputs, "loggingConfig.enableComponents")):
        features.append("logging")
    return features


def _registry_pulls(inventory: InventoryLike) -> list[tuple[ResourceLike, str]]:
    """Every container image pulled from Artifact Registry, with the object that pulls it."""
    return [
        (c.resource, image)
        for c in containers(inventory)
        if isinstance(image := c.spec.get("image"), str) and in_artifact_registry(image)
    ]


def apis_enabled(inventory: InventoryLike) -> Iterator[Finding]:
    """Each GCP resource, and each feature the cluster turns on, has its API enabled."""
    enabled = _enabled(inventory)
    for r in inventory.resources:
        api = api_for(r.type)
        if api is not None and api not in enabled:
            yield Finding(r, f"needs {api}, which no {SERVICE} in the stack enables")
    pools = of_type(inventory, NODE_POOL)
    for cluster in of_type(inventory, CLUSTER):
        for feature in _cluster_features(cluster, pools):
            if FEATURE_APIS[feature] not in enabled:
                yield Finding(
                    cluster,
                    f"turns on {feature.replace('_', ' ')}, which calls {FEATURE_APIS[feature]}; "
                    f"no {SERVICE} in the stack enables it",
                )
    registry_api = FEATURE_APIS["artifact_registry"]
    pulls = _registry_pulls(inventory)
    if pulls and registry_api not in enabled:
        r, image = pulls[0]
        yield Finding(
            r, f"pulls {image} from Artifact Registry; no {SERVICE} enables {registry_api}"
        )


def feature_grants(inventory: InventoryLike) -> Iterator[Finding]:
    """Each feature that acts as a Google identity has its IAM grant in the stack."""
    yield from _kms_grants(inventory)
    yield from _registry_grants(inventory)
    yield from _bucket_grants(inventory)


def _kms_grants(inventory: InventoryLike) -> Iterator[Finding]:
    granted = {
        str(g.inputs.get("cryptoKeyId"))
        for g in of_type(inventory, KMS_GRANT)
        if g.inputs.get("role") == KMS_ENCRYPTER_ROLE
        and GKE_SERVICE_AGENT_DOMAIN in str(g.inputs.get("member"))
    }
    for cluster in of_type(inventory, CLUSTER):
        encryption = as_map(cluster.inputs.get("databaseEncryption"))
        key = encryption.get("keyName")
        if encryption.get("state") != "ENCRYPTED" or not key or is_unknown(key):
            continue
        if key not in granted:
            yield Finding(
                cluster,
                f"encrypts Secrets with {key}, but GKE's service agent "
                f"(service-<project number>@{GKE_SERVICE_AGENT_DOMAIN}) is granted no {KMS_ENCRYPTER_ROLE} on it: "
                "GKE refuses to create the cluster",
            )


def _registry_grants(inventory: InventoryLike) -> Iterator[Finding]:
    pulls = [image for _, image in _registry_pulls(inventory)]
    if not pulls:
        return
    readers = {
        str(g.inputs.get("member"))
        for g in of_type(inventory, PROJECT_GRANT)
        if g.inputs.get("role") in REGISTRY_READERS
    }
    for pool in [*of_type(inventory, NODE_POOL), *of_type(inventory, CLUSTER)]:
        account = lookup(pool.inputs, "nodeConfig.serviceAccount")
        if not isinstance(account, str) or is_unknown(account):
            continue
        if f"serviceAccount:{account}" not in readers:
            yield Finding(
                pool,
                f"nodes run as {account}, which may not read Artifact Registry: {pulls[0]} "
                "would fail to pull (ImagePullBackOff)",
            )


def _bucket_grants(inventory: InventoryLike) -> Iterator[Finding]:
    readable = {
        str(g.inputs.get("bucket"))
        for g in of_type(inventory, BUCKET_GRANT)
        if g.inputs.get("role") in BUCKET_READERS
    }

    mounts: dict[str, tuple[ResourceLike, set[str]]] = {}
    for r, _, pod in pod_specs(inventory):
        for volume in as_list(lookup(pod, "volumes")):
            csi = as_map(lookup(volume, "csi"))
            bucket = lookup(csi, "volumeAttributes.bucketName")
            if csi.get("driver") == GCSFUSE_DRIVER and isinstance(bucket, str):
                mounts.setdefault(r.urn or r.name, (r, set()))[1].add(bucket)
    for r, buckets in mounts.values():
        for bucket in sorted(buckets - readable):
            yield Finding(
                r,
                f"mounts bucket {bucket} with GCS FUSE, but no {BUCKET_GRANT} lets a reader "
                "read it: the mount fails and the pod never starts",
            )
