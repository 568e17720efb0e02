"""The Google APIs a stack uses, enabled in its project before anything that needs them.

Owns: one `gcp.projects.Service` per API, left enabled when the stack is destroyed
(`disable_on_destroy=False`: other workloads in the project may use them, and disabling an API
deletes what it served). Does not own which APIs (components/render/apis.py) nor the ordering of
the resources that need them (the program builds its GCP provider after this component, so every
resource on that provider waits for the APIs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_gcp as gcp


class ProjectApisArgs(TypedDict):
    project: pulumi.Input[str]
    apis: Sequence[str]
    """e.g. container.googleapis.com; components.render.apis.apis_for computes a stack's."""


class ProjectApis(pulumi.ComponentResource):
    """Every API in `apis`, enabled."""

    services: list[gcp.projects.Service]

    def __init__(
        self, name: str, args: ProjectApisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:project_apis:ProjectApis", name, None, opts)
        self.services = [
            gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args["project"],
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in args["apis"]
        ]
        self.register_outputs({"apis": list(args["apis"])})
