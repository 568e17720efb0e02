"""The Network component under mocks, and the GPUDirect address plan it uses."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.render.node_pool import gpudirect_subnet_cidrs
from raygke.mocks import Inventory, run_with_mocks

COMPONENT = "raygke:network:Network"
VPC = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
FIREWALL = "gcp:compute/firewall:Firewall"
ARGS = {
    "region": "us-central1",
    "subnet_cidr": "10.10.0.0/20",
    "pods_cidr": "10.20.0.0/14",
    "services_cidr": "10.24.0.0/20",
}


def _run(**extra: Any) -> tuple[Inventory, dict[str, Any]]:
    def program() -> dict[str, Any]:
        from components.network import Network

        net = Network("net", {**ARGS, **extra})  # type: ignore[typeddict-item]
        return {
            "network": net.network,
            "network_name": net.network_name,
            "subnetwork": net.subnetwork,
            "subnetwork_name": net.subnetwork_name,
            "pods_range_name": net.pods_range_name,
            "services_range_name": net.services_range_name,
            "extra_networks": net.extra_networks,
        }

    return run_with_mocks(program)


@pytest.mark.mocks
def test_vpc_and_subnet_for_a_private_vpc_native_cluster():
    inventory, outputs = _run()
    vpc = inventory.one(VPC, "net-vpc").inputs
    assert vpc["autoCreateSubnetworks"] is False
    subnet = inventory.one(SUBNET, "net-subnet").inputs
    assert subnet["region"] == "us-central1"
    assert subnet["ipCidrRange"] == "10.10.0.0/20"
    assert subnet["privateIpGoogleAccess"] is True
    assert subnet["secondaryIpRanges"] == [
        {"rangeName": "pods", "ipCidrRange": "10.20.0.0/14"},
        {"rangeName": "services", "ipCidrRange": "10.24.0.0/20"},
    ]
    assert outputs == {
        "network": "projects/mock/global/networks/net-vpc",
        "network_name": "net-vpc",
        "subnetwork": "projects/mock/regions/mock/subnetworks/net-subnet",
        "subnetwork_name": "net-subnet",
        "pods_range_name": "pods",
        "services_range_name": "services",
        "extra_networks": [],
    }
    assert len(inventory.of_type(VPC)) == 1


@pytest.mark.mocks
def test_private_nodes_get_egress_through_cloud_nat():
    inventory, _ = _run()
    router = inventory.one("gcp:compute/router:Router").inputs
    assert router["region"] == "us-central1"
    nat = inventory.one("gcp:compute/routerNat:RouterNat").inputs
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert nat["subnetworks"] == [
        {"name": "net-subnet-id", "sourceIpRangesToNats": ["ALL_IP_RANGES"]}
    ]


@pytest.mark.mocks
def test_only_google_health_checks_are_admitted_and_never_the_internet():
    inventory, _ = _run()
    rule = inventory.one(FIREWALL, "net-allow-health-checks").inputs
    assert rule["direction"] == "INGRESS"
    assert sorted(rule["sourceRanges"]) == ["130.211.0.0/22", "35.191.0.0/16"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["10256", "30000-32767"]}]
    for firewall in inventory.of_type(FIREWALL):
        assert "0.0.0.0/0" not in firewall.inputs.get("sourceRanges", [])

    inventory, _ = _run(health_check_ports=["8000"])
    rule = inventory.one(FIREWALL, "net-allow-health-checks").inputs
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["8000"]}]


@pytest.mark.mocks
def test_gpudirect_networks_for_a3_mega():
    inventory, outputs = _run(extra_networks=8, extra_networks_cidr="192.168.0.0/16")
    gpu_vpcs = [r for r in inventory.of_type(VPC) if r.name != "net-vpc"]
    # Registration order is the engine's (asynchronous), so compare as sets.
    assert {r.name for r in gpu_vpcs} == {f"net-gpu{i}-vpc" for i in range(8)}
    assert all(
        r.inputs["mtu"] == 8244 and r.inputs["autoCreateSubnetworks"] is False for r in gpu_vpcs
    )
    assert (
        inventory.one(VPC, "net-vpc").inputs.get("mtu") is None
    )  # the primary VPC keeps GCP's default
    subnets = {r.name: r.inputs for r in inventory.of_type(SUBNET)}
    for i in range(8):
        sub = subnets[f"net-gpu{i}-subnet"]
        assert sub["ipCidrRange"] == f"192.168.{i}.0/24"
        assert sub["network"] == f"net-gpu{i}-vpc-id"
        internal = inventory.one(FIREWALL, f"net-gpu{i}-internal").inputs
        assert internal["sourceRanges"] == [f"192.168.{i}.0/24"]
    assert outputs["extra_networks"] == [
        {"network": f"net-gpu{i}-vpc", "subnetwork": f"net-gpu{i}-subnet"} for i in range(8)
    ]


@pytest.mark.mocks
def test_every_child_is_parented_and_named_from_the_component():
    inventory, _ = _run(extra_networks=4)
    component = inventory.one(COMPONENT, "net")
    children = [r for r in inventory.resources if r.type != COMPONENT]
    assert len(children) == 5 + 4 * 3
    for child in children:
        assert child.parent == component.urn, child.name
        assert child.name.startswith("net-"), child.name


@pytest.mark.mocks
def test_too_many_extra_networks_for_the_base_fail_before_any_resource():
    inventory = Inventory()

    def program() -> None:
        from components.network import Network

        args: Any = {**ARGS, "extra_networks": 3, "extra_networks_cidr": "192.168.0.0/23"}
        Network("net", args)

    with pytest.raises(Exception, match=r"192\.168\.0\.0/23 holds 2 /24 subnets; 3 needed"):
        run_with_mocks(program, inventory=inventory)
    assert inventory.of_type(VPC) == []


@pytest.mark.pure
@given(prefix=st.integers(8, 24), count=st.integers(0, 16))
def test_gpudirect_subnets_are_disjoint_and_inside_the_base(prefix, count):
    base = ipaddress.IPv4Network(f"10.0.0.0/{prefix}")
    available = 2 ** (24 - prefix)
    if count > available:
        with pytest.raises(ValueError, match="subnets;"):
            gpudirect_subnet_cidrs(str(base), count)
        return
    cidrs = [ipaddress.IPv4Network(c) for c in gpudirect_subnet_cidrs(str(base), count)]
    assert len(cidrs) == count
    assert all(c.prefixlen == 24 and c.subnet_of(base) for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])


@pytest.mark.pure
@pytest.mark.parametrize(
    ("base", "count", "match"),
    [
        ("192.168.0.0/25", 1, r"smaller than one /24"),
        ("192.168.0.1/16", 1, r"has host bits set"),
        ("192.168.0.0/16", -1, r"must be >= 0"),
    ],
)
def test_bad_gpudirect_address_plans_fail(base, count, match):
    with pytest.raises(ValueError, match=match):
        gpudirect_subnet_cidrs(base, count)
