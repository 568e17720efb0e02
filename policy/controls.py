"""The policy controls (CIS GKE Benchmark v1.6 + Kubernetes hardening) as plain-Python checks.

Owns: each control's id (the CIS GKE id where one exists, RAYGKE-* otherwise), title, severity,
environment scope and remediation, the check itself over a resource inventory (registrations with a
type, a name and their camelCase inputs, as `raygke.mocks` records them or a policy pack receives
them), and `evaluate`, which runs them in a deterministic order. Does not own: printing
(policy/report.py), the pulumi_policy adapter (policy/pack/__main__.py), or any resource definition.
It imports neither `pulumi` nor `pulumi_policy`, so the policy pack's own environment can load it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast, get_args

from components.render.images import parse_image, pin_problem

Severity = Literal["mandatory", "advisory"]
Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
ALL_ENVIRONMENTS: frozenset[str] = frozenset(ENVIRONMENTS)

# A value Pulumi cannot know before `pulumi up` (a policy pack sees these during preview). Checks
# never flag an unknown: it is usually another resource's output (a service account's email).
UNKNOWN = "[unknown]"

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
INTERNAL_LB_ANNOTATIONS = (
    "networking.gke.io/load-balancer-type",
    "cloud.google.com/load-balancer-type",
)
RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE", "EXTENDED")
GPU_MACHINE_PREFIXES = ("a2-", "a3-", "a4-", "g2-")  # machine families that always carry GPUs
GPU_TAINT_KEY = "nvidia.com/gpu"


# ---------------------------------------------------------------------------------------------- inputs
class ResourceLike(Protocol):
    """What a control reads of a resource: `raygke.mocks.Registration` and `Resource` both fit."""

    @property
    def urn(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...


class InventoryLike(Protocol):
    """`raygke.mocks.Inventory`, or anything else holding the resources of one stack."""

    @property
    def resources(self) -> Sequence[ResourceLike]: ...


@dataclass(frozen=True)
class Resource:
    """A resource built by hand (tests) or from a policy pack's arguments (policy/pack)."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    urn: str = ""


@dataclass(frozen=True)
class Resources:
    """A plain inventory: the resources of one stack."""

    resources: Sequence[ResourceLike]


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Finding:
    """One problem a check found; `remediation` overrides the control's when the fix depends on where."""

    resource: ResourceLike
    message: str
    remediation: str | None = None


@dataclass(frozen=True)
class Violation:
    control_id: str
    title: str
    severity: Severity
    resource_type: str
    resource_name: str
    message: str
    remediation: str
    urn: str = ""


Check = Callable[[InventoryLike], Iterable[Finding]]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    severity: Severity
    remediation: str
    check: Check = field(repr=False)
    environments: frozenset[str] = ALL_ENVIRONMENTS
    """Where the control applies at all (secrets encryption, deletion protection: prod)."""
    advisory_in: frozenset[str] = frozenset()
    """Where a mandatory control only advises (dev's open control plane, for laptops)."""

    @property
    def cis(self) -> bool:
        return not self.id.startswith("RAYGKE-")

    def applies_to(self, environment: str) -> bool:
        return environment in self.environments

    def severity_in(self, environment: str) -> Severity:
        return "advisory" if environment in self.advisory_in else self.severity


# ---------------------------------------------------------------------------------------------- helpers
def _get(node: Any, path: str) -> Any:
    """The value at dotted `path`, or None where any step is missing."""
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _true(value: Any) -> bool:
    return value is True or value == "true"


def _false(value: Any) -> bool:
    return value is False or value == "false"


def _unknown(value: Any) -> bool:
    return value == UNKNOWN


def _of_type(inventory: InventoryLike, type_: str) -> list[ResourceLike]:
    return [r for r in inventory.resources if r.type == type_]


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class _Pool:
    """A node pool as the checks see it: a NodePool resource, or one inside a Cluster's inputs."""

    resource: ResourceLike
    where: str  # path prefix for messages: "" for a NodePool, "nodePools[0]." inside a Cluster
    node_config: Mapping[str, Any]
    management: Mapping[str, Any] | None  # None: the cluster's default pool, managed by the cluster


def _pools(inventory: InventoryLike) -> Iterator[_Pool]:
    for r in _of_type(inventory, NODE_POOL):
        yield _Pool(r, "", _map(r.inputs.get("nodeConfig")), _map(r.inputs.get("management")))
    for r in _of_type(inventory, CLUSTER):
        for i, pool in enumerate(_list(r.inputs.get("nodePools"))):
            yield _Pool(
                r,
                f"nodePools[{i}].",
                _map(_get(pool, "nodeConfig")),
                _map(_get(pool, "management")),
            )
        # The default pool only exists while removeDefaultNodePool is false; its nodeConfig is
        # otherwise a template nobody runs on.
        if not _true(r.inputs.get("removeDefaultNodePool")):
            yield _Pool(r, "", _map(r.inputs.get("nodeConfig")), None)


def _is_gpu_pool(pool: _Pool) -> bool:
    accelerators = _list(pool.node_config.get("guestAccelerators"))
    if any(_number(_get(a, "count")) > 0 for a in accelerators):
        return True
    machine = pool.node_config.get("machineType")
    return isinstance(machine, str) and machine.startswith(GPU_MACHINE_PREFIXES)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# ---------------------------------------------------------------------------------------------- GKE
def _cluster_check(
    test: Callable[[Mapping[str, Any]], str | None],
) -> Check:
    """A check of each Cluster's inputs; `test` returns a message for a violation, None otherwise."""

    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for r in _of_type(inventory, CLUSTER):
            if (message := test(r.inputs)) is not None:
                yield Finding(r, message)

    return check


def _pool_check(test: Callable[[_Pool], str | None]) -> Check:
    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for pool in _pools(inventory):
            if (message := test(pool)) is not None:
                yield Finding(pool.resource, message)

    return check


def _node_service_account(pool: _Pool) -> str | None:
    account = pool.node_config.get("serviceAccount")
    if _unknown(account):
        return None
    if not account or account == "default":
        return (
            f"{pool.where}nodeConfig.serviceAccount is {account!r}: the nodes run as the Compute "
            "Engine default service account (project Editor)"
        )
    if isinstance(account, str) and account.endswith("-compute@developer.gserviceaccount.com"):
        return f"{pool.where}nodeConfig.serviceAccount {account!r} is the Compute Engine default account"
    return None


def _workload_identity(inputs: Mapping[str, Any]) -> str | None:
    pool = _get(inputs, "workloadIdentityConfig.workloadPool")
    if _unknown(pool) or (isinstance(pool, str) and pool.endswith(".svc.id.goog")):
        return None
    return f"workloadIdentityConfig.workloadPool is {pool!r}; expected <project>.svc.id.goog"


def _metadata_server(pool: _Pool) -> str | None:
    mode = _get(pool.node_config, "workloadMetadataConfig.mode")
    if mode == "GKE_METADATA":
        return None
    return (
        f"{pool.where}nodeConfig.workloadMetadataConfig.mode is {mode!r}; expected 'GKE_METADATA'"
    )


def _secrets_encryption(inputs: Mapping[str, Any]) -> str | None:
    state = _get(inputs, "databaseEncryption.state")
    key = _get(inputs, "databaseEncryption.keyName")
    if state == "ENCRYPTED" and key:
        return None
    return (
        f"databaseEncryption is {state!r} with keyName {key!r}: Secrets are encrypted only with "
        "Google-managed keys"
    )


def _cos_containerd(pool: _Pool) -> str | None:
    image = pool.node_config.get("imageType")
    if isinstance(image, str) and image.upper() == "COS_CONTAINERD":
        return None
    return f"{pool.where}nodeConfig.imageType is {image!r}; expected 'COS_CONTAINERD'"


def _management(flag: str) -> Callable[[_Pool], str | None]:
    def test(pool: _Pool) -> str | None:
        if pool.management is None or _true(pool.management.get(flag)):
            return None
        return f"{pool.where}management.{flag} is {pool.management.get(flag)!r}; expected true"

    return test


def _release_channel(inputs: Mapping[str, Any]) -> str | None:
    channel = _get(inputs, "releaseChannel.channel")
    if channel in RELEASE_CHANNELS:
        return None
    return f"releaseChannel.channel is {channel!r}; expected one of {', '.join(RELEASE_CHANNELS)}"


def _shielded_nodes(inputs: Mapping[str, Any]) -> str | None:
    # GKE turns shielded nodes on by default; only an explicit false turns them off.
    if _false(inputs.get("enableShieldedNodes")):
        return "enableShieldedNodes is false"
    return None


def _integrity_monitoring(pool: _Pool) -> str | None:
    # On by default for shielded nodes; flagged only when switched off.
    value = _get(pool.node_config, "shieldedInstanceConfig.enableIntegrityMonitoring")
    if _false(value):
        return f"{pool.where}nodeConfig.shieldedInstanceConfig.enableIntegrityMonitoring is false"
    return None


def _secure_boot(pool: _Pool) -> str | None:
    # Off by default: it must be asked for.
    value = _get(pool.node_config, "shieldedInstanceConfig.enableSecureBoot")
    if _true(value):
        return None
    return f"{pool.where}nodeConfig.shieldedInstanceConfig.enableSecureBoot is {value!r}; expected true"


def _open_cidrs(cidrs: Iterable[Any]) -> list[str]:
    """The CIDRs that admit every address (0.0.0.0/0, ::/0); a value that is not a CIDR (unknown
    during preview) is skipped: GKE itself rejects a malformed one."""
    open_ones = []
    for cidr in cidrs:
        try:
            if ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0:
                open_ones.append(str(cidr))
        except ValueError:
            continue
    return open_ones


def _authorized_networks(inputs: Mapping[str, Any]) -> str | None:
    config = inputs.get("masterAuthorizedNetworksConfig")
    if not isinstance(config, Mapping):
        return "masterAuthorizedNetworksConfig is not set: the control plane accepts any address"
    blocks = [_get(block, "cidrBlock") for block in _list(config.get("cidrBlocks"))]
    if open_blocks := _open_cidrs(blocks):
        return f"masterAuthorizedNetworksConfig.cidrBlocks contains {', '.join(open_blocks)}"
    return None


def _private_nodes(inventory: InventoryLike) -> Iterator[Finding]:
    for r in _of_type(inventory, CLUSTER):
        value = _get(r.inputs, "privateClusterConfig.enablePrivateNodes")
        if not _true(value):
            yield Finding(
                r, f"privateClusterConfig.enablePrivateNodes is {value!r}: nodes get public IPs"
            )
    for r in _of_type(inventory, NODE_POOL):
        # A pool can opt out of the cluster's private nodes on its own.
        if _false(_get(r.inputs, "networkConfig.enablePrivateNodes")):
            yield Finding(
                r, "networkConfig.enablePrivateNodes is false: this pool's nodes get public IPs"
            )


def _network_policy(inputs: Mapping[str, Any]) -> str | None:
    datapath = inputs.get("datapathProvider")
    if datapath == "ADVANCED_DATAPATH":
        return None  # Dataplane V2 enforces NetworkPolicy natively
    calico = _true(_get(inputs, "networkPolicy.enabled")) and not _true(
        _get(inputs, "addonsConfig.networkPolicyConfig.disabled")
    )
    if calico:
        return None
    return (
        f"datapathProvider is {datapath!r} and networkPolicy is not enabled: NetworkPolicies "
        "are stored but not enforced"
    )


def _client_certificates(inputs: Mapping[str, Any]) -> str | None:
    if _true(_get(inputs, "masterAuth.clientCertificateConfig.issueClientCertificate")):
        return "masterAuth.clientCertificateConfig.issueClientCertificate is true"
    return None


def _legacy_abac(inputs: Mapping[str, Any]) -> str | None:
    if _true(inputs.get("enableLegacyAbac")):
        return "enableLegacyAbac is true"
    return None


def _deletion_protection(inputs: Mapping[str, Any]) -> str | None:
    # pulumi-gcp defaults deletionProtection to true; only an explicit false removes it.
    if _false(inputs.get("deletionProtection")):
        return "deletionProtection is false: `pulumi destroy` or a replacement deletes the cluster"
    return None


def _gpu_taint(pool: _Pool) -> str | None:
    if not _is_gpu_pool(pool):
        return None
    taints = _list(pool.node_config.get("taints"))
    if any(_get(t, "key") == GPU_TAINT_KEY and _get(t, "effect") == "NO_SCHEDULE" for t in taints):
        return None
    keys = [f"{_get(t, 'key')}:{_get(t, 'effect')}" for t in taints]
    return (
        f"{pool.where}nodeConfig.taints {keys} lack {GPU_TAINT_KEY}:NO_SCHEDULE: any pod may "
        "schedule onto the GPU nodes"
    )


# ---------------------------------------------------------------------------------------------- Kubernetes
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
        for i, item in enumerate(_list(_get(node, key))):
            yield from _walk(item, rest, f"{where}{key}[{i}].")
    elif isinstance(node, Mapping) and part in node:
        yield from _walk(node[part], rest, f"{where}{part}.")


@dataclass(frozen=True)
class _Container:
    resource: ResourceLike
    where: str  # e.g. spec.template.spec.containers[haproxy]
    spec: Mapping[str, Any]


def _containers(inventory: InventoryLike) -> Iterator[_Container]:
    for r in inventory.resources:
        for path in POD_SPECS.get(r.type, ()):
            for where, pod in _walk(r.inputs, path):
                for kind in ("initContainers", "containers"):
                    for i, c in enumerate(_list(_get(pod, kind))):
                        label = _get(c, "name") or i
                        yield _Container(r, f"{where}.{kind}[{label}]", _map(c))


def _container_check(
    test: Callable[[_Container], str | None], ray_remediation: str | None = None
) -> Check:
    """A check of every container; `ray_remediation` replaces the control's for the Ray kinds,
    whose pods the stack sizes and images through its own keys."""

    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for c in _containers(inventory):
            if (message := test(c)) is not None:
                fix = ray_remediation if c.resource.type in RAY_HEADS else None
                yield Finding(c.resource, message, fix)

    return check


def _resources(c: _Container) -> str | None:
    resources = _map(c.spec.get("resources"))
    wanted = ("requests.cpu", "requests.memory", "limits.memory")
    missing = [w for w in wanted if _get(resources, w) in (None, "")]
    if missing:
        return f"{c.where} sets no resources.{', resources.'.join(missing)}"
    return None


def _security_context(c: _Container) -> str | None:
    ctx = c.spec.get("securityContext")
    if not isinstance(ctx, Mapping):
        return f"{c.where} has no securityContext"
    problems = []
    if not _false(ctx.get("allowPrivilegeEscalation")):
        problems.append(f"allowPrivilegeEscalation is {ctx.get('allowPrivilegeEscalation')!r}")
    if _true(ctx.get("privileged")):
        problems.append("privileged is true")
    if "ALL" not in _list(_get(ctx, "capabilities.drop")):
        problems.append("capabilities.drop lacks ALL")
    if problems:
        return f"{c.where}.securityContext: {'; '.join(problems)}"
    return None


def image_tag_problem(image: Any) -> str | None:
    """Why `image` is not pinned (no tag, or `latest`), or None when it is (a tag or a digest)."""
    if _unknown(image):
        return None
    if not isinstance(image, str) or not image:
        return "no image"
    return pin_problem(image)


def image_digest_problem(image: Any) -> str | None:
    """Why `image` is not pinned by digest, or None when it is (or is unknown, or not an image)."""
    if _unknown(image) or not isinstance(image, str) or image_tag_problem(image) is not None:
        return None  # RAYGKE-K8S-3 reports a missing, untagged or unparsable image
    if parse_image(image).digest is None:
        return "pinned by tag only: the registry can move a tag to other content"
    return None


def _image_digest(c: _Container) -> str | None:
    image = c.spec.get("image")
    if (problem := image_digest_problem(image)) is not None:
        return f"{c.where}.image {image!r}: {problem}"
    return None


def _image_pinned(c: _Container) -> str | None:
    image = c.spec.get("image")
    if (problem := image_tag_problem(image)) is not None:
        return f"{c.where}.image {image!r}: {problem}"
    return None


def _selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether a label selector matches `labels` (an empty selector matches everything)."""
    selector = _map(selector)
    for key, value in _map(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in _list(selector.get("matchExpressions")):
        key, op, values = _get(expr, "key"), _get(expr, "operator"), _list(_get(expr, "values"))
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
    peer = _map(peer)
    if "ipBlock" in peer:
        return f"ipBlock {_get(peer, 'ipBlock.cidr')}"
    if "namespaceSelector" in peer:
        ns = _map(peer["namespaceSelector"])
        if not ns.get("matchLabels") and not ns.get("matchExpressions"):
            return "every namespace"
        return None  # named namespaces (the KubeRay operator's)
    pods = _map(peer.get("podSelector"))
    if not pods.get("matchLabels") and not pods.get("matchExpressions"):
        # `podSelector: {}`: every pod of the namespace, an internet-facing tier included.
        return "every pod of the namespace"
    return None  # selected pods of this namespace (the RayService's own)


def _port_matches(rule_port: Any, port: int, names: Mapping[str, int]) -> bool:
    rule_port = _map(rule_port)
    if str(rule_port.get("protocol", "TCP")).upper() != "TCP":
        return False
    value = rule_port.get("port")
    if value is None:
        return True  # every port of the protocol
    if isinstance(value, str) and not value.isdigit():
        return names.get(value) == port
    start = int(_number(value))
    end = int(_number(rule_port.get("endPort", start)))
    return start <= port <= end


def _ray_ports_closed(inventory: InventoryLike) -> Iterator[Finding]:
    policies = _of_type(inventory, NETWORK_POLICY)
    for r in inventory.resources:
        head_path = RAY_HEADS.get(r.type)
        if head_path is None:
            continue
        head = _map(_get(r.inputs, head_path))
        namespace = _get(r.inputs, "metadata.namespace") or "default"
        labels = {**_map(_get(head, "template.metadata.labels")), **KUBERAY_HEAD_LABELS}
        names = {
            str(_get(p, "name")): int(_number(_get(p, "containerPort")))
            for c in _list(_get(head, "template.spec.containers"))
            for p in _list(_get(c, "ports"))
            if _get(p, "name")
        }
        params = _map(head.get("rayStartParams"))
        ports = [(int(_number(params.get(k, d))) or d, what) for k, d, what in RAY_CONTROL_PORTS]
        covering = [
            p
            for p in policies
            if (_get(p.inputs, "metadata.namespace") or "default") == namespace
            and "Ingress" in (_list(_get(p.inputs, "spec.policyTypes")) or ["Ingress"])
            and _selects(_get(p.inputs, "spec.podSelector"), labels)
        ]
        if not covering:
            yield Finding(
                r,
                f"no NetworkPolicy in namespace {namespace!r} selects the head pods: ports "
                f"{', '.join(str(p) for p, _ in ports)} are open to every pod in the cluster",
            )
            continue
        for policy in sorted(covering, key=lambda p: p.name):
            for i, rule in enumerate(_list(_get(policy.inputs, "spec.ingress"))):
                peers = _list(_get(rule, "from"))
                reasons = (
                    [why for peer in peers if (why := _peer_is_open(peer))]
                    if peers
                    else ["any source"]
                )
                if not reasons:
                    continue
                rule_ports = _list(_get(rule, "ports"))
                admitted = [
                    f"{what} port {port}"
                    for port, what in ports
                    if not rule_ports or any(_port_matches(rp, port, names) for rp in rule_ports)
                ]
                if admitted:
                    policy_name = _get(policy.inputs, "metadata.name") or policy.name
                    yield Finding(
                        r,
                        f"NetworkPolicy {namespace}/{policy_name} (spec.ingress[{i}]) admits the "
                        f"head's {', '.join(admitted)} from {', '.join(reasons)}",
                    )


def _load_balancer_ranges(inventory: InventoryLike) -> Iterator[Finding]:
    for r in _of_type(inventory, SERVICE):
        if _get(r.inputs, "spec.type") != "LoadBalancer":
            continue
        annotations = _map(_get(r.inputs, "metadata.annotations"))
        if any(str(annotations.get(a, "")).lower() == "internal" for a in INTERNAL_LB_ANNOTATIONS):
            continue  # reachable from the VPC only
        ranges = _list(_get(r.inputs, "spec.loadBalancerSourceRanges"))
        if not ranges:
            yield Finding(r, "an external LoadBalancer with no spec.loadBalancerSourceRanges")
        elif open_ranges := _open_cidrs(ranges):
            yield Finding(
                r,
                f"an external LoadBalancer whose spec.loadBalancerSourceRanges contain "
                f"{', '.join(open_ranges)}",
            )


# ---------------------------------------------------------------------------------------------- catalogue
NO_KEY = "no stack key sets this: "
PROD_ONLY = frozenset({"prod"})

CONTROLS: tuple[Control, ...] = (
    Control(
        "5.2.1",
        "Node pools do not run as the Compute Engine default service account",
        "mandatory",
        NO_KEY + "components/cluster.py creates a dedicated node service account and "
        "infra/program.py passes it to every pool (node_service_account_email); keep it",
        _pool_check(_node_service_account),
    ),
    Control(
        "5.2.2",
        "Workload Identity is enabled on the cluster",
        "mandatory",
        NO_KEY + "components/cluster.py sets workloadIdentityConfig.workloadPool from gcp:project "
        "(<project>.svc.id.goog); keep it",
        _cluster_check(_workload_identity),
    ),
    Control(
        "5.4.2",
        "Nodes use the GKE metadata server",
        "mandatory",
        NO_KEY + "components/cluster.py and components/gpu_node_pool.py set "
        "nodeConfig.workloadMetadataConfig.mode GKE_METADATA; keep it",
        _pool_check(_metadata_server),
    ),
    Control(
        "5.3.1",
        "Kubernetes Secrets are encrypted with a Cloud KMS key",
        "mandatory",
        "set ray-serve-gke:cluster.kmsKey to projects/P/locations/L/keyRings/R/cryptoKeys/K "
        "(`gcloud kms keys list`)",
        _cluster_check(_secrets_encryption),
        environments=PROD_ONLY,
    ),
    Control(
        "5.5.1",
        "Nodes run Container-Optimized OS with containerd",
        "mandatory",
        NO_KEY + "components/cluster.py and components/gpu_node_pool.py set nodeConfig.imageType "
        "COS_CONTAINERD; keep it",
        _pool_check(_cos_containerd),
    ),
    Control(
        "5.5.2",
        "Node auto-repair is on",
        "mandatory",
        NO_KEY + "the node pool components set management.autoRepair true; keep it",
        _pool_check(_management("autoRepair")),
    ),
    Control(
        "5.5.3",
        "Node auto-upgrade is on",
        "mandatory",
        NO_KEY + "the node pool components set management.autoUpgrade true; keep it",
        _pool_check(_management("autoUpgrade")),
    ),
    Control(
        "5.5.4",
        "The cluster follows a release channel",
        "mandatory",
        "set ray-serve-gke:cluster.releaseChannel to RAPID, REGULAR or STABLE",
        _cluster_check(_release_channel),
    ),
    Control(
        "5.5.5",
        "Shielded GKE nodes are on",
        "mandatory",
        NO_KEY + "components/cluster.py sets enableShieldedNodes true; keep it",
        _cluster_check(_shielded_nodes),
    ),
    Control(
        "5.5.6",
        "Shielded nodes monitor their integrity",
        "mandatory",
        NO_KEY + "the node pool components set nodeConfig.shieldedInstanceConfig."
        "enableIntegrityMonitoring true; keep it",
        _pool_check(_integrity_monitoring),
    ),
    Control(
        "5.5.7",
        "Shielded nodes boot securely",
        "mandatory",
        NO_KEY + "the node pool components set nodeConfig.shieldedInstanceConfig.enableSecureBoot "
        "true (changing it replaces the pool); keep it",
        _pool_check(_secure_boot),
    ),
    Control(
        "5.6.3",
        "Control-plane authorized networks are on and exclude 0.0.0.0/0",
        "mandatory",
        "list your VPN and CI ranges in ray-serve-gke:cluster.authorizedNetworks instead of 0.0.0.0/0",
        _cluster_check(_authorized_networks),
        advisory_in=frozenset({"dev"}),  # dev opens the control plane to laptops on purpose
    ),
    Control(
        "5.6.5",
        "Nodes are private (no public IPs)",
        "mandatory",
        NO_KEY + "components/cluster.py sets privateClusterConfig.enablePrivateNodes true; keep it "
        "(turning it on later recreates the cluster)",
        _private_nodes,
    ),
    Control(
        "5.6.7",
        "NetworkPolicy is enforced (Dataplane V2 or the network-policy add-on)",
        "mandatory",
        NO_KEY
        + "components/cluster.py sets datapathProvider ADVANCED_DATAPATH (Dataplane V2); keep it",
        _cluster_check(_network_policy),
    ),
    Control(
        "5.8.1",
        "Client certificate authentication is off",
        "mandatory",
        NO_KEY + "components/cluster.py sets masterAuth.clientCertificateConfig."
        "issueClientCertificate false; keep it",
        _cluster_check(_client_certificates),
    ),
    Control(
        "5.8.3",
        "Legacy authorization (ABAC) is off",
        "mandatory",
        NO_KEY + "components/cluster.py sets enableLegacyAbac false; keep it",
        _cluster_check(_legacy_abac),
    ),
    Control(
        "RAYGKE-GKE-1",
        "The cluster has deletion protection",
        "mandatory",
        "set ray-serve-gke:cluster.deletionProtection: true",
        _cluster_check(_deletion_protection),
        environments=PROD_ONLY,
    ),
    Control(
        "RAYGKE-GKE-2",
        "GPU node pools are tainted nvidia.com/gpu:NO_SCHEDULE",
        "mandatory",
        NO_KEY + "components/gpu_node_pool.py taints every GPU pool nvidia.com/gpu=present:"
        "NO_SCHEDULE and the Ray workers tolerate it; keep both",
        _pool_check(_gpu_taint),
    ),
    Control(
        "RAYGKE-NET-1",
        "External load balancers restrict their source ranges",
        "mandatory",
        "list the client ranges in ray-serve-gke:ingress.sourceRanges instead of 0.0.0.0/0, or set "
        "ray-serve-gke:ingress.exposure: internal",
        _load_balancer_ranges,
        advisory_in=frozenset({"dev"}),
    ),
    Control(
        "RAYGKE-K8S-1",
        "Ray dashboard, GCS and client ports (8265/6379/10001) are closed by a NetworkPolicy",
        "mandatory",
        NO_KEY + "components/render/rayservice.py (render_network_policy) admits the head's "
        "control ports only from the RayService's own pods and the KubeRay operator's; keep it so",
        _ray_ports_closed,
    ),
    Control(
        "RAYGKE-K8S-2",
        "Every container requests CPU and memory and limits memory",
        "mandatory",
        NO_KEY + "components/haproxy_ingress.py sizes the ingress containers; keep requests.cpu, "
        "requests.memory and limits.memory on every container",
        _container_check(
            _resources,
            ray_remediation="set ray-serve-gke:rayService.head {cpu, memory} and "
            "ray-serve-gke:rayService.workers {cpu, memory}",
        ),
    ),
    Control(
        "4.6.3",
        "Every container has a restrictive securityContext",
        "mandatory",
        NO_KEY + "components/render/rayservice.py and components/haproxy_ingress.py set "
        "allowPrivilegeEscalation false and capabilities.drop [ALL] on every container; keep it",
        _container_check(_security_context),
    ),
    Control(
        "RAYGKE-K8S-3",
        "Container images are pinned (a tag other than latest, or a digest)",
        "mandatory",
        "pin ray-serve-gke:ingress.image to a version tag (e.g. haproxy:3.2.8-alpine)",
        _container_check(
            _image_pinned,
            ray_remediation="the Ray image is ray-serve-gke:ray.imageRepository tagged "
            "<ray.version>-py311-gpu; set ray-serve-gke:ray.version to a release such as 2.60.0",
        ),
    ),
    # Advisory: a digest exists only once CI has pushed the image, and the shipped stacks cannot
    # invent one. The deploy workflow sets ray.imageDigest from the build (and the HAProxy digest
    # it resolved) before `pulumi up`.
    Control(
        "RAYGKE-K8S-4",
        "Prod images are pinned by digest",
        "advisory",
        "pin ray-serve-gke:ingress.image as repo:tag@sha256:<digest> (e.g. from `docker "
        "buildx imagetools inspect haproxy:3.2.8-alpine`)",
        _container_check(
            _image_digest,
            ray_remediation="set ray-serve-gke:ray.imageDigest to the sha256 digest CI pushed for "
            "<ray.imageRepository>:<ray.version>-py311-gpu (the deploy workflow does)",
        ),
        environments=PROD_ONLY,
    ),
)
CONTROLS_BY_ID: dict[str, Control] = {c.id: c for c in CONTROLS}


# ---------------------------------------------------------------------------------------------- evaluate
def _as_inventory(inventory: InventoryLike | Iterable[ResourceLike]) -> InventoryLike:
    resources = getattr(inventory, "resources", None)
    if resources is None:  # a plain iterable of resources
        resources = cast("Iterable[ResourceLike]", inventory)
    return Resources(list(resources))


def evaluate(
    inventory: InventoryLike | Iterable[ResourceLike],
    environment: str,
    controls: Sequence[Control] = CONTROLS,
) -> list[Violation]:
    """Every violation of `controls` (all by default) that applies to `environment`.

    Ordered by the catalogue's order, then resource type, name and message, so the output of one
    inventory never changes between runs.
    """
    if environment not in ENVIRONMENTS:
        raise ValueError(
            f"environment must be one of {', '.join(ENVIRONMENTS)} (ray-serve-gke:environment); "
            f"got {environment!r}"
        )
    inv = _as_inventory(inventory)
    violations: list[Violation] = []
    for control in controls:
        if not control.applies_to(environment):
            continue
        found = sorted(
            control.check(inv), key=lambda f: (f.resource.type, f.resource.name, f.message)
        )
        for f in found:
            violations.append(
                Violation(
                    control_id=control.id,
                    title=control.title,
                    severity=control.severity_in(environment),
                    resource_type=f.resource.type,
                    resource_name=f.resource.name,
                    message=f.message,
                    remediation=f.remediation or control.remediation,
                    urn=f.resource.urn,
                )
            )
    return violations


def mandatory(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "mandatory"]
