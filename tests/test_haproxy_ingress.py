"""HaproxyIngress under Pulumi mocks: the objects it registers, their inputs against Kubernetes'
schemas, the provider and parent of every child, its outputs, and its argument validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from schemas import validate_core
from test_render_haproxy import self_signed_pem, with_local_pem

from components.haproxy_ingress import (
    CONFIG_HASH_ANNOTATION,
    HAPROXY_IMAGE,
    INTERNAL_LB_ANNOTATION,
    POD_LABELS,
    HaproxyIngress,
    HaproxyIngressArgs,
)
from components.render.ingress_tier import DEFAULT_MAX_REPLICAS
from raygke.mocks import Inventory, Registration, ints, run_with_mocks
from raygke.tier import check_config

TOKEN = "raygke:haproxy_ingress:HaproxyIngress"
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
MONITOR = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
CHILD_TYPES = {SERVICE, DEPLOYMENT, CONFIGMAP, PDB, HPA, NETPOL, MONITOR}

BASE: HaproxyIngressArgs = {
    "namespace": "serve",
    "ray_service_name": "echo",
    "backends_service": "echo-serve-svc",
}


def deploy(**overrides: Any) -> tuple[Inventory, dict[str, Any]]:
    args: Any = {**BASE, **overrides}

    def program() -> dict[str, Any]:
        provider = k8s.Provider("k8s", kubeconfig="{}", opts=pulumi.ResourceOptions())
        ing = HaproxyIngress("haproxy", args, opts=pulumi.ResourceOptions(provider=provider))
        return {
            "service_name": ing.service_name,
            "load_balancer_address": ing.load_balancer_address,
            "http_url": ing.http_url,
            "grpc_target": ing.grpc_target,
            "pod_labels": ing.pod_labels,
            "config_text": ing.config_text,
            "backends_service_name": ing.backends_service_name,
        }

    return run_with_mocks(program, stack="test")


def manifest(reg: Registration) -> dict[str, Any]:
    return ints(reg.inputs)


def lb_service(inv: Inventory) -> dict[str, Any]:
    return manifest(next(r for r in inv.of_type(SERVICE) if r.name == "haproxy-lb"))


def pod_spec(inv: Inventory) -> dict[str, Any]:
    return manifest(inv.one(DEPLOYMENT))["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def default() -> tuple[Inventory, dict[str, Any]]:
    return deploy()


@pytest.fixture(scope="module")
def with_tls() -> tuple[Inventory, dict[str, Any]]:
    return deploy(
        tls_secret_name="ingress-tls",
        load_balancer="external",
        source_ranges=["10.0.0.0/8"],
        routes=["/echo", "/recsys"],
    )


@pytest.mark.mocks
def test_registers_one_of_each_as_children_through_the_provider(
    default: tuple[Inventory, dict[str, Any]],
) -> None:
    inv, _ = default
    component = inv.one(TOKEN, "haproxy")
    provider = inv.one("pulumi:providers:kubernetes", "k8s")
    children = [r for r in inv.resources if r.parent == component.urn]
    assert sorted(r.type for r in children) == sorted(
        [SERVICE, CONFIGMAP, DEPLOYMENT, PDB, HPA, NETPOL, MONITOR]
    )
    assert {r.type for r in inv.resources} == CHILD_TYPES | {TOKEN, "pulumi:providers:kubernetes"}
    for child in children:
        assert child.provider.startswith(provider.urn + "::"), child.name


@pytest.mark.mocks
@pytest.mark.schema
@pytest.mark.parametrize("variant", ["default", "with_tls"])
def test_every_object_passes_kubernetes_schemas(
    variant: str, request: pytest.FixtureRequest
) -> None:
    inv, _ = request.getfixturevalue(variant)
    objects = [manifest(r) for r in inv.resources if r.type in CHILD_TYPES - {MONITOR}]
    assert len(objects) == 6
    for obj in objects:
        validate_core(obj)  # the PodMonitoring is a GKE CRD without a schema here


@pytest.mark.mocks
def test_the_tier_resolves_the_given_headless_service_and_makes_none(
    default: tuple[Inventory, dict[str, Any]],
) -> None:
    inv, out = default
    # Its only Service is the load balancer: the Ray pods come from KubeRay's serve Service, which
    # follows the cluster KubeRay promotes (a selector of ours would match both during upgrades).
    assert [r.name for r in inv.of_type(SERVICE)] == ["haproxy-lb"]
    assert out["backends_service_name"] == "echo-serve-svc"
    assert "echo-serve-svc.serve.svc.cluster.local:8000" in out["config_text"]
    assert "echo-serve-svc.serve.svc.cluster.local:9000 proto h2" in out["config_text"]


@pytest.mark.mocks
def test_the_backends_service_may_be_an_output() -> None:
    _, out = deploy(backends_service=pulumi.Output.from_input("later-serve-svc"))
    assert out["backends_service_name"] == "later-serve-svc"
    assert "later-serve-svc.serve.svc.cluster.local:8000" in out["config_text"]


@pytest.mark.mocks
def test_configmap_holds_the_rendered_config(default: tuple[Inventory, dict[str, Any]]) -> None:
    inv, out = default
    cm = manifest(inv.one(CONFIGMAP))
    assert cm["data"]["haproxy.cfg"] == out["config_text"]
    assert "default_backend be_ray_http" in out["config_text"]  # default route: every path
    assert "ssl crt" not in out["config_text"]


@pytest.mark.mocks
def test_deployment_is_hardened_spread_and_on_the_system_pool(
    default: tuple[Inventory, dict[str, Any]],
) -> None:
    inv, _ = default
    dep = manifest(inv.one(DEPLOYMENT))
    assert dep["spec"]["replicas"] == 2
    spec = pod_spec(inv)
    (container,) = spec["containers"]
    assert container["image"] == HAPROXY_IMAGE
    assert HAPROXY_IMAGE.startswith("haproxy:3.2.") and HAPROXY_IMAGE.endswith("-alpine")
    assert spec["nodeSelector"] == {"raygke.io/pool": "system"}
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,  # not the image's system UID 99
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert all(p["containerPort"] > 1024 for p in container["ports"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "stats"}
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {t["podAffinityTerm"]["topologyKey"] for t in terms} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert POD_LABELS.items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/usr/local/etc/haproxy"}


@pytest.mark.mocks
def test_config_change_rolls_the_pods(default: tuple[Inventory, dict[str, Any]]) -> None:
    inv, _ = default
    other, _ = deploy(routes=["/echo"])

    def config_hash(i: Inventory) -> str:
        return manifest(i.one(DEPLOYMENT))["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]

    assert len(config_hash(inv)) == 64
    assert config_hash(inv) != config_hash(other)
    assert config_hash(inv) == config_hash(deploy()[0])  # and only a change does


@pytest.mark.mocks
def test_internal_load_balancer_by_default(default: tuple[Inventory, dict[str, Any]]) -> None:
    inv, _ = default
    svc = lb_service(inv)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {INTERNAL_LB_ANNOTATION: "Internal"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 80), ("grpc", 9000)]
    assert "loadBalancerSourceRanges" not in svc["spec"]
    # Client addresses reach the pods (the tier's NetworkPolicy admits them by range).
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    dep = manifest(inv.one(DEPLOYMENT))
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.mocks
def test_external_tls_load_balancer(with_tls: tuple[Inventory, dict[str, Any]]) -> None:
    inv, out = with_tls
    svc = lb_service(inv)
    assert svc["metadata"].get("annotations", {}) == {}
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 80, "http"),
        ("https", 443, "https"),
        ("grpc", 9000, "grpc"),
    ]
    spec = pod_spec(inv)
    (tls,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "ingress-tls"
    assert {i["path"] for i in tls["secret"]["items"]} == {"tls.pem", "tls.pem.key"}
    assert "ssl crt /etc/haproxy-tls/tls.pem alpn h2,http/1.1" in out["config_text"]
    assert "acl is_route path /echo /recsys /-/healthz" in out["config_text"]


@pytest.mark.mocks
def test_network_policy_admits_serving_ports_from_any_source_by_default(
    default: tuple[Inventory, dict[str, Any]],
) -> None:
    inv, _ = default
    policy = manifest(inv.one(NETPOL))
    dep = manifest(inv.one(DEPLOYMENT))
    assert policy["metadata"]["namespace"] == "serve"
    assert policy["spec"]["podSelector"] == dep["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving, _ = policy["spec"]["ingress"]
    assert serving["from"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert [p["port"] for p in serving["ports"]] == [8080, 9000]


@pytest.mark.mocks
def test_network_policy_admits_only_the_source_ranges_and_managed_prometheus(
    with_tls: tuple[Inventory, dict[str, Any]],
) -> None:
    inv, _ = with_tls
    serving, monitoring = manifest(inv.one(NETPOL))["spec"]["ingress"]
    assert serving["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert [p["port"] for p in serving["ports"]] == [8080, 9000, 8443]
    # Stats and metrics: only GKE Managed Prometheus's collectors, never the load balancer.
    assert monitoring == {
        "from": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "gke-gmp-system"}
                }
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8404}, {"protocol": "TCP", "port": 8405}],
    }
    # Google's LB/health-check ranges reach the node (healthCheckNodePort), not the pod.
    assert "35.191.0.0/16" not in str(serving)


@pytest.mark.mocks
def test_pdb_and_hpa(default: tuple[Inventory, dict[str, Any]]) -> None:
    inv, _ = default
    dep = manifest(inv.one(DEPLOYMENT))
    pdb = manifest(inv.one(PDB))
    assert pdb["spec"] == {"minAvailable": 1, "selector": dep["spec"]["selector"]}
    hpa = manifest(inv.one(HPA))["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "haproxy",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, DEFAULT_MAX_REPLICAS)
    assert hpa["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }


@pytest.mark.mocks
def test_outputs(default: tuple[Inventory, dict[str, Any]]) -> None:
    _, out = default
    assert out["service_name"] == "haproxy"
    assert out["load_balancer_address"] == "203.0.113.20"
    assert out["http_url"] == "http://203.0.113.20:80"
    assert out["grpc_target"] == "203.0.113.20:9000"
    assert out["pod_labels"] == POD_LABELS


@pytest.mark.mocks
def test_load_balancer_ports_are_the_args_and_reach_the_outputs() -> None:
    inv, out = deploy(
        tls_secret_name="ingress-tls", lb_http_port=8080, lb_grpc_port=50051, lb_https_port=8443
    )
    assert [(p["name"], p["port"], p["targetPort"]) for p in lb_service(inv)["spec"]["ports"]] == [
        ("http", 8080, "http"),
        ("https", 8443, "https"),
        ("grpc", 50051, "grpc"),
    ]
    assert (out["http_url"], out["grpc_target"]) == (
        "http://203.0.113.20:8080",
        "203.0.113.20:50051",
    )


@pytest.mark.mocks
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"lb_http_port": 0}, "lb_http_port must be a TCP port 1-65535; got 0"),
        ({"lb_grpc_port": 80}, r"lb_grpc_port \(80\) is already used by lb_http_port"),
        (
            {"tls_secret_name": "tls", "lb_https_port": 9000},
            r"lb_https_port \(9000\) is already used by lb_grpc_port",
        ),
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"replicas": 2, "min_available": 2}, "min_available"),
        ({"cpu_target_percent": 0}, "cpu_target_percent"),
        ({"load_balancer": "public"}, "'internal' or 'external'"),
        ({"routes": ["echo"]}, "route prefix"),
        ({"backend_slots": 0}, "slots"),
        ({"source_ranges": ["10.0.0.1/8"]}, r"source range '10\.0\.0\.1/8' is not a CIDR"),
        ({"source_ranges": ["anywhere"]}, r"source range 'anywhere' is not a CIDR"),
        (
            {"tls_secret_name": "t", "tls_certificate": "c"},
            "tls_certificate and tls_key go together",
        ),
        ({"tls_key": "k", "tls_certificate": "c"}, "tls_certificate and tls_key go together"),
    ],
)
def test_invalid_args_are_rejected(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(Exception, match=match) as raised:
        deploy(**overrides)
    # Raised by the constructor itself, before any child registers, not later inside an apply.
    frames = {(Path(str(e.path)).name, e.name) for e in raised.traceback}
    assert ("haproxy_ingress.py", "__init__") in frames


@pytest.mark.mocks
@pytest.mark.process
@pytest.mark.parametrize("variant", ["default", "with_tls"])
def test_rendered_config_passes_haproxy_check(
    variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _, out = request.getfixturevalue(variant)
    pem = self_signed_pem(tmp_path)
    check_config(with_local_pem(out["config_text"], pem))
