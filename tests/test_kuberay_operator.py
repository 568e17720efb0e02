"""KubeRayOperator under Pulumi mocks: CRDs, then the Helm release, on the explicit provider."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from schemas import crd

from components import kuberay_operator as ko
from raygke import mocks

CRD_TYPE = "kubernetes:yaml/v2:ConfigGroup"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
TOKEN = "raygke:kuberay_operator:KubeRayOperator"


def run(args: ko.KubeRayOperatorArgs | None = None, via: str = "providers"):
    def program() -> dict[str, Any]:
        provider = k8s.Provider("gke", kubeconfig="{}")
        opts = (
            pulumi.ResourceOptions(providers=[provider])
            if via == "providers"
            else pulumi.ResourceOptions(provider=provider)
        )
        op = ko.KubeRayOperator("kuberay", args, opts)
        return {
            "namespace": op.namespace,
            "crds": op.crd_names,
            "version": op.version,
            "release": op.release_name,
        }

    return mocks.run_with_mocks(program)


@pytest.mark.mocks
def test_crds_are_registered_from_the_shipped_yaml_unchanged() -> None:
    inventory, outputs = run()
    group = inventory.one(CRD_TYPE)
    documents = [d for d in yaml.load_all(group.inputs["yaml"], Loader=yaml.CSafeLoader) if d]
    names = sorted(d["metadata"]["name"] for d in documents)
    assert names == ["rayclusters.ray.io", "rayservices.ray.io"]
    by_name = {d["metadata"]["name"]: d for d in documents}
    assert by_name["rayservices.ray.io"]["spec"] == crd("rayservices")["spec"]
    assert by_name["rayclusters.ray.io"]["spec"] == crd("rayclusters")["spec"]
    assert sorted(outputs["crds"]) == names


@pytest.mark.mocks
def test_release_pins_the_chart_skips_crds_and_depends_on_them() -> None:
    inventory, outputs = run()
    release = inventory.one(RELEASE_TYPE)
    assert release.inputs["chart"] == "kuberay-operator"
    assert release.inputs["version"] == "1.7.0"
    assert release.inputs["repositoryOpts"] == {
        "repo": "https://ray-project.github.io/kuberay-helm/"
    }
    # the chart must install the RayJob CRD we ship no copy of; it skips the ones applied first
    assert release.inputs.get("skipCrds", False) is False
    assert release.inputs["namespace"] == "kuberay-system" == outputs["namespace"]
    crd_urns = {r.urn for r in inventory.of_type(CRD_TYPE)}
    assert crd_urns and crd_urns <= set(release.dependencies)
    # Registration order agrees: every CRD is registered before the release.
    order = [r.urn for r in inventory.resources]
    assert max(order.index(u) for u in crd_urns) < order.index(release.urn)
    assert outputs["version"] == "1.7.0"


@pytest.mark.mocks
def test_values_enable_every_feature_gate_explicitly_and_pin_to_the_system_pool() -> None:
    inventory, _ = run()
    values = inventory.one(RELEASE_TYPE).inputs["values"]
    gates = {g["name"]: g["enabled"] for g in values["featureGates"]}
    assert gates == ko.FEATURE_GATES
    assert len(gates) == 11
    assert gates["RayClusterStatusConditions"] is True
    assert gates["RayServiceIncrementalUpgrade"] is True
    assert values["nodeSelector"] == {"raygke.io/pool": "system"}
    # Nothing lets the operator onto GPU nodes.
    assert not any("nvidia.com/gpu" in str(t) for t in values["tolerations"])
    assert values["resources"]["requests"] and values["resources"]["limits"]


@pytest.mark.mocks
def test_args_override_namespace_gates_resources_and_selector() -> None:
    inventory, outputs = run(
        {
            "namespace": "ray-system",
            "feature_gates": {"RayCronJob": True},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "node_selector": {"raygke.io/pool": "ops"},
        }
    )
    values = inventory.one(RELEASE_TYPE).inputs["values"]
    assert {g["name"]: g["enabled"] for g in values["featureGates"]}["RayCronJob"] is True
    assert values["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert values["nodeSelector"] == {"raygke.io/pool": "ops"}
    assert outputs["namespace"] == "ray-system"
    ns = inventory.one("kubernetes:core/v1:Namespace")
    assert ns.inputs["metadata"]["name"] == "ray-system"


@pytest.mark.mocks
def test_unknown_feature_gate_is_rejected_with_the_known_list() -> None:
    with pytest.raises(Exception, match=r"unknown KubeRay 1.7.0 feature gates \['RayTypo'\]"):
        run({"feature_gates": {"RayTypo": True}})


@pytest.mark.mocks
@pytest.mark.parametrize("via", ["providers", "provider"])
def test_explicit_provider_and_parent_reach_every_child(via: str) -> None:
    inventory, _ = run(via=via)
    provider = inventory.one("pulumi:providers:kubernetes", "gke")
    component = inventory.one(TOKEN)
    children = [r for r in inventory.resources if r.parent == component.urn]
    assert {r.type for r in children} == {
        CRD_TYPE,
        RELEASE_TYPE,
        "kubernetes:core/v1:Namespace",
    }
    for child in children:
        assert child.provider.startswith(provider.urn + "::"), (child.name, child.provider)


@pytest.mark.pure
def test_crd_files_are_read_once() -> None:
    assert ko.crd_documents() is ko.crd_documents()
    assert ko.crd_names() == ["rayclusters.ray.io", "rayservices.ray.io"]
