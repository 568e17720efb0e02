"""The Pulumi program: validated stack config in, components wired in dependency order, outputs out.

Thin on purpose: every decision lives in the config (infra/config.py), the Serve config builder
(infra/serve_config.py) or a component. This module only maps one onto the other.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.cluster import GkeCluster, GkeClusterArgs
from components.gpu_node_pool import H100NodePool
from components.haproxy_ingress import HaproxyIngress, HaproxyIngressArgs
from components.kuberay_operator import KubeRayOperator
from components.memorystore import Memorystore
from components.network import Network
from components.observability import Observability
from components.project_apis import ProjectApis
from components.ray_serve_app import RayServeApp, RayServeAppArgs
from components.render import rayservice as rs
from components.render.gpu_machines import H100_MACHINES
from infra import specs
from infra.config import StackConfig
from infra.cost import estimate_cost
from infra.outputs import smoke_contract
from infra.specs import gpu_capacity, rayservice_spec
from infra.stack_file import load_pulumi_stack_config


def define(config: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs."""
    name = config.cluster.name
    spec = rayservice_spec(config)  # rendered (and checked) before the first resource registers
    if problems := rs.check_rayservice_spec(spec):
        raise ValueError("; ".join(problems))

    # The APIs first, on a provider of their own: every other GCP resource uses `gcp_provider`,
    # which is created only once they are enabled, so nothing reaches an API still off.
    apis = ProjectApis(
        "apis",
        {"project": config.project, "apis": specs.stack_apis(config)},
        opts=pulumi.ResourceOptions(
            provider=gcp.Provider("gcp-apis", project=config.project, region=config.region)
        ),
    )
    gcp_provider = gcp.Provider(
        "gcp",
        project=config.project,
        region=config.region,
        opts=pulumi.ResourceOptions(depends_on=apis.services),
    )
    on_gcp = pulumi.ResourceOptions(provider=gcp_provider)
    # GKE's service agent and Workload Identity principals name the project by number.
    project_number = gcp.organizations.get_project_output(
        project_id=config.project, opts=pulumi.InvokeOutputOptions(provider=gcp_provider)
    ).number
    shape = H100_MACHINES[config.gpu_pool.machine_type]
    extra_networks = shape.extra_networks if config.network.gpudirect else 0

    network = Network(
        name,
        {
            "region": config.region,
            "project": config.project,
            "subnet_cidr": config.network.subnet_cidr,
            "pods_cidr": config.network.pods_cidr,
            "services_cidr": config.network.services_cidr,
            "extra_networks": extra_networks,
        },
        opts=on_gcp,
    )
    cluster_args: GkeClusterArgs = {
        "project": config.project,
        "location": config.cluster.location,
        "network": network.network,
        "subnetwork": network.subnetwork,
        "pods_range_name": network.pods_range_name,
        "services_range_name": network.services_range_name,
        "authorized_networks": [
            {"cidr": n.cidr, "name": n.name} for n in config.cluster.authorized_networks
        ],
        "master_cidr": config.network.master_cidr,
        "release_channel": config.cluster.release_channel,
        "deletion_protection": config.cluster.deletion_protection,
        "multi_networking": extra_networks > 0,
        "dcgm_metrics": True,  # every stack has a GPU pool
        "system_pool": {
            "machine_type": config.cluster.system_pool.machine_type,
            "min_nodes": config.cluster.system_pool.min_nodes,
            "max_nodes": config.cluster.system_pool.max_nodes,
        },
    }
    if config.cluster.kms_key:
        cluster_args["kms_key"] = config.cluster.kms_key
        cluster_args["project_number"] = project_number
    cluster = GkeCluster(name, cluster_args, opts=on_gcp)
    gpu_pool = H100NodePool(
        config.gpu_pool.name,
        {
            "cluster": cluster.name,
            "location": cluster.location,
            "project": config.project,
            "service_account": cluster.node_service_account_email,
            "machine_type": config.gpu_pool.machine_type,
            "zones": config.gpu_pool.zones,
            "min_nodes": config.gpu_pool.min_nodes,
            "max_nodes": config.gpu_pool.max_nodes,
            "capacity": gpu_capacity(config),
            "gpu_driver_version": config.gpu_pool.driver_version,
            "compact_placement": config.gpu_pool.compact_placement,
            "extra_networks": network.extra_networks,
        },
        opts=on_gcp,
    )

    k8s_provider = k8s.Provider(
        "gke",
        kubeconfig=cluster.kubeconfig,
        enable_server_side_apply=True,
        opts=pulumi.ResourceOptions(depends_on=[gpu_pool]),
    )
    on_k8s = pulumi.ResourceOptions(provider=k8s_provider)
    operator = KubeRayOperator("kuberay", {"namespace": config.kuberay.namespace}, opts=on_k8s)
    namespace = k8s.core.v1.Namespace(
        "serving-ns", metadata={"name": config.ray_service.namespace}, opts=on_k8s
    )
    in_namespace = pulumi.ResourceOptions(provider=k8s_provider, depends_on=[namespace])
    ingress_args = cast(HaproxyIngressArgs, specs.ingress_args(config))
    if config.ingress.tls_certificate and config.ingress.tls_key:
        ingress_args["tls_certificate"] = pulumi.Output.secret(config.ingress.tls_certificate)
        ingress_args["tls_key"] = pulumi.Output.secret(config.ingress.tls_key)
    ingress = HaproxyIngress(specs.INGRESS_NAME, ingress_args, opts=in_namespace)
    service_args: RayServeAppArgs = {
        "spec": spec,
        "ingress_pod_labels": ingress.pod_labels,
        "operator_namespace": config.kuberay.namespace,
        "pdb_min_available": config.ray_service.workers.min_available,
    }
    if spec.model_bucket is not None:
        service_args["gcp_provider"] = gcp_provider
        service_args["project_id"] = config.project
        service_args["project_number"] = project_number
    if (memorystore := config.ray_service.fault_tolerance.memorystore) is not None:
        redis = Memorystore(
            f"{config.ray_service.name}-gcs",
            {
                "project": config.project,
                "region": config.region,
                "network": network.network,
                "tier": memorystore.tier,
                "memory_size_gb": memorystore.memory_size_gb,
                "redis_version": memorystore.redis_version,
            },
            opts=on_gcp,
        )
        service_args["redis"] = {"address": redis.address, "password": redis.auth_string}
    service = RayServeApp(
        config.ray_service.name,
        service_args,
        opts=pulumi.ResourceOptions(provider=k8s_provider, depends_on=[namespace, operator]),
    )

    # Managed Prometheus is always on (components/cluster.py): every stack gets its dashboards and
    # alerts, after what they watch.
    observability = Observability(
        "observability",
        {
            "spec": specs.observability_spec(config),
            "project": config.project,
            "gcp_provider": gcp_provider,
        },
        opts=pulumi.ResourceOptions(provider=k8s_provider, depends_on=[service, ingress]),
    )

    smoke = pulumi.Output.all(ingress.http_url, ingress.grpc_target).apply(
        lambda urls: smoke_contract(
            config,
            source="pulumi",
            http_url=urls[0],
            grpc_target=urls[1],
        )
    )
    return {
        "smoke": smoke,
        "cluster_name": cluster.name,
        "cluster_location": cluster.location,
        "namespace": service.namespace,
        "rayservice_name": service.name,
        "serve_service": service.serve_service_name,
        "kubeconfig": cluster.kubeconfig,
        "ray_version": config.ray.version,
        "kuberay_version": operator.version,
        "image": config.ray.image,
        "cost": estimate_cost(config),  # GPU nodes at list prices, every capacity mode side by side
        "dashboards": observability.dashboard_urls,
    }


def run_program() -> dict[str, Any]:
    """The whole program: validate the running stack's config first, then define it."""
    return define(load_pulumi_stack_config())
