"""The checks of the Kubernetes controls (CIS Kubernetes 4.x, RAYGKE-K8S-*, RAYGKE-NET-*).

Owns: where each kind keeps its containers (Deployments to RayJobs) and the Ray head's control ports,
how a NetworkPolicy is matched against them, the container checks (resources, securityContext, image
pinning) and the external load balancers' source ranges, each with the message naming the field that
is wrong. Does not own a control's id, severity, scope or remediation (the catalogue,
policy/controls.py), nor how an image reference parses (components/render/images.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from components.render.cidr import open_cidrs
from components.render.images import parse_image, pin_problem
from policy.inventory import (
    Check,
    Finding,
    InventoryLike,
    ResourceLike,
    as_list,
    as_map,
    as_number,
    is_false,
    is_true,
    is_unknown,
    lookup,
    of_type,
)

SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
INTERNAL_LB_ANNOTATIONS = (
    "networking.gke.io/load-balancer-type",
    "cloud.google.com/load-balancer-type",
)
# Where each kind keeps its pod templates (dotted paths; `[]` walks a list).
POD_SPECS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec.template.spec",),
    "kubernetes:apps/v1:StatefulSet": ("spec.template.spec",),
    "kubernetes:apps/v1:DaemonSet": ("spec.template.spec",),
    "kubernetes:apps/v1:ReplicaSet": ("spec.template.spec",),
    "kubernetes:batch/v1:Job": ("spec.template.spec",),
    "kubernetes:batch/v1:CronJob": ("spec.jobTemplate.spec.template.spec",),
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:ray.io/v1:RayService": (
        "spec.rayClusterConfig.headGroupSpec.template.spec",
        "spec.rayClusterConfig.workerGroupSpecs[].template.spec",
    ),
    "kubernetes:ray.io/v1:RayCluster": (
        "spec.headGroupSpec.template.spec",
        "spec.workerGroupSpecs[].template.spec",
    ),
    "kubernetes:ray.io/v1:RayJob": (
        "spec.rayClusterSpec.headGroupSpec.template.spec",
        "spec.rayClusterSpec.workerGroupSpecs[].template.spec",
    ),
}
# Where each Ray kind keeps its head group.
RAY_HEADS: dict[str, str] = {
    "kubernetes:ray.io/v1:RayService": "spec.rayClusterConfig.headGroupSpec",
    "kubernetes:ray.io/v1:RayCluster": "spec.headGroupSpec",
    "kubernetes:ray.io/v1:RayJob": "spec.rayClusterSpec.headGroupSpec",
}
# Labels KubeRay puts on every head pod, beyond the template's own.
KUBERAY_HEAD_LABELS = {"ray.io/node-type": "head", "ray.io/is-ray-node": "yes"}
# The head's control ports: rayStartParams key, default port, what it is.
RAY_CONTROL_PORTS = (
    ("dashboard-port", 8265, "dashboard"),
    ("port", 6379, "GCS"),
    ("ray-client-server-port", 10001, "Ray client"),
)


def _walk(node: Any, path: str, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every value at `path` (dotted, `[]` walks a list), with its concrete location."""
    if not path:
        yield where.rstrip("."), node
        return
    part, _, rest = path.partition(".")
    if part.endswith("[]"):
        key = part[:-2]
        for i, item in enumerate(as_list(lookup(node, key))):
            yield from _walk(item, rest, f"{where}{key}[{i}].")
    elif isinstance(node, Mapping) and part in node:
        yield from _walk(node[part], rest, f"{where}{part}.")


@dataclass(frozen=True)
class Container:
    resource: ResourceLike
    where: str  # e.g. spec.template.spec.containers[haproxy]
    spec: Mapping[str, Any]


def pod_specs(inventory: InventoryLike) -> Iterator[tuple[ResourceLike, str, Any]]:
    """Every pod spec of every object, wherever its kind keeps its pod templates, and where."""
    for r in inventory.resources:
        for path in POD_SPECS.get(r.type, ()):
            for where, pod in _walk(r.inputs, path):
                yield r, where, pod


def containers(inventory: InventoryLike) -> Iterator[Container]:
    for r, where, pod in pod_specs(inventory):
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(as_list(lookup(pod, kind))):
                label = lookup(c, "name") or i
                yield Container(r, f"{where}.{kind}[{label}]", as_map(c))


def container_check(
    test: Callable[[Container], str | None], ray_remediation: str | None = None
) -> Check:
    """A check of every container; `ray_remediation` replaces the control's for the Ray kinds,
    whose pods the stack sizes and images through its own keys."""

    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for c in containers(inventory):
            if (message := test(c)) is not None:
                fix = ray_remediation if c.resource.type in RAY_HEADS else None
                yield Finding(c.resource, message, fix)

    return check


def container_resources(c: Container) -> str | None:
    resources = as_map(c.spec.get("resources"))
    wanted = ("requests.cpu", "requests.memory", "limits.memory")
    missing = [w for w in wanted if lookup(resources, w) in (None, "")]
    if missing:
        return f"{c.where} sets no resources.{', resources.'.join(missing)}"
    return None


def security_context(c: Container) -> str | None:
    ctx = c.spec.get("securityContext")
    if not isinstance(ctx, Mapping):
        return f"{c.where} has no securityContext"
    problems = []
    if not is_false(ctx.get("allowPrivilegeEscalation")):
        problems.append(f"allowPrivilegeEscalation is {ctx.get('allowPrivilegeEscalation')!r}")
    if is_true(ctx.get("privileged")):
        problems.append("privileged is true")
    if "ALL" not in as_list(lookup(ctx, "capabilities.drop")):
        problems.append("capabilities.drop lacks ALL")
    if problems:
        return f"{c.where}.securityContext: {'; '.join(problems)}"
    return None


def image_tag_problem(image: Any) -> str | None:
    """Why `image` is not pinned (no tag, or `latest`), or None when it is (a tag or a digest)."""
    if is_unknown(image):
        return None
    if not isinstance(image, str) or not image:
        return "no image"
    return pin_problem(image)


def image_digest_problem(image: Any) -> str | None:
    """Why `image` is not pinned by digest, or None when it is (or is unknown, or not an image)."""
    if is_unknown(image) or not isinstance(image, str) or image_tag_problem(image) is not None:
        return None  # RAYGKE-K8S-3 reports a missing, untagged or unparsable image
    if parse_image(image).digest is None:
        return "pinned by tag only: the registry can move a tag to other content"
    return None


def image_digest(c: Container) -> str | None:
    image = c.spec.get("image")
    if (problem := image_digest_problem(image)) is not None:
        return f"{c.where}.image {image!r}: {problem}"
    return None


def image_pinned(c: Container) -> str | None:
    image = c.spec.get("image")
    if (problem := image_tag_problem(image)) is not None:
        return f"{c.where}.image {image!r}: {problem}"
    return None


def _selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether a label selector matches `labels` (an empty selector matches everything)."""
    selector = as_map(selector)
    for key, value in as_map(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in as_list(selector.get("matchExpressions")):
        key, op, values = (
            lookup(expr, "key"),
            lookup(expr, "operator"),
            as_list(lookup(expr, "values")),
        )
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(op), False)
        if not ok:
            return False
    return True


def _peer_is_open(peer: Any) -> str | None:
    """Why one `from` peer reaches beyond the Ray pods, or None when it names its pods or
    namespaces."""
    peer = as_map(peer)
    if "ipBlock" in peer:
        return f"ipBlock {lookup(peer, 'ipBlock.cidr')}"
    if "namespaceSelector" in peer:
        ns = as_map(peer["namespaceSelector"])
        if not ns.get("matchLabels") and not ns.get("matchExpressions"):
            return "every namespace"
        return None  # named namespaces (the KubeRay operator's)
    pods = as_map(peer.get("podSelector"))
    if not pods.get("matchLabels") and not pods.get("matchExpressions"):
        # `podSelector: {}`: every pod of the namespace, an internet-facing tier included.
        return "every pod of the namespace"
    return None  # selected pods of this namespace (the RayService's own)


def _port_matches(rule_port: Any, port: int, names: Mapping[str, int]) -> bool:
    rule_port = as_map(rule_port)
    if str(rule_port.get("protocol", "TCP")).upper() != "TCP":
        return False
    value = rule_port.get("port")
    if value is None:
        return True  # every port of the protocol
    if isinstance(value, str) and not value.isdigit():
        return names.get(value) == port
    start = int(as_number(value))
    end = int(as_number(rule_port.get("endPort", start)))
    return start <= port <= end


def ray_ports_closed(inventory: InventoryLike) -> Iterator[Finding]:
    policies = of_type(inventory, NETWORK_POLICY)
    for r in inventory.resources:
        head_path = RAY_HEADS.get(r.type)
        if head_path is None:
            continue
        head = as_map(lookup(r.inputs, head_path))
        namespace = lookup(r.inputs, "metadata.namespace") or "default"
        labels = {**as_map(lookup(head, "template.metadata.labels")), **KUBERAY_HEAD_LABELS}
        names = {
            str(lookup(p, "name")): int(as_number(lookup(p, "containerPort")))
            for c in as_list(lookup(head, "template.spec.containers"))
            for p in as_list(lookup(c, "ports"))
            if lookup(p, "name")
        }
        params = as_map(head.get("rayStartParams"))
        ports = [(int(as_number(params.get(k, d))) or d, what) for k, d, what in RAY_CONTROL_PORTS]
        covering = [
            p
            for p in policies
            if (lookup(p.inputs, "metadata.namespace") or "default") == namespace
            and "Ingress" in (as_list(lookup(p.inputs, "spec.policyTypes")) or ["Ingress"])
            and _selects(lookup(p.inputs, "spec.podSelector"), labels)
        ]
        if not covering:
            yield Finding(
                r,
                f"no NetworkPolicy in namespace {namespace!r} selects the head pods: ports "
                f"{', '.join(str(p) for p, _ in ports)} are open to every pod in the cluster",
            )
            continue
        for policy in sorted(covering, key=lambda p: p.name):
            for i, rule in enumerate(as_list(lookup(policy.inputs, "spec.ingress"))):
                peers = as_list(lookup(rule, "from"))
                reasons = (
                    [why for peer in peers if (why := _peer_is_open(peer))]
                    if peers
                    else ["any source"]
                )
                if not reasons:
                    continue
                rule_ports = as_list(lookup(rule, "ports"))
                admitted = [
                    f"{what} port {port}"
                    for port, what in ports
                    if not rule_ports or any(_port_matches(rp, port, names) for rp in rule_ports)
                ]
                if admitted:
                    policy_name = lookup(policy.inputs, "metadata.name") or policy.name
                    yield Finding(
                        r,
                        f"NetworkPolicy {namespace}/{policy_name} (spec.ingress[{i}]) admits the "
                        f"head's {', '.join(admitted)} from {', '.join(reasons)}",
                    )


def load_balancer_ranges(inventory: InventoryLike) -> Iterator[Finding]:
    for r in of_type(inventory, SERVICE):
        if lookup(r.inputs, "spec.type") != "LoadBalancer":
            continue
        annotations = as_map(lookup(r.inputs, "metadata.annotations"))
        if any(str(annotations.get(a, "")).lower() == "internal" for a in INTERNAL_LB_ANNOTATIONS):
            continue  # reachable from the VPC only
        ranges = as_list(lookup(r.inputs, "spec.loadBalancerSourceRanges"))
        if not ranges:
            yield Finding(r, "an external LoadBalancer with no spec.loadBalancerSourceRanges")
        elif open_ranges := open_cidrs(ranges):
            yield Finding(
                r,
                f"an external LoadBalancer whose spec.loadBalancerSourceRanges contain "
                f"{', '.join(open_ranges)}",
            )


RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def ray_worker_floor(inventory: InventoryLike) -> Iterator[Finding]:
    """A worker group that may shrink to none leaves the first request waiting for a GPU pod."""
    for r in of_type(inventory, RAYSERVICE):
        for where, group in _walk(r.inputs, "spec.rayClusterConfig.workerGroupSpecs[]"):
            floor = lookup(group, "minReplicas")
            if not is_unknown(floor) and as_number(floor) < 1:
                yield Finding(
                    r, f"{where}.minReplicas is {as_number(floor):g}: the workers may scale to zero"
                )


def gcs_fault_tolerance(inventory: InventoryLike) -> Iterator[Finding]:
    """Without GCS fault tolerance a head restart takes every Serve app down with it."""
    for r in of_type(inventory, RAYSERVICE):
        options = lookup(r.inputs, "spec.rayClusterConfig.gcsFaultToleranceOptions")
        if not is_unknown(options) and not as_map(options).get("redisAddress"):
            yield Finding(
                r,
                "spec.rayClusterConfig.gcsFaultToleranceOptions.redisAddress is not set: a head "
                "restart loses every Serve app",
            )
