"""The stack's rendered graph: every Kubernetes object the program creates, built once, no engine.

Owns: rendering a StackConfig through the same spec builders (infra/specs.py) and pure renderers
(components/render/) the components call, so the checks that span objects (infra/checks.py, the
scheduling check in infra/scheduling.py) read exactly what `pulumi up` would create. Does not own
any object's content (the renderers), the rules (infra/checks.py), nor registering (the components,
wired by infra/program.py). Imports no Pulumi SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.render import rayservice as rs
from components.render.ingress_tier import POD_LABELS, TierSpec, render_tier, render_tls_secret
from components.render.kuberay_chart import DEFAULT_RESOURCES, FEATURE_GATES, helm_values
from components.render.node_pool import SYSTEM_POOL_SELECTOR
from components.render.observability import render_rules
from infra.config import StackConfig
from infra.specs import observability_spec, rayservice_spec, tier_spec


@dataclass(frozen=True)
class RenderedStack:
    """What the program registers in the cluster, as plain manifests (and the chart's values)."""

    rayservice_spec: rs.RayServiceSpec
    rayservice: dict[str, Any]  # the RayService custom resource
    ray_pdb: dict[str, Any]
    ray_network_policy: dict[str, Any]
    ray_pod_monitoring: dict[str, Any]
    tier_spec: TierSpec
    tier: dict[str, dict[str, Any]]  # by role: components/render/ingress_tier.py
    operator_values: dict[str, Any]  # the kuberay-operator chart's values
    namespaces: tuple[dict[str, Any], ...] = ()  # the Namespaces the program creates
    service_accounts: tuple[dict[str, Any], ...] = ()
    secrets: tuple[dict[str, Any], ...] = ()  # data stands in for values known only at deploy
    alert_rules: tuple[dict[str, Any], ...] = ()  # the Managed Prometheus Rules

    def objects(self) -> list[dict[str, Any]]:
        """Every Kubernetes object above (not the chart's own: Helm renders those in the cluster)."""
        return [
            *self.namespaces,
            *self.service_accounts,
            *self.secrets,
            self.rayservice,
            self.ray_pdb,
            self.ray_network_policy,
            self.ray_pod_monitoring,
            *self.tier.values(),
            *self.alert_rules,
        ]


def render_stack(c: StackConfig) -> RenderedStack:
    """The graph of `c`; raises ValueError where a renderer refuses a spec (its check names it)."""
    spec = rayservice_spec(c)
    tier = tier_spec(c)
    return RenderedStack(
        rayservice_spec=spec,
        rayservice=rs.render_rayservice(spec),
        ray_pdb=rs.render_worker_pdb(spec, c.ray_service.workers.min_available),
        ray_network_policy=rs.render_network_policy(
            spec, POD_LABELS, spec.namespace, c.kuberay.namespace
        ),
        ray_pod_monitoring=rs.render_pod_monitoring(spec),
        tier_spec=tier,
        tier=render_tier(tier),
        operator_values=helm_values(FEATURE_GATES, DEFAULT_RESOURCES, SYSTEM_POOL_SELECTOR),
        namespaces=tuple(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in (spec.namespace, c.kuberay.namespace)
        ),
        service_accounts=((rs.render_model_reader(spec),) if spec.model_bucket is not None else ()),
        secrets=_secrets(c, spec, tier),
        alert_rules=(render_rules(observability_spec(c)),),
    )


# What a Secret's data holds in the graph: the values exist only at deploy (Pulumi secrets, a
# Memorystore AUTH string), and no check reads them.
AT_DEPLOY = "[set at deploy]"


def _secrets(c: StackConfig, spec: rs.RayServiceSpec, tier: TierSpec) -> tuple[dict[str, Any], ...]:
    """The Secrets the program creates: the Redis password of a Memorystore it makes, and the
    tier's certificate when the stack supplies it."""
    secrets = []
    if c.ray_service.fault_tolerance.memorystore is not None:
        secrets.append(rs.render_redis_secret(spec, AT_DEPLOY))
    if c.ingress.tls_from_stack:
        secrets.append(render_tls_secret(tier, AT_DEPLOY, AT_DEPLOY))
    return tuple(secrets)
