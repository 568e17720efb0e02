"""The H100 node pool: the pure plan for every A3 shape and capacity mode, and the component."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.render.gpu_machines import H100_MACHINES
from components.render.node_pool import (
    CAPACITY_MODES,
    FLEX_START_MAX_HOURS,
    RESERVATION_KEY,
    Capacity,
    CapacityMode,
    NodePoolPlan,
    plan_node_pool,
)
from raygke.mocks import Inventory, run_with_mocks

NODE_POOL = "gcp:container/nodePool:NodePool"
COMPONENT = "raygke:gpu_node_pool:H100NodePool"
SA = "nodes@p.iam.gserviceaccount.com"


def _allowed_modes(machine_type: str) -> list[CapacityMode]:
    if H100_MACHINES[machine_type].spot_or_flex_only:
        return ["spot", "flex-start", "queued-provisioning"]
    return list(CAPACITY_MODES)


def _capacity(mode: CapacityMode) -> Capacity:
    if mode == "reservation":
        return {"mode": "reservation", "reservation_name": "h100-res"}
    if mode == "flex-start":
        return {"mode": "flex-start", "max_run_duration_hours": 24}
    return {"mode": mode}


def _plan(machine_type: str = "a3-highgpu-8g", **overrides: Any) -> NodePoolPlan:
    kwargs: dict[str, Any] = {
        "zones": ["us-central1-a"],
        "min_nodes": 0,
        "max_nodes": 2,
        "capacity": {"mode": "on-demand"},
        "service_account": SA,
    }
    kwargs.update(overrides)
    return plan_node_pool("h100", machine_type, **kwargs)


@st.composite
def shape_and_mode(draw: st.DrawFn) -> tuple[str, CapacityMode]:
    machine_type = draw(st.sampled_from(sorted(H100_MACHINES)))
    return machine_type, draw(st.sampled_from(_allowed_modes(machine_type)))


# --- pure: invariants over every shape


@pytest.mark.pure
@settings(max_examples=60, deadline=None)
@given(
    choice=shape_and_mode(),
    zones=st.lists(
        st.sampled_from(["us-central1-a", "us-central1-b", "us-central1-c"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    max_nodes=st.integers(1, 64),
    driver=st.sampled_from(["DEFAULT", "LATEST", "INSTALLATION_DISABLED"]),
)
def test_every_shape_gets_its_table_row_and_the_hardening(choice, zones, max_nodes, driver):
    machine_type, mode = choice
    shape = H100_MACHINES[machine_type]
    plan = _plan(
        machine_type,
        zones=zones,
        max_nodes=max_nodes,
        capacity=_capacity(mode),
        gpu_driver_version=driver,
    )
    nc = plan.node_config
    assert nc.get("machine_type") == machine_type
    assert nc.get("guest_accelerators") == [
        {
            "type": shape.accelerator_type,
            "count": shape.accelerator_count,
            "gpu_driver_installation_config": {"gpu_driver_version": driver},
        }
    ]
    assert nc.get("ephemeral_storage_local_ssd_config") == {
        "local_ssd_count": shape.local_ssd_count
    }
    assert nc.get("taints") == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
    ]
    labels: Any = nc.get("labels")
    assert labels["raygke.io/pool"] == "h100"
    assert nc.get("image_type") == "COS_CONTAINERD"
    assert nc.get("shielded_instance_config") == {
        "enable_secure_boot": True,
        "enable_integrity_monitoring": True,
    }
    assert nc.get("workload_metadata_config") == {"mode": "GKE_METADATA"}
    assert nc.get("gvnic") == {"enabled": True}
    assert nc.get("service_account") == SA
    assert plan.node_locations == zones
    assert plan.autoscaling.get("total_min_node_count") == 0
    assert plan.autoscaling.get("total_max_node_count") == max_nodes
    assert "min_node_count" not in plan.autoscaling  # totals, never per-zone limits
    assert plan.upgrade_settings == {"strategy": "SURGE", "max_surge": 0, "max_unavailable": 1}
    assert plan.management.get("auto_upgrade") is True


@pytest.mark.pure
@settings(max_examples=40, deadline=None)
@given(choice=shape_and_mode())
def test_capacity_modes_are_mutually_exclusive(choice):
    machine_type, mode = choice
    plan = _plan(machine_type, capacity=_capacity(mode))
    flags = {
        "spot": plan.node_config.get("spot", False),
        "flex-start": plan.node_config.get("flex_start", False),
        "queued-provisioning": plan.queued_provisioning is not None,
    }
    assert [m for m, on in flags.items() if on] == ([mode] if mode in flags else [])
    affinity: Any = plan.node_config.get("reservation_affinity")
    reserved = affinity.get("consume_reservation_type") != "NO_RESERVATION"
    assert reserved == (mode == "reservation")


@pytest.mark.pure
def test_the_planner_does_not_import_pulumi():
    code = (
        "import sys, components.render.node_pool; "
        "print(sorted(m for m in sys.modules if 'pulumi' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- pure: each capacity mode's fields


@pytest.mark.pure
def test_on_demand_spreads_and_takes_no_reservation():
    plan = _plan(
        capacity={"mode": "on-demand"},
        zones=["us-central1-a", "us-central1-b"],
        min_nodes=3,
        max_nodes=4,
    )
    assert plan.autoscaling.get("location_policy") == "BALANCED"
    assert plan.node_config.get("reservation_affinity") == {
        "consume_reservation_type": "NO_RESERVATION"
    }
    assert "spot" not in plan.node_config and "flex_start" not in plan.node_config
    assert plan.initial_node_count == 2  # per zone: ceil(3 / 2)
    assert plan.management == {"auto_upgrade": True, "auto_repair": True}


@pytest.mark.pure
def test_spot():
    plan = _plan("a3-highgpu-1g", capacity={"mode": "spot"})
    assert plan.node_config.get("spot") is True
    assert plan.autoscaling.get("location_policy") == "ANY"
    assert plan.node_config.get("reservation_affinity") == {
        "consume_reservation_type": "NO_RESERVATION"
    }


@pytest.mark.pure
def test_flex_start():
    plan = _plan("a3-highgpu-2g", capacity={"mode": "flex-start", "max_run_duration_hours": 24})
    nc = plan.node_config
    assert nc.get("flex_start") is True
    assert nc.get("max_run_duration") == "86400s"
    assert nc.get("reservation_affinity") == {"consume_reservation_type": "NO_RESERVATION"}
    assert plan.autoscaling.get("location_policy") == "ANY"
    assert plan.management.get("auto_repair") is False
    assert plan.initial_node_count == 0
    assert "max_run_duration" not in _plan(capacity={"mode": "flex-start"}).node_config


@pytest.mark.pure
def test_queued_provisioning():
    plan = _plan(capacity={"mode": "queued-provisioning"})
    assert plan.queued_provisioning == {"enabled": True}
    assert plan.node_config.get("reservation_affinity") == {
        "consume_reservation_type": "NO_RESERVATION"
    }
    assert plan.autoscaling.get("location_policy") == "ANY"
    assert plan.management.get("auto_repair") is False
    assert plan.initial_node_count == 0


@pytest.mark.pure
@pytest.mark.parametrize(
    ("capacity", "project", "expected"),
    [
        (
            {"mode": "reservation", "reservation_name": "r1"},
            "p",
            {
                "consume_reservation_type": "SPECIFIC_RESERVATION",
                "key": RESERVATION_KEY,
                "values": ["r1"],
            },
        ),
        (
            {"mode": "reservation", "reservation_name": "r1", "reservation_project": "owner"},
            "p",
            {
                "consume_reservation_type": "SPECIFIC_RESERVATION",
                "key": RESERVATION_KEY,
                "values": ["projects/owner/reservations/r1"],
            },
        ),
        (
            {"mode": "reservation", "reservation_name": "r1", "reservation_project": "p"},
            "p",
            {
                "consume_reservation_type": "SPECIFIC_RESERVATION",
                "key": RESERVATION_KEY,
                "values": ["r1"],
            },
        ),
        (
            {"mode": "reservation", "reservation_affinity": "any"},
            "p",
            {"consume_reservation_type": "ANY_RESERVATION"},
        ),
    ],
)
def test_reservation_affinities(capacity, project, expected):
    plan = _plan(capacity=capacity, project=project)
    assert plan.node_config.get("reservation_affinity") == expected
    assert plan.autoscaling.get("location_policy") == "ANY"
    assert "spot" not in plan.node_config


@pytest.mark.pure
def test_none_means_not_given():
    capacity: Any = {
        "mode": "reservation",
        "reservation_affinity": "any",
        "reservation_name": None,
        "reservation_project": None,
        "max_run_duration_hours": None,
    }
    affinity = _plan(capacity=capacity).node_config.get("reservation_affinity")
    assert affinity == {"consume_reservation_type": "ANY_RESERVATION"}


@pytest.mark.pure
def test_compact_placement():
    assert _plan().placement_policy is None
    assert _plan(compact_placement=True).placement_policy == {"type": "COMPACT"}
    plan = _plan(compact_placement=True, placement_policy_name="my-policy")
    assert plan.placement_policy == {"type": "COMPACT", "policy_name": "my-policy"}


@pytest.mark.pure
@pytest.mark.parametrize(("machine_type", "count"), [("a3-highgpu-8g", 4), ("a3-megagpu-8g", 8)])
def test_gpudirect_nics_follow_the_table(machine_type, count):
    nets = [{"network": f"gpu{i}", "subnetwork": f"gpu{i}-sub"} for i in range(count)]
    plan = _plan(machine_type, extra_networks=nets)
    assert plan.network_config == {"additional_node_network_configs": nets}
    assert _plan(machine_type).network_config is None


@pytest.mark.pure
def test_upgrade_settings_are_configurable():
    plan = _plan(upgrade={"max_surge": 1, "max_unavailable": 0})
    assert plan.upgrade_settings == {"strategy": "SURGE", "max_surge": 1, "max_unavailable": 0}


# --- pure: every rule has a failing case


@pytest.mark.pure
@pytest.mark.parametrize(
    ("machine_type", "overrides", "match"),
    [
        ("a3-highgpu-3g", {}, r"machine type must be one of a3-highgpu-1g, .*got 'a3-highgpu-3g'"),
        ("a3-highgpu-1g", {"capacity": {"mode": "on-demand"}}, r"sold only as spot, flex-start"),
        (
            "a3-highgpu-4g",
            {"capacity": {"mode": "reservation", "reservation_name": "r"}},
            "sold only",
        ),
        ("a3-highgpu-8g", {"capacity": {"mode": "preemptible"}}, r"capacity mode must be one of"),
        ("a3-highgpu-8g", {"capacity": {"mode": "reservation"}}, "specific reservation needs"),
        (
            "a3-highgpu-8g",
            {
                "capacity": {
                    "mode": "reservation",
                    "reservation_affinity": "any",
                    "reservation_name": "r",
                }
            },
            "takes no reservation_name",
        ),
        (
            "a3-highgpu-8g",
            {"capacity": {"mode": "spot", "reservation_name": "r"}},
            "only valid with mode 'reservation'",
        ),
        (
            "a3-highgpu-8g",
            {"capacity": {"mode": "spot", "max_run_duration_hours": 2}},
            "only valid with mode 'flex-start'",
        ),
        (
            "a3-highgpu-8g",
            {
                "capacity": {
                    "mode": "flex-start",
                    "max_run_duration_hours": FLEX_START_MAX_HOURS + 1,
                }
            },
            r"max_run_duration_hours must be 1\.\.168",
        ),
        (
            "a3-highgpu-8g",
            {"capacity": {"mode": "queued-provisioning"}, "min_nodes": 1},
            "min_nodes must be 0",
        ),
        ("a3-highgpu-8g", {"min_nodes": 3, "max_nodes": 2}, r"min_nodes <= max_nodes"),
        ("a3-highgpu-8g", {"max_nodes": 0}, r"max_nodes >= 1"),
        ("a3-highgpu-8g", {"zones": []}, "at least one zone"),
        ("a3-highgpu-8g", {"zones": ["us-central1-a", "us-central1-a"]}, "must not repeat"),
        ("a3-highgpu-8g", {"gpu_driver_version": "R535"}, "gpu_driver_version must be one of"),
        (
            "a3-highgpu-8g",
            {"compact_placement": True, "zones": ["us-central1-a", "us-central1-b"]},
            "compact placement needs exactly one zone",
        ),
        ("a3-highgpu-8g", {"placement_policy_name": "p"}, "only valid with compact_placement"),
        (
            "a3-megagpu-8g",
            {"extra_networks": [{"network": "n", "subnetwork": "s"}]},
            "a3-megagpu-8g uses 8 extra GPUDirect networks; got 1",
        ),
        ("a3-highgpu-8g", {"upgrade": {"max_surge": 0, "max_unavailable": 0}}, "upgrades stall"),
        ("a3-highgpu-8g", {"upgrade": {"max_surge": -1, "max_unavailable": 1}}, "must be >= 0"),
    ],
)
def test_bad_plans_fail_with_a_message(machine_type, overrides, match):
    with pytest.raises(ValueError, match=match):
        _plan(machine_type, **overrides)


# --- the component under mocks


def _run(**args: Any) -> tuple[Inventory, dict[str, Any]]:
    def program() -> dict[str, Any]:
        from components.gpu_node_pool import H100NodePool

        base: dict[str, Any] = {
            "cluster": "gke-cluster",
            "location": "us-central1",
            "machine_type": "a3-highgpu-8g",
            "zones": ["us-central1-a"],
            "min_nodes": 0,
            "max_nodes": 4,
            "capacity": {"mode": "on-demand"},
            "service_account": SA,
        }
        pool = H100NodePool("h100", {**base, **args})  # type: ignore[typeddict-item]
        return {
            "name": pool.name,
            "accelerator_type": pool.accelerator_type,
            "accelerator_count": pool.accelerator_count,
            "node_selector": pool.node_selector,
        }

    return run_with_mocks(program)


@pytest.mark.mocks
def test_component_registers_one_pool_under_itself():
    inventory, outputs = _run()
    component = inventory.one(COMPONENT, "h100")
    pool = inventory.one(NODE_POOL)
    assert pool.parent == component.urn
    assert pool.name.startswith("h100")
    assert pool.inputs["cluster"] == "gke-cluster"
    assert pool.inputs["location"] == "us-central1"
    assert pool.inputs["nodeLocations"] == ["us-central1-a"]
    nc = pool.inputs["nodeConfig"]
    assert nc["guestAccelerators"] == [
        {
            "type": "nvidia-h100-80gb",
            "count": 8,
            "gpuDriverInstallationConfig": {"gpuDriverVersion": "DEFAULT"},
        }
    ]
    assert nc["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert nc["shieldedInstanceConfig"]["enableSecureBoot"] is True
    assert nc["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": 16}
    assert nc["serviceAccount"] == SA
    assert pool.inputs["upgradeSettings"] == {
        "strategy": "SURGE",
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    assert "queuedProvisioning" not in pool.inputs and "placementPolicy" not in pool.inputs
    # The mocks fake no name for node pools (GKE autonames them), so `name` is not asserted here.
    assert {k: v for k, v in outputs.items() if k != "name"} == {
        "accelerator_type": "nvidia-h100-80gb",
        "accelerator_count": 8,
        "node_selector": {"raygke.io/pool": "h100"},
    }


@pytest.mark.mocks
def test_component_registers_each_capacity_mode():
    inventory, _ = _run(
        machine_type="a3-highgpu-1g",
        capacity={"mode": "flex-start", "max_run_duration_hours": 2},
        compact_placement=True,
    )
    pool = inventory.one(NODE_POOL).inputs
    assert pool["nodeConfig"]["flexStart"] is True
    assert pool["nodeConfig"]["maxRunDuration"] == "7200s"
    assert pool["nodeConfig"]["reservationAffinity"] == {"consumeReservationType": "NO_RESERVATION"}
    assert pool["autoscaling"]["locationPolicy"] == "ANY"
    assert pool["placementPolicy"] == {"type": "COMPACT"}

    inventory, _ = _run(capacity={"mode": "queued-provisioning"})
    assert inventory.one(NODE_POOL).inputs["queuedProvisioning"] == {"enabled": True}

    inventory, _ = _run(capacity={"mode": "reservation", "reservation_name": "r1"})
    affinity = inventory.one(NODE_POOL).inputs["nodeConfig"]["reservationAffinity"]
    assert affinity == {
        "consumeReservationType": "SPECIFIC_RESERVATION",
        "key": RESERVATION_KEY,
        "values": ["r1"],
    }


@pytest.mark.mocks
def test_component_wires_the_networks_gpudirect_nics():
    def program() -> dict[str, Any]:
        from components.gpu_node_pool import H100NodePool
        from components.network import Network

        net = Network(
            "net",
            {
                "region": "us-central1",
                "subnet_cidr": "10.10.0.0/20",
                "pods_cidr": "10.20.0.0/14",
                "services_cidr": "10.24.0.0/20",
                "extra_networks": 8,
            },
        )
        H100NodePool(
            "mega",
            {
                "cluster": "c",
                "location": "us-central1",
                "machine_type": "a3-megagpu-8g",
                "zones": ["us-central1-a"],
                "min_nodes": 0,
                "max_nodes": 2,
                "capacity": {"mode": "spot"},
                "service_account": SA,
                "extra_networks": net.extra_networks,
            },
        )
        return {}

    inventory, _ = run_with_mocks(program)
    nics = inventory.one(NODE_POOL).inputs["networkConfig"]["additionalNodeNetworkConfigs"]
    assert nics == [
        {"network": f"net-gpu{i}-vpc", "subnetwork": f"net-gpu{i}-subnet"} for i in range(8)
    ]


@pytest.mark.mocks
def test_component_rejects_a_bad_plan_before_registering_a_pool():
    inventory = Inventory()

    def program() -> None:
        from components.gpu_node_pool import H100NodePool

        H100NodePool(
            "h100",
            {
                "cluster": "c",
                "location": "us-central1",
                "machine_type": "a3-highgpu-1g",
                "zones": ["us-central1-a"],
                "min_nodes": 0,
                "max_nodes": 1,
                "capacity": {"mode": "on-demand"},
                "service_account": SA,
            },
        )

    with pytest.raises(Exception, match="sold only as spot"):
        run_with_mocks(program, inventory=inventory)
    assert inventory.of_type(NODE_POOL) == []
