"""Run Pulumi code under the engine's mocks and record every resource it registers.

Owns: the realistic fake outputs per resource type (what the cloud would return), and the inventory of
registrations (type, name, parent, inputs) that `raygke plan` prints and the tests assert on.
Does not own: any resource definition; that is components/ and infra/.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.settings import SETTINGS, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

PROJECT = "ray-serve-gke"
_FAKE_CA = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nMOCK\n-----END CERTIFICATE-----\n"
).decode()


@dataclass(frozen=True)
class Registration:
    """One resource as the program asked the engine to register it."""

    urn: str
    type: str
    name: str
    parent: str  # parent URN; "" for the stack's direct children
    inputs: dict[str, Any]
    custom: bool
    provider: str
    dependencies: tuple[str, ...]  # URNs it was registered as depending on


@dataclass(frozen=True)
class Secret:
    """A stack output marked secret: printed masked, its value kept for assertions."""

    value: Any

    def __repr__(self) -> str:
        return "[secret]"


@dataclass
class Inventory:
    """Every registration of one mocked run, in registration order."""

    resources: list[Registration] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise LookupError(f"expected one {type_} named {name!r}, found {names}")
        return found[0]

    def types(self) -> set[str]:
        return {r.type for r in self.resources}


def _fake_outputs(args: pulumi_mocks.MockResourceArgs) -> dict[str, Any]:
    """Outputs a provider would add to the inputs, for the types whose outputs the program reads."""
    name = args.inputs.get("name", args.name)
    if args.typ == "gcp:container/cluster:Cluster":
        return {
            "name": name,
            "endpoint": "203.0.113.10",
            "masterAuth": {"clusterCaCertificate": _FAKE_CA},
            "selfLink": f"https://container.googleapis.com/v1/projects/mock/locations/mock/clusters/{name}",
        }
    if args.typ == "gcp:container/nodePool:NodePool":
        return {"name": name}
    if args.typ == "gcp:compute/network:Network":
        return {"name": name, "selfLink": f"projects/mock/global/networks/{name}"}
    if args.typ == "gcp:compute/subnetwork:Subnetwork":
        return {"name": name, "selfLink": f"projects/mock/regions/mock/subnetworks/{name}"}
    if args.typ == "gcp:serviceaccount/account:Account":
        account_id = args.inputs.get("accountId", args.name)
        return {"email": f"{account_id}@mock-project.iam.gserviceaccount.com", "name": account_id}
    if args.typ == "gcp:redis/instance:Instance":
        return {"host": "10.120.0.3", "port": 6379, "authString": "mock-redis-auth"}
    if args.typ == "kubernetes:core/v1:Service":
        return {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}]}}}
    return {}


class RealisticMocks(pulumi.runtime.Mocks):
    """Returns the inputs as state plus the outputs a real provider would add."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        state = {**args.inputs, **_fake_outputs(args)}
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        # The second item is the check failures; the mock monitor iterates it, so never None.
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "123456789012", "projectId": "mock-project"}, []
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"project": "mock-project", "accessToken": "mock-token"}, []
        return {}, []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The engine's mock monitor, keeping each registration's parent and inputs for the inventory."""

    def __init__(self, mocks: pulumi.runtime.Mocks, inventory: Inventory):
        super().__init__(mocks)
        self.inventory = inventory

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            self.inventory.resources.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    inputs=_plain(inputs),
                    custom=bool(request.custom),
                    provider=request.provider,
                    dependencies=tuple(request.dependencies),
                )
            )
        return response


def _plain(value: Any) -> Any:
    """Deserialized inputs with unknowns and secrets made printable and comparable."""
    if isinstance(value, Mapping):
        if value.get(pulumi.runtime.rpc._special_sig_key) == pulumi.runtime.rpc._special_secret_sig:
            return "[secret]"
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def run_with_mocks(
    program: Callable[[], Mapping[str, Any] | None],
    *,
    stack: str = "test",
    config: Mapping[str, Any] | None = None,
    inventory: Inventory | None = None,
) -> tuple[Inventory, dict[str, Any]]:
    """Run `program` under mocks; return what it registered and its resolved outputs.

    `config` is the stack's `config:` map (`"gcp:project": "x"`, `"ray-serve-gke:cluster": {...}`); it is
    handed to Pulumi the way the CLI hands it over, JSON-encoding structured values. Pass `inventory` to
    see what was registered even when the program raises.
    """
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in (config or {}).items()}
    )
    inventory = inventory if inventory is not None else Inventory()
    # The engine needs the thread's event loop; `asyncio.run` elsewhere in the process leaves none.
    if _ensure_event_loop().is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = RealisticMocks()
    set_root_resource(None)  # type: ignore[arg-type]  # a fresh root Stack per run, named for this stack
    pulumi.runtime.set_mocks(
        mocks,
        project=PROJECT,
        stack=stack,
        preview=False,
        monitor=RecordingMonitor(mocks, inventory),
    )
    # the same reset pulumi.runtime.test does; pyright misreads SETTINGS' type
    SETTINGS.rpc_manager.clear()  # pyright: ignore[reportAttributeAccessIssue]
    SETTINGS.outputs.clear()  # pyright: ignore[reportAttributeAccessIssue]
    resolved: dict[str, Any] = {}

    async def resolve(value: Any) -> Any:
        output = pulumi.Output.from_input(value)
        plain = await output.future()
        return Secret(plain) if await output.is_secret() else plain

    def body() -> None:
        outputs = program() or {}
        for key, value in outputs.items():
            resolved[key] = _sync_await(resolve(value))

    _sync_await(run_pulumi_func(body))
    return inventory, resolved


def ints(value: Any) -> Any:
    """`value` with integral floats made ints: Pulumi's mock monitor hands numbers back as floats,
    and the schemas want the integers they were."""
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
