"""The components in a program of your own: a VPC, a private GKE cluster on it, and the KubeRay operator
installed through a Kubernetes provider built from the cluster's kubeconfig.

`pulumi up` from this folder (with `gcp:project` set, or the project below replaced); tests/test_examples.py
runs it under Pulumi's mocks. infra/program.py is the full wiring (H100 pool, HAProxy tier, RayService).
"""

import pulumi
import pulumi_kubernetes as k8s

from components import GkeCluster, KubeRayOperator, Network

net = Network(
    "ml",
    {
        "region": "us-central1",
        "subnet_cidr": "10.10.0.0/20",
        "pods_cidr": "10.20.0.0/14",
        "services_cidr": "10.24.0.0/20",
    },
)
cluster = GkeCluster(
    "ml",
    {
        "project": "my-project",
        "location": "us-central1",
        "network": net.network,
        "subnetwork": net.subnetwork,
        "pods_range_name": net.pods_range_name,
        "services_range_name": net.services_range_name,
        "authorized_networks": [{"cidr": "203.0.113.0/24", "name": "vpn"}],
    },
)
gke = k8s.Provider("gke", kubeconfig=cluster.kubeconfig)
operator = KubeRayOperator("kuberay", opts=pulumi.ResourceOptions(provider=gke))

pulumi.export("cluster_name", cluster.name)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("kuberay_namespace", operator.namespace)
