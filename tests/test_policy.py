"""The policy controls (policy/): each control passes a hardened hand-made inventory and fails a mutation
of it; the real stacks have no mandatory violation for their environment; the insecure fixture stack
trips an exact list; the pulumi_policy pack's adapter works without pulumi_policy installed."""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import py_compile
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from stackfiles import edit
from stackfiles import mutated as mutated_stack

from policy import (
    CONTROLS,
    CONTROLS_BY_ID,
    UNKNOWN,
    Resource,
    Violation,
    evaluate,
    mandatory,
    render_violations,
    violations_json,
)

ROOT = Path(__file__).resolve().parent.parent
PACK_MAIN = ROOT / "policy" / "pack" / "__main__.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RAYSERVICE = "kubernetes:ray.io/v1:RayService"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SERVICE = "kubernetes:core/v1:Service"
API = "gcp:projects/service:Service"


# ---------------------------------------------------------------------------------------------- a hardened inventory
PIN = "@sha256:" + "d" * 64  # a digest: prod images carry one (RAYGKE-K8S-4)


def _container(name: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def _node_config(**extra: Any) -> dict[str, Any]:
    return {
        "imageType": "COS_CONTAINERD",
        "serviceAccount": "nodes@p.iam.gserviceaccount.com",
        "shieldedInstanceConfig": {"enableSecureBoot": True, "enableIntegrityMonitoring": True},
        "workloadMetadataConfig": {"mode": "GKE_METADATA"},
        **extra,
    }


def good() -> dict[str, tuple[str, dict[str, Any]]]:
    """A small stack that passes every control in prod: key -> (type, inputs). Fresh on each call."""
    ray_labels = {"raygke.io/rayservice": "serving"}
    return {
        "cluster": (
            CLUSTER,
            {
                "privateClusterConfig": {"enablePrivateNodes": True},
                "masterAuthorizedNetworksConfig": {
                    "cidrBlocks": [{"cidrBlock": "203.0.113.0/24", "displayName": "vpn"}]
                },
                "workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
                "databaseEncryption": {"state": "ENCRYPTED", "keyName": "projects/p/.../k"},
                "releaseChannel": {"channel": "STABLE"},
                "enableShieldedNodes": True,
                "datapathProvider": "ADVANCED_DATAPATH",
                "masterAuth": {"clientCertificateConfig": {"issueClientCertificate": False}},
                "enableLegacyAbac": False,
                "deletionProtection": True,
                "removeDefaultNodePool": True,
                "nodeConfig": {"serviceAccount": "nodes@p.iam.gserviceaccount.com"},
            },
        ),
        "system": (
            NODE_POOL,
            {
                "management": {"autoRepair": True, "autoUpgrade": True},
                "nodeConfig": _node_config(machineType="e2-standard-4"),
            },
        ),
        "gpu": (
            NODE_POOL,
            {
                "management": {"autoRepair": True, "autoUpgrade": True},
                "autoscaling": {"totalMinNodeCount": 1.0, "totalMaxNodeCount": 2.0},
                "nodeConfig": _node_config(
                    machineType="a3-highgpu-8g",
                    guestAccelerators=[{"type": "nvidia-h100-80gb", "count": 8.0}],
                    taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}],
                ),
            },
        ),
        "ingress": (
            DEPLOYMENT,
            {
                "metadata": {"name": "ingress", "namespace": "ray-serve"},
                "spec": {
                    "template": {
                        "spec": {"containers": [_container("haproxy", "haproxy:3.2.8" + PIN)]}
                    }
                },
            },
        ),
        "lb": (
            SERVICE,
            {
                "metadata": {"name": "ingress", "namespace": "ray-serve"},
                "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["198.51.100.0/24"]},
            },
        ),
        "rayservice": (
            RAYSERVICE,
            {
                "metadata": {"name": "serving", "namespace": "ray-serve"},
                "spec": {
                    "rayClusterConfig": {
                        "gcsFaultToleranceOptions": {"redisAddress": "10.50.16.3:6379"},
                        "headGroupSpec": {
                            "rayStartParams": {},
                            "template": {
                                "metadata": {"labels": dict(ray_labels)},
                                "spec": {
                                    "containers": [
                                        {
                                            **_container(
                                                "ray-head", "repo/ray:2.60.0-py311-gpu" + PIN
                                            ),
                                            "ports": [
                                                {"name": "dashboard", "containerPort": 8265.0},
                                                {"name": "gcs-server", "containerPort": 6379.0},
                                                {"name": "client", "containerPort": 10001.0},
                                            ],
                                        }
                                    ]
                                },
                            },
                        },
                        "workerGroupSpecs": [
                            {
                                "minReplicas": 1.0,
                                "template": {
                                    "metadata": {"labels": dict(ray_labels)},
                                    "spec": {
                                        "containers": [
                                            _container(
                                                "ray-worker", "repo/ray:2.60.0-py311-gpu" + PIN
                                            )
                                        ]
                                    },
                                },
                            }
                        ],
                    }
                },
            },
        ),
        "container-api": (API, {"service": "container.googleapis.com"}),
        "kms-api": (API, {"service": "cloudkms.googleapis.com"}),
        "kms-grant": (
            "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",
            {
                "cryptoKeyId": "projects/p/.../k",
                "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                "member": "serviceAccount:service-123@container-engine-robot.iam.gserviceaccount.com",
            },
        ),
        "netpol": (
            NETPOL,
            {
                "metadata": {"name": "serving-ray", "namespace": "ray-serve"},
                "spec": {
                    "podSelector": {"matchLabels": dict(ray_labels)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        # the ingress tier reaches Serve only
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": "haproxy"}}}],
                            "ports": [{"port": 8000.0, "protocol": "TCP"}],
                        },
                        # control ports: the RayService's own pods and the operator's namespace
                        {
                            "from": [{"podSelector": {"matchLabels": dict(ray_labels)}}],
                            "ports": [{"port": 8265.0}, {"port": 6379.0}, {"port": 10001.0}],
                        },
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchLabels": {
                                            "kubernetes.io/metadata.name": "kuberay-system"
                                        }
                                    }
                                }
                            ],
                            "ports": [{"port": 8265.0, "protocol": "TCP"}],
                        },
                        # metrics from anywhere is fine: not a control port
                        {"ports": [{"port": 8080.0, "protocol": "TCP"}]},
                    ],
                },
            },
        ),
    }


def inventory(stack: dict[str, tuple[str, dict[str, Any]]]) -> list[Resource]:
    return [
        Resource(type_, key, inputs, urn=f"urn:{key}") for key, (type_, inputs) in stack.items()
    ]


def ids(violations: list[Violation]) -> list[str]:
    return [v.control_id for v in violations]


def at(stack: dict[str, tuple[str, dict[str, Any]]], key: str) -> dict[str, Any]:
    return stack[key][1]


def head(stack: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return at(stack, "rayservice")["spec"]["rayClusterConfig"]["headGroupSpec"]


def netpol_rules(stack: dict[str, tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return at(stack, "netpol")["spec"]["ingress"]


Mutation = Callable[[dict[str, tuple[str, dict[str, Any]]]], None]

# One failing mutation per control (control id, what to break, a fragment of the expected message).
FAILING: list[tuple[str, Mutation, str]] = [
    (
        "5.2.1",
        lambda s: at(s, "gpu")["nodeConfig"].update(
            serviceAccount="123-compute@developer.gserviceaccount.com"
        ),
        "Compute Engine default",
    ),
    ("5.2.2", lambda s: at(s, "cluster").pop("workloadIdentityConfig"), "workloadPool is None"),
    (
        "5.4.2",
        lambda s: at(s, "system")["nodeConfig"]["workloadMetadataConfig"].update(
            mode="GCE_METADATA"
        ),
        "'GCE_METADATA'",
    ),
    ("5.3.1", lambda s: at(s, "cluster").pop("databaseEncryption"), "Google-managed keys"),
    ("5.5.1", lambda s: at(s, "gpu")["nodeConfig"].update(imageType="UBUNTU_CONTAINERD"), "UBUNTU"),
    ("5.5.2", lambda s: at(s, "gpu")["management"].update(autoRepair=False), "autoRepair is False"),
    ("5.5.3", lambda s: at(s, "system")["management"].pop("autoUpgrade"), "autoUpgrade is None"),
    ("5.5.4", lambda s: at(s, "cluster").pop("releaseChannel"), "releaseChannel.channel is None"),
    ("5.5.5", lambda s: at(s, "cluster").update(enableShieldedNodes=False), "enableShieldedNodes"),
    (
        "5.5.6",
        lambda s: at(s, "gpu")["nodeConfig"]["shieldedInstanceConfig"].update(
            enableIntegrityMonitoring=False
        ),
        "enableIntegrityMonitoring is false",
    ),
    (
        "5.5.7",
        lambda s: at(s, "system")["nodeConfig"]["shieldedInstanceConfig"].pop("enableSecureBoot"),
        "enableSecureBoot is None",
    ),
    (
        "5.6.3",
        lambda s: at(s, "cluster")["masterAuthorizedNetworksConfig"]["cidrBlocks"].append(
            {"cidrBlock": "0.0.0.0/0", "displayName": "anywhere"}
        ),
        "contains 0.0.0.0/0",
    ),
    (
        "5.6.5",
        lambda s: at(s, "cluster")["privateClusterConfig"].update(enablePrivateNodes=False),
        "public IPs",
    ),
    (
        "5.6.7",
        lambda s: at(s, "cluster").update(datapathProvider="LEGACY_DATAPATH"),
        "not enforced",
    ),
    (
        "5.8.1",
        lambda s: at(s, "cluster")["masterAuth"]["clientCertificateConfig"].update(
            issueClientCertificate=True
        ),
        "issueClientCertificate is true",
    ),
    ("5.8.3", lambda s: at(s, "cluster").update(enableLegacyAbac=True), "enableLegacyAbac"),
    ("RAYGKE-GKE-1", lambda s: at(s, "cluster").update(deletionProtection=False), "pulumi destroy"),
    ("RAYGKE-GKE-2", lambda s: at(s, "gpu")["nodeConfig"].pop("taints"), "any pod may schedule"),
    (
        "RAYGKE-GKE-3",
        lambda s: at(s, "gpu")["autoscaling"].update(totalMinNodeCount=0.0),
        "shrink to 0 nodes",
    ),
    ("RAYGKE-DEP-1", lambda s: s.pop("kms-api"), "needs cloudkms.googleapis.com"),
    ("RAYGKE-DEP-2", lambda s: s.pop("kms-grant"), "GKE refuses to create the cluster"),
    (
        "RAYGKE-K8S-5",
        lambda s: at(s, "rayservice")["spec"]["rayClusterConfig"].pop("gcsFaultToleranceOptions"),
        "a head restart loses every Serve app",
    ),
    (
        "RAYGKE-NET-1",
        lambda s: at(s, "lb")["spec"].update(loadBalancerSourceRanges=["0.0.0.0/0"]),
        "contain 0.0.0.0/0",
    ),
    (
        "RAYGKE-K8S-1",
        lambda s: netpol_rules(s)[1]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
        "NetworkPolicy ray-serve/serving-ray (spec.ingress[1]) admits the head's dashboard port "
        "8265, GCS port 6379, Ray client port 10001 from ipBlock 0.0.0.0/0",
    ),
    (
        "RAYGKE-K8S-2",
        lambda s: head(s)["template"]["spec"]["containers"][0]["resources"].pop("limits"),
        "containers[ray-head] sets no resources.limits.memory",
    ),
    (
        "4.6.3",
        lambda s: at(s, "ingress")["spec"]["template"]["spec"]["containers"][0].pop(
            "securityContext"
        ),
        "containers[haproxy] has no securityContext",
    ),
    (
        "RAYGKE-K8S-3",
        lambda s: at(s, "ingress")["spec"]["template"]["spec"]["containers"][0].update(
            image="haproxy:latest"
        ),
        "tag 'latest'",
    ),
    (
        "RAYGKE-K8S-4",
        lambda s: at(s, "ingress")["spec"]["template"]["spec"]["containers"][0].update(
            image="haproxy:3.2.8-alpine"
        ),
        "containers[haproxy].image 'haproxy:3.2.8-alpine': pinned by tag only",
    ),
]


def mutated(mutation: Mutation) -> list[Resource]:
    stack = good()
    mutation(stack)
    return inventory(stack)


# ---------------------------------------------------------------------------------------------- the catalogue
@pytest.mark.pure
def test_catalogue_has_the_issue_controls_with_ids_titles_and_remediations():
    assert len(CONTROLS) >= 15
    assert len(CONTROLS_BY_ID) == len(CONTROLS), "control ids must be unique"
    required = {"5.2.1", "5.2.2", "5.3.1", "5.5.1", "5.5.2", "5.5.3", "5.5.4", "5.5.5", "5.5.6"}
    required |= {"5.5.7", "5.6.3", "5.6.5", "5.6.7", "5.8.1", "5.8.3", "RAYGKE-GKE-1"}
    required |= {"RAYGKE-GKE-2", "RAYGKE-K8S-1", "RAYGKE-K8S-2", "4.6.3", "RAYGKE-K8S-3"}
    assert required <= set(CONTROLS_BY_ID)
    for control in CONTROLS:
        assert control.title and control.severity in ("mandatory", "advisory")
        # a remediation names the stack key, or says no key sets it and which module does
        assert "ray-serve-gke:" in control.remediation or "no stack key" in control.remediation
    assert CONTROLS_BY_ID["5.3.1"].environments == {"prod"}
    assert CONTROLS_BY_ID["RAYGKE-GKE-1"].environments == {"prod"}


@pytest.mark.pure
def test_every_control_has_a_failing_fixture():
    assert sorted(cid for cid, _, _ in FAILING) == sorted(CONTROLS_BY_ID)


# ---------------------------------------------------------------------------------------------- pass / fail per control
@pytest.mark.pure
@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.id)
def test_control_passes_the_hardened_inventory(control):
    assert evaluate(inventory(good()), "prod", controls=(control,)) == []


@pytest.mark.pure
@pytest.mark.parametrize(
    ("control_id", "mutation", "fragment"), FAILING, ids=[f[0] for f in FAILING]
)
def test_control_fails_its_mutation_and_only_it_fails(
    control_id: str, mutation: Mutation, fragment: str
):
    violations = evaluate(mutated(mutation), "prod")
    assert ids(violations) == [control_id], render_violations(violations)
    (v,) = violations
    assert fragment in v.message
    assert v.severity == CONTROLS_BY_ID[control_id].severity
    assert v.remediation == CONTROLS_BY_ID[control_id].remediation or control_id.startswith(
        "RAYGKE-K8S"
    )
    assert v.urn.startswith("urn:")


# ---------------------------------------------------------------------------------------------- variants worth pinning
def _one(stack_mutation: Mutation, environment: str = "prod") -> list[Violation]:
    return evaluate(mutated(stack_mutation), environment)


@pytest.mark.pure
def test_environment_scope_and_severity():
    def open_everything(s):
        at(s, "cluster").update(deletionProtection=False)
        at(s, "cluster").pop("databaseEncryption")
        at(s, "cluster")["masterAuthorizedNetworksConfig"]["cidrBlocks"] = [
            {"cidrBlock": "0.0.0.0/0"}
        ]

    dev = _one(open_everything, "dev")
    assert [(v.control_id, v.severity) for v in dev] == [("5.6.3", "advisory")]
    staging = _one(open_everything, "staging")
    assert [(v.control_id, v.severity) for v in staging] == [("5.6.3", "mandatory")]
    prod = _one(open_everything, "prod")
    assert ids(prod) == ["5.3.1", "5.6.3", "RAYGKE-GKE-1"]
    assert mandatory(prod) == prod


@pytest.mark.pure
def test_unknown_values_are_not_violations():
    def preview(s):
        at(s, "gpu")["nodeConfig"]["serviceAccount"] = UNKNOWN
        at(s, "cluster")["workloadIdentityConfig"]["workloadPool"] = UNKNOWN
        at(s, "ingress")["spec"]["template"]["spec"]["containers"][0]["image"] = UNKNOWN

    assert _one(preview) == []


@pytest.mark.pure
@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("haproxy", "no tag"),
        ("registry:5000/team/haproxy", "no tag"),
        ("haproxy:latest", "tag 'latest'"),
        ("", "no image"),
        ("haproxy:3.2.8-alpine", None),
        ("registry:5000/team/haproxy:3.2", None),
        ("haproxy@sha256:" + "a" * 64, None),
    ],
)
def test_image_pinning(image: str, problem: str | None):
    def set_image(s):
        at(s, "ingress")["spec"]["template"]["spec"]["containers"][0]["image"] = image

    found = [v for v in _one(set_image) if v.control_id != "RAYGKE-K8S-4"]  # digests: below
    if problem is None:
        assert found == []
    else:
        assert ids(found) == ["RAYGKE-K8S-3"] and problem in found[0].message


@pytest.mark.pure
def test_init_containers_and_cronjobs_are_checked():
    stack = good()
    bare = {"name": "setup", "image": "busybox:1.37"}
    at(stack, "ingress")["spec"]["template"]["spec"]["initContainers"] = [bare]
    stack["cron"] = (
        "kubernetes:batch/v1:CronJob",
        {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [bare]}}}}}},
    )
    found = evaluate(inventory(stack), "prod")
    assert sorted((v.control_id, v.resource_name) for v in found) == [
        ("4.6.3", "cron"),
        ("4.6.3", "ingress"),
        ("RAYGKE-K8S-2", "cron"),
        ("RAYGKE-K8S-2", "ingress"),
        ("RAYGKE-K8S-4", "cron"),
        ("RAYGKE-K8S-4", "ingress"),
    ]
    assert any("initContainers[setup]" in v.message for v in found)


@pytest.mark.pure
def test_ray_remediation_names_the_ray_keys():
    def drop_worker_limits(s):
        spec = at(s, "rayservice")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        spec["template"]["spec"]["containers"][0]["resources"].pop("limits")

    (v,) = _one(drop_worker_limits)
    assert "workerGroupSpecs[0].template.spec.containers[ray-worker]" in v.message
    assert "ray-serve-gke:rayService.workers" in v.remediation


@pytest.mark.pure
def test_security_context_lists_each_problem():
    def weaken(s):
        c = at(s, "ingress")["spec"]["template"]["spec"]["containers"][0]
        c["securityContext"] = {"privileged": True}

    (v,) = _one(weaken)
    assert v.control_id == "4.6.3"
    assert "allowPrivilegeEscalation is None" in v.message
    assert "privileged is true" in v.message
    assert "capabilities.drop lacks ALL" in v.message


@pytest.mark.pure
@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda s: s.pop("netpol"), "no NetworkPolicy in namespace 'ray-serve' selects the head"),
        (
            lambda s: at(s, "netpol")["metadata"].update(namespace="other"),
            "no NetworkPolicy in namespace 'ray-serve'",
        ),
        (
            lambda s: at(s, "netpol")["spec"].update(policyTypes=["Egress"]),
            "no NetworkPolicy",
        ),
        (
            lambda s: at(s, "netpol")["spec"]["podSelector"].update(matchLabels={"app": "other"}),
            "no NetworkPolicy",
        ),
        (
            lambda s: netpol_rules(s)[1].pop("from"),
            "dashboard port 8265, GCS port 6379, Ray client port 10001 from any source",
        ),
        (
            lambda s: netpol_rules(s)[2]["from"][0].update(namespaceSelector={}),
            "admits the head's dashboard port 8265 from every namespace",
        ),
        (
            lambda s: netpol_rules(s)[3].pop("ports"),
            "(spec.ingress[3]) admits the head's dashboard port 8265, GCS port 6379",
        ),
        (
            lambda s: netpol_rules(s)[3]["ports"].append({"port": "dashboard"}),
            "admits the head's dashboard port 8265 from any source",
        ),
        (
            lambda s: netpol_rules(s)[3]["ports"].append({"port": 6000, "endPort": 7000}),
            "admits the head's GCS port 6379 from any source",
        ),
    ],
)
def test_ray_control_ports(mutation: Mutation, expected: str):
    found = _one(mutation)
    assert set(ids(found)) == {"RAYGKE-K8S-1"}
    assert any(expected in v.message for v in found), [v.message for v in found]


@pytest.mark.pure
def test_ray_control_ports_follow_ray_start_params_and_kuberay_labels():
    def move_dashboard(s):
        head(s)["rayStartParams"]["dashboard-port"] = "8266"
        netpol_rules(s)[3]["ports"].append({"port": 8266})

    (v,) = _one(move_dashboard)
    assert v.message.endswith("admits the head's dashboard port 8266 from any source")

    def select_by_kuberay_label(s):
        at(s, "netpol")["spec"]["podSelector"] = {
            "matchExpressions": [{"key": "ray.io/node-type", "operator": "In", "values": ["head"]}]
        }

    assert _one(select_by_kuberay_label) == []
    # UDP on a control port is not the TCP service
    assert (
        _one(lambda s: netpol_rules(s)[3]["ports"].append({"port": 6379, "protocol": "UDP"})) == []
    )


@pytest.mark.pure
def test_internal_load_balancers_and_missing_ranges():
    def internal_open(s):
        lb = at(s, "lb")
        lb["metadata"]["annotations"] = {"networking.gke.io/load-balancer-type": "Internal"}
        lb["spec"]["loadBalancerSourceRanges"] = ["0.0.0.0/0"]

    assert _one(internal_open) == []
    (v,) = _one(lambda s: at(s, "lb")["spec"].pop("loadBalancerSourceRanges"))
    assert "no spec.loadBalancerSourceRanges" in v.message
    assert (
        _one(lambda s: at(s, "lb")["spec"].update(type="ClusterIP", loadBalancerSourceRanges=[]))
        == []
    )


@pytest.mark.pure
def test_network_policy_addon_passes_instead_of_dataplane_v2():
    def calico(s):
        at(s, "cluster").pop("datapathProvider")
        at(s, "cluster")["networkPolicy"] = {"enabled": True, "provider": "CALICO"}

    assert _one(calico) == []

    def calico_addon_disabled(s):
        calico(s)
        at(s, "cluster")["addonsConfig"] = {"networkPolicyConfig": {"disabled": True}}

    assert ids(_one(calico_addon_disabled)) == ["5.6.7"]


@pytest.mark.pure
def test_pool_level_public_nodes_and_machine_type_gpu_pools():
    found = _one(lambda s: at(s, "gpu").update(networkConfig={"enablePrivateNodes": False}))
    assert [(v.control_id, v.resource_name) for v in found] == [("5.6.5", "gpu")]

    def a3_without_accelerators(s):
        at(s, "gpu")["nodeConfig"].pop("guestAccelerators")
        at(s, "gpu")["nodeConfig"].pop("taints")

    assert ids(_one(a3_without_accelerators)) == ["RAYGKE-GKE-2"]


@pytest.mark.pure
def test_a_kept_default_pool_and_inline_pools_are_checked():
    def keep_default_pool(s):
        at(s, "cluster")["removeDefaultNodePool"] = (
            False  # its nodeConfig lacks COS, boot, metadata
        )

    found = _one(keep_default_pool)
    assert ids(found) == ["5.4.2", "5.5.1", "5.5.7"]
    assert {v.resource_name for v in found} == {"cluster"}

    def inline_pool(s):
        at(s, "cluster")["nodePools"] = [
            {"nodeConfig": _node_config(), "management": {"autoRepair": True, "autoUpgrade": False}}
        ]

    (v,) = _one(inline_pool)
    assert v.control_id == "5.5.3" and v.message.startswith("nodePools[0].management.autoUpgrade")


@pytest.mark.pure
def test_auto_repair_may_be_off_only_where_gke_turns_it_off():
    # GKE creates flex-start pools with auto-repair off (components/render/node_pool.py renders it so).
    def flex_start(s):
        at(s, "gpu")["nodeConfig"]["flexStart"] = True
        at(s, "gpu")["management"]["autoRepair"] = False

    assert _one(flex_start) == []

    def flex_start_off(s):
        flex_start(s)
        at(s, "gpu")["nodeConfig"]["flexStart"] = False

    def flex_start_without_auto_upgrade(s):
        flex_start(s)
        at(s, "gpu")["management"]["autoUpgrade"] = False

    # Any other pool still needs it on, and flex-start waives nothing else.
    assert ids(_one(lambda s: at(s, "gpu")["management"].update(autoRepair=False))) == ["5.5.2"]
    assert ids(_one(flex_start_off)) == ["5.5.2"]
    assert ids(_one(flex_start_without_auto_upgrade)) == ["5.5.3"]


@pytest.mark.pure
def test_authorized_networks_must_be_configured():
    (v,) = _one(lambda s: at(s, "cluster").pop("masterAuthorizedNetworksConfig"))
    assert v.control_id == "5.6.3" and "accepts any address" in v.message
    # an empty list admits nobody from outside Google: the strictest setting
    assert (
        _one(lambda s: at(s, "cluster")["masterAuthorizedNetworksConfig"].update(cidrBlocks=[]))
        == []
    )


# ---------------------------------------------------------------------------------------------- evaluate + render
@pytest.mark.pure
def test_evaluate_rejects_an_unknown_environment():
    with pytest.raises(
        ValueError, match=r"environment must be one of dev, staging, prod .*got 'qa'"
    ):
        evaluate(inventory(good()), "qa")


@pytest.mark.pure
def test_evaluate_is_deterministic_and_in_catalogue_order():
    def break_many(s):
        for key in ("gpu", "system"):
            at(s, key)["nodeConfig"]["imageType"] = "UBUNTU"
        at(s, "cluster").update(enableLegacyAbac=True, deletionProtection=False)

    stack = good()
    break_many(stack)
    forward = evaluate(inventory(stack), "prod")
    backward = evaluate(list(reversed(inventory(stack))), "prod")
    assert forward == backward
    assert [(v.control_id, v.resource_name) for v in forward] == [
        ("5.5.1", "gpu"),
        ("5.5.1", "system"),
        ("5.8.3", "cluster"),
        ("RAYGKE-GKE-1", "cluster"),
    ]


@pytest.mark.pure
def test_render_violations():
    assert render_violations([]) == "policy: no violations"
    stack = good()
    at(stack, "cluster")["masterAuthorizedNetworksConfig"]["cidrBlocks"] = [
        {"cidrBlock": "0.0.0.0/0"}
    ]
    at(stack, "cluster")["enableLegacyAbac"] = True
    text = render_violations(evaluate(inventory(stack), "dev"))
    assert text.splitlines() == [
        "policy: 1 mandatory, 1 advisory",
        "  [mandatory] 5.8.3 Legacy authorization (ABAC) is off",
        "      gcp:container/cluster:Cluster  cluster: enableLegacyAbac is true",
        f"      fix: {CONTROLS_BY_ID['5.8.3'].remediation}",
        "  [advisory] 5.6.3 Control-plane authorized networks are on and exclude 0.0.0.0/0",
        "      gcp:container/cluster:Cluster  cluster: masterAuthorizedNetworksConfig.cidrBlocks "
        "contains 0.0.0.0/0",
        f"      fix: {CONTROLS_BY_ID['5.6.3'].remediation}",
    ]
    (first, _) = violations_json(evaluate(inventory(stack), "dev"))
    assert first["control_id"] == "5.6.3" and first["severity"] == "advisory"


# ---------------------------------------------------------------------------------------------- real stacks
@functools.cache
def _stack_inventory(stack: str):
    from raygke.plan import plan_stack

    return plan_stack(stack).inventory


@functools.cache
def _insecure_inventory():
    from infra.program import run_program
    from infra.stack_file import parse_stack_config, read_stack_file
    from raygke.mocks import run_with_mocks

    config = read_stack_file("insecure", FIXTURES)
    assert parse_stack_config("insecure", config).environment == "dev"  # config-valid
    inventory, _ = run_with_mocks(run_program, stack="insecure", config=config)
    return inventory


@pytest.mark.mocks
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_real_stacks_have_no_mandatory_violations(stack: str):
    violations = evaluate(_stack_inventory(stack), stack)
    assert mandatory(violations) == [], render_violations(violations)


@pytest.mark.mocks
def test_a_flex_start_stack_plans_without_mandatory_violations():
    from infra.program import run_program
    from infra.stack_file import parse_stack_config
    from raygke.mocks import run_with_mocks

    config = mutated_stack("dev", edit("gpuPool", capacity={"mode": "flex-start"}))
    environment = parse_stack_config("dev", config).environment
    inventory, _ = run_with_mocks(run_program, stack="dev", config=config)
    (gpu,) = [p for p in inventory.of_type(NODE_POOL) if p.inputs["nodeConfig"].get("flexStart")]
    assert gpu.inputs["management"]["autoRepair"] is False  # as GKE requires of flex-start
    violations = evaluate(inventory, environment)
    assert mandatory(violations) == [], render_violations(violations)


@pytest.mark.mocks
def test_prod_has_only_digest_advisories_and_dev_only_its_open_control_plane():
    # The shipped prod stack cannot carry digests (CI makes them; the deploy workflow pins them).
    prod = evaluate(_stack_inventory("prod"), "prod")
    assert sorted((v.control_id, v.severity, v.message.split(".image")[0]) for v in prod) == [
        (
            "RAYGKE-K8S-4",
            "advisory",
            "spec.rayClusterConfig.headGroupSpec.template.spec.containers[ray-head]",
        ),
        (
            "RAYGKE-K8S-4",
            "advisory",
            "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[ray-worker]",
        ),
        ("RAYGKE-K8S-4", "advisory", "spec.template.spec.containers[haproxy]"),
    ]
    assert [(v.control_id, v.severity) for v in evaluate(_stack_inventory("dev"), "dev")] == [
        ("5.6.3", "advisory")
    ]


@pytest.mark.mocks
def test_insecure_stack_trips_a_known_list():
    inv = _insecure_inventory()
    dev = evaluate(inv, "dev")
    assert [(v.control_id, v.severity, v.resource_name) for v in dev] == [
        ("5.6.3", "advisory", "raygke-insecure-cluster"),
        ("RAYGKE-NET-1", "advisory", "ingress-lb"),
    ]
    prod = evaluate(inv, "prod")
    assert [(v.control_id, v.severity) for v in prod] == [
        ("5.3.1", "mandatory"),
        ("5.6.3", "mandatory"),
        ("RAYGKE-GKE-1", "mandatory"),
        ("RAYGKE-GKE-3", "mandatory"),  # the GPU pool's floor and the worker group's
        ("RAYGKE-GKE-3", "mandatory"),
        ("RAYGKE-NET-1", "mandatory"),
        ("RAYGKE-K8S-5", "mandatory"),
        ("RAYGKE-K8S-4", "advisory"),  # Ray head, Ray worker, HAProxy: tags, no digests
        ("RAYGKE-K8S-4", "advisory"),
        ("RAYGKE-K8S-4", "advisory"),
    ]


@pytest.mark.mocks
def test_mutated_prod_inventory_loses_its_network_policy():
    from raygke.mocks import Inventory

    prod = _stack_inventory("prod")
    without = Inventory(
        [r for r in prod.resources if r.type != NETPOL or r.name == "ingress-netpol"]
    )
    (v,) = mandatory(evaluate(without, "prod"))
    assert (v.control_id, v.resource_type) == ("RAYGKE-K8S-1", RAYSERVICE)
    weakened = copy.deepcopy(prod)
    policy = weakened.one(NETPOL, "serving-netpol")
    policy.inputs["spec"]["ingress"][3]["from"] = [{"namespaceSelector": {}}]
    assert {v.message.split(" from ")[1] for v in mandatory(evaluate(weakened, "prod"))} == {
        "every namespace"
    }
    # The renderer's old rule: the control ports open to every pod of the namespace.
    policy.inputs["spec"]["ingress"][3]["from"] = [{"podSelector": {}}]
    assert {v.message.split(" from ")[1] for v in mandatory(evaluate(weakened, "prod"))} == {
        "every pod of the namespace"
    }


# ---------------------------------------------------------------------------------------------- the pack
def _load_pack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("raygke_policy_pack", PACK_MAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.pure
def test_pack_files_compile_and_import_pulumi_policy_only_in_main():
    py_compile.compile(str(PACK_MAIN), doraise=True)
    tree = ast.parse(PACK_MAIN.read_text())
    top_level = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "pulumi_policy" not in top_level and "pulumi" not in top_level
    before = set(sys.modules)
    _load_pack()
    assert "pulumi_policy" not in set(sys.modules) - before
    requirements = (PACK_MAIN.parent / "requirements.txt").read_text()
    assert "pulumi-policy==" in requirements
    assert "runtime:" in (PACK_MAIN.parent / "PulumiPolicy.yaml").read_text()


class UnknownValueError(Exception):
    """Stands in for pulumi_policy.proxy.UnknownValueError (matched by name)."""


class _Proxy(dict):
    """Like pulumi_policy's _DictProxy: reading an unknown value raises."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if value == "?":
            raise UnknownValueError(key)
        return value


class _ListProxy(list):
    def __getitem__(self, index):
        value = super().__getitem__(index)
        if value == "?":
            raise UnknownValueError(index)
        return value


@pytest.mark.pure
def test_pack_adapter_turns_policy_resources_into_plain_resources():
    pack = _load_pack()
    props = _Proxy(
        {
            "nodeConfig": _Proxy({"serviceAccount": "?", "imageType": "COS_CONTAINERD"}),
            "nodeLocations": _ListProxy(["us-central1-a", "?"]),
            "initialNodeCount": 1,
            "name": "04da6b54-80e4-46f7-96ec-b56ff0331ba9",  # a raw unknown-string sentinel
        }
    )
    fake = SimpleNamespace(resource_type=NODE_POOL, name="h100-pool", urn="urn:pool", props=props)
    resource = pack.to_resource(fake)
    assert resource == Resource(
        type=NODE_POOL,
        name="h100-pool",
        urn="urn:pool",
        inputs={
            "nodeConfig": {"serviceAccount": UNKNOWN, "imageType": "COS_CONTAINERD"},
            "nodeLocations": ["us-central1-a", UNKNOWN],
            "initialNodeCount": 1,
            "name": UNKNOWN,
        },
    )
    assert type(resource.inputs["nodeConfig"]) is dict

    class Boom(dict):
        def __getitem__(self, key):
            raise KeyError(key)

    with pytest.raises(KeyError):  # only unknown values are forgiven
        pack.plain(Boom({"a": 1}))


@pytest.mark.pure
def test_pack_environment_resolution():
    pack = _load_pack()
    resolve = pack.resolve_environment
    assert resolve({"environment": "dev"}, "prod", {"RAYGKE_ENVIRONMENT": "staging"}) == "dev"
    assert resolve({}, "staging", {"RAYGKE_ENVIRONMENT": "dev"}) == "staging"
    assert resolve(None, None, {"RAYGKE_ENVIRONMENT": "dev"}) == "dev"
    assert resolve(None, None, {}) == "prod"
    with pytest.raises(
        ValueError, match=r"ray-serve-gke:environment must be one of dev, staging, prod; got 'qa'"
    ):
        resolve(None, "qa", {})


@pytest.mark.pure
def test_pack_policies_and_validate_callback():
    pack = _load_pack()
    specs = pack.policy_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {s.control.id for s in specs} == set(CONTROLS_BY_ID)
    twins = {s.name: s.level for s in specs if s.name.endswith(".advisory")}
    assert twins == {"5.6.3.advisory": "advisory", "RAYGKE-NET-1.advisory": "advisory"}
    assert next(s for s in specs if s.name == "5.3.1").description.endswith("(prod only)")

    stack = good()
    at(stack, "cluster")["masterAuthorizedNetworksConfig"]["cidrBlocks"] = [
        {"cidrBlock": "0.0.0.0/0"}
    ]
    resources = [
        SimpleNamespace(resource_type=t, name=key, urn=f"urn:{key}", props=inputs)
        for key, (t, inputs) in stack.items()
    ]
    reported: dict[str, list[tuple[str, str | None]]] = {}
    for environment in ("dev", "prod"):
        for spec in specs:
            args = SimpleNamespace(resources=resources, get_config=lambda: {})
            validate = pack.make_validate(spec, lambda e=environment: e, {})
            validate(
                args,
                lambda msg, urn, n=spec.name, e=environment: reported.setdefault(
                    f"{e}:{n}", []
                ).append((msg, urn)),
            )
    assert sorted(reported) == ["dev:5.6.3.advisory", "prod:5.6.3"]
    ((message, urn),) = reported["prod:5.6.3"]
    assert urn == "urn:cluster"
    assert message.startswith(f"{CLUSTER} cluster: masterAuthorizedNetworksConfig.cidrBlocks")
    assert "Fix: list your VPN and CI ranges" in message


@pytest.mark.pure
@pytest.mark.parametrize("anywhere", ["::/0", "0::/0", "0.0.0.0/0"])
def test_ipv6_anywhere_is_open_to_the_world_like_ipv4(anywhere: str):
    """::/0 (however written) trips the same open-range controls as 0.0.0.0/0."""

    def open_both(s: dict[str, tuple[str, dict[str, Any]]]) -> None:
        at(s, "cluster")["masterAuthorizedNetworksConfig"]["cidrBlocks"].append(
            {"cidrBlock": anywhere, "displayName": "v6"}
        )
        at(s, "lb")["spec"].update(loadBalancerSourceRanges=["10.0.0.0/8", anywhere])

    found = [v for v in evaluate(mutated(open_both), "prod") if v.severity == "mandatory"]
    assert {"5.6.3", "RAYGKE-NET-1"} <= set(ids(found))
    assert all(anywhere in v.message for v in found if v.control_id in ("5.6.3", "RAYGKE-NET-1"))


@pytest.mark.parametrize(
    ("image", "environment", "flagged"),
    [
        ("haproxy:3.2.8-alpine", "prod", True),
        ("haproxy:3.2.8-alpine@sha256:" + "e" * 64, "prod", False),
        ("haproxy@sha256:" + "e" * 64, "prod", False),
        ("haproxy:3.2.8-alpine", "staging", False),  # prod only
        ("haproxy:latest", "prod", False),  # RAYGKE-K8S-3's finding, not a second one
    ],
)
def test_prod_images_are_advised_to_pin_a_digest(image: str, environment: str, flagged: bool):
    def set_image(s):
        at(s, "ingress")["spec"]["template"]["spec"]["containers"][0]["image"] = image

    found = [v for v in _one(set_image, environment) if v.control_id == "RAYGKE-K8S-4"]
    assert [(v.severity, v.resource_name) for v in found] == (
        [("advisory", "ingress")] if flagged else []
    )
    assert CONTROLS_BY_ID["RAYGKE-K8S-4"].severity == "advisory"  # shipped prod must still plan


@pytest.mark.pure
@pytest.mark.parametrize(
    ("mutation", "control_id", "message"),
    [
        (
            lambda s: at(s, "cluster").update(
                nodePoolDefaults={"nodeConfigDefaults": {"gcfsConfig": {"enabled": True}}}
            ),
            "RAYGKE-DEP-1",
            "turns on image streaming, which calls containerfilesystem.googleapis.com",
        ),
        (
            lambda s: at(s, "cluster").update(
                monitoringConfig={"managedPrometheus": {"enabled": True}}
            ),
            "RAYGKE-DEP-1",
            "turns on managed prometheus, which calls monitoring.googleapis.com",
        ),
        (
            lambda s: s.update(redis=("gcp:redis/instance:Instance", {"tier": "BASIC"})),
            "RAYGKE-DEP-1",
            "needs redis.googleapis.com",
        ),
        (
            lambda s: head(s)["template"]["spec"]["containers"][0].update(
                image="us-central1-docker.pkg.dev/p/r/ray:2.60.0" + PIN
            ),
            "RAYGKE-DEP-2",
            "may not read Artifact Registry",
        ),
        (
            lambda s: head(s)["template"]["spec"].update(
                volumes=[
                    {
                        "name": "weights",
                        "csi": {
                            "driver": "gcsfuse.csi.storage.gke.io",
                            "volumeAttributes": {"bucketName": "weights-bucket"},
                        },
                    }
                ]
            ),
            "RAYGKE-DEP-2",
            "mounts bucket weights-bucket with GCS FUSE",
        ),
        (
            lambda s: at(s, "kms-grant").update(role="roles/cloudkms.viewer"),
            "RAYGKE-DEP-2",
            "is granted no roles/cloudkms.cryptoKeyEncrypterDecrypter",
        ),
    ],
)
def test_what_a_first_deploy_needs_is_in_the_stack(
    mutation: Mutation, control_id: str, message: str
):
    """Each class of a missing API or grant, more than one instance each, named on its resource."""
    found = [v for v in evaluate(mutated(mutation), "prod") if v.control_id == control_id]
    assert any(message in v.message for v in found), found


@pytest.mark.pure
def test_a_granted_reader_and_an_enabled_api_pass():
    def with_registry(s):
        head(s)["template"]["spec"]["containers"][0]["image"] = (
            "us-central1-docker.pkg.dev/p/r/ray:1" + PIN
        )
        s["registry-api"] = (API, {"service": "artifactregistry.googleapis.com"})
        s["iam-api"] = (API, {"service": "cloudresourcemanager.googleapis.com"})
        s["reader"] = (
            "gcp:projects/iAMMember:IAMMember",
            {
                "role": "roles/artifactregistry.reader",
                "member": "serviceAccount:nodes@p.iam.gserviceaccount.com",
            },
        )

    dep = [
        v for v in evaluate(mutated(with_registry), "prod") if v.control_id.startswith("RAYGKE-DEP")
    ]
    assert dep == []
