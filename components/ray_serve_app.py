"""One Ray Serve deployment as a KubeRay RayService, plus what KubeRay does not make itself.

Owns: registering the RayService rendered by components/render/rayservice.py, a PodDisruptionBudget
for its worker pods, a NetworkPolicy for its pods and a Managed Prometheus PodMonitoring, and
exporting the names and pod selector the ingress tier and the `smoke` outputs need. With a model
bucket in the spec: the workers' Kubernetes ServiceAccount and the bucket read grant
(roles/storage.objectViewer) to its Workload Identity principal.
Does not own: the manifest's content (the pure renderer), the serve config (infra/), the operator
and its CRDs (components/kuberay_operator.py; the program orders this after it), the namespace, the
bucket itself, or the providers (the program passes Kubernetes' in `opts`, GCP's in `args`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.render import rayservice as render


class DeployedRedis(TypedDict):
    """A Redis known only at deploy: where it listens and its AUTH string."""

    address: pulumi.Input[str]
    """host:port."""
    password: pulumi.Input[str]


class RayServeAppArgs(TypedDict):
    """Inputs of RayServeApp."""

    spec: render.RayServiceSpec
    """The RayService, as plain validated values: its name and namespace name the children and
    are checked before anything registers, so this one argument is deliberately not an Output."""
    ingress_pod_labels: pulumi.Input[Mapping[str, str]]
    """Labels of the ingress tier's pods: the only pods admitted to 8000/9000."""
    ingress_namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the ingress tier's pods. Default: the RayService's namespace."""
    redis: NotRequired[DeployedRedis]
    """The head's Redis when it is created with the stack (a Memorystore instance): its address
    replaces the spec's REDIS_ADDRESS_AT_DEPLOY, and its password becomes the Secret the spec
    names. Required when the spec's Redis address is REDIS_ADDRESS_AT_DEPLOY."""
    operator_namespace: NotRequired[pulumi.Input[str]]
    """KubeRay operator's namespace, admitted to the dashboard (8265) and Serve health (8000).
    Default: kuberay-system."""
    pdb_min_available: NotRequired[pulumi.Input[int]]
    """Worker pods voluntary disruptions must leave running. Default: the workers' min_replicas
    minus one (drains take one worker at a time). A plain int that leaves no worker evictable at
    min_replicas (>= it, and > 0) is rejected: it would block every node drain."""
    pod_monitoring: NotRequired[bool]
    """Register the Managed Prometheus PodMonitoring (needs GKE Managed Service for Prometheus).
    Default: True."""
    gcp_provider: NotRequired[pulumi.ProviderResource]
    """The GCP provider of the bucket read grant. Required when the spec has a model bucket."""
    project_id: NotRequired[pulumi.Input[str]]
    """The cluster's project id: its Workload Identity pool is `<project_id>.svc.id.goog`. Required
    when the spec has a model bucket."""
    project_number: NotRequired[pulumi.Input[str]]
    """The cluster's project number (Workload Identity principals name the project by number).
    Required when the spec has a model bucket."""


def _bucket_access(
    name: str, args: RayServeAppArgs
) -> tuple[pulumi.ProviderResource, pulumi.Input[str], pulumi.Input[str]]:
    """The GCP provider, project id and number a model bucket's read grant needs; raises if absent."""
    provider = args.get("gcp_provider")
    project_id = args.get("project_id")
    project_number = args.get("project_number")
    if provider is None or project_id is None or project_number is None:
        given = {
            "gcp_provider": provider,
            "project_id": project_id,
            "project_number": project_number,
        }
        missing = [k for k, v in given.items() if v is None]
        raise ValueError(
            f"RayServeApp {name!r}: spec.model_bucket needs args {', '.join(missing)} "
            "to grant the workers read on the bucket"
        )
    return provider, project_id, project_number


def workload_identity_principal(
    project_number: str, project_id: str, namespace: str, service_account: str
) -> str:
    """The IAM principal of a Kubernetes service account under Workload Identity Federation for GKE."""
    return (
        f"principal://iam.googleapis.com/projects/{project_number}/locations/global/"
        f"workloadIdentityPools/{project_id}.svc.id.goog/subject/ns/{namespace}/sa/{service_account}"
    )


class RayServeApp(pulumi.ComponentResource):
    """A RayService and its PodDisruptionBudget, NetworkPolicy and PodMonitoring (and, with a model
    bucket, the workers' ServiceAccount and its read grant on the bucket)."""

    name: pulumi.Output[str]
    """The RayService's name."""
    namespace: pulumi.Output[str]
    """The RayService's namespace."""
    serve_service_name: pulumi.Output[str]
    """`<name>-serve-svc`: headless, KubeRay keeps it on the active cluster's serving pods (8000 and
    9000) and moves it only when it promotes a new cluster; the HAProxy tier resolves it."""

    def __init__(
        self, name: str, args: RayServeAppArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:ray_service:RayServeApp", name, None, opts)
        spec = args["spec"]
        manifest = render.render_rayservice(spec)  # raises on a spec KubeRay would reject
        floor = render.worker_floor(spec)
        min_available = args.get("pdb_min_available", render.default_pdb_min_available(floor))
        if (problem := render.check_pdb_min_available(min_available, floor)) is not None:
            raise ValueError(f"RayServeApp {name!r}: {problem}")
        ft, redis = spec.gcs_fault_tolerance, args.get("redis")
        if (ft is not None and ft.redis_address == render.REDIS_ADDRESS_AT_DEPLOY) != (
            redis is not None
        ):
            raise ValueError(
                f"RayServeApp {name!r}: args.redis (a Redis created with the stack) goes with a "
                "spec whose Redis address is REDIS_ADDRESS_AT_DEPLOY, and only with one"
            )
        bucket = spec.model_bucket
        # Children do not inherit the component's depends_on; pass it on so the RayService waits for
        # the operator and its CRDs when the program says so.
        child = pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts else None)

        rayservice_opts = child
        if bucket is not None:
            gcp_provider, project_id, project_number = _bucket_access(name, args)
            reader = k8s.core.v1.ServiceAccount(
                f"{name}-model-reader",
                metadata=render.render_model_reader(spec)["metadata"],
                opts=child,
            )
            principal = pulumi.Output.all(project_number, project_id).apply(
                lambda p: workload_identity_principal(
                    p[0], p[1], spec.namespace, bucket.service_account
                )
            )
            grant = gcp.storage.BucketIAMMember(
                f"{name}-model-reader",
                bucket=bucket.bucket,
                role="roles/storage.objectViewer",
                member=principal,
                opts=pulumi.ResourceOptions(parent=self, provider=gcp_provider),
            )
            # Pods naming a missing service account are refused, and the sidecar's mount fails
            # without the grant: the workers start only after both exist.
            rayservice_opts = pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[reader, grant])
            )

        rayservice_spec: pulumi.Input[dict] = manifest["spec"]
        if ft is not None and redis is not None:
            secret = render.render_redis_secret(spec, "")
            password = k8s.core.v1.Secret(
                f"{name}-redis",
                metadata=secret["metadata"],
                type=secret["type"],
                string_data={ft.password_secret_key: pulumi.Output.secret(redis["password"])},
                opts=child,
            )
            rayservice_spec = pulumi.Output.from_input(redis["address"]).apply(
                lambda address: _with_redis_address(manifest["spec"], address)
            )
            rayservice_opts = pulumi.ResourceOptions.merge(
                rayservice_opts, pulumi.ResourceOptions(depends_on=[password])
            )
        k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=rayservice_spec,
            opts=rayservice_opts,
        )

        pdb = pulumi.Output.from_input(min_available).apply(
            lambda n: render.render_worker_pdb(spec, n)
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-workers-pdb",
            metadata=pdb["metadata"],
            spec=pdb["spec"],
            opts=child,
        )

        policy = pulumi.Output.all(
            args["ingress_pod_labels"],
            args.get("ingress_namespace", spec.namespace),
            args.get("operator_namespace", "kuberay-system"),
        ).apply(lambda a: render.render_network_policy(spec, a[0], a[1], a[2]))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=policy["metadata"],
            spec=policy["spec"],
            opts=child,
        )

        if args.get("pod_monitoring", True):
            monitor = render.render_pod_monitoring(spec)
            k8s.apiextensions.CustomResource(
                f"{name}-podmonitoring",
                api_version=monitor["apiVersion"],
                kind=monitor["kind"],
                metadata=monitor["metadata"],
                spec=monitor["spec"],
                opts=child,
            )

        # From the spec, not the CustomResource: its outputs are unknown until the operator
        # reconciles.
        self.name = pulumi.Output.from_input(spec.name)
        self.namespace = pulumi.Output.from_input(spec.namespace)
        self.serve_service_name = pulumi.Output.from_input(render.serve_service_name(spec.name))
        self.register_outputs(
            {
                "name": self.name,
                "namespace": self.namespace,
                "serve_service_name": self.serve_service_name,
            }
        )


def _with_redis_address(spec: dict, address: str) -> dict:
    """The RayService spec with the Redis address known at deploy."""
    cluster = {**spec["rayClusterConfig"]}
    cluster["gcsFaultToleranceOptions"] = {
        **cluster["gcsFaultToleranceOptions"],
        "redisAddress": address,
    }
    return {**spec, "rayClusterConfig": cluster}
