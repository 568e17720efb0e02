"""The VPC a private GKE cluster lives in, and the extra VPCs GPUDirect needs.

Owns: one custom-mode VPC with one regional subnet (pod and service secondary ranges, Private Google
Access), a Cloud Router with Cloud NAT so private nodes can pull images and reach Google APIs, a
firewall rule admitting Google's load-balancer health checks, and optionally N extra VPC+subnet
pairs (MTU 8244) for GPUDirect-TCPX/TCPXO NICs. Does not own: the cluster (components/cluster.py),
the GKE multi-networking objects that attach the extra NICs to pods (Kubernetes-level), or any
choice of CIDRs (the stack config).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp

from components.render.node_pool import gpudirect_subnet_cidrs

# Google's documented source ranges for load-balancer health checks and proxies.
HEALTH_CHECK_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
# kube-proxy/Dataplane V2 health-check port (externalTrafficPolicy: Local) and the NodePort range.
DEFAULT_HEALTH_CHECK_PORTS = ["10256", "30000-32767"]
GPUDIRECT_MTU = 8244  # Google's MTU for GPUDirect-TCPX/TCPXO networks
PODS_RANGE = "pods"
SERVICES_RANGE = "services"


class ExtraNetwork(TypedDict):
    """One GPUDirect network as a node pool's additional NIC names it."""

    network: pulumi.Input[str]
    subnetwork: pulumi.Input[str]


class NetworkArgs(TypedDict):
    region: pulumi.Input[str]
    subnet_cidr: pulumi.Input[str]
    """Nodes' primary range, e.g. 10.10.0.0/20."""
    pods_cidr: pulumi.Input[str]
    """Secondary range for pod IPs (VPC-native), e.g. 10.20.0.0/14."""
    services_cidr: pulumi.Input[str]
    """Secondary range for ClusterIPs, e.g. 10.24.0.0/20."""
    project: NotRequired[pulumi.Input[str]]
    """Default: the provider's project."""
    extra_networks: NotRequired[int]
    """How many GPUDirect VPCs to add (a3-highgpu-8g: 4, a3-megagpu-8g: 8). Plain int: it decides
    how many resources exist. Default 0."""
    extra_networks_cidr: NotRequired[str]
    """Carved into one /24 per GPUDirect subnet, in order. Default 192.168.0.0/16."""
    health_check_ports: NotRequired[Sequence[str]]
    """TCP ports health checks may reach on nodes. Default 10256 and 30000-32767."""


class Network(pulumi.ComponentResource):
    network: pulumi.Output[str]
    """The VPC's self link."""
    network_name: pulumi.Output[str]
    subnetwork: pulumi.Output[str]
    """The subnet's self link."""
    subnetwork_name: pulumi.Output[str]
    pods_range_name: pulumi.Output[str]
    """Secondary range name for pods (the cluster's cluster_secondary_range_name)."""
    services_range_name: pulumi.Output[str]
    """Secondary range name for services (the cluster's services_secondary_range_name)."""
    extra_networks: list[ExtraNetwork]
    """GPUDirect networks by name, in NIC order. A plain list (of outputs) because a node pool must
    know how many there are when it is planned."""

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args["region"]
        project = args.get("project")
        cidrs = gpudirect_subnet_cidrs(
            args.get("extra_networks_cidr", "192.168.0.0/16"), args.get("extra_networks", 0)
        )

        vpc = gcp.compute.Network(
            f"{name}-vpc",
            project=project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            project=project,
            region=region,
            network=vpc.id,
            ip_cidr_range=args["subnet_cidr"],
            private_ip_google_access=True,  # private nodes reach Google APIs without NAT
            secondary_ip_ranges=[
                {"range_name": PODS_RANGE, "ip_cidr_range": args["pods_cidr"]},
                {"range_name": SERVICES_RANGE, "ip_cidr_range": args["services_cidr"]},
            ],
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router", project=project, region=region, network=vpc.id, opts=child
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            project=project,
            region=region,
            router=router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[{"name": subnet.id, "source_ip_ranges_to_nats": ["ALL_IP_RANGES"]}],
            log_config={"enable": True, "filter": "ERRORS_ONLY"},
            opts=child,
        )
        gcp.compute.Firewall(
            f"{name}-allow-health-checks",
            project=project,
            network=vpc.id,
            direction="INGRESS",
            source_ranges=HEALTH_CHECK_RANGES,
            allows=[
                {
                    "protocol": "tcp",
                    "ports": list(args.get("health_check_ports", DEFAULT_HEALTH_CHECK_PORTS)),
                }
            ],
            description="Google Cloud load-balancer health checks to GKE nodes",
            opts=child,
        )

        extra: list[ExtraNetwork] = []
        for index, cidr in enumerate(cidrs):
            gpu_vpc = gcp.compute.Network(
                f"{name}-gpu{index}-vpc",
                project=project,
                auto_create_subnetworks=False,
                mtu=GPUDIRECT_MTU,
                opts=child,
            )
            gpu_subnet = gcp.compute.Subnetwork(
                f"{name}-gpu{index}-subnet",
                project=project,
                region=region,
                network=gpu_vpc.id,
                ip_cidr_range=cidr,
                opts=child,
            )
            # NCCL traffic between GPU nodes stays inside each GPUDirect network.
            gcp.compute.Firewall(
                f"{name}-gpu{index}-internal",
                project=project,
                network=gpu_vpc.id,
                direction="INGRESS",
                source_ranges=[cidr],
                allows=[
                    {"protocol": "tcp", "ports": ["0-65535"]},
                    {"protocol": "udp", "ports": ["0-65535"]},
                    {"protocol": "icmp"},
                ],
                opts=child,
            )
            extra.append({"network": gpu_vpc.name, "subnetwork": gpu_subnet.name})

        self.network = vpc.self_link
        self.network_name = vpc.name
        self.subnetwork = subnet.self_link
        self.subnetwork_name = subnet.name
        # Derived from the subnet so that whoever reads a range name waits until the range exists.
        self.pods_range_name = subnet.name.apply(lambda _: PODS_RANGE)
        self.services_range_name = subnet.name.apply(lambda _: SERVICES_RANGE)
        self.extra_networks = extra
        self.register_outputs(
            {
                "network": self.network,
                "network_name": self.network_name,
                "subnetwork": self.subnetwork,
                "subnetwork_name": self.subnetwork_name,
                "pods_range_name": self.pods_range_name,
                "services_range_name": self.services_range_name,
                "extra_networks": extra,
            }
        )
