"""What a user must have before `pulumi up` of a stack, in the order to get it, each with its command.

Owns: the list of things the program uses but does not create (the project, GPU capacity, the image,
and what a stack file says it brings: a KMS key, a Redis, a certificate Secret, a model bucket), the
stack key that names each, and how to create it. `raygke plan` prints them and its JSON carries them;
the rendered graph's reference check (infra/references.py) counts the Kubernetes objects among them
as existing. Does not own what the program creates (the components) nor the deployer's own roles
(docs/delivery.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from components.render.apis import ARTIFACT_REGISTRY_SUFFIX, BOOTSTRAP_APIS
from components.render.gpu_machines import H100_MACHINES
from infra.config import Reservation, StackConfig

Ref = tuple[str, str, str]  # (kind, namespace, name) of a Kubernetes object the user brings


@dataclass(frozen=True)
class Prerequisite:
    what: str
    key: str  # the stack key that names it ("" where none does)
    how: str  # the command (or step) that creates it
    ref: Ref | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ref"] = list(self.ref) if self.ref else None
        return out


def prerequisites(c: StackConfig) -> list[Prerequisite]:
    """In the order a person with an empty project would get them."""
    pool, svc, ns = c.gpu_pool, c.ray_service, c.ray_service.namespace
    shape = H100_MACHINES[pool.machine_type]
    items = [
        Prerequisite(
            f"GCP project {c.project} with billing, and {', '.join(BOOTSTRAP_APIS)} enabled "
            "(on in every new project; the program enables every other API it uses)",
            "gcp:project",
            f"gcloud projects create {c.project} && gcloud billing projects link {c.project} "
            "--billing-account <ACCOUNT>",
        )
    ]
    gpus = pool.max_nodes * shape.accelerator_count
    capacity = pool.capacity
    if isinstance(capacity, Reservation) and capacity.affinity == "specific":
        items.append(
            Prerequisite(
                f"reservation {capacity.name} of {capacity.nodes} x {pool.machine_type} in "
                f"{', '.join(pool.zones)}",
                "gpuPool.capacity",
                f"gcloud compute reservations create {capacity.name} --zone {pool.zones[0]} "
                f"--machine-type {pool.machine_type} --vm-count {capacity.nodes} "
                "--require-specific-reservation (or one Google set up for you)",
            )
        )
    else:
        # Compute Engine's GPU quota metrics: A3 Mega has its own, and Spot and flex-start VMs
        # consume the preemptible one.
        family = "NVIDIA_H100_MEGA_GPUS" if "mega" in pool.accelerator_type else "NVIDIA_H100_GPUS"
        preemptible = capacity.mode in ("spot", "flex-start")
        quota = f"PREEMPTIBLE_{family}" if preemptible else family
        items.append(
            Prerequisite(
                f"quota for {gpus} H100 GPUs ({quota}) in {c.region} for {capacity.mode} "
                f"{pool.machine_type} nodes",
                "gpuPool.maxNodes",
                f"gcloud compute regions describe {c.region} --format='value(quotas)' | tr ';' "
                f"'\\n' | grep {family}, then request more in the console's Quotas page",
            )
        )
    repo = c.ray.image_repository
    registry, _, path = repo.partition("/")
    project, _, rest = path.partition("/")
    repository = rest.partition("/")[0]
    items.append(
        Prerequisite(
            f"the Ray image {c.ray.image} (app/Dockerfile) in Artifact Registry",
            "ray.imageRepository",
            f"gcloud services enable artifactregistry.googleapis.com --project {project} && "
            f"gcloud artifacts repositories create {repository} --repository-format docker "
            f"--location {registry.removesuffix(ARTIFACT_REGISTRY_SUFFIX)} --project {project} && docker "
            f"build -f app/Dockerfile -t {c.ray.image} . && docker push {c.ray.image}",
        )
    )
    if c.cluster.kms_key:
        parts = c.cluster.kms_key.split("/")
        items.append(
            Prerequisite(
                f"Cloud KMS key {c.cluster.kms_key} (the program grants GKE's service agent "
                "encrypt/decrypt on it)",
                "cluster.kmsKey",
                f"gcloud services enable cloudkms.googleapis.com --project {parts[1]} && "
                f"gcloud kms keyrings create {parts[5]} --location {parts[3]} --project "
                f"{parts[1]} && gcloud kms keys create {parts[7]} --keyring {parts[5]} "
                f"--location {parts[3]} --purpose encryption --project {parts[1]}",
            )
        )
    if svc.model_bucket is not None:
        bucket = svc.model_bucket.bucket
        items.append(
            Prerequisite(
                f"bucket {bucket} holding the model weights (the program grants the workers read)",
                "rayService.modelBucket.bucket",
                f"gcloud storage buckets create gs://{bucket} --location {c.region} "
                "--uniform-bucket-level-access && gcloud storage cp -r <weights> "
                f"gs://{bucket}/",
            )
        )
    ft = svc.fault_tolerance
    if ft.enabled and ft.redis_address and ft.redis_password is not None:
        secret = ft.redis_password
        items.append(
            Prerequisite(
                f"a Redis at {ft.redis_address} the cluster's pods reach, and Secret "
                f"{ns}/{secret.name} (key {secret.key}) holding its AUTH string, once the "
                "namespace exists (the head waits for it)",
                "rayService.faultTolerance",
                f"kubectl -n {ns} create secret generic {secret.name} "
                f"--from-literal={secret.key}=<AUTH string>",
                ("Secret", ns, secret.name),
            )
        )
    if c.ingress.tls_secret and not c.ingress.tls_from_stack:
        items.append(
            Prerequisite(
                f"Secret {ns}/{c.ingress.tls_secret} (kubernetes.io/tls), once the namespace "
                "exists (the tier's pods wait for it), or set ingress.tlsCertificate and "
                "ingress.tlsKey and the program creates it",
                "ingress.tlsSecret",
                f"kubectl -n {ns} create secret tls {c.ingress.tls_secret} --cert <chain.pem> "
                "--key <key.pem> (or a cert-manager Certificate)",
                ("Secret", ns, c.ingress.tls_secret),
            )
        )
    if c.ray.prometheus_url:
        # An llm app's serving-signal autoscaler reads it (app/autoscaling.py): Managed Service for
        # Prometheus's query frontend (GoogleCloudPlatform/prometheus-engine `frontend`), which
        # proxies the Prometheus HTTP API to the project's Cloud Monitoring as a service account
        # with roles/monitoring.viewer (cloud.google.com/stackdriver/docs/managed-prometheus/query-api-ui).
        items.append(
            Prerequisite(
                f"a Prometheus query API at {c.ray.prometheus_url} the Ray pods reach: Managed "
                "Service for Prometheus's query frontend for this project, its Kubernetes "
                "service account bound through Workload Identity to a Google service account "
                "with roles/monitoring.viewer",
                "ray.prometheusUrl",
                "apply prometheus-engine's frontend manifest (examples/frontend.yaml, with "
                f"--query.project-id={c.project}) and grant its service account: gcloud projects "
                f"add-iam-policy-binding {c.project} --member serviceAccount:<frontend GSA> "
                "--role roles/monitoring.viewer",
            )
        )
    return items


def provided(c: StackConfig) -> list[Ref]:
    """The Kubernetes objects the user brings, for the reference check."""
    return [p.ref for p in prerequisites(c) if p.ref is not None]
