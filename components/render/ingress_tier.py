"""Our HAProxy ingress tier as Kubernetes objects: one frozen `TierSpec` in, plain manifests out.

Owns: every object of the tier (the ConfigMap holding haproxy.cfg, the HAProxy Deployment, the LoadBalancer Service clients reach, the tier's
NetworkPolicy, its PodDisruptionBudget, HorizontalPodAutoscaler and PodMonitoring), the tier's defaults and the
one check of its counts and ports (`tier_problems`, which names the keys its caller gives), the tier
pods' hardening (securityContexts, `TIER_UID`) and its pods' ports.
Does not own: the haproxy.cfg text (components/render/haproxy.py), Ray's serve ports, the Ray
pods' labels or the headless Service listing the serving Ray pods (KubeRay's serve Service, which
components/render/rayservice.py `render_serve_service` asks for; the tier only resolves its name), registering the objects
(components/haproxy_ingress.py). Pure: no pulumi; the scheduling check reads the same Deployment the
component registers.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from components.render.haproxy import (
    HAPROXY_IMAGE,
    LB_GRPC_PORT,
    LB_HTTP_PORT,
    LB_HTTPS_PORT,
    AppDeadline,
    DnsBackends,
    HealthCheck,
    IngressSpec,
    ingress_spec,
    render_haproxy_cfg,
)
from components.render.monitoring import MONITORING_NAMESPACE
from components.render.node_pool import SYSTEM_POOL_SELECTOR
from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT
from components.render.security import non_root_pod_security_context

POD_LABELS: dict[str, str] = {
    "app.kubernetes.io/name": "raygke-haproxy-ingress",
    "app.kubernetes.io/component": "ingress",
}
"""Labels every HAProxy ingress pod carries, whatever the spec; Ray's NetworkPolicy selects them."""

CONFIG_DIR = "/usr/local/etc/haproxy"  # where the official image's entrypoint reads haproxy.cfg
TLS_DIR = "/etc/haproxy-tls"
CONFIG_HASH_ANNOTATION = "raygke.io/haproxy-config-sha256"
INTERNAL_LB_ANNOTATION = "networking.gke.io/load-balancer-type"

TIER_UID = 10001
TIER_GID = 10001

# The tier pods' own ports: all above 1024, so the non-root container needs no NET_BIND_SERVICE.
# The load balancer maps its ports (LB_*, or the spec's) onto them by name; Ray's are behind.
POD_HTTP_PORT = 8080
POD_HTTPS_PORT = 8443
POD_GRPC_PORT = 9000
POD_STATS_PORT = 8404
POD_METRICS_PORT = 8405
METRICS_PORT_NAME = "metrics"  # HAProxy's Prometheus exporter, by name for the PodMonitoring
METRICS_INTERVAL = "30s"  # as Ray's pods are scraped (rayservice.py render_pod_monitoring)
# Pods a rollout starts above the current count (none stopped first): the scheduling check budgets
# the system pool for it.
ROLLOUT_MAX_SURGE = 1

# Google's load-balancer and health-check ranges (35.191.0.0/16, 130.211.0.0/22) are not admitted
# by the tier's NetworkPolicy: its passthrough load balancer with externalTrafficPolicy Local
# health-checks the *node* (healthCheckNodePort), not the pod, and forwards client packets with
# their own source address. A proxy load balancer (Gateway, Ingress, container-native NEGs) would
# connect from them, and then they must be admitted.

DEFAULT_REPLICAS = 2
DEFAULT_MAX_REPLICAS = 6
DEFAULT_CPU_TARGET_PERCENT = 70
DEFAULT_MIN_AVAILABLE = 1
DEFAULT_BACKEND_SLOTS = 16
DEFAULT_RESOURCES: dict[str, Any] = {
    # No CPU limit: CFS throttling adds tail latency to a proxy. maxconn bounds memory, so limit it.
    "requests": {"cpu": "1", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}
TERMINATION_GRACE_S = 60
# The load balancer stops sending new connections before SIGTERM.
PRE_STOP_SLEEP_S = 10


@dataclass(frozen=True)
class TierSpec:
    """The tier, as plain values (HaproxyIngressArgs once its Outputs are known)."""

    name: str
    namespace: str  # the Ray pods'; the tier runs beside them
    ray_service_name: str  # recorded as a label on every object
    # The headless Service listing the Ray pods that serve (head and workers) of the cluster KubeRay
    # has promoted: KubeRay's serve Service (rayservice.py serve_service_name), never one of ours,
    # whose selector would also match the pending cluster of an upgrade.
    backends_service: str
    routes: Sequence[str] = ("/",)
    deadlines: Sequence[AppDeadline] = ()
    image: str = HAPROXY_IMAGE
    replicas: int = DEFAULT_REPLICAS  # the minimum (and initial) count
    max_replicas: int = DEFAULT_MAX_REPLICAS  # the autoscaler's ceiling
    cpu_target_percent: int = DEFAULT_CPU_TARGET_PERCENT
    min_available: int = DEFAULT_MIN_AVAILABLE  # below replicas, so node drains can proceed
    resources: Mapping[str, Any] | None = None  # None: DEFAULT_RESOURCES
    load_balancer: Literal["internal", "external"] = "internal"
    source_ranges: Sequence[str] | None = None  # None: any client
    monitoring_namespace: str = MONITORING_NAMESPACE
    tls_secret_name: str | None = None
    lb_http_port: int = LB_HTTP_PORT
    lb_grpc_port: int = LB_GRPC_PORT
    lb_https_port: int = LB_HTTPS_PORT
    backend_slots: int = DEFAULT_BACKEND_SLOTS
    health: HealthCheck | None = None
    maxconn: int = IngressSpec.maxconn
    nbthread: int | None = IngressSpec.nbthread
    cluster_domain: str = "cluster.local"

    @property
    def selector(self) -> dict[str, str]:
        # Two tiers in one namespace must not select each other's pods; POD_LABELS alone would.
        return {**POD_LABELS, "app.kubernetes.io/instance": self.name}

    @property
    def backends_fqdn(self) -> str:
        return f"{self.backends_service}.{self.namespace}.svc.{self.cluster_domain}"

    @property
    def lb_ports(self) -> dict[str, int]:
        """The load balancer's listeners by field, in the order clients meet them."""
        ports = {"lb_http_port": self.lb_http_port, "lb_grpc_port": self.lb_grpc_port}
        if self.tls_secret_name is not None:
            ports["lb_https_port"] = self.lb_https_port
        return ports


def tier_problems(spec: TierSpec, keys: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the spec's counts and ports, each line naming its key: `keys` maps a
    TierSpec field to the name its caller knows it by (a stack key, say); default: the field."""

    def key(field_name: str) -> str:
        return (keys or {}).get(field_name, field_name)

    problems = []
    if spec.replicas < 1:
        problems.append(f"{key('replicas')} must be at least 1; got {spec.replicas}")
    if spec.replicas > spec.max_replicas:
        problems.append(
            f"{key('replicas')} ({spec.replicas}) must be <= {key('max_replicas')} "
            f"({spec.max_replicas})"
        )
    if not 0 <= spec.min_available < max(spec.replicas, 1):
        problems.append(
            f"{key('min_available')} must be between 0 and {key('replicas')} - 1 "
            f"({spec.replicas - 1}) so node drains can evict a pod; got {spec.min_available}"
        )
    if not 1 <= spec.cpu_target_percent <= 100:
        problems.append(f"{key('cpu_target_percent')} must be 1-100; got {spec.cpu_target_percent}")
    if spec.load_balancer not in ("internal", "external"):
        problems.append(
            f"{key('load_balancer')} must be 'internal' or 'external'; got {spec.load_balancer!r}"
        )
    seen: dict[int, str] = {}
    for field_name, port in spec.lb_ports.items():
        if not 1 <= port <= 65535:
            problems.append(f"{key(field_name)} must be a TCP port 1-65535; got {port}")
        elif port in seen:
            problems.append(
                f"{key(field_name)} ({port}) is already used by {key(seen[port])}; each listener "
                "needs its own port"
            )
        else:
            seen[port] = field_name
    return problems


def cluster_ingress_spec(
    backends_fqdn: str,
    *,
    routes: Sequence[str] = ("/",),
    tls: bool = False,
    slots: int = DEFAULT_BACKEND_SLOTS,
    health: HealthCheck | None = None,
    maxconn: int = IngressSpec.maxconn,
    nbthread: int | None = IngressSpec.nbthread,
    deadlines: Sequence[AppDeadline] = (),
) -> IngressSpec:
    """The IngressSpec of a tier pod: listens on every interface, finds Ray pods through DNS."""
    return ingress_spec(
        "0.0.0.0",
        DnsBackends(
            backends_fqdn,
            slots=slots,
            http_port=RAY_SERVE_HTTP_PORT,
            grpc_port=RAY_SERVE_GRPC_PORT,
        ),
        http=POD_HTTP_PORT,
        grpc=POD_GRPC_PORT,
        stats=POD_STATS_PORT,
        metrics=POD_METRICS_PORT,
        https=POD_HTTPS_PORT if tls else None,
        tls_pem=f"{TLS_DIR}/tls.pem" if tls else None,
        routes=routes,
        health=health,
        maxconn=maxconn,
        nbthread=nbthread,
        deadlines=deadlines,
    )


def render_tier_config(spec: TierSpec) -> str:
    """The tier pods' haproxy.cfg: Ray pods found through the headless Service's DNS name."""
    return render_haproxy_cfg(
        cluster_ingress_spec(
            spec.backends_fqdn,
            routes=tuple(spec.routes),
            tls=spec.tls_secret_name is not None,
            slots=spec.backend_slots,
            health=spec.health,
            maxconn=spec.maxconn,
            nbthread=spec.nbthread,
            deadlines=tuple(spec.deadlines),
        )
    )


def render_tier(spec: TierSpec) -> dict[str, dict[str, Any]]:
    """Every object of the tier by role (config, deployment, load_balancer, network_policy, pdb,
    hpa, pod_monitoring); raises ValueError naming what is wrong before building any."""
    if problems := tier_problems(spec):
        raise ValueError("haproxy ingress " + "; ".join(problems))
    config_text = render_tier_config(spec)
    labels = {**POD_LABELS, "raygke.io/ray-service": spec.ray_service_name}

    def meta(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": spec.namespace, "labels": dict(labels), **extra}

    network_policy = render_tier_network_policy(
        spec.name,
        spec.namespace,
        spec.selector,
        serving_ports=_serving_ports(spec),
        monitoring_ports=[POD_STATS_PORT, POD_METRICS_PORT],
        source_ranges=spec.source_ranges if spec.source_ranges is not None else ["0.0.0.0/0"],
        monitoring_namespace=spec.monitoring_namespace,
    )
    network_policy["metadata"]["labels"] = dict(labels)
    return {
        "config": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{spec.name}-config"),
            "data": {"haproxy.cfg": config_text},
        },
        "deployment": _deployment(spec, meta(spec.name), labels, config_text),
        "load_balancer": _load_balancer(spec, meta(spec.name)),
        "network_policy": network_policy,
        "pdb": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(spec.name),
            "spec": {
                "minAvailable": spec.min_available,
                "selector": {"matchLabels": spec.selector},
            },
        },
        "hpa": {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(spec.name),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": spec.name,
                },
                "minReplicas": spec.replicas,
                "maxReplicas": spec.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": spec.cpu_target_percent,
                            },
                        },
                    }
                ],
            },
        },
        # Managed Prometheus scrapes each pod's exporter; the PodMonitoring's name is the series'
        # `job` (components/render/observability.py reads the backends' metrics).
        "pod_monitoring": {
            "apiVersion": "monitoring.googleapis.com/v1",
            "kind": "PodMonitoring",
            "metadata": meta(spec.name),
            "spec": {
                "selector": {"matchLabels": spec.selector},
                "endpoints": [{"port": METRICS_PORT_NAME, "interval": METRICS_INTERVAL}],
            },
        },
    }


def render_tls_secret(spec: TierSpec, certificate: str, key: str) -> dict[str, Any]:
    """The kubernetes.io/tls Secret the tier mounts, from a PEM certificate chain and its key."""
    if spec.tls_secret_name is None:
        raise ValueError("the tier has no tls_secret_name, so no TLS Secret")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec.tls_secret_name, "namespace": spec.namespace},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certificate, "tls.key": key},
    }


def _serving_ports(spec: TierSpec) -> list[int]:
    return [POD_HTTP_PORT, POD_GRPC_PORT] + (
        [POD_HTTPS_PORT] if spec.tls_secret_name is not None else []
    )


def _deployment(
    spec: TierSpec, metadata: dict[str, Any], labels: Mapping[str, str], config_text: str
) -> dict[str, Any]:
    tls = spec.tls_secret_name is not None
    ports = [
        {"name": "http", "containerPort": POD_HTTP_PORT},
        {"name": "grpc", "containerPort": POD_GRPC_PORT},
        {"name": "stats", "containerPort": POD_STATS_PORT},
        {"name": METRICS_PORT_NAME, "containerPort": POD_METRICS_PORT},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{spec.name}-config"}}
    ]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if tls:
        ports.append({"name": "https", "containerPort": POD_HTTPS_PORT})
        # HAProxy loads `<crt>.key` beside the certificate: map the Secret's two keys onto that.
        volumes.append(
            {
                "name": "tls",
                "secret": {
                    "secretName": spec.tls_secret_name,
                    "items": [
                        {"key": "tls.crt", "path": "tls.pem"},
                        {"key": "tls.key", "path": "tls.pem.key"},
                    ],
                },
            }
        )
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    # Preferred, not required: the autoscaler may want more pods than there are nodes or zones.
    spread = [
        {
            "weight": weight,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": spec.selector},
                "topologyKey": topology,
            },
        }
        for weight, topology in (
            (100, "kubernetes.io/hostname"),
            (50, "topology.kubernetes.io/zone"),
        )
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": spec.selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": ROLLOUT_MAX_SURGE},
            },
            "template": {
                # The config hash changes the pod template, so a new haproxy.cfg rolls the pods.
                "metadata": {
                    "labels": {**labels, **spec.selector},
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: hashlib.sha256(config_text.encode()).hexdigest()
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "nodeSelector": dict(SYSTEM_POOL_SELECTOR),
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": spread
                        }
                    },
                    "securityContext": tier_pod_security_context(),
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
                    "containers": [
                        {
                            "name": "haproxy",
                            "image": spec.image,
                            "ports": ports,
                            "resources": dict(spec.resources or DEFAULT_RESOURCES),
                            "readinessProbe": _health_probe(period_s=5, failures=2),
                            "livenessProbe": _health_probe(period_s=10, failures=3),
                            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
                            "securityContext": tier_container_security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def _load_balancer(spec: TierSpec, metadata: dict[str, Any]) -> dict[str, Any]:
    ports = [
        {"name": "http", "port": spec.lb_http_port, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": spec.lb_grpc_port, "targetPort": "grpc", "protocol": "TCP"},
    ]
    if spec.tls_secret_name is not None:
        ports.insert(
            1,
            {"name": "https", "port": spec.lb_https_port, "targetPort": "https", "protocol": "TCP"},
        )
    internal = spec.load_balancer == "internal"
    lb_spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": spec.selector,
        "ports": ports,
        # Client addresses reach the pods unchanged and only nodes with a tier pod pass the
        # load balancer's health check: no second hop, no SNAT, so the tier's NetworkPolicy
        # can admit the source ranges themselves (GKE Dataplane V2 enforces it on the pod).
        "externalTrafficPolicy": "Local",
    }
    if spec.source_ranges is not None:
        lb_spec["loadBalancerSourceRanges"] = list(spec.source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **metadata,
            "annotations": {INTERNAL_LB_ANNOTATION: "Internal"} if internal else {},
        },
        "spec": lb_spec,
    }


def _health_probe(period_s: int, failures: int) -> dict[str, Any]:
    """A probe of haproxy's own /healthz (fe_stats), which does not depend on Ray being up."""
    return {
        "httpGet": {"path": "/healthz", "port": "stats"},
        "timeoutSeconds": 2,
        "periodSeconds": period_s,
        "failureThreshold": failures,
    }


def tier_pod_security_context() -> dict[str, Any]:
    """The tier pods' securityContext: a fixed high non-root UID, RuntimeDefault seccomp."""
    return non_root_pod_security_context(TIER_UID, TIER_GID)


def tier_container_security_context() -> dict[str, Any]:
    """The haproxy container's: read-only root, no privilege escalation, no capabilities."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": TIER_UID,
    }


def render_tier_network_policy(
    name: str,
    namespace: str,
    pod_selector: Mapping[str, str],
    serving_ports: Sequence[int],
    monitoring_ports: Sequence[int],
    source_ranges: Sequence[str] = ("0.0.0.0/0",),
    monitoring_namespace: str = MONITORING_NAMESPACE,
) -> dict[str, Any]:
    """Ingress rules for the tier's pods; everything not admitted here is dropped.

    - `serving_ports` (HTTP, gRPC, HTTPS) from the load balancer's clients: `source_ranges`, the
      ranges the load balancer itself admits (loadBalancerSourceRanges). The Service keeps client
      addresses (externalTrafficPolicy Local: no second hop, no SNAT to a node address, which a
      policy could only admit by admitting every node), so the same ranges hold at the pod.
    - `monitoring_ports` (stats page, Prometheus exporter) only from Managed Prometheus's
      collectors in `monitoring_namespace`.
    - The kubelet's probes (on the stats port) come from the node, which Kubernetes NetworkPolicy
      always admits.
    """
    if not serving_ports:
        raise ValueError("the tier's NetworkPolicy needs at least one serving port")
    for cidr in source_ranges:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"source range {cidr!r} is not a CIDR such as 10.0.0.0/8") from exc
    overlap = sorted(set(serving_ports) & set(monitoring_ports))
    if overlap:
        raise ValueError(f"ports {overlap} cannot be both serving and monitoring ports")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(pod_selector)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": c}} for c in sorted(set(source_ranges))],
                    "ports": [{"protocol": "TCP", "port": p} for p in serving_ports],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": monitoring_namespace}
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": p} for p in monitoring_ports],
                },
            ],
        },
    }
