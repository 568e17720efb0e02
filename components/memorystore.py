"""Memorystore for Redis for a RayService's GCS fault tolerance, reached over private service access.

Owns: the VPC's private services range (a global internal address for VPC peering), its Service
Networking connection, and the Redis instance on it (AUTH on, `PRIVATE_SERVICE_ACCESS`, a replica
and failover with STANDARD_HA), exporting its address and AUTH string. Google's pulumi-gcp example
for PRIVATE_SERVICE_ACCESS wires exactly these three (redis/instance.py); the instance waits for the
connection, without which it cannot be placed in the VPC.
Does not own: the VPC (components/network.py), the Secret the Ray head reads the AUTH string from
(components/ray_serve_app.py), or enabling the redis and servicenetworking APIs (the program).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp

PEERING_SERVICE = "servicenetworking.googleapis.com"
# A /24 holds many Memorystore instances (each takes a /29) and other Google services that peer
# through the same connection; GCP picks a free range in the VPC.
DEFAULT_PEERING_PREFIX = 24


class MemorystoreArgs(TypedDict):
    """Inputs of Memorystore."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    network: pulumi.Input[str]
    """The VPC's self link or id: the instance is reachable from it only."""
    tier: NotRequired[Literal["BASIC", "STANDARD_HA"]]
    """Default STANDARD_HA: a replica in another zone and automatic failover."""
    memory_size_gb: NotRequired[int]
    """Default 1: GCS keeps a few MB of metadata per Ray cluster."""
    redis_version: NotRequired[str]
    """Default REDIS_7_2."""
    peering_prefix_length: NotRequired[int]
    """The private services range's size. Default DEFAULT_PEERING_PREFIX."""


class Memorystore(pulumi.ComponentResource):
    """A Redis only the VPC reaches, with AUTH, for Ray's GCS fault tolerance."""

    address: pulumi.Output[str]
    """host:port, what a RayService's gcsFaultToleranceOptions.redisAddress takes."""
    auth_string: pulumi.Output[str]
    """Secret: the AUTH string the Ray head presents."""

    def __init__(
        self, name: str, args: MemorystoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("raygke:memorystore:Memorystore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        peering_range = gcp.compute.GlobalAddress(
            f"{name}-psa",
            project=args["project"],
            network=args["network"],
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=args.get("peering_prefix_length", DEFAULT_PEERING_PREFIX),
            opts=child,
        )
        connection = gcp.servicenetworking.Connection(
            f"{name}-psa",
            network=args["network"],
            service=PEERING_SERVICE,
            reserved_peering_ranges=[peering_range.name],
            # Google refuses to delete the peering while any producer still uses it; abandoning
            # it on destroy lets `pulumi destroy` finish (the VPC's deletion removes it).
            deletion_policy="ABANDON",
            opts=child,
        )
        instance = gcp.redis.Instance(
            f"{name}-redis",
            project=args["project"],
            region=args["region"],
            tier=args.get("tier", "STANDARD_HA"),
            memory_size_gb=args.get("memory_size_gb", 1),
            redis_version=args.get("redis_version", "REDIS_7_2"),
            authorized_network=args["network"],
            connect_mode="PRIVATE_SERVICE_ACCESS",
            auth_enabled=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[connection]),
        )
        self.address = pulumi.Output.concat(instance.host, ":", instance.port.apply(str))
        self.auth_string = pulumi.Output.secret(instance.auth_string)
        self.register_outputs({"address": self.address, "auth_string": self.auth_string})
