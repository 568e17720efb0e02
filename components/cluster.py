"""A hardened private GKE Standard cluster, its least-privilege node account and system pool.

Owns: the `gcp.container.Cluster` (private nodes, authorized networks, Workload Identity, shielded
nodes, Dataplane V2, Managed Prometheus, GCS FUSE CSI, image streaming, optional KMS secrets
encryption, no legacy ABAC or client certificates), the node service account with only the roles
nodes need, a small system node pool, and a kubeconfig that authenticates through
`gke-gcloud-auth-plugin`. Does not own: the VPC (components/network.py), GPU pools
(components/gpu_node_pool.py), the Kubernetes provider built from the kubeconfig (infra/program.py),
or any Kubernetes object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp

from components.render.apis import GKE_SERVICE_AGENT_DOMAIN, KMS_ENCRYPTER_ROLE
from components.render.node_pool import CLOUD_PLATFORM_SCOPE, POOL_LABEL, SYSTEM_POOL

# What a GKE node needs: write logs and metrics, read Artifact Registry images. Nothing else.
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
    "roles/artifactregistry.reader",
)
AUTH_PLUGIN = "gke-gcloud-auth-plugin"


def gke_service_agent(project_number: pulumi.Input[str]) -> pulumi.Output[str]:
    """GKE's service agent in a project (it exists once the container API is enabled)."""
    return pulumi.Output.concat("service-", project_number, "@", GKE_SERVICE_AGENT_DOMAIN)


class AuthorizedNetwork(TypedDict):
    cidr: str
    name: str


class SystemPool(TypedDict):
    machine_type: NotRequired[str]
    """Default e2-standard-4."""
    min_nodes: NotRequired[int]
    """Total across the cluster's zones. Default 1."""
    max_nodes: NotRequired[int]
    """Total across the cluster's zones. Default 3."""


class GkeClusterArgs(TypedDict):
    project: pulumi.Input[str]
    """Project id; also names the Workload Identity pool (<project>.svc.id.goog)."""
    location: pulumi.Input[str]
    """A region (regional control plane) or a zone (zonal)."""
    network: pulumi.Input[str]
    subnetwork: pulumi.Input[str]
    pods_range_name: pulumi.Input[str]
    services_range_name: pulumi.Input[str]
    authorized_networks: Sequence[AuthorizedNetwork]
    """Who may reach the public control-plane endpoint. Empty: nobody outside Google. 0.0.0.0/0 only
    when given explicitly."""
    master_cidr: NotRequired[pulumi.Input[str]]
    """The control plane's /28 for VPC peering. Default 172.16.0.0/28."""
    release_channel: NotRequired[pulumi.Input[str]]
    """RAPID, REGULAR or STABLE. Default REGULAR."""
    deletion_protection: NotRequired[pulumi.Input[bool]]
    """Default True: a stack must opt out to be destroyable."""
    kms_key: NotRequired[str]
    """Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for Secrets encryption.
    Default: none (Google-managed encryption)."""
    project_number: NotRequired[pulumi.Input[str]]
    """The project's number, which names GKE's service agent. Required with `kms_key`: the agent
    is granted encrypt/decrypt on the key before the cluster is created."""
    multi_networking: NotRequired[bool]
    """Enable GKE multi-networking, which GPUDirect's extra NICs need. Default False."""
    dcgm_metrics: NotRequired[bool]
    """Turn on GKE's managed DCGM metrics (GPU utilization, memory, power) for the GPU pools' nodes.
    Default: False."""
    system_pool: NotRequired[SystemPool]
    node_service_account_id: NotRequired[str]
    """The node service account's account id. Default: derived from the component name."""


def node_account_id(name: str) -> str:
    """A valid service account id (6-30 chars, [a-z][-a-z0-9]*[a-z0-9]) derived from `name`."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "raygke"
    if not base[0].isalpha():
        base = f"n-{base}"
    return f"{base[:24].rstrip('-')}-nodes"


def render_kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig for one cluster whose credentials come from `gke-gcloud-auth-plugin` (no secrets
    stored in it beyond the endpoint and CA). JSON, which every YAML reader accepts."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": f"https://{endpoint}",
                    "certificate-authority-data": ca_certificate,
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": AUTH_PLUGIN,
                        "installHint": "Install gke-gcloud-auth-plugin: "
                        "`gcloud components install gke-gcloud-auth-plugin`",
                        "provideClusterInfo": True,
                    }
                },
            }
        ],
    }
    return json.dumps(config, indent=2)


class GkeCluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    """The cluster's name."""
    location: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    """The control plane's IP address."""
    node_service_account_email: pulumi.Output[str]
    """The least-privilege account every node pool should run as."""
    system_pool_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Secret. Resolves only once the system pool exists, so Kubernetes resources built on it wait
    for somewhere to run."""

    def __init__(
        self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:cluster:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        project = args["project"]

        account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            project=project,
            account_id=args.get("node_service_account_id", node_account_id(name)),
            display_name=f"GKE nodes of {name}",
            opts=child,
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        grants = [
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.removeprefix('roles/').replace('.', '-').lower()}",
                project=project,
                role=role,
                member=member,
                opts=child,
            )
            for role in NODE_ROLES
        ]

        kms_key = args.get("kms_key")
        database_encryption: gcp.container.ClusterDatabaseEncryptionArgsDict = (
            {"state": "ENCRYPTED", "key_name": kms_key} if kms_key else {"state": "DECRYPTED"}
        )
        key_grants: list[pulumi.Resource] = []
        if kms_key:
            project_number = args.get("project_number")
            if project_number is None:
                raise ValueError(
                    f"GkeCluster {name!r}: kms_key needs args.project_number, which names GKE's "
                    "service agent (granted encrypt/decrypt on the key)"
                )
            # GKE refuses to create a cluster with application-layer Secrets encryption unless its
            # service agent may use the key (GKE docs, "Encrypt Secrets at the application layer").
            key_grants.append(
                gcp.kms.CryptoKeyIAMMember(
                    f"{name}-secrets-key",
                    crypto_key_id=kms_key,
                    role=KMS_ENCRYPTER_ROLE,
                    member=pulumi.Output.concat(
                        "serviceAccount:", gke_service_agent(project_number)
                    ),
                    opts=child,
                )
            )
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            project=project,
            location=args["location"],
            network=args["network"],
            subnetwork=args["subnetwork"],
            # Pools are managed separately so they can change without replacing the cluster.
            remove_default_node_pool=True,
            initial_node_count=1,
            # The short-lived default pool still boots: give it the node account, not the Compute
            # default one (which hardened organisations strip of roles, failing cluster creation).
            node_config={
                "service_account": account.email,
                "oauth_scopes": [CLOUD_PLATFORM_SCOPE],
                "shielded_instance_config": {
                    "enable_secure_boot": True,
                    "enable_integrity_monitoring": True,
                },
                "workload_metadata_config": {"mode": "GKE_METADATA"},
            },
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={
                "cluster_secondary_range_name": args["pods_range_name"],
                "services_secondary_range_name": args["services_range_name"],
            },
            private_cluster_config={
                "enable_private_nodes": True,
                # A public endpoint, fenced by authorized networks, so CI and `pulumi up` can reach
                # it.
                "enable_private_endpoint": False,
                "master_ipv4_cidr_block": args.get("master_cidr", "172.16.0.0/28"),
            },
            master_authorized_networks_config={
                "cidr_blocks": [
                    {"cidr_block": n["cidr"], "display_name": n["name"]}
                    for n in args["authorized_networks"]
                ],
            },
            master_auth={"client_certificate_config": {"issue_client_certificate": False}},
            enable_legacy_abac=False,
            workload_identity_config={
                "workload_pool": pulumi.Output.from_input(project).apply(
                    lambda p: f"{p}.svc.id.goog"
                )
            },
            enable_shielded_nodes=True,
            release_channel={"channel": args.get("release_channel", "REGULAR")},
            # Dataplane V2 enforces NetworkPolicy itself, so no separate network_policy addon.
            datapath_provider="ADVANCED_DATAPATH",
            enable_multi_networking=args.get("multi_networking", False),
            monitoring_config={
                # GKE's managed DCGM metrics (kubernetes-engine/docs/how-to/dcgm-metrics): GKE runs
                # DCGM-Exporter on GPU nodes whose driver it installs (the pools'
                # gpu_driver_installation_config) and scrapes it into Managed Prometheus. New
                # clusters from 1.32.1-gke.1357000 have it by default, but a list that omits it
                # would turn it off.
                "enable_components": ["SYSTEM_COMPONENTS"]
                + (["DCGM"] if args.get("dcgm_metrics", False) else []),
                "managed_prometheus": {"enabled": True},
            },
            logging_config={"enable_components": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
            addons_config={
                "gcs_fuse_csi_driver_config": {"enabled": True},  # model weights from GCS
                "gce_persistent_disk_csi_driver_config": {"enabled": True},
                "http_load_balancing": {"disabled": False},
                "horizontal_pod_autoscaling": {"disabled": False},
                "dns_cache_config": {"enabled": True},  # NodeLocal DNSCache
            },
            node_pool_defaults={"node_config_defaults": {"gcfs_config": {"enabled": True}}},
            database_encryption=database_encryption,
            deletion_protection=args.get("deletion_protection", True),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=key_grants,
                # The default pool is deleted right after creation; its config must not force a
                # replacement of the whole cluster later.
                ignore_changes=["nodeConfig", "initialNodeCount"],
            ),
        )

        system = args.get("system_pool", {})
        system_pool = gcp.container.NodePool(
            f"{name}-system",
            project=project,
            cluster=cluster.name,
            location=cluster.location,
            autoscaling={
                "total_min_node_count": system.get("min_nodes", 1),
                "total_max_node_count": system.get("max_nodes", 3),
            },
            initial_node_count=1,
            management={"auto_upgrade": True, "auto_repair": True},
            node_config={
                "machine_type": system.get("machine_type", "e2-standard-4"),
                "image_type": "COS_CONTAINERD",
                "disk_size_gb": 100,
                "disk_type": "pd-balanced",
                "service_account": account.email,
                "oauth_scopes": [CLOUD_PLATFORM_SCOPE],
                "shielded_instance_config": {
                    "enable_secure_boot": True,
                    "enable_integrity_monitoring": True,
                },
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "gcfs_config": {"enabled": True},
                "gvnic": {"enabled": True},
                "labels": {POOL_LABEL: SYSTEM_POOL},
                "metadata": {"disable-legacy-endpoints": "true"},
            },
            # Nodes that boot before their account may write logs and pull images fail their
            # start-up.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=grants, ignore_changes=["initialNodeCount"]
            ),
        )

        self.name = cluster.name
        self.location = cluster.location
        self.endpoint = cluster.endpoint
        self.node_service_account_email = account.email
        self.system_pool_name = system_pool.name
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                cluster.name,
                cluster.endpoint,
                cluster.master_auth.cluster_ca_certificate,
                system_pool.id,
            ).apply(lambda v: render_kubeconfig(v[0], v[1], v[2]))
        )
        self.register_outputs(
            {
                "name": self.name,
                "location": self.location,
                "endpoint": self.endpoint,
                "node_service_account_email": self.node_service_account_email,
                "system_pool_name": self.system_pool_name,
                "kubeconfig": self.kubeconfig,
            }
        )
