"""RayServeApp under Pulumi mocks: what it registers, on which provider, and what it exports."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pytest
from schemas import validate_core, validate_rayservice

from components import ray_serve_app as rs
from components.render import rayservice as r
from raygke import mocks
from raygke.mocks import ints

TOKEN = "raygke:ray_service:RayServeApp"
RAYSERVICE_TYPE = "kubernetes:ray.io/v1:RayService"
PDB_TYPE = "kubernetes:policy/v1:PodDisruptionBudget"
NETPOL_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
MONITOR_TYPE = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
KSA_TYPE = "kubernetes:core/v1:ServiceAccount"
MEMBER_TYPE = "gcp:storage/bucketIAMMember:BucketIAMMember"
INGRESS_LABELS = {"app.kubernetes.io/name": "haproxy-ingress"}

SPEC = r.RayServiceSpec(
    name="echo",
    namespace="ray",
    ray_version="2.60.0",
    image="rayproject/ray:2.60.0-py311-gpu",
    workers=(
        r.WorkerGroup(
            name="h100",
            pool="h100",
            accelerator="nvidia-h100-80gb",
            gpus_per_worker=1,
            resources=r.Resources(cpu="20", memory="200Gi"),
            min_replicas=2,
            max_replicas=3,
        ),
    ),
    serve_config={"applications": [{"name": "echo", "import_path": "app.echo:build_app"}]},
    env={"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
)
MODELS = r.ModelBucket(bucket="my-models", mount_path="/gcs/models", service_account="echo-models")
PRINCIPAL = (
    "principal://iam.googleapis.com/projects/210987654321/locations/global/"
    "workloadIdentityPools/my-proj.svc.id.goog/subject/ns/ray/sa/echo-models"
)


def run(
    via: str = "providers",
    inventory: mocks.Inventory | None = None,
    after_operator: bool = False,
    models: bool = False,
    **extra: Any,
):
    """`models`: a spec with MODELS, and the GCP provider and project the grant needs."""

    def program() -> dict[str, Any]:
        if models:
            extra.setdefault("spec", dataclasses.replace(SPEC, model_bucket=MODELS))
            extra.setdefault("gcp_provider", gcp.Provider("gcp", project="my-proj"))
            extra.setdefault("project_id", "my-proj")
            extra.setdefault("project_number", pulumi.Output.from_input("210987654321"))
        provider = k8s.Provider("gke", kubeconfig="{}")
        opts = (
            pulumi.ResourceOptions(providers=[provider])
            if via == "providers"
            else pulumi.ResourceOptions(provider=provider)
        )
        if after_operator:
            operator = k8s.core.v1.Namespace("operator-stand-in", opts=opts)
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[operator]))
        args: dict[str, Any] = {
            "spec": extra.pop("spec", SPEC),
            "ingress_pod_labels": pulumi.Output.from_input(INGRESS_LABELS),
            **extra,
        }
        app = rs.RayServeApp("echo", rs.RayServeAppArgs(**args), opts)
        return {
            "name": app.name,
            "namespace": app.namespace,
            "serve_service_name": app.serve_service_name,
        }

    return mocks.run_with_mocks(program, inventory=inventory)


def manifest_of(registration: mocks.Registration) -> dict[str, Any]:
    keys = ("apiVersion", "kind", "metadata", "spec")
    return {k: registration.inputs[k] for k in keys}


@pytest.mark.mocks
def test_registers_the_rendered_rayservice_as_a_custom_resource() -> None:
    inventory, _ = run()
    registered = inventory.one(RAYSERVICE_TYPE)
    assert registered.inputs["apiVersion"] == "ray.io/v1"
    assert registered.inputs["kind"] == "RayService"
    assert manifest_of(registered) == r.render_rayservice(SPEC)
    validate_rayservice(manifest_of(registered))


@pytest.mark.mocks
def test_registers_pdb_and_network_policy_that_kubernetes_accepts() -> None:
    inventory, _ = run()
    pdb = inventory.one(PDB_TYPE)
    netpol = inventory.one(NETPOL_TYPE)
    for reg in (pdb, netpol):
        obj = manifest_of(reg)
        # Pulumi's wire format carries numbers as floats; Kubernetes gets integers back.
        validate_core(ints(obj))
    assert pdb.inputs["spec"]["minAvailable"] == 1  # min_replicas 2: drains take one at a time
    assert "maxUnavailable" not in pdb.inputs["spec"]
    serve_rule = netpol.inputs["spec"]["ingress"][0]
    assert serve_rule["from"] == [{"podSelector": {"matchLabels": INGRESS_LABELS}}]


@pytest.mark.mocks
def test_pod_monitoring_is_registered_and_can_be_left_out() -> None:
    inventory, _ = run()
    monitor = inventory.one(MONITOR_TYPE)
    assert monitor.inputs["apiVersion"] == "monitoring.googleapis.com/v1"
    assert {e["port"] for e in monitor.inputs["spec"]["endpoints"]} == {
        "metrics",
        "haproxy-metrics",
    }
    without, _ = run(pod_monitoring=False)
    assert without.of_type(MONITOR_TYPE) == []


@pytest.mark.mocks
def test_args_reach_the_pdb_and_network_policy() -> None:
    inventory, _ = run(pdb_min_available=0, ingress_namespace="edge", operator_namespace="kr")
    assert inventory.one(PDB_TYPE).inputs["spec"]["minAvailable"] == 0
    rules = inventory.one(NETPOL_TYPE).inputs["spec"]["ingress"]
    assert rules[0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "edge"}
    }
    namespaces = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in rules
        for peer in rule["from"]
        if "namespaceSelector" in peer
    ]
    assert "kr" in namespaces
    # The operator is admitted by its pods' labels in its namespace, not the whole namespace.
    (operator,) = [p for rule in rules for p in rule["from"] if "kr" in str(p)]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "kuberay-operator"


@pytest.mark.mocks
def test_outputs_name_the_rayservice_and_its_serve_service() -> None:
    _, outputs = run()
    assert outputs == {
        "name": "echo",
        "namespace": "ray",
        "serve_service_name": "echo-serve-svc",
    }


@pytest.mark.mocks
@pytest.mark.parametrize("via", ["providers", "provider"])
def test_explicit_provider_and_parent_reach_every_child(via: str) -> None:
    inventory, _ = run(via=via)
    provider = inventory.one("pulumi:providers:kubernetes", "gke")
    component = inventory.one(TOKEN)
    children = [reg for reg in inventory.resources if reg.parent == component.urn]
    assert {c.type for c in children} == {RAYSERVICE_TYPE, PDB_TYPE, NETPOL_TYPE, MONITOR_TYPE}
    for child in children:
        assert child.provider.startswith(provider.urn + "::"), (child.name, child.provider)


@pytest.mark.mocks
def test_an_invalid_spec_fails_before_anything_registers() -> None:
    bad = dataclasses.replace(SPEC, name="x" * 48)
    seen = mocks.Inventory()
    with pytest.raises(Exception, match="KubeRay allows at most 47"):
        run(spec=bad, inventory=seen)
    assert [reg for reg in seen.resources if reg.type.startswith("kubernetes:")] == []


@pytest.mark.mocks
def test_a_pdb_that_blocks_every_drain_fails_before_anything_registers() -> None:
    seen = mocks.Inventory()
    with pytest.raises(
        ValueError,
        match=r"RayServeApp 'echo': pdb_min_available \(2\) must be below the workers' "
        r"min_replicas \(2\) or 0: .* every node drain and upgrade blocks; allowed: 0..1",
    ):
        run(pdb_min_available=2, inventory=seen)
    assert [reg for reg in seen.resources if reg.type.startswith("kubernetes:")] == []


@pytest.mark.mocks
def test_children_wait_for_what_the_component_depends_on() -> None:
    inventory, _ = run(after_operator=True)
    operator = inventory.one("kubernetes:core/v1:Namespace", "operator-stand-in")
    for type_ in (RAYSERVICE_TYPE, PDB_TYPE, NETPOL_TYPE, MONITOR_TYPE):
        assert operator.urn in inventory.one(type_).dependencies, type_


@pytest.mark.mocks
def test_model_bucket_adds_the_workers_service_account_and_its_read_grant() -> None:
    inventory, _ = run(models=True)
    ksa = inventory.one(KSA_TYPE)
    assert ksa.name == "echo-model-reader"
    assert ksa.inputs["metadata"] == {"name": "echo-models", "namespace": "ray"}
    validate_core(_ksa(ksa))
    member = inventory.one(MEMBER_TYPE)
    assert member.inputs == {
        "bucket": "my-models",
        "role": "roles/storage.objectViewer",
        "member": PRINCIPAL,
    }
    worker = inventory.one(RAYSERVICE_TYPE).inputs["spec"]["rayClusterConfig"]["workerGroupSpecs"][
        0
    ]
    assert worker["template"]["spec"]["serviceAccountName"] == "echo-models"
    assert manifest_of(inventory.one(RAYSERVICE_TYPE)) == r.render_rayservice(
        dataclasses.replace(SPEC, model_bucket=MODELS)
    )


def test_workload_identity_principal_names_the_pool_namespace_and_service_account() -> None:
    assert rs.workload_identity_principal("210987654321", "my-proj", "ray", "echo-models") == (
        PRINCIPAL
    )


@pytest.mark.mocks
@pytest.mark.parametrize("via", ["providers", "provider"])
def test_model_bucket_children_use_their_own_providers_and_the_component_as_parent(
    via: str,
) -> None:
    inventory, _ = run(via=via, models=True)
    gke = inventory.one("pulumi:providers:kubernetes", "gke")
    gcp_provider = inventory.one("pulumi:providers:gcp", "gcp")
    component = inventory.one(TOKEN)
    children = [reg for reg in inventory.resources if reg.parent == component.urn]
    assert {c.type for c in children} == {
        RAYSERVICE_TYPE,
        PDB_TYPE,
        NETPOL_TYPE,
        MONITOR_TYPE,
        KSA_TYPE,
        MEMBER_TYPE,
    }
    for child in children:
        expected = gcp_provider if child.type.startswith("gcp:") else gke
        assert child.provider.startswith(expected.urn + "::"), (child.name, child.provider)


@pytest.mark.mocks
def test_rayservice_waits_for_the_service_account_and_the_grant() -> None:
    inventory, _ = run(models=True, after_operator=True)
    waits_for = inventory.one(RAYSERVICE_TYPE).dependencies
    for type_ in (KSA_TYPE, MEMBER_TYPE, "kubernetes:core/v1:Namespace"):
        assert inventory.one(type_).urn in waits_for, type_
    # The service account waits for what the component does (the namespace); the grant need not.
    operator = inventory.one("kubernetes:core/v1:Namespace", "operator-stand-in").urn
    assert operator in inventory.one(KSA_TYPE).dependencies


@pytest.mark.mocks
def test_model_bucket_without_gcp_args_fails_before_anything_registers() -> None:
    seen = mocks.Inventory()
    with pytest.raises(Exception, match=r"spec\.model_bucket needs args gcp_provider, project_id"):
        run(spec=dataclasses.replace(SPEC, model_bucket=MODELS), inventory=seen)
    assert [reg for reg in seen.resources if reg.type.startswith(("kubernetes:", "gcp:"))] == []


def _ksa(reg: mocks.Registration) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": reg.inputs["metadata"]}


@pytest.mark.parametrize("with_redis", [False, True])
def test_a_redis_made_at_deploy_and_its_spec_go_together(with_redis: bool) -> None:
    """A spec waiting for a Redis address without args.redis, or args.redis for a spec that names
    its own Redis: refused before anything registers."""
    ft = r.GcsFaultTolerance(
        redis_address=r.REDIS_ADDRESS_AT_DEPLOY if not with_redis else "10.0.0.3:6379",
        password_secret_name="echo-redis",
    )
    extra: dict[str, Any] = {"spec": dataclasses.replace(SPEC, gcs_fault_tolerance=ft)}
    if with_redis:
        extra["redis"] = {"address": "10.0.0.3:6379", "password": "p"}
    seen = mocks.Inventory()
    with pytest.raises(
        ValueError, match=r"args\.redis \(a Redis created with the stack\) goes with"
    ):
        run(inventory=seen, **extra)
    assert seen.resources == [] or all(
        not reg.type.startswith("kubernetes:") for reg in seen.resources
    )


def test_a_redis_made_at_deploy_fills_the_address_and_the_secret() -> None:
    ft = r.GcsFaultTolerance(
        redis_address=r.REDIS_ADDRESS_AT_DEPLOY, password_secret_name="echo-redis"
    )
    inventory, _ = run(
        spec=dataclasses.replace(SPEC, gcs_fault_tolerance=ft),
        redis={"address": pulumi.Output.from_input("10.9.8.7:6379"), "password": "s3cret"},
    )
    secret = inventory.one("kubernetes:core/v1:Secret")
    assert secret.inputs["metadata"]["name"] == "echo-redis"
    rayservice = inventory.one("kubernetes:ray.io/v1:RayService")
    options = rayservice.inputs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "10.9.8.7:6379"
