"""The checks of the GKE controls (CIS GKE 5.x, RAYGKE-GKE-*): clusters and node pools.

Owns: how each check reads a Cluster or NodePool's inputs (inline and default pools included) and the
message naming the field that is wrong. Each check returns a message, or None when the resource
passes; `cluster_check` and `pool_check` run one over every cluster or pool. Does not own a control's
id, severity, scope or remediation (the catalogue, policy/controls.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from components.render.cidr import open_cidrs
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

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE", "EXTENDED")
GPU_MACHINE_PREFIXES = ("a2-", "a3-", "a4-", "g2-")  # machine families that always carry GPUs
GPU_TAINT_KEY = "nvidia.com/gpu"


@dataclass(frozen=True)
class Pool:
    """A node pool as the checks see it: a NodePool resource, or one inside a Cluster's inputs."""

    resource: ResourceLike
    where: str  # path prefix for messages: "" for a NodePool, "nodePools[0]." inside a Cluster
    node_config: Mapping[str, Any]
    management: Mapping[str, Any] | None  # None: the cluster's default pool, managed by the cluster


def pools(inventory: InventoryLike) -> Iterator[Pool]:
    for r in of_type(inventory, NODE_POOL):
        yield Pool(r, "", as_map(r.inputs.get("nodeConfig")), as_map(r.inputs.get("management")))
    for r in of_type(inventory, CLUSTER):
        for i, pool in enumerate(as_list(r.inputs.get("nodePools"))):
            yield Pool(
                r,
                f"nodePools[{i}].",
                as_map(lookup(pool, "nodeConfig")),
                as_map(lookup(pool, "management")),
            )
        # The default pool only exists while removeDefaultNodePool is false; its nodeConfig is
        # otherwise a template nobody runs on.
        if not is_true(r.inputs.get("removeDefaultNodePool")):
            yield Pool(r, "", as_map(r.inputs.get("nodeConfig")), None)


def is_gpu_pool(pool: Pool) -> bool:
    accelerators = as_list(pool.node_config.get("guestAccelerators"))
    if any(as_number(lookup(a, "count")) > 0 for a in accelerators):
        return True
    machine = pool.node_config.get("machineType")
    return isinstance(machine, str) and machine.startswith(GPU_MACHINE_PREFIXES)


def cluster_check(
    test: Callable[[Mapping[str, Any]], str | None],
) -> Check:
    """A check of each Cluster's inputs; `test` returns a message for a violation, None otherwise."""

    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for r in of_type(inventory, CLUSTER):
            if (message := test(r.inputs)) is not None:
                yield Finding(r, message)

    return check


def pool_check(test: Callable[[Pool], str | None]) -> Check:
    def check(inventory: InventoryLike) -> Iterator[Finding]:
        for pool in pools(inventory):
            if (message := test(pool)) is not None:
                yield Finding(pool.resource, message)

    return check


def node_service_account(pool: Pool) -> str | None:
    account = pool.node_config.get("serviceAccount")
    if is_unknown(account):
        return None
    if not account or account == "default":
        return (
            f"{pool.where}nodeConfig.serviceAccount is {account!r}: the nodes run as the Compute "
            "Engine default service account (project Editor)"
        )
    if isinstance(account, str) and account.endswith("-compute@developer.gserviceaccount.com"):
        return f"{pool.where}nodeConfig.serviceAccount {account!r} is the Compute Engine default account"
    return None


def workload_identity(inputs: Mapping[str, Any]) -> str | None:
    pool = lookup(inputs, "workloadIdentityConfig.workloadPool")
    if is_unknown(pool) or (isinstance(pool, str) and pool.endswith(".svc.id.goog")):
        return None
    return f"workloadIdentityConfig.workloadPool is {pool!r}; expected <project>.svc.id.goog"


def metadata_server(pool: Pool) -> str | None:
    mode = lookup(pool.node_config, "workloadMetadataConfig.mode")
    if mode == "GKE_METADATA":
        return None
    return (
        f"{pool.where}nodeConfig.workloadMetadataConfig.mode is {mode!r}; expected 'GKE_METADATA'"
    )


def secrets_encryption(inputs: Mapping[str, Any]) -> str | None:
    state = lookup(inputs, "databaseEncryption.state")
    key = lookup(inputs, "databaseEncryption.keyName")
    if state == "ENCRYPTED" and key:
        return None
    return (
        f"databaseEncryption is {state!r} with keyName {key!r}: Secrets are encrypted only with "
        "Google-managed keys"
    )


def cos_containerd(pool: Pool) -> str | None:
    image = pool.node_config.get("imageType")
    if isinstance(image, str) and image.upper() == "COS_CONTAINERD":
        return None
    return f"{pool.where}nodeConfig.imageType is {image!r}; expected 'COS_CONTAINERD'"


# Management settings GKE itself imposes on a capacity mode, by the nodeConfig field that marks the
# mode: a flex-start pool is created with auto-repair off (GKE's flex-start guide creates it with
# `--no-enable-autorepair`: a repaired node would be a new capacity request), and
# components/render/node_pool.py renders it so. Off there is GKE's setting, not a weakening.
IMPOSED_MANAGEMENT: dict[str, dict[str, bool]] = {"flexStart": {"autoRepair": False}}


def imposed_management(pool: Pool) -> dict[str, bool]:
    """The management settings GKE fixes for this pool's capacity mode (none for most pools)."""
    imposed: dict[str, bool] = {}
    for marker, settings in IMPOSED_MANAGEMENT.items():
        if is_true(pool.node_config.get(marker)):
            imposed.update(settings)
    return imposed


def management(flag: str) -> Callable[[Pool], str | None]:
    def test(pool: Pool) -> str | None:
        if pool.management is None or is_true(pool.management.get(flag)):
            return None
        value = pool.management.get(flag)
        if imposed_management(pool).get(flag) is False and is_false(value):
            return None
        return f"{pool.where}management.{flag} is {value!r}; expected true"

    return test


def release_channel(inputs: Mapping[str, Any]) -> str | None:
    channel = lookup(inputs, "releaseChannel.channel")
    if channel in RELEASE_CHANNELS:
        return None
    return f"releaseChannel.channel is {channel!r}; expected one of {', '.join(RELEASE_CHANNELS)}"


def shielded_nodes(inputs: Mapping[str, Any]) -> str | None:
    # GKE turns shielded nodes on by default; only an explicit false turns them off.
    if is_false(inputs.get("enableShieldedNodes")):
        return "enableShieldedNodes is false"
    return None


def integrity_monitoring(pool: Pool) -> str | None:
    # On by default for shielded nodes; flagged only when switched off.
    value = lookup(pool.node_config, "shieldedInstanceConfig.enableIntegrityMonitoring")
    if is_false(value):
        return f"{pool.where}nodeConfig.shieldedInstanceConfig.enableIntegrityMonitoring is false"
    return None


def secure_boot(pool: Pool) -> str | None:
    # Off by default: it must be asked for.
    value = lookup(pool.node_config, "shieldedInstanceConfig.enableSecureBoot")
    if is_true(value):
        return None
    return f"{pool.where}nodeConfig.shieldedInstanceConfig.enableSecureBoot is {value!r}; expected true"


def authorized_networks(inputs: Mapping[str, Any]) -> str | None:
    config = inputs.get("masterAuthorizedNetworksConfig")
    if not isinstance(config, Mapping):
        return "masterAuthorizedNetworksConfig is not set: the control plane accepts any address"
    blocks = [lookup(block, "cidrBlock") for block in as_list(config.get("cidrBlocks"))]
    if open_blocks := open_cidrs(blocks):
        return f"masterAuthorizedNetworksConfig.cidrBlocks contains {', '.join(open_blocks)}"
    return None


def private_nodes(inventory: InventoryLike) -> Iterator[Finding]:
    for r in of_type(inventory, CLUSTER):
        value = lookup(r.inputs, "privateClusterConfig.enablePrivateNodes")
        if not is_true(value):
            yield Finding(
                r, f"privateClusterConfig.enablePrivateNodes is {value!r}: nodes get public IPs"
            )
    for r in of_type(inventory, NODE_POOL):
        # A pool can opt out of the cluster's private nodes on its own.
        if is_false(lookup(r.inputs, "networkConfig.enablePrivateNodes")):
            yield Finding(
                r, "networkConfig.enablePrivateNodes is false: this pool's nodes get public IPs"
            )


def network_policy(inputs: Mapping[str, Any]) -> str | None:
    datapath = inputs.get("datapathProvider")
    if datapath == "ADVANCED_DATAPATH":
        return None  # Dataplane V2 enforces NetworkPolicy natively
    calico = is_true(lookup(inputs, "networkPolicy.enabled")) and not is_true(
        lookup(inputs, "addonsConfig.networkPolicyConfig.disabled")
    )
    if calico:
        return None
    return (
        f"datapathProvider is {datapath!r} and networkPolicy is not enabled: NetworkPolicies "
        "are stored but not enforced"
    )


def client_certificates(inputs: Mapping[str, Any]) -> str | None:
    if is_true(lookup(inputs, "masterAuth.clientCertificateConfig.issueClientCertificate")):
        return "masterAuth.clientCertificateConfig.issueClientCertificate is true"
    return None


def legacy_abac(inputs: Mapping[str, Any]) -> str | None:
    if is_true(inputs.get("enableLegacyAbac")):
        return "enableLegacyAbac is true"
    return None


def deletion_protection(inputs: Mapping[str, Any]) -> str | None:
    # pulumi-gcp defaults deletionProtection to true; only an explicit false removes it.
    if is_false(inputs.get("deletionProtection")):
        return "deletionProtection is false: `pulumi destroy` or a replacement deletes the cluster"
    return None


def gpu_taint(pool: Pool) -> str | None:
    if not is_gpu_pool(pool):
        return None
    taints = as_list(pool.node_config.get("taints"))
    if any(
        lookup(t, "key") == GPU_TAINT_KEY and lookup(t, "effect") == "NO_SCHEDULE" for t in taints
    ):
        return None
    keys = [f"{lookup(t, 'key')}:{lookup(t, 'effect')}" for t in taints]
    return (
        f"{pool.where}nodeConfig.taints {keys} lack {GPU_TAINT_KEY}:NO_SCHEDULE: any pod may "
        "schedule onto the GPU nodes"
    )


def gpu_pool_floor(pool: Pool) -> str | None:
    """A GPU pool that may shrink to no node makes the next request wait for one to boot, pull the
    Ray image and load the model: minutes, not a latency an SLO survives."""
    if not is_gpu_pool(pool) or pool.where:  # inline pools: the cluster's, never ours
        return None
    autoscaling = as_map(pool.resource.inputs.get("autoscaling"))
    if not autoscaling:
        return None  # a fixed nodeCount
    floors = [autoscaling.get(k) for k in ("totalMinNodeCount", "minNodeCount")]
    if any(is_unknown(f) for f in floors) or any(as_number(f) >= 1 for f in floors):
        return None
    return "autoscaling lets the GPU pool shrink to 0 nodes (totalMinNodeCount and minNodeCount unset or 0)"
