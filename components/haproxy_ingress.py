"""The HAProxy ingress tier in front of the Ray pods: clients -> load balancer -> HAProxy -> Ray.

Owns: registering the tier's objects, each rendered by components/render/ingress_tier.py from the
args once their Outputs are known (the ConfigMap holding haproxy.cfg, the HAProxy Deployment, the LoadBalancer Service clients reach, the tier's
NetworkPolicy, its PodDisruptionBudget, HorizontalPodAutoscaler and PodMonitoring), and the tier's
outputs.
Does not own: what any object holds (the renderer: a stack's scheduling check reads the same
objects), the Kubernetes provider (the program passes it in `opts`), the Ray pods and the headless
Service listing those that serve (KubeRay's serve Service, asked for by components/ray_serve_app.py;
the caller gives its name), TLS certificates (a Secret, by name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.render.haproxy import AppDeadline, HealthCheck
from components.render.ingress_tier import (
    CONFIG_HASH_ANNOTATION,
    HAPROXY_IMAGE,
    INTERNAL_LB_ANNOTATION,
    POD_LABELS,
    TierSpec,
    render_tier,
    render_tls_secret,
)

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "HAPROXY_IMAGE",
    "INTERNAL_LB_ANNOTATION",
    "POD_LABELS",
    "HaproxyIngress",
    "HaproxyIngressArgs",
]

# Args that may be Outputs, and a stand-in for each while they are unknown: the constructor renders
# once with them so a bad count, port, route or range fails before anything registers.
# Args that only fill the TLS Secret's data; the tier's own objects never read them.
_TLS_DATA_ARGS = ("tls_certificate", "tls_key")
_OUTPUT_ARGS: dict[str, Any] = {
    "namespace": "default",
    "ray_service_name": "ray",
    "backends_service": "ray-serve-svc",
    "image": HAPROXY_IMAGE,
    "resources": None,
    "source_ranges": None,
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
    backends_service: pulumi.Input[str]
    """The headless Service, in `namespace`, listing the Ray pods that serve (head and workers) of the
    RayCluster KubeRay has promoted: the RayService's serve Service
    (components/render/rayservice.py `serve_service_name`)."""
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
    """The autoscaler's ceiling. Default: 6."""
    cpu_target_percent: NotRequired[int]
    """The autoscaler's average CPU utilization target, in percent of requests. Default: 70."""
    min_available: NotRequired[int]
    """PodDisruptionBudget minAvailable; below `replicas` so node drains can proceed. Default: 1."""
    resources: NotRequired[pulumi.Input[Mapping[str, Any]]]
    """HAProxy container resources. Default: DEFAULT_RESOURCES."""
    load_balancer: NotRequired[Literal["internal", "external"]]
    """An internal (VPC-only) or external load balancer. Default: internal."""
    source_ranges: NotRequired[pulumi.Input[Sequence[str]]]
    """CIDRs allowed to reach the load balancer (loadBalancerSourceRanges) and, through the tier's
    NetworkPolicy, its pods' serving ports. Default: any."""
    monitoring_namespace: NotRequired[str]
    """Namespace of the Prometheus collectors admitted to the stats and metrics ports. Default:
    gke-gmp-system (GKE's managed collection; `gmp-system` for a self-deployed operator)."""
    tls_secret_name: NotRequired[str]
    """A kubernetes.io/tls Secret in `namespace`; `lb_https_port` then serves HTTPS (gRPC too).
    The component creates it from `tls_certificate` and `tls_key` when given; otherwise it must
    exist (cert-manager, `kubectl create secret tls`) before the tier's pods can start."""
    tls_certificate: NotRequired[pulumi.Input[str]]
    """PEM certificate chain for `tls_secret_name` (kept secret in the state)."""
    tls_key: NotRequired[pulumi.Input[str]]
    """PEM private key for `tls_secret_name` (kept secret in the state)."""
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
    pod_monitoring: NotRequired[bool]
    """Register the Managed Prometheus PodMonitoring scraping HAProxy's exporter (needs GKE Managed
    Service for Prometheus). Default: True."""


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
    """The headless Service the tier resolves to find the serving Ray pods (KubeRay's; not ours)."""

    def __init__(
        self,
        name: str,
        args: HaproxyIngressArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygke:haproxy_ingress:HaproxyIngress", name, None, opts)
        plain = {
            k: v
            for k, v in args.items()
            if k not in _OUTPUT_ARGS and k not in _TLS_DATA_ARGS and k != "pod_monitoring"
        }
        known = {k: v for k, v in args.items() if k in _OUTPUT_ARGS and _is_plain(v)}
        spec = TierSpec(name=name, **{**_OUTPUT_ARGS, **known, **plain})
        # Rendered here, in the constructor: anything the renderer refuses raises before a child
        # registers; args still unknown are rendered again once they are.
        rendered = render_tier(spec)
        later = {k: args[k] for k in _OUTPUT_ARGS if k in args and k not in known}
        objects: pulumi.Output[dict[str, Any]] = (
            pulumi.Output.all(**later).apply(
                lambda resolved: render_tier(
                    TierSpec(name=name, **{**_OUTPUT_ARGS, **known, **resolved, **plain})
                )
            )
            if later
            else pulumi.Output.from_input(rendered)
        )
        child = pulumi.ResourceOptions(parent=self)

        def register(kind: Any, resource_name: str, role: str, **resource_opts: Any) -> Any:
            body = objects[role]
            inputs = {"data": body["data"]} if role == "config" else {"spec": body["spec"]}
            return kind(
                resource_name,
                metadata=body["metadata"],
                **inputs,
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(**resource_opts)),
            )

        tls_secret = self._tls_secret(name, spec, args, child)
        config = register(k8s.core.v1.ConfigMap, f"{name}-config", "config")
        # The autoscaler owns the replica count after creation; `replicas` is only the start.
        deployment = register(
            k8s.apps.v1.Deployment,
            name,
            "deployment",
            depends_on=[config, *tls_secret],
            ignore_changes=["spec.replicas"],
        )
        service = register(k8s.core.v1.Service, f"{name}-lb", "load_balancer")
        register(k8s.networking.v1.NetworkPolicy, f"{name}-netpol", "network_policy")
        register(k8s.policy.v1.PodDisruptionBudget, f"{name}-pdb", "pdb")
        register(
            k8s.autoscaling.v2.HorizontalPodAutoscaler,
            f"{name}-hpa",
            "hpa",
            depends_on=[deployment],
        )
        if args.get("pod_monitoring", True):
            monitor = objects["pod_monitoring"]
            k8s.apiextensions.CustomResource(
                f"{name}-podmonitoring",
                api_version=rendered["pod_monitoring"]["apiVersion"],
                kind=rendered["pod_monitoring"]["kind"],
                metadata=monitor["metadata"],
                spec=monitor["spec"],
                opts=child,
            )

        address = service.status.apply(_lb_address)
        self.service_name = service.metadata.name
        self.load_balancer_address = address
        self.http_url = address.apply(lambda ip: f"http://{ip}:{spec.lb_http_port}")
        self.grpc_target = address.apply(lambda ip: f"{ip}:{spec.lb_grpc_port}")
        self.pod_labels = pulumi.Output.from_input(dict(POD_LABELS))
        self.config_text = objects["config"]["data"]["haproxy.cfg"]
        self.backends_service_name = pulumi.Output.from_input(args["backends_service"])
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

    @staticmethod
    def _tls_secret(
        name: str, spec: TierSpec, args: HaproxyIngressArgs, opts: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """The TLS Secret, when the args carry its certificate and key."""
        certificate, key = args.get("tls_certificate"), args.get("tls_key")
        given = [
            k for k, v in zip(_TLS_DATA_ARGS, (certificate, key), strict=True) if v is not None
        ]
        if not given:
            return []
        if certificate is None or key is None or spec.tls_secret_name is None:
            raise ValueError(
                f"HaproxyIngress {name!r}: tls_certificate and tls_key go together, with "
                f"tls_secret_name naming the Secret made from them; got {', '.join(given)}"
            )
        body = render_tls_secret(spec, "", "")
        data = {"tls.crt": pulumi.Output.secret(certificate), "tls.key": pulumi.Output.secret(key)}
        secret = k8s.core.v1.Secret(
            f"{name}-tls",
            metadata=body["metadata"],
            type=body["type"],
            string_data=data,
            opts=opts,
        )
        return [secret]


def _is_plain(value: Any) -> bool:
    """A value with no Output (or awaitable) anywhere inside it: known now."""
    if isinstance(value, pulumi.Output) or hasattr(value, "__await__"):
        return False
    if isinstance(value, Mapping):
        return all(_is_plain(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return True


def _lb_address(status: Any) -> str:
    """status.loadBalancer.ingress[0].ip, or "" while the cloud has not assigned one (preview)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    return (getattr(ingress[0], "ip", None) or "") if ingress else ""
