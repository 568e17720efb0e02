"""Every example program (examples/*/__main__.py) runs under Pulumi's mocks and registers what it promises,
so the public component API cannot drift from the programs the README points to (as pulumi-eks's tests
deploy its examples)."""

from __future__ import annotations

import functools
import runpy
from pathlib import Path

import pytest
import yaml

from raygke.mocks import Inventory, run_with_mocks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*/__main__.py"))
# What each example says it builds: (type, name) of its components and providers.
PROMISES: dict[str, set[tuple[str, str]]] = {
    "cluster-and-operator": {
        ("raygke:network:Network", "ml"),
        ("raygke:cluster:GkeCluster", "ml"),
        ("pulumi:providers:kubernetes", "gke"),
        ("raygke:kuberay_operator:KubeRayOperator", "kuberay"),
    },
}

pytestmark = pytest.mark.mocks


@functools.cache
def planned(name: str) -> Inventory:
    def program() -> None:
        runpy.run_path(str(ROOT / "examples" / name / "__main__.py"), run_name="__main__")

    inventory, _ = run_with_mocks(program, stack="example")
    return inventory


def test_every_example_is_a_python_project_the_readme_links_and_a_test_holds_to_its_promise():
    assert {main.parent.name for main in EXAMPLES} == set(PROMISES)
    readme = (ROOT / "README.md").read_text()
    for main in EXAMPLES:
        project = yaml.safe_load((main.parent / "Pulumi.yaml").read_text())
        runtime = project["runtime"]
        assert runtime["name"] == "python"
        # `pulumi up` from the example's folder uses the environment `make setup` builds
        assert (main.parent / runtime["options"]["virtualenv"]).resolve() == ROOT / ".venv"
        assert f"(examples/{main.parent.name}/__main__.py)" in readme


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_example_registers_what_it_promises(name: str):
    registered = {(r.type, r.name) for r in planned(name).resources}
    assert PROMISES[name] <= registered


def test_cluster_and_operator_wires_the_cluster_to_the_network_and_kubernetes_to_the_cluster():
    inventory = planned("cluster-and-operator")
    cluster = inventory.one("gcp:container/cluster:Cluster")
    vpc = inventory.one("gcp:compute/network:Network")
    subnet = inventory.one("gcp:compute/subnetwork:Subnetwork")
    assert cluster.inputs["network"].endswith(f"/networks/{vpc.name}")
    assert cluster.inputs["subnetwork"].endswith(f"/subnetworks/{subnet.name}")
    gke = inventory.one("pulumi:providers:kubernetes", "gke").urn
    kubernetes = [r for r in inventory.resources if r.type.startswith("kubernetes:")]
    assert {"kubernetes:helm.sh/v3:Release", "kubernetes:yaml/v2:ConfigGroup"} <= {
        r.type for r in kubernetes
    }
    assert all(r.provider.startswith(f"{gke}::") for r in kubernetes if r.custom)
