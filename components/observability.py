"""A stack's dashboards and alerts: Cloud Monitoring dashboards and a Managed Prometheus `Rules`.

Owns: registering what components/render/observability.py renders from one ObservabilitySpec: a
`gcp.monitoring.Dashboard` per dashboard (serving, tier, and LLM and GPUs where the stack has them)
and the namespaced `Rules` resource the managed rule evaluator runs; their ids and console URLs.
Does not own: any panel, query or alert (the renderer), scraping (the PodMonitorings of the Ray
pods and the tier), where alerts are delivered (Managed Prometheus' Alertmanager configuration,
docs/observability.md), the providers (the caller passes the GCP one in the args and the
Kubernetes one in `opts`).
"""

from __future__ import annotations

import json
from typing import NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.render.observability import (
    ObservabilitySpec,
    render_dashboards,
    render_rules,
)

CONSOLE = "https://console.cloud.google.com/monitoring/dashboards/builder"


class ObservabilityArgs(TypedDict):
    """Inputs of Observability.

    The spec is plain: it decides which dashboards and alerts exist, and is checked before
    anything registers.
    """

    spec: ObservabilitySpec
    """The stack's apps, objectives and GPU pool (infra/specs.py `observability_spec`)."""
    project: pulumi.Input[str]
    """The project whose Cloud Monitoring holds the dashboards (the cluster's: Managed Prometheus
    writes there)."""
    gcp_provider: NotRequired[pulumi.ProviderResource]
    """The provider for the dashboards. Default: the one `opts` passes down, if any."""
    rules: NotRequired[bool]
    """Register the alert rules (needs GKE Managed Service for Prometheus). Default: True."""


class Observability(pulumi.ComponentResource):
    """Cloud Monitoring dashboards and Managed Prometheus alert rules for one RayService stack."""

    dashboard_ids: pulumi.Output[dict[str, str]]
    """Each dashboard's resource id (projects/<number>/dashboards/<id>), by key."""
    dashboard_urls: pulumi.Output[dict[str, str]]
    """Each dashboard in the Cloud console, by key."""
    rules_name: pulumi.Output[str]
    """The Rules resource's name, in the spec's namespace ("" when not registered)."""

    def __init__(
        self,
        name: str,
        args: ObservabilityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygke:observability:Observability", name, None, opts)
        spec = args["spec"]
        # Rendered in the constructor: a shape either check refuses raises before a child registers.
        bodies = render_dashboards(spec)
        rules = render_rules(spec)
        child = pulumi.ResourceOptions(parent=self)
        on_gcp = (
            pulumi.ResourceOptions(parent=self, provider=args["gcp_provider"])
            if "gcp_provider" in args
            else child
        )

        boards = {
            key: gcp.monitoring.Dashboard(
                f"{name}-{key}",
                project=args["project"],
                dashboard_json=json.dumps(body, sort_keys=True),
                opts=on_gcp,
            )
            for key, body in bodies.items()
        }
        # From the rendered body, not the CustomResource: its outputs are unknown until applied.
        self.rules_name = pulumi.Output.from_input("")
        if args.get("rules", True):
            k8s.apiextensions.CustomResource(
                f"{name}-rules",
                api_version=rules["apiVersion"],
                kind=rules["kind"],
                metadata=rules["metadata"],
                spec=rules["spec"],
                opts=child,
            )
            self.rules_name = pulumi.Output.from_input(rules["metadata"]["name"])

        self.dashboard_ids = pulumi.Output.all(
            **{key: board.id for key, board in boards.items()}
        ).apply(dict)
        self.dashboard_urls = pulumi.Output.all(args["project"], self.dashboard_ids).apply(
            lambda a: {
                key: f"{CONSOLE}/{board_id.rsplit('/', 1)[-1]}?project={a[0]}"
                for key, board_id in a[1].items()
            }
        )
        self.register_outputs(
            {
                "dashboard_ids": self.dashboard_ids,
                "dashboard_urls": self.dashboard_urls,
                "rules_name": self.rules_name,
            }
        )
