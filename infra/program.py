"""The Pulumi program: validated stack config in, components wired in dependency order, outputs out.

Thin on purpose: every decision lives in the config (infra/config.py), the Serve config builder
(infra/serve_config.py) or a component. This module only maps one onto the other.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.cluster import GkeCluster, GkeClusterArgs
from components.gpu_node_pool import H100NodePool
from components.haproxy_ingress import HaproxyIngress, HaproxyIngressArgs
from components.kuberay_operator import KubeRayOperator
from components.network import Network
from components.ray_service import RayServeApp, RayServeAppArgs
from components.render import rayservice as rs
from components.render.gpu_machines import H100_MACHINES
from components.render.haproxy import Timeouts
from components.render.node_pool import Capacity
from infra.config import StackConfig, load_pulumi_stack_config
from infra.cost import estimate_cost
from infra.outputs import smoke_contract
from infra.serve_config import build_serve_config, serve_flags

# The cluster's Ray pods listen on every interface; the local run binds 127.0.0.1 instead. Every
# replica change reloads Ray's HAProxy, and its old process is killed `hard-stop-after` later with
# the streams it still serves (Ray's 120 s cuts long LLM streams: docs/reliability.md): give them
# as long as our tier does.
CLUSTER_ENV = {
    "RAY_SERVE_DEFAULT_HTTP_HOST": "0.0.0.0",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(Timeouts().tunnel_s),
}


def _capacity(config: StackConfig) -> Capacity:
    capacity = config.gpu_pool.capacity
    if capacity.mode == "flex-start":
        return {"mode": "flex-start", "max_run_duration_hours": capacity.max_run_duration_hours}
    if capacity.mode == "reservation":
        out: Capacity = {"mode": "reservation", "reservation_affinity": capacity.affinity}
        if capacity.name:
            out["reservation_name"] = capacity.name
        if capacity.project:
            out["reservation_project"] = capacity.project
        return out
    return {"mode": capacity.mode}


def rayservice_spec(config: StackConfig) -> rs.RayServiceSpec:
    """The RayService the stack asks for: one worker group on the H100 pool, a whole node per worker."""
    svc, pool = config.ray_service, config.gpu_pool
    upgrade = svc.upgrade_strategy
    ft = svc.fault_tolerance
    bucket = svc.model_bucket
    return rs.RayServiceSpec(
        name=svc.name,
        namespace=svc.namespace,
        ray_version=config.ray.version,
        image=config.ray.image,
        workers=(
            rs.WorkerGroup(
                name=pool.name,
                pool=pool.name,
                accelerator=pool.accelerator_type,
                gpus_per_worker=pool.accelerator_count,
                resources=rs.Resources(cpu=svc.workers.cpu, memory=svc.workers.memory),
                min_replicas=svc.workers.min_replicas,
                max_replicas=svc.workers.max_replicas,
                spread=svc.workers.spread,
            ),
        ),
        serve_config=build_serve_config(config),
        env={**serve_flags(config.ray), **CLUSTER_ENV},
        head=rs.HeadGroup(resources=rs.Resources(cpu=svc.head.cpu, memory=svc.head.memory)),
        upgrade_type=upgrade.type,
        incremental_upgrade=(
            rs.IncrementalUpgrade(
                gateway_class_name=upgrade.gateway_class_name or "",
                step_size_percent=upgrade.step_size_percent,
                interval_seconds=upgrade.interval_seconds,
            )
            if upgrade.type == "NewClusterWithIncrementalUpgrade"
            else None
        ),
        gcs_fault_tolerance=(
            rs.GcsFaultTolerance(
                redis_address=ft.redis_address or "",
                password_secret_name=ft.redis_password.name,
                password_secret_key=ft.redis_password.key,
            )
            if ft.enabled and ft.redis_password is not None
            else None
        ),
        enable_in_tree_autoscaling=True,
        termination_grace_s=svc.shutdown.termination_grace_period_seconds,
        drain_deadline_s=svc.shutdown.drain_deadline_seconds,
        model_bucket=(
            rs.ModelBucket(
                bucket=bucket.bucket,
                mount_path=bucket.mount_path,
                service_account=f"{svc.name}-model-reader",
            )
            if bucket is not None
            else None
        ),
    )


def define(config: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs."""
    name = config.cluster.name
    spec = rayservice_spec(config)  # rendered (and checked) before the first resource registers
    if problems := rs.check_rayservice_spec(spec):
        raise ValueError("; ".join(problems))

    gcp_provider = gcp.Provider("gcp", project=config.project, region=config.region)
    on_gcp = pulumi.ResourceOptions(provider=gcp_provider)
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
        "system_pool": {
            "machine_type": config.cluster.system_pool.machine_type,
            "min_nodes": config.cluster.system_pool.min_nodes,
            "max_nodes": config.cluster.system_pool.max_nodes,
        },
    }
    if config.cluster.kms_key:
        cluster_args["kms_key"] = config.cluster.kms_key
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
            "capacity": _capacity(config),
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
    ingress_args: HaproxyIngressArgs = {
        "namespace": config.ray_service.namespace,
        "ray_service_name": config.ray_service.name,
        "ray_pod_selector": rs.serving_pod_selector(config.ray_service.name),
        "routes": [app.route_prefix for app in config.apps],
        "image": config.ingress.image,
        "replicas": config.ingress.replicas,
        "max_replicas": config.ingress.max_replicas,
        "min_available": config.ingress.replicas - 1,  # node drains evict one pod at a time
        "load_balancer": config.ingress.exposure,
        "source_ranges": config.ingress.source_ranges,
    }
    if config.ingress.tls_secret:
        ingress_args["tls_secret_name"] = config.ingress.tls_secret
    ingress = HaproxyIngress("ingress", ingress_args, opts=in_namespace)
    service_args: RayServeAppArgs = {
        "spec": spec,
        "ingress_pod_labels": ingress.pod_labels,
        "operator_namespace": config.kuberay.namespace,
        "pdb_min_available": config.ray_service.workers.min_available,
    }
    if spec.model_bucket is not None:
        project = gcp.organizations.get_project_output(
            project_id=config.project, opts=pulumi.InvokeOutputOptions(provider=gcp_provider)
        )
        service_args["gcp_provider"] = gcp_provider
        service_args["project_id"] = config.project
        service_args["project_number"] = project.number
    service = RayServeApp(
        config.ray_service.name,
        service_args,
        opts=pulumi.ResourceOptions(provider=k8s_provider, depends_on=[namespace, operator]),
    )

    smoke = pulumi.Output.all(ingress.http_url, ingress.grpc_target).apply(
        lambda urls: smoke_contract(
            config,
            source="pulumi",
            http_url=urls[0],
            grpc_target=urls[1],
            serve_flags=dict(spec.env),
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
    }


def run_program() -> dict[str, Any]:
    """The whole program: validate the running stack's config first, then define it."""
    return define(load_pulumi_stack_config())
