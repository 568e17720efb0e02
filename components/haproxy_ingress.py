"""The HAProxy ingress tier in front of the Ray pods: clients -> load balancer -> HAProxy -> Ray.

Owns: a headless Service listing the Ray pods (HAProxy discovers them through its DNS records),
the ConfigMap holding haproxy.cfg (rendered by components/render/haproxy.py, the renderer the local
run also uses), the HAProxy Deployment (pinned official image, non-root high UID, read-only root
filesystem, spread over nodes and zones, on the system pool), the LoadBalancer Service clients
reach (client addresses kept: externalTrafficPolicy Local), the tier's own NetworkPolicy (serving
ports from the source ranges only, stats/metrics from Managed Prometheus only), its
PodDisruptionBudget and its HorizontalPodAutoscaler.
Does not own: the Kubernetes provider (the program passes it in `opts`), the Ray pods or their
labels (components/ray_service.py; the caller gives their selector), the NetworkPolicy that admits
this tier to Ray's serve ports (it reads `pod_labels`), TLS certificates (a Secret, by name),
the IngressSpec builder and the securityContexts' and NetworkPolicy's content
(components/render/haproxy.py), Ray's serve ports (components/render/rayservice.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core import v1 as core

from components.render.haproxy import (
    HAPROXY_IMAGE,
    LB_GRPC_PORT,
    LB_HTTP_PORT,
    LB_HTTPS_PORT,
    MONITORING_NAMESPACE,
    AppDeadline,
    DnsBackends,
    HealthCheck,
    IngressSpec,
    ingress_spec,
    render_haproxy_cfg,
    render_tier_network_policy,
    tier_container_security_context,
    tier_pod_security_context,
)
from components.render.node_pool import SYSTEM_POOL_SELECTOR
from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT

POD_LABELS: dict[str, str] = {
    "app.kubernetes.io/name": "raygke-haproxy-ingress",
    "app.kubernetes.io/component": "ingress",
}
"""Labels every HAProxy ingress pod carries, whatever the args; Ray's NetworkPolicy selects them."""

CONFIG_DIR = "/usr/local/etc/haproxy"  # where the official image's entrypoint reads haproxy.cfg
TLS_DIR = "/etc/haproxy-tls"
CONFIG_HASH_ANNOTATION = "raygke.io/haproxy-config-sha256"
INTERNAL_LB_ANNOTATION = "networking.gke.io/load-balancer-type"

# The tier pods' own ports: all above 1024, so the non-root container needs no NET_BIND_SERVICE.
# The load balancer maps its ports (LB_*, or the args') onto them by name; Ray's are behind.
POD_HTTP_PORT = 8080
POD_HTTPS_PORT = 8443
POD_GRPC_PORT = 9000
POD_STATS_PORT = 8404
POD_METRICS_PORT = 8405
# Pods a rollout starts above the current count (none stopped first): infra/scheduling.py budgets
# the system pool for it.
ROLLOUT_MAX_SURGE = 1

DEFAULT_RESOURCES: core.ResourceRequirementsArgsDict = {
    # No CPU limit: CFS throttling adds tail latency to a proxy. maxconn bounds memory, so limit it.
    "requests": {"cpu": "1", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}


class HaproxyIngressArgs(TypedDict):
    """Inputs of HaproxyIngress.

    The counts, the load-balancer kind and the TLS secret are plain values, not Outputs: they decide
    which objects and ports exist and are validated against each other before anything registers.
    """

    namespace: pulumi.Input[str]
    """Namespace of the Ray pods; the tier runs beside them."""
    ray_service_name: pulumi.Input[str]
    """The RayService these pods belong to; recorded as a label on every object of the tier."""
    ray_pod_selector: pulumi.Input[Mapping[str, str]]
    """Labels that select the Ray pods serving traffic (head and workers)."""
    routes: NotRequired[Sequence[str]]
    """Route prefixes of the Serve apps; other paths get 404. Default: ("/",), every path."""
    deadlines: NotRequired[Sequence[AppDeadline]]
    """Each app's deadline: how long the tier waits for Ray's next bytes on its requests (HTTP by
    route prefix, gRPC by `application`). Default: none, the tier's long default timeouts."""
    image: NotRequired[pulumi.Input[str]]
    """Default: HAPROXY_IMAGE."""
    replicas: NotRequired[int]
    """Minimum (and initial) number of HAProxy pods. Default: 2."""
    max_replicas: NotRequired[int]
    """The autoscaler's ceiling. Default: 10."""
    cpu_target_percent: NotRequired[int]
    """The autoscaler's average CPU utilization target, in percent of requests. Default: 70."""
    min_available: NotRequired[int]
    """PodDisruptionBudget minAvailable; below `replicas` so node drains can proceed. Default: 1."""
    resources: NotRequired[pulumi.Input[core.ResourceRequirementsArgsDict]]
    """HAProxy container resources. Default: DEFAULT_RESOURCES."""
    load_balancer: NotRequired[Literal["internal", "external"]]
    """An internal (VPC-only) or external load balancer. Default: internal."""
    source_ranges: NotRequired[pulumi.Input[Sequence[str]]]
    """CIDRs allowed to reach the load balancer (loadBalancerSourceRanges) and, through the tier's
    NetworkPolicy, its pods' serving ports. Default: any."""
    monitoring_namespace: NotRequired[str]
    """Namespace of the Prometheus collectors admitted to the stats and metrics ports. Default:
    gmp-system (GKE Managed Service for Prometheus)."""
    tls_secret_name: NotRequired[str]
    """A kubernetes.io/tls Secret in `namespace`; `lb_https_port` then serves HTTPS (gRPC too)."""
    lb_http_port: NotRequired[int]
    """The load balancer's HTTP port, in `http_url`. Default: LB_HTTP_PORT, 80."""
    lb_grpc_port: NotRequired[int]
    """The load balancer's gRPC (h2c) port, in `grpc_target`. Default: LB_GRPC_PORT, 9000."""
    lb_https_port: NotRequired[int]
    """The load balancer's HTTPS port, with `tls_secret_name`. Default: LB_HTTPS_PORT, 443."""
    backend_slots: NotRequired[int]
    """How many Ray pods HAProxy can route to at once. Default: 16."""
    health: NotRequired[HealthCheck]
    """Health checks of the Ray pods. Default: HealthCheck()."""
    maxconn: NotRequired[int]
    """Default: 4096, Ray's own HAProxy default."""
    nbthread: NotRequired[int]
    """Default: 4, Ray's own HAProxy default."""
    cluster_domain: NotRequired[str]
    """The cluster's DNS domain. Default: cluster.local."""


def _validate(
    replicas: int, max_replicas: int, min_available: int, cpu_target: int, lb_ports: dict[str, int]
) -> None:
    if replicas < 1:
        raise ValueError(f"haproxy ingress replicas must be at least 1; got {replicas}")
    if max_replicas < replicas:
        raise ValueError(
            f"haproxy ingress max_replicas ({max_replicas}) must be at least replicas ({replicas})"
        )
    if not 0 <= min_available < replicas:
        raise ValueError(
            f"haproxy ingress min_available must be between 0 and replicas - 1 ({replicas - 1}) so "
            f"node drains can evict a pod; got {min_available}"
        )
    if not 1 <= cpu_target <= 100:
        raise ValueError(f"haproxy ingress cpu_target_percent must be 1-100; got {cpu_target}")
    for key, port in lb_ports.items():
        if not 1 <= port <= 65535:
            raise ValueError(f"haproxy ingress {key} must be a TCP port 1-65535; got {port}")
    if len(set(lb_ports.values())) != len(lb_ports):
        raise ValueError(f"haproxy ingress load balancer ports must differ; got {lb_ports}")


def cluster_ingress_spec(
    backends_fqdn: str,
    *,
    routes: Sequence[str] = ("/",),
    tls: bool = False,
    slots: int = 16,
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


class HaproxyIngress(pulumi.ComponentResource):
    """HAProxy pods behind a LoadBalancer Service, routing HTTP and gRPC to the Ray pods."""

    service_name: pulumi.Output[str]
    """The LoadBalancer Service's name."""
    load_balancer_address: pulumi.Output[str]
    """The load balancer's IP (status.loadBalancer.ingress[0].ip)."""
    http_url: pulumi.Output[str]
    """http://<address>:<lb_http_port>, the smoke benchmark's `http_url`."""
    grpc_target: pulumi.Output[str]
    """<address>:<lb_grpc_port>, the smoke benchmark's `grpc_target`."""
    pod_labels: pulumi.Output[dict[str, str]]
    """POD_LABELS: what the Ray NetworkPolicy admits to Ray's serve ports."""
    config_text: pulumi.Output[str]
    """The rendered haproxy.cfg."""
    backends_service_name: pulumi.Output[str]
    """The headless Service listing the Ray pods."""

    def __init__(
        self,
        name: str,
        args: HaproxyIngressArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygke:haproxy_ingress:HaproxyIngress", name, None, opts)
        replicas = args.get("replicas", 2)
        max_replicas = args.get("max_replicas", 10)
        min_available = args.get("min_available", 1)
        cpu_target = args.get("cpu_target_percent", 70)
        tls_secret = args.get("tls_secret_name")
        lb_http_port = args.get("lb_http_port", LB_HTTP_PORT)
        lb_grpc_port = args.get("lb_grpc_port", LB_GRPC_PORT)
        lb_https_port = args.get("lb_https_port", LB_HTTPS_PORT)
        lb_ports = {"lb_http_port": lb_http_port, "lb_grpc_port": lb_grpc_port}
        if tls_secret is not None:
            lb_ports["lb_https_port"] = lb_https_port
        _validate(replicas, max_replicas, min_available, cpu_target, lb_ports)
        lb_kind = args.get("load_balancer", "internal")
        if lb_kind not in ("internal", "external"):
            raise ValueError(f"load_balancer must be 'internal' or 'external'; got {lb_kind!r}")
        namespace = args["namespace"]
        cluster_domain = args.get("cluster_domain", "cluster.local")
        backends_name = f"{name}-backends"
        child = pulumi.ResourceOptions(parent=self)
        common = pulumi.Output.from_input(args["ray_service_name"]).apply(
            lambda ray: {**POD_LABELS, "raygke.io/ray-service": ray}
        )
        # Two tiers in one namespace must not select each other's pods; POD_LABELS alone would.
        selector = {**POD_LABELS, "app.kubernetes.io/instance": name}

        # Headless: its DNS name answers with one A record per ready Ray pod, which is what
        # HAProxy's server-template resolves; a ClusterIP would hide the pods behind one address.
        backends = k8s.core.v1.Service(
            backends_name,
            metadata={"name": backends_name, "namespace": namespace, "labels": common},
            spec={
                "cluster_ip": "None",
                "selector": args["ray_pod_selector"],
                "publish_not_ready_addresses": False,
                "ports": [
                    {
                        "name": "http",
                        "port": RAY_SERVE_HTTP_PORT,
                        "target_port": RAY_SERVE_HTTP_PORT,
                    },
                    {
                        "name": "grpc",
                        "port": RAY_SERVE_GRPC_PORT,
                        "target_port": RAY_SERVE_GRPC_PORT,
                    },
                ],
            },
            opts=child,
        )

        def spec_for(ns: str) -> IngressSpec:
            return cluster_ingress_spec(
                f"{backends_name}.{ns}.svc.{cluster_domain}",
                routes=tuple(args.get("routes", ("/",))),
                tls=tls_secret is not None,
                slots=args.get("backend_slots", 16),
                health=args.get("health"),
                maxconn=args.get("maxconn", IngressSpec.maxconn),
                nbthread=args.get("nbthread", IngressSpec.nbthread),
                deadlines=tuple(args.get("deadlines", ())),
            )

        # Built once now: a bad route or count fails before anything registers, not in an apply.
        spec_for("default")
        config_text = pulumi.Output.from_input(namespace).apply(
            lambda ns: render_haproxy_cfg(spec_for(ns))
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": f"{name}-config", "namespace": namespace, "labels": common},
            data={"haproxy.cfg": config_text},
            opts=child,
        )

        container_ports: list[core.ContainerPortArgsDict] = [
            {"name": "http", "container_port": POD_HTTP_PORT},
            {"name": "grpc", "container_port": POD_GRPC_PORT},
            {"name": "stats", "container_port": POD_STATS_PORT},
            {"name": "metrics", "container_port": POD_METRICS_PORT},
        ]
        volumes: list[core.VolumeArgsDict] = [
            {"name": "config", "config_map": {"name": config.metadata.name}}
        ]
        mounts: list[core.VolumeMountArgsDict] = [
            {"name": "config", "mount_path": CONFIG_DIR, "read_only": True}
        ]
        if tls_secret is not None:
            container_ports.append({"name": "https", "container_port": POD_HTTPS_PORT})
            # HAProxy loads `<crt>.key` beside the certificate: map the Secret's two keys onto that.
            volumes.append(
                {
                    "name": "tls",
                    "secret": {
                        "secret_name": tls_secret,
                        "items": [
                            {"key": "tls.crt", "path": "tls.pem"},
                            {"key": "tls.key", "path": "tls.pem.key"},
                        ],
                    },
                }
            )
            mounts.append({"name": "tls", "mount_path": TLS_DIR, "read_only": True})

        # Preferred, not required: the autoscaler may want more pods than there are nodes or zones.
        spread: list[core.WeightedPodAffinityTermArgsDict] = [
            {
                "weight": weight,
                "pod_affinity_term": {
                    "label_selector": {"match_labels": selector},
                    "topology_key": key,
                },
            }
            for weight, key in (
                (100, "kubernetes.io/hostname"),
                (50, "topology.kubernetes.io/zone"),
            )
        ]
        anti_affinity: core.PodAntiAffinityArgsDict = {
            "preferred_during_scheduling_ignored_during_execution": spread
        }
        pod_annotations = config_text.apply(
            lambda text: {CONFIG_HASH_ANNOTATION: hashlib.sha256(text.encode()).hexdigest()}
        )
        deployment = k8s.apps.v1.Deployment(
            name,
            metadata={"name": name, "namespace": namespace, "labels": common},
            spec={
                "replicas": replicas,
                "selector": {"match_labels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rolling_update": {"max_unavailable": 0, "max_surge": ROLLOUT_MAX_SURGE},
                },
                "template": {
                    # The config hash changes the pod template, so a new haproxy.cfg rolls the pods.
                    "metadata": {
                        "labels": common.apply(lambda c: {**c, **selector}),
                        "annotations": pod_annotations,
                    },
                    "spec": {
                        "automount_service_account_token": False,
                        "node_selector": SYSTEM_POOL_SELECTOR,
                        "affinity": {"pod_anti_affinity": anti_affinity},
                        "security_context": cast(
                            core.PodSecurityContextArgsDict, tier_pod_security_context()
                        ),
                        "termination_grace_period_seconds": 60,
                        "containers": [
                            {
                                "name": "haproxy",
                                "image": args.get("image", HAPROXY_IMAGE),
                                "ports": container_ports,
                                "resources": args.get("resources", DEFAULT_RESOURCES),
                                "readiness_probe": _health_probe(period_s=5, failures=2),
                                "liveness_probe": _health_probe(period_s=10, failures=3),
                                # The load balancer stops sending new connections before SIGTERM.
                                "lifecycle": {"pre_stop": {"sleep": {"seconds": 10}}},
                                "security_context": cast(
                                    core.SecurityContextArgsDict,
                                    tier_container_security_context(),
                                ),
                                "volume_mounts": mounts,
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
            # The autoscaler owns the replica count after creation; `replicas` is only the start.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["spec.replicas"]),
        )

        service_ports: list[core.ServicePortArgsDict] = [
            {"name": "http", "port": lb_http_port, "target_port": "http", "protocol": "TCP"},
            {"name": "grpc", "port": lb_grpc_port, "target_port": "grpc", "protocol": "TCP"},
        ]
        if tls_secret is not None:
            service_ports.insert(
                1,
                {"name": "https", "port": lb_https_port, "target_port": "https", "protocol": "TCP"},
            )
        annotations = {INTERNAL_LB_ANNOTATION: "Internal"} if lb_kind == "internal" else {}
        lb_spec: core.ServiceSpecArgsDict = {
            "type": "LoadBalancer",
            "selector": selector,
            "ports": service_ports,
            # Client addresses reach the pods unchanged and only nodes with a tier pod pass the
            # load balancer's health check: no second hop, no SNAT, so the tier's NetworkPolicy
            # can admit the source ranges themselves (GKE Dataplane V2 enforces it on the pod).
            "external_traffic_policy": "Local",
        }
        if "source_ranges" in args:
            lb_spec["load_balancer_source_ranges"] = args["source_ranges"]
        service = k8s.core.v1.Service(
            f"{name}-lb",
            metadata={
                "name": name,
                "namespace": namespace,
                "labels": common,
                "annotations": annotations,
            },
            spec=lb_spec,
            opts=child,
        )

        serving_ports = [POD_HTTP_PORT, POD_GRPC_PORT] + (
            [POD_HTTPS_PORT] if tls_secret is not None else []
        )
        source_ranges = args.get("source_ranges", ["0.0.0.0/0"])

        def tier_policy(ns: str, ranges: Sequence[str]) -> dict[str, Any]:
            return render_tier_network_policy(
                name,
                ns,
                selector,
                serving_ports=serving_ports,
                monitoring_ports=[POD_STATS_PORT, POD_METRICS_PORT],
                source_ranges=ranges,
                monitoring_namespace=args.get("monitoring_namespace", MONITORING_NAMESPACE),
            )

        if isinstance(source_ranges, list | tuple) and all(
            isinstance(r, str) for r in source_ranges
        ):
            tier_policy("default", cast(Sequence[str], source_ranges))  # a bad CIDR fails here
        netpol = pulumi.Output.all(namespace, source_ranges).apply(
            lambda a: tier_policy(a[0], a[1])
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata={"name": name, "namespace": namespace, "labels": common},
            spec=netpol["spec"],
            opts=child,
        )

        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": name, "namespace": namespace, "labels": common},
            spec={"min_available": min_available, "selector": {"match_labels": selector}},
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata={"name": name, "namespace": namespace, "labels": common},
            spec={
                "scale_target_ref": {
                    "api_version": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment.metadata.name,
                },
                "min_replicas": replicas,
                "max_replicas": max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "average_utilization": cpu_target},
                        },
                    }
                ],
            },
            opts=child,
        )

        address = service.status.apply(_lb_address)
        self.service_name = service.metadata.name
        self.load_balancer_address = address
        self.http_url = address.apply(lambda ip: f"http://{ip}:{lb_http_port}")
        self.grpc_target = address.apply(lambda ip: f"{ip}:{lb_grpc_port}")
        self.pod_labels = pulumi.Output.from_input(dict(POD_LABELS))
        self.config_text = config_text
        self.backends_service_name = backends.metadata.name
        self.register_outputs(
            {
                "service_name": self.service_name,
                "load_balancer_address": self.load_balancer_address,
                "http_url": self.http_url,
                "grpc_target": self.grpc_target,
                "pod_labels": self.pod_labels,
                "config_text": self.config_text,
                "backends_service_name": self.backends_service_name,
            }
        )


def _health_probe(period_s: int, failures: int) -> core.ProbeArgsDict:
    """A probe of haproxy's own /healthz (fe_stats), which does not depend on Ray being up."""
    return {
        "http_get": {"path": "/healthz", "port": "stats"},
        "timeout_seconds": 2,
        "period_seconds": period_s,
        "failure_threshold": failures,
    }


def _lb_address(status: Any) -> str:
    """status.loadBalancer.ingress[0].ip, or "" while the cloud has not assigned one (preview)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    return (getattr(ingress[0], "ip", None) or "") if ingress else ""
