"""Which Google APIs and grants a set of GCP resources and cluster features needs.

Owns: the table from a pulumi-gcp resource type to the API that serves it, the APIs GKE features
call on their own (image streaming, Managed Prometheus, Cloud Logging, image pulls from Artifact
Registry), what an Artifact Registry image is, and the names of the grants features need (GKE's
service agent on a Secrets key). The program enables and grants them (components/project_apis.py,
components/cluster.py); the policy controls RAYGKE-DEP-1/2 check the registered resources against
the same names. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

# pulumi-gcp type token prefix -> the API that serves it. A new resource family is one row.
RESOURCE_APIS: dict[str, str] = {
    "gcp:compute/": "compute.googleapis.com",
    "gcp:container/": "container.googleapis.com",
    "gcp:serviceaccount/": "iam.googleapis.com",
    "gcp:projects/iAMMember": "cloudresourcemanager.googleapis.com",
    "gcp:storage/": "storage.googleapis.com",
    "gcp:kms/": "cloudkms.googleapis.com",
    "gcp:redis/": "redis.googleapis.com",
    "gcp:servicenetworking/": "servicenetworking.googleapis.com",
    "gcp:monitoring/": "monitoring.googleapis.com",
}
# What GKE features call besides the resources' own APIs (GKE docs: image streaming needs the
# Container File System API; Managed Service for Prometheus writes to Cloud Monitoring; node and
# workload logs go to Cloud Logging; nodes pull the Ray image from Artifact Registry).
FEATURE_APIS: dict[str, str] = {
    "image_streaming": "containerfilesystem.googleapis.com",
    "managed_prometheus": "monitoring.googleapis.com",
    "logging": "logging.googleapis.com",
    "artifact_registry": "artifactregistry.googleapis.com",
}
# Enabled in every new project, and needed to enable any other: a prerequisite, never created.
BOOTSTRAP_APIS = ("serviceusage.googleapis.com",)


def api_for(resource_type: str) -> str | None:
    """The API that serves a pulumi-gcp resource type, or None for one outside the table (a
    provider, the API enablement itself)."""
    for prefix, api in RESOURCE_APIS.items():
        if resource_type.startswith(prefix):
            return api
    return None


def apis_for(resource_types: Iterable[str], features: Iterable[str] = ()) -> list[str]:
    """Every API the resources and features need, sorted, each once."""
    needed = {api for t in resource_types if (api := api_for(t)) is not None}
    needed |= {FEATURE_APIS[f] for f in features}
    return sorted(needed)


# Artifact Registry's Docker hosts are `<location>-docker.pkg.dev`.
ARTIFACT_REGISTRY_SUFFIX = "-docker.pkg.dev"


def in_artifact_registry(image: str) -> bool:
    """Whether an image (or repository) reference is served by Artifact Registry."""
    return image.split("/")[0].endswith(ARTIFACT_REGISTRY_SUFFIX)


# GKE's service agent (service-<project number>@...) may use a Secrets-encryption key only with this
# role (GKE docs, "Encrypt Secrets at the application layer").
KMS_ENCRYPTER_ROLE = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
GKE_SERVICE_AGENT_DOMAIN = "container-engine-robot.iam.gserviceaccount.com"
