"""raygke/manifests.py: every Kubernetes object of a stack (and the Ray pods) as YAML for scanners."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from schemas import validate_core, validate_rayservice

from raygke import manifests
from raygke.mocks import Registration
from raygke.plan import plan_stack

STACKS = ["dev", "staging", "prod"]


@pytest.fixture(scope="module", params=STACKS)
def stack_objects(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, manifests.objects(plan_stack(request.param).inventory.resources)


@pytest.mark.mocks
@pytest.mark.schema
def test_every_object_is_a_valid_manifest(stack_objects: tuple[str, list[dict]]) -> None:
    _, objs = stack_objects
    kinds = sorted(o["kind"] for o in objs)
    for kind in ("Deployment", "NetworkPolicy", "RayService", "Service", "Pod", "ConfigMap"):
        assert kind in kinds
    assert kinds.count("NetworkPolicy") == 2  # the Ray pods' and the tier's own
    for obj in objs:
        if obj["kind"] == "RayService":
            validate_rayservice(obj)
        elif obj["kind"] not in ("PodMonitoring", "Rules"):  # GKE CRDs without a schema here
            validate_core(obj)


@pytest.mark.mocks
def test_ray_pod_templates_are_wrapped_as_pods(stack_objects: tuple[str, list[dict]]) -> None:
    _, objs = stack_objects
    (svc,) = [o for o in objs if o["kind"] == "RayService"]
    pods = [o for o in objs if o["kind"] == "Pod"]
    cluster = svc["spec"]["rayClusterConfig"]
    assert len(pods) == 1 + len(cluster["workerGroupSpecs"])
    head = pods[0]
    assert head["metadata"]["name"] == f"{svc['metadata']['name']}-head"
    assert head["spec"] == cluster["headGroupSpec"]["template"]["spec"]
    assert head["metadata"]["labels"] == cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.pure
def test_non_objects_are_skipped_and_numbers_are_integers() -> None:
    def reg(type_: str, inputs: dict) -> Registration:
        return Registration("urn", type_, "n", "", inputs, True, "", ())

    assert manifests.manifest(reg("pulumi:providers:kubernetes", {})) is None
    assert manifests.manifest(reg("kubernetes:helm.sh/v3:Release", {"chart": "x"})) is None
    assert manifests.manifest(reg("kubernetes:yaml/v2:ConfigGroup", {"yaml": "x"})) is None
    assert manifests.manifest(reg("gcp:container/cluster:Cluster", {})) is None
    svc = manifests.manifest(
        reg("kubernetes:core/v1:Service", {"spec": {"ports": [{"port": 80.0}]}})
    )
    assert svc == {"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}}
    pdb = manifests.manifest(reg("kubernetes:policy/v1:PodDisruptionBudget", {"spec": {}}))
    assert pdb is not None and pdb["apiVersion"] == "policy/v1"


@pytest.mark.mocks
def test_dump_writes_one_parseable_file_per_object(tmp_path: Path) -> None:
    paths = manifests.dump_stack("dev", tmp_path)
    assert len(paths) == len({p.name for p in paths}) == len(list(tmp_path.iterdir()))
    docs = [yaml.safe_load(p.read_text()) for p in paths]
    assert {"RayService", "Pod", "NetworkPolicy"} <= {d["kind"] for d in docs}
    with pytest.raises(ValueError, match=r"two objects map to pod-ns-a\.yaml"):
        same = {"kind": "Pod", "metadata": {"name": "a", "namespace": "ns"}}
        manifests.write([same, same], tmp_path / "dup")


@pytest.mark.mocks
def test_cli_writes_the_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifests.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    assert "objects of stack dev written to" in capsys.readouterr().out
