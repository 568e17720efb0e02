"""The tier's Kubernetes objects (components/render/ingress_tier.py): its one check of counts and
ports, the objects it renders against Kubernetes' schemas, the pods' hardening and NetworkPolicy."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import pytest
from schemas import validate_core

from components.render.ingress_tier import (
    CONFIG_HASH_ANNOTATION,
    DEFAULT_RESOURCES,
    ROLLOUT_MAX_SURGE,
    TIER_UID,
    TierSpec,
    render_tier,
    render_tier_network_policy,
    tier_container_security_context,
    tier_pod_security_context,
    tier_problems,
)

SPEC = TierSpec(
    name="edge", namespace="serve", ray_service_name="rs", backends_service="rs-serve-svc"
)


def spec(**changes: Any) -> TierSpec:
    return dataclasses.replace(SPEC, **changes)


# ---------------------------------------------------------------------------------------------- objects
@pytest.mark.pure
@pytest.mark.schema
@pytest.mark.parametrize("tls", [None, "serving-tls"])
def test_every_object_passes_kubernetes_schemas(tls: str | None) -> None:
    objects = render_tier(spec(tls_secret_name=tls, source_ranges=["10.0.0.0/8"]))
    assert sorted(objects) == sorted(
        ["config", "deployment", "load_balancer", "network_policy", "pdb", "hpa", "pod_monitoring"]
    )
    for role, manifest in objects.items():
        if role != "pod_monitoring":  # a GKE CRD without a schema here
            validate_core(manifest)


@pytest.mark.pure
def test_the_deployment_carries_the_config_hash_and_the_rollout_surge() -> None:
    objects = render_tier(SPEC)
    deployment = objects["deployment"]["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] == ROLLOUT_MAX_SURGE
    (container,) = deployment["template"]["spec"]["containers"]
    assert container["resources"] == DEFAULT_RESOURCES
    text = objects["config"]["data"]["haproxy.cfg"]
    annotations = deployment["template"]["metadata"]["annotations"]
    assert annotations[CONFIG_HASH_ANNOTATION] == hashlib.sha256(text.encode()).hexdigest()
    assert "edge-backends" not in text


@pytest.mark.pure
def test_the_tier_resolves_the_service_it_is_given_and_makes_none_of_its_own() -> None:
    # The tier's own selector could not tell the pending cluster of an upgrade from the active one
    # (both carry ray.io/serve=true); KubeRay's serve Service can, so the tier only resolves it.
    objects = render_tier(spec(cluster_domain="corp.local"))
    text = objects["config"]["data"]["haproxy.cfg"]
    assert "server-template ray 16 rs-serve-svc.serve.svc.corp.local:8000 " in text
    assert "server-template ray 16 rs-serve-svc.serve.svc.corp.local:9000 " in text
    assert not [o for o in objects.values() if o["kind"] == "Service" and "clusterIP" in o["spec"]]


# ---------------------------------------------------------------------------------------------- the check
@pytest.mark.pure
@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"replicas": 0}, "replicas must be at least 1; got 0"),
        ({"replicas": 3, "max_replicas": 2}, r"replicas \(3\) must be <= max_replicas \(2\)"),
        ({"replicas": 7}, r"replicas \(7\) must be <= max_replicas \(6\)"),
        ({"min_available": 2}, "min_available must be between 0 and replicas - 1 .1."),
        ({"min_available": -1}, "min_available must be between 0"),
        ({"cpu_target_percent": 0}, "cpu_target_percent must be 1-100; got 0"),
        ({"cpu_target_percent": 101}, "cpu_target_percent must be 1-100; got 101"),
        ({"load_balancer": "public"}, "load_balancer must be 'internal' or 'external'"),
        ({"lb_http_port": 0}, "lb_http_port must be a TCP port 1-65535; got 0"),
        ({"lb_grpc_port": 70000}, "lb_grpc_port must be a TCP port 1-65535; got 70000"),
        ({"lb_grpc_port": 80}, r"lb_grpc_port \(80\) is already used by lb_http_port"),
        (
            {"tls_secret_name": "tls", "lb_https_port": 9000},
            r"lb_https_port \(9000\) is already used by lb_grpc_port",
        ),
    ],
)
def test_tier_problems_name_the_field_the_value_and_what_is_allowed(
    changes: dict[str, Any], problem: str
) -> None:
    found = tier_problems(spec(**changes))
    assert any(re.search(problem, line) for line in found), found
    with pytest.raises(ValueError, match=problem):
        render_tier(spec(**changes))


@pytest.mark.pure
def test_tier_problems_speak_the_callers_keys() -> None:
    keys = {"replicas": "ingress.replicas", "max_replicas": "ingress.maxReplicas"}
    assert tier_problems(spec(replicas=4, max_replicas=3), keys) == [
        "ingress.replicas (4) must be <= ingress.maxReplicas (3)"
    ]
    assert tier_problems(spec(tls_secret_name="t", lb_https_port=80), {"lb_https_port": "x"}) == [
        "x (80) is already used by lb_http_port; each listener needs its own port"
    ]


# ---------------------------------------------------------------------------------------------- hardening
@pytest.mark.pure
def test_tier_runs_as_a_high_non_root_uid_with_a_read_only_root() -> None:
    pod = tier_pod_security_context()
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == TIER_UID >= 10000
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    c = tier_container_security_context()
    assert c["readOnlyRootFilesystem"] is True and c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert tier_pod_security_context() is not tier_pod_security_context()  # fresh copies


@pytest.mark.pure
@pytest.mark.schema
def test_tier_network_policy_separates_serving_from_monitoring_ports() -> None:
    policy = render_tier_network_policy(
        "edge",
        "serve",
        {"app": "edge"},
        serving_ports=[8080, 9000],
        monitoring_ports=[8404, 8405],
        source_ranges=["10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/8"],
    )
    validate_core(policy)
    serving, monitoring = policy["spec"]["ingress"]
    # The source ranges alone: not Google's LB ranges, which reach the node, not the pods.
    assert serving["from"] == [
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"ipBlock": {"cidr": "192.168.0.0/16"}},
    ]
    assert [p["port"] for p in monitoring["ports"]] == [8404, 8405]
    assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "gke-gmp-system"
    }


@pytest.mark.pure
@pytest.mark.parametrize(
    ("changes", "scrapers"),
    [
        # GKE's managed collection, which the cluster turns on, runs its collectors here.
        ({}, "gke-gmp-system"),
        # A self-deployed prometheus-engine operator runs them in gmp-system.
        ({"monitoring_namespace": "gmp-system"}, "gmp-system"),
    ],
)
def test_the_tiers_metrics_ports_admit_the_collectors_namespace(
    changes: dict[str, Any], scrapers: str
) -> None:
    _, monitoring = render_tier(spec(**changes))["network_policy"]["spec"]["ingress"]
    assert monitoring["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": scrapers}}}
    ]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source_ranges": ["10.0.0.1/8"]}, r"source range '10\.0\.0\.1/8' is not a CIDR"),
        ({"source_ranges": ["*"]}, r"source range '\*' is not a CIDR"),
        ({"serving_ports": []}, "at least one serving port"),
        ({"monitoring_ports": [8080]}, r"ports \[8080\] cannot be both serving and monitoring"),
    ],
)
def test_tier_network_policy_rejects_bad_ranges_and_ports(
    kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {
        "serving_ports": [8080, 9000],
        "monitoring_ports": [8404],
        "source_ranges": ["10.0.0.0/8"],
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        render_tier_network_policy("edge", "serve", {"app": "edge"}, **args)
