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
from typing import Any

from components.render.apis import FEATURE_APIS, api_for
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

SERVICE = "gcp:projects/service:Service"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
KMS_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
PROJECT_GRANT = "gcp:projects/iAMMember:IAMMember"
BUCKET_GRANT = "gcp:storage/bucketIAMMember:BucketIAMMember"
KMS_ROLE = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
GKE_SERVICE_AGENT = "@container-engine-robot.iam.gserviceaccount.com"
REGISTRY_READERS = ("roles/artifactregistry.reader", "roles/artifactregistry.writer")
BUCKET_READERS = (
    "roles/storage.objectViewer",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
)
GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
ARTIFACT_REGISTRY_HOST = "-docker.pkg.dev"


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


def _images(inventory: InventoryLike) -> Iterator[tuple[ResourceLike, str]]:
    """Every container image of every Kubernetes object, wherever its pod templates keep it."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for r in inventory.resources:
        if r.type.startswith("kubernetes:"):
            for image in walk(r.inputs):
                yield r, image


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
    pulls = [(r, i) for r, i in _images(inventory) if ARTIFACT_REGISTRY_HOST in i.split("/")[0]]
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
        if g.inputs.get("role") == KMS_ROLE and GKE_SERVICE_AGENT in str(g.inputs.get("member"))
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
                f"(service-<project number>{GKE_SERVICE_AGENT}) is granted no {KMS_ROLE} on it: "
                "GKE refuses to create the cluster",
            )


def _registry_grants(inventory: InventoryLike) -> Iterator[Finding]:
    pulls = [i for _, i in _images(inventory) if ARTIFACT_REGISTRY_HOST in i.split("/")[0]]
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

    def buckets(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            csi = node.get("csi")
            if isinstance(csi, dict) and csi.get("driver") == GCSFUSE_DRIVER:
                bucket = lookup(csi, "volumeAttributes.bucketName")
                if isinstance(bucket, str):
                    yield bucket
            for value in node.values():
                yield from buckets(value)
        elif isinstance(node, list):
            for item in node:
                yield from buckets(item)

    for r in inventory.resources:
        if not r.type.startswith("kubernetes:"):
            continue
        for bucket in sorted(set(buckets(r.inputs))):
            if bucket not in readable:
                yield Finding(
                    r,
                    f"mounts bucket {bucket} with GCS FUSE, but no {BUCKET_GRANT} lets a reader "
                    "read it: the mount fails and the pod never starts",
                )
