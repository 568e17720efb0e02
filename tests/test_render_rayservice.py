"""The pure RayService renderer: manifest shape, checks, and objects against real schemas."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas import ManifestError, validate_core, validate_rayservice

from components.render import rayservice as r

FLAGS = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DEFAULT_HTTP_HOST": "0.0.0.0",
}
SERVE_CONFIG = {
    "proxy_location": "EveryNode",
    "grpc_options": {"port": 9000, "grpc_servicer_functions": ["app.protos.echo_pb2_grpc.x"]},
    "applications": [
        {"name": "echo", "import_path": "app.echo:build_app", "route_prefix": "/echo"}
    ],
}
H100 = r.WorkerGroup(
    name="h100",
    pool="h100",
    accelerator="nvidia-h100-80gb",
    gpus_per_worker=1,
    resources=r.Resources(cpu="20", memory="200Gi"),
    min_replicas=1,
    max_replicas=2,
)


def make_spec(**changes: Any) -> r.RayServiceSpec:
    base = r.RayServiceSpec(
        name="echo",
        namespace="ray",
        ray_version="2.60.0",
        image="rayproject/ray:2.60.0-py311-gpu",
        workers=(H100,),
        serve_config=SERVE_CONFIG,
        env=FLAGS,
    )
    return dataclasses.replace(base, **changes)


def pods(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


INCREMENTAL = r.IncrementalUpgrade(
    gateway_class_name="gke-l7-rilb", step_size_percent=25, interval_seconds=30
)
GCS_FT = r.GcsFaultTolerance(redis_address="10.0.0.3:6379", password_secret_name="redis")
MODELS = r.ModelBucket(bucket="my-models", mount_path="/gcs/models", service_account="echo-models")


@pytest.mark.schema
@pytest.mark.parametrize(
    "spec",
    [
        make_spec(),
        make_spec(upgrade_type="None"),
        make_spec(
            upgrade_type="NewClusterWithIncrementalUpgrade",
            incremental_upgrade=INCREMENTAL,
            enable_in_tree_autoscaling=True,
        ),
        make_spec(gcs_fault_tolerance=GCS_FT),
        make_spec(
            workers=(
                H100,
                dataclasses.replace(
                    H100, name="h100x8", pool="h100-8g", gpus_per_worker=8, replicas=1
                ),
            ),
            head=r.HeadGroup(pool=None),
        ),
        make_spec(model_bucket=MODELS),
        make_spec(
            workers=(
                dataclasses.replace(H100, spread="required"),
                dataclasses.replace(H100, name="h100-b", spread="none"),
            ),
            termination_grace_s=300,
            drain_deadline_s=240,
        ),
        make_spec(cluster_deletion_delay_s=335),
        make_spec(cluster_deletion_delay_s=0),
    ],
    ids=[
        "default",
        "no-upgrade",
        "incremental",
        "gcs-ft",
        "two-groups",
        "model-bucket",
        "spread-and-shutdown",
        "deletion-delay",
        "deletion-delay-zero",
    ],
)
def test_rendered_rayservice_validates_against_the_crd(spec: r.RayServiceSpec) -> None:
    validate_rayservice(r.render_rayservice(spec))


_names = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
_groups = st.builds(
    r.WorkerGroup,
    name=_names,
    pool=_names,
    accelerator=st.sampled_from(["nvidia-h100-80gb", "nvidia-h100-mega-80gb"]),
    gpus_per_worker=st.sampled_from([1, 2, 4, 8]),
    resources=st.builds(
        r.Resources,
        cpu=st.integers(1, 200).map(str),
        memory=st.integers(1, 1800).map(lambda g: f"{g}Gi"),
    ),
    min_replicas=st.integers(0, 3),
    max_replicas=st.integers(3, 8),
    spread=st.sampled_from(["none", "preferred", "required"]),
)


@pytest.mark.schema
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_names,
    groups=st.lists(_groups, min_size=1, max_size=3, unique_by=lambda g: g.name).map(tuple),
    env=st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True), st.text()),
    upgrade=st.sampled_from(["NewCluster", "None"]),
    ft=st.booleans(),
    autoscale=st.booleans(),
    models=st.booleans(),
    drain=st.integers(1, 600),
    extra_grace=st.integers(0, 600),
)
def test_any_valid_spec_renders_a_schema_valid_rayservice(
    name: str,
    groups: tuple[r.WorkerGroup, ...],
    env: dict[str, str],
    upgrade: r.UpgradeType,
    ft: bool,
    autoscale: bool,
    models: bool,
    drain: int,
    extra_grace: int,
) -> None:
    grace = max(drain, r.HEAD_DEREGISTRATION_S) + r.STOP_MARGIN_S + extra_grace
    spec = make_spec(
        name=name,
        workers=groups,
        env=env,
        upgrade_type=upgrade,
        gcs_fault_tolerance=GCS_FT if ft else None,
        enable_in_tree_autoscaling=autoscale,
        model_bucket=MODELS if models else None,
        termination_grace_s=grace,
        drain_deadline_s=drain,
    )
    manifest = r.render_rayservice(spec)
    validate_rayservice(manifest)
    # Every pod stops within its grace: the worker's drain deadline and `ray stop` fit inside it.
    for pod in pods(manifest):
        assert pod["terminationGracePeriodSeconds"] == grace >= drain + r.STOP_MARGIN_S
    # Invariants the schema cannot see: flags everywhere, GPUs only on workers.
    expected_env = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for pod in pods(manifest):
        assert pod["containers"][0]["env"] == expected_env
    head = pods(manifest)[0]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    for group, pod in zip(groups, pods(manifest)[1:], strict=True):
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == group.gpus_per_worker


@pytest.mark.pure
def test_head_is_cpu_free_for_replicas_and_exposes_the_documented_ports() -> None:
    head = r.render_rayservice(make_spec())["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0", "dashboard-host": "0.0.0.0"}
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports == {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "serve": 8000,
        "serve-grpc": 9000,
        "metrics": 8080,
        "haproxy-metrics": 9101,
    }
    # Port names are IANA_SVC_NAMEs: at most 15 characters.
    assert all(len(name) <= 15 for name in ports)
    assert "tolerations" not in head["template"]["spec"]


@pytest.mark.pure
def test_workers_request_gpus_tolerate_the_gpu_taint_and_pin_to_the_h100_pool() -> None:
    manifest = r.render_rayservice(make_spec())
    worker = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (worker["minReplicas"], worker["maxReplicas"], worker["replicas"]) == (1, 2, 1)
    pod = worker["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {
        "raygke.io/pool": "h100",
        "cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
    }


def _pre_stop(pod: dict[str, Any]) -> str:
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    return command[2]


@pytest.mark.pure
def test_pods_drain_then_stop_ray_inside_their_termination_grace() -> None:
    manifest = r.render_rayservice(make_spec(termination_grace_s=120, drain_deadline_s=90))
    head, worker = pods(manifest)
    assert head["terminationGracePeriodSeconds"] == worker["terminationGracePeriodSeconds"] == 120
    drain = _pre_stop(worker)
    # Ray is asked to drain this node with the spec's deadline (Serve moves replicas off it), the
    # hook waits that deadline out from its own start, then stops Ray within the margin.
    assert 'ray drain-node --node-id "$node" --reason DRAIN_NODE_REASON_PREEMPTION' in drain
    assert "--deadline-remaining-seconds 90 " in drain
    assert drain.startswith("end=$(( $(date +%s) + 90 ));")
    assert drain.endswith(f"ray stop --grace-period {r.RAY_STOP_GRACE_S} >/dev/null 2>&1; true")
    assert _pre_stop(head) == (
        f"sleep {r.HEAD_DEREGISTRATION_S}; ray stop --grace-period {r.RAY_STOP_GRACE_S} "
        ">/dev/null 2>&1; true"
    )


@pytest.mark.pure
@pytest.mark.parametrize("which", ["head", "worker"])
def test_pre_stop_scripts_parse_in_bash_and_python(which: str, tmp_path: Any) -> None:
    import py_compile
    import shutil
    import subprocess

    head, worker = pods(r.render_rayservice(make_spec()))
    script = _pre_stop(head if which == "head" else worker)
    bash = shutil.which("bash")
    assert bash is not None
    (tmp_path / "pre_stop.sh").write_text(script)
    subprocess.run([bash, "-n", str(tmp_path / "pre_stop.sh")], check=True)
    for snippet in re.findall(r"python -c '([^']*)'", script):
        (tmp_path / "snippet.py").write_text(snippet)
        py_compile.compile(str(tmp_path / "snippet.py"), doraise=True)
    assert (which == "worker") == ("get_node_id()" in script)


@pytest.mark.pure
def test_no_probes_are_set_so_kuberay_injects_its_serve_aware_ones() -> None:
    # KubeRay 1.7 fills in probes only where the container has none; a RayService worker's
    # readiness probe then also checks `/-/healthz` on the port named `serve`, which must be 8000.
    head, worker = pods(r.render_rayservice(make_spec()))
    for pod in (head, worker):
        container = pod["containers"][0]
        assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)
    ports = {p["name"]: p["containerPort"] for p in worker["containers"][0]["ports"]}
    assert ports["serve"] == 8000


@pytest.mark.pure
@pytest.mark.parametrize(
    ("spread", "when"), [("preferred", "ScheduleAnyway"), ("required", "DoNotSchedule")]
)
def test_workers_spread_over_nodes_within_one_raycluster(spread: str, when: str) -> None:
    group = dataclasses.replace(H100, spread=spread)  # type: ignore[arg-type]
    head, worker = pods(r.render_rayservice(make_spec(workers=(group,))))
    assert "topologySpreadConstraints" not in head
    assert worker["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": when,
            "labelSelector": {
                "matchLabels": {
                    "raygke.io/rayservice": "echo",
                    "ray.io/node-type": "worker",
                    "ray.io/group": "h100",
                }
            },
            # blue/green: the new RayCluster's workers spread among themselves
            "matchLabelKeys": ["ray.io/cluster"],
        }
    ]
    unspread = dataclasses.replace(H100, spread="none")
    assert (
        "topologySpreadConstraints"
        not in pods(r.render_rayservice(make_spec(workers=(unspread,))))[1]
    )


@pytest.mark.pure
def test_every_pod_has_tmp_emptydir_resources_labels_and_no_privilege_escalation() -> None:
    manifest = r.render_rayservice(make_spec())
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["metadata"]["labels"] == {"raygke.io/rayservice": "echo"}
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert set(c["resources"]["requests"]) >= {"cpu", "memory"}
            assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]


@pytest.mark.pure
@pytest.mark.parametrize("autoscaling", [True, False])
def test_pods_run_as_the_images_non_root_user_with_runtime_default_seccomp(
    autoscaling: bool,
) -> None:
    for pod in pods(r.render_rayservice(make_spec(enable_in_tree_autoscaling=autoscaling))):
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 100,
            "fsGroup": 100,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for c in pod["containers"]:
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert "privileged" not in c["securityContext"]


@pytest.mark.pure
@pytest.mark.parametrize("autoscaling", [True, False])
def test_only_an_autoscaling_head_mounts_a_service_account_token(autoscaling: bool) -> None:
    bucket = r.ModelBucket(bucket="models-1", mount_path="/gcs/models", service_account="reader")
    spec = make_spec(enable_in_tree_autoscaling=autoscaling, model_bucket=bucket)
    head, *workers = pods(r.render_rayservice(spec))
    assert head["automountServiceAccountToken"] is autoscaling
    for worker in workers:
        # The GCS FUSE CSI driver gets its own pod token from the kubelet (tokenRequests).
        assert worker["automountServiceAccountToken"] is False
        assert worker["serviceAccountName"] == "reader"


@pytest.mark.pure
def test_token_authentication_is_on_through_kuberay_auth_options() -> None:
    cluster = r.render_rayservice(make_spec())["spec"]["rayClusterConfig"]
    # No secretName: KubeRay generates one token per RayCluster; no enableK8sTokenAuth (KubeRay
    # refuses it for a RayService).
    assert cluster["authOptions"] == {"mode": "token"}
    off = r.render_rayservice(make_spec(auth_mode="disabled"))["spec"]["rayClusterConfig"]
    assert off["authOptions"] == {"mode": "disabled"}


@pytest.mark.pure
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ray_version": "2.51.0"}, r"auth_mode token needs Ray 2\.52\+.*got ray_version 2\.51\.0"),
        ({"ray_version": "2.9.3"}, r"auth_mode token needs Ray 2\.52\+"),
        ({"ray_version": "latest"}, r"auth_mode token needs a ray_version such as 2\.60\.0"),
        ({"auth_mode": "mtls"}, r"auth_mode must be one of token, disabled; got 'mtls'"),
    ],
)
def test_auth_options_kuberay_would_refuse_are_rejected(
    changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        r.render_rayservice(make_spec(**changes))


@pytest.mark.pure
def test_token_auth_off_renders_on_any_ray_version() -> None:
    cluster = r.render_rayservice(make_spec(ray_version="2.50.0", auth_mode="disabled"))
    assert cluster["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "disabled"}


@pytest.mark.pure
def test_manifest_shares_no_objects_between_pods() -> None:
    # A shared dict would make one edit (or a YAML anchor in a golden file) leak across pods.
    manifest = r.render_rayservice(make_spec())
    head, worker = pods(manifest)
    # PyYAML names anchors &id001 and aliases *id001 (the preStop scripts hold '&&' of their own).
    assert not re.search(r"[&*]id\d{3}", yaml.safe_dump(manifest))
    head["containers"][0]["securityContext"]["privileged"] = True
    head["volumes"][0]["emptyDir"]["sizeLimit"] = "1Gi"
    assert "privileged" not in worker["containers"][0]["securityContext"]
    assert worker["volumes"][0]["emptyDir"] == {}
    assert r.render_rayservice(make_spec()) != manifest


@pytest.mark.pure
def test_versions_serve_config_and_options_come_from_the_spec() -> None:
    manifest = r.render_rayservice(
        make_spec(
            ray_version="2.57.0",
            image="example/ray:custom",
            upgrade_type="NewClusterWithIncrementalUpgrade",
            incremental_upgrade=INCREMENTAL,
            enable_in_tree_autoscaling=True,
            gcs_fault_tolerance=GCS_FT,
        )
    )
    spec = manifest["spec"]
    cluster = spec["rayClusterConfig"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert cluster["rayVersion"] == "2.57.0"
    assert {p["containers"][0]["image"] for p in pods(manifest)} == {"example/ray:custom"}
    assert yaml.safe_load(spec["serveConfigV2"]) == SERVE_CONFIG
    assert spec["upgradeStrategy"] == {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {
            "gatewayClassName": "gke-l7-rilb",
            "stepSizePercent": 25,
            "intervalSeconds": 30,
            "maxSurgePercent": 100,
        },
    }
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["gcsFaultToleranceOptions"] == {
        "redisAddress": "10.0.0.3:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
    }


@pytest.mark.pure
def test_model_bucket_mounts_read_only_on_every_worker_and_not_on_the_head() -> None:
    two_groups = (H100, dataclasses.replace(H100, name="h100x8", pool="h100-8g"))
    manifest = r.render_rayservice(make_spec(workers=two_groups, model_bucket=MODELS))
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        template = group["template"]
        assert template["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
        assert template["metadata"]["labels"] == {"raygke.io/rayservice": "echo"}
        pod = template["spec"]
        assert pod["serviceAccountName"] == "echo-models"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-bucket"]["csi"] == {
            "driver": "gcsfuse.csi.storage.gke.io",
            "readOnly": True,
            "volumeAttributes": {"bucketName": "my-models", "mountOptions": "implicit-dirs"},
        }
        [container] = pod["containers"]
        assert {"name": "model-bucket", "mountPath": "/gcs/models", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {
            "/tmp",
            "/dev/shm",
            "/gcs/models",
        }
    head = cluster["headGroupSpec"]["template"]
    assert "annotations" not in head["metadata"]
    assert "serviceAccountName" not in head["spec"]
    assert [v["name"] for v in head["spec"]["volumes"]] == ["ray-tmp", "dshm"]
    # Without a bucket, workers carry none of it.
    plain = r.render_rayservice(make_spec())["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert "annotations" not in plain["template"]["metadata"]
    assert "serviceAccountName" not in plain["template"]["spec"]
    assert "model-bucket" not in yaml.safe_dump(plain)


@pytest.mark.pure
@pytest.mark.parametrize("name", ["abc", "my-gcp-project-models", "a_b.c-9", "a" * 63])
def test_check_bucket_name_accepts_gcs_names(name: str) -> None:
    assert r.check_bucket_name(name) is None


@pytest.mark.pure
@pytest.mark.parametrize("name", ["ab", "a" * 64, "Models", "-models", "models-", "my models"])
def test_check_bucket_name_rejects_what_gcs_rejects(name: str) -> None:
    assert "GCS bucket naming" in (r.check_bucket_name(name) or "")


@pytest.mark.pure
@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/gcs/models", True),
        ("/models", True),
        ("gcs/models", False),
        ("/", False),
        ("/gcs/models/", False),
        ("/gcs/../models", False),
        ("/dev/shm", False),
    ],
)
def test_check_mount_path(path: str, ok: bool) -> None:
    assert (r.check_mount_path(path) is None) is ok


@pytest.mark.pure
@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("a" * 48, "48 characters; KubeRay allows at most 47"),
        ("Echo", "DNS-1035"),
        ("1echo", "DNS-1035"),
        ("echo-", "DNS-1035"),
        ("echo.v1", "DNS-1035"),
    ],
)
def test_check_rayservice_name_rejects_what_kuberay_rejects(name: str, match: str) -> None:
    error = r.check_rayservice_name(name)
    assert error is not None and match in error
    with pytest.raises(ValueError, match=match):
        r.render_rayservice(make_spec(name=name))


@pytest.mark.pure
@pytest.mark.parametrize("name", ["a" * 47, "echo", "e", "echo-2"])
def test_check_rayservice_name_accepts_valid_names(name: str) -> None:
    assert r.check_rayservice_name(name) is None


@pytest.mark.pure
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"workers": ()}, "at least one worker group"),
        ({"workers": (H100, H100)}, "appears twice"),
        ({"workers": (dataclasses.replace(H100, gpus_per_worker=0),)}, "gpus_per_worker"),
        ({"workers": (dataclasses.replace(H100, min_replicas=3),)}, "min_replicas <= max"),
        ({"workers": (dataclasses.replace(H100, replicas=5),)}, r"replicas must lie in \[1, 2\]"),
        (
            {
                "upgrade_type": "NewClusterWithIncrementalUpgrade",
                "enable_in_tree_autoscaling": True,
            },
            "needs incremental_upgrade options",
        ),
        (
            {
                "upgrade_type": "NewClusterWithIncrementalUpgrade",
                "incremental_upgrade": INCREMENTAL,
            },
            "requires enable_in_tree_autoscaling",
        ),
        (
            {
                "upgrade_type": "NewClusterWithIncrementalUpgrade",
                "enable_in_tree_autoscaling": True,
                "incremental_upgrade": dataclasses.replace(INCREMENTAL, step_size_percent=0),
            },
            "step_size_percent must be 1-100",
        ),
        (
            {
                "upgrade_type": "NewClusterWithIncrementalUpgrade",
                "enable_in_tree_autoscaling": True,
                "incremental_upgrade": dataclasses.replace(INCREMENTAL, max_surge_percent=101),
            },
            "max_surge_percent must be 1-100",
        ),
        (
            {
                "upgrade_type": "NewClusterWithIncrementalUpgrade",
                "enable_in_tree_autoscaling": True,
                "incremental_upgrade": dataclasses.replace(INCREMENTAL, interval_seconds=0),
            },
            "interval_seconds must be at least 1",
        ),
        ({"incremental_upgrade": INCREMENTAL}, "only used with NewClusterWithIncrementalUpgrade"),
        ({"upgrade_type": "BlueGreen"}, "upgrade_type must be one of NewCluster, "),
        (
            {"workers": (dataclasses.replace(H100, spread="zonal"),)},  # type: ignore[arg-type]
            "worker group 'h100': spread must be one of none, preferred, required; got 'zonal'",
        ),
        (
            {"termination_grace_s": 60, "drain_deadline_s": 60},
            r"drain_deadline_s \(60\) must leave 15 s of termination_grace_s \(60\) for `ray stop`"
            r".*allowed: 1..45 \(or raise termination_grace_s to 75\)",
        ),
        (
            {"termination_grace_s": 20, "drain_deadline_s": 1},
            r"termination_grace_s \(20\) must be at least 30: .*the head waits 15 s",
        ),
        ({"drain_deadline_s": 0}, "drain_deadline_s must be at least 1; got 0"),
        (
            {"model_bucket": dataclasses.replace(MODELS, bucket="My_Models")},
            "model_bucket: bucket name 'My_Models' must be 3-63 lowercase",
        ),
        (
            {"model_bucket": dataclasses.replace(MODELS, mount_path="gcs/models")},
            "model_bucket: mount path 'gcs/models' must be an absolute",
        ),
        (
            {"model_bucket": dataclasses.replace(MODELS, mount_path="/tmp")},
            r"model_bucket: mount path '/tmp' is already used by the Ray pods' own volumes",
        ),
        (
            {"model_bucket": dataclasses.replace(MODELS, service_account="Models_SA")},
            "model_bucket: service_account: a ServiceAccount name must be a DNS-1123 subdomain.*got 'Models_SA'",
        ),
        (
            {"cluster_deletion_delay_s": -1},
            r"cluster_deletion_delay_s must be between 0 and 2147483647 seconds \(KubeRay "
            r"refuses a negative delay\); got -1",
        ),
        (
            {"cluster_deletion_delay_s": -60},
            r"cluster_deletion_delay_s must be between 0 and 2147483647 .*got -60",
        ),
        (
            {"cluster_deletion_delay_s": 2**31},
            r"cluster_deletion_delay_s must be between 0 and 2147483647 .*got 2147483648",
        ),
    ],
)
def test_spec_checks_reject_what_kuberay_rejects_after_apply(
    changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        r.render_rayservice(make_spec(**changes))


@pytest.mark.schema
@pytest.mark.parametrize("delay", [0, 60, 335, 3600])
def test_the_old_cluster_deletion_delay_is_rendered_as_given(delay: int) -> None:
    manifest = r.render_rayservice(make_spec(cluster_deletion_delay_s=delay))
    assert manifest["spec"]["rayClusterDeletionDelaySeconds"] == delay
    validate_rayservice(manifest)


@pytest.mark.pure
def test_no_deletion_delay_leaves_kuberays_default() -> None:
    assert "rayClusterDeletionDelaySeconds" not in r.render_rayservice(make_spec())["spec"]
    assert r.KUBERAY_CLUSTER_DELETION_DELAY_S == 60  # rayservice_controller.go L48, v1.7.0


@pytest.mark.schema
@pytest.mark.parametrize("delay", [-1, -335])
def test_the_crd_refuses_a_negative_deletion_delay_as_the_renderer_does(delay: int) -> None:
    manifest = r.render_rayservice(make_spec(cluster_deletion_delay_s=60))
    manifest["spec"]["rayClusterDeletionDelaySeconds"] = delay
    with pytest.raises(ManifestError, match=r"rayClusterDeletionDelaySeconds: .* less than"):
        validate_rayservice(manifest)
    with pytest.raises(ValueError, match="cluster_deletion_delay_s must be between 0"):
        r.render_rayservice(make_spec(cluster_deletion_delay_s=delay))


# --- the validators themselves must be able to fail --------------------------------------------


@pytest.mark.schema
def test_crd_validator_rejects_a_string_where_an_integer_goes() -> None:
    manifest = r.render_rayservice(make_spec())
    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "1"
    with pytest.raises(
        ManifestError, match=r"workerGroupSpecs\.0\.minReplicas: '1' is not of type"
    ):
        validate_rayservice(manifest)


@pytest.mark.schema
def test_crd_validator_rejects_an_unknown_field_under_a_closed_schema() -> None:
    manifest = r.render_rayservice(make_spec())
    manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(ManifestError, match="'rayStartParam' was unexpected"):
        validate_rayservice(manifest)


@pytest.mark.schema
def test_crd_validator_rejects_a_missing_required_field_and_the_wrong_kind() -> None:
    manifest = r.render_rayservice(make_spec())
    del manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(ManifestError, match="'groupName' is a required property"):
        validate_rayservice(manifest)
    with pytest.raises(ManifestError, match="kind RayService"):
        validate_rayservice({**r.render_rayservice(make_spec()), "kind": "RayCluster"})


@pytest.mark.schema
def test_crd_validator_keeps_open_maps_open() -> None:
    # rayStartParams and labels are string maps: arbitrary keys are legal there.
    manifest = r.render_rayservice(make_spec())
    manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["block"] = "true"
    validate_rayservice(manifest)


# --- the core objects ---------------------------------------------------------------------------


def core_objects() -> list[dict[str, Any]]:
    spec = make_spec()
    return [
        r.render_worker_pdb(spec, r.default_pdb_min_available(r.worker_floor(spec))),
        r.render_network_policy(spec, {"app.kubernetes.io/name": "haproxy-ingress"}),
        r.render_network_policy(spec, {"app": "haproxy"}, ingress_namespace="ingress"),
    ]


@pytest.mark.schema
@pytest.mark.parametrize("obj", core_objects(), ids=lambda o: o["kind"])
def test_core_objects_validate_against_kubernetes(obj: dict[str, Any]) -> None:
    validate_core(obj)


@pytest.mark.schema
def test_core_validator_rejects_a_string_min_available_list_and_unknown_fields() -> None:
    pdb = core_objects()[0]
    broken = copy.deepcopy(pdb)
    broken["spec"]["minAvailable"] = ["1"]
    with pytest.raises(ManifestError, match=r"PodDisruptionBudget 'echo-workers'.*minAvailable"):
        validate_core(broken)
    unknown = copy.deepcopy(pdb)
    unknown["spec"]["maxUnavailablePercent"] = 1
    with pytest.raises(ManifestError, match="maxUnavailablePercent"):
        validate_core(unknown)
    with pytest.raises(ManifestError, match="no Kubernetes schema"):
        validate_core({**pdb, "kind": "PodDisruptionBudgett"})


@pytest.mark.pure
def test_pdb_uses_an_integer_min_available_for_worker_pods_only() -> None:
    spec = make_spec()
    pdb = r.render_worker_pdb(spec, 1)["spec"]
    assert pdb["minAvailable"] == 1 and isinstance(pdb["minAvailable"], int)
    assert "maxUnavailable" not in pdb
    assert pdb["selector"]["matchLabels"] == {
        "raygke.io/rayservice": "echo",
        "ray.io/node-type": "worker",
    }

    def floor(n: int) -> r.RayServiceSpec:
        return make_spec(workers=(dataclasses.replace(H100, min_replicas=n, max_replicas=4),))

    # All but one of the floor: a drain always has one worker it may evict.
    defaults = [r.default_pdb_min_available(r.worker_floor(floor(n))) for n in (0, 1, 2, 4)]
    assert defaults == [0, 0, 1, 3]
    for n in (0, 1, 2, 4):
        spec = floor(n)
        default = r.default_pdb_min_available(r.worker_floor(spec))
        assert r.check_pdb_min_available(default, r.worker_floor(spec)) is None


@pytest.mark.pure
@pytest.mark.parametrize(("floor", "min_available"), [(1, 1), (2, 2), (2, 3), (0, 1)])
def test_a_pdb_floor_that_blocks_every_drain_is_named(floor: int, min_available: int) -> None:
    spec = make_spec(workers=(dataclasses.replace(H100, min_replicas=floor, max_replicas=4),))
    problem = r.check_pdb_min_available(min_available, r.worker_floor(spec))
    assert problem is not None
    assert (
        f"pdb_min_available ({min_available}) must be below the workers' min_replicas ({floor})"
        in problem
    )
    assert problem.endswith("allowed: 0" if floor <= 1 else f"allowed: 0..{floor - 1}")


def _rules_admitting(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """Ingress rules that admit TCP `port` (a rule without ports admits every port)."""
    found = []
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports is None or any(
            p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]) for p in ports
        ):
            found.append(rule)
    return found


@pytest.mark.pure
def test_network_policy_admits_serve_ports_only_from_the_ingress_tier_and_ray_pods() -> None:
    labels = {"app.kubernetes.io/name": "haproxy-ingress"}
    policy = r.render_network_policy(make_spec(), labels)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"raygke.io/rayservice": "echo"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ray_pods = {"podSelector": {"matchLabels": {"raygke.io/rayservice": "echo"}}}
    for port in (8000, 9000):
        peers = [peer for rule in _rules_admitting(policy, port) for peer in rule["from"]]
        assert {"podSelector": {"matchLabels": labels}} in peers
        # Only the ingress tier, Ray's own pods and the operator (8000 health) reach serve ports.
        others = [p for p in peers if p not in ({"podSelector": {"matchLabels": labels}}, ray_pods)]
        if port == 8000:
            assert others == [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}
                    },
                    "podSelector": {"matchLabels": r.KUBERAY_OPERATOR_POD_LABELS},
                }
            ]
        else:
            assert others == []


@pytest.mark.pure
def test_network_policy_keeps_replica_and_metrics_ports_open_between_ray_pods() -> None:
    policy = r.render_network_policy(make_spec(), {"app": "haproxy"})
    ray_pods = {"podSelector": {"matchLabels": {"raygke.io/rayservice": "echo"}}}
    for port in (30000, 30500, 31000, 40000, 41000, 9101):
        assert any(ray_pods in rule["from"] for rule in _rules_admitting(policy, port)), port


@pytest.mark.pure
@pytest.mark.parametrize("port", [6379, 10001, 8265])
def test_network_policy_admits_control_ports_only_from_this_rayservice_and_the_operator(
    port: int,
) -> None:
    policy = r.render_network_policy(make_spec(), {"app": "haproxy"}, operator_namespace="kuberay")
    ray_pods = {"podSelector": {"matchLabels": {"raygke.io/rayservice": "echo"}}}
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}},
        "podSelector": {"matchLabels": r.KUBERAY_OPERATOR_POD_LABELS},
    }
    peers = [peer for rule in _rules_admitting(policy, port) for peer in rule["from"]]
    # Never every pod of the namespace (`podSelector: {}`), never the ingress tier, never a
    # `ray.io/cluster` selector (it would drop the other side of a blue/green upgrade).
    assert peers == ([ray_pods, operator] if port == 8265 else [ray_pods])
    assert {"app": "haproxy"} not in [p.get("podSelector", {}).get("matchLabels") for p in peers]


@pytest.mark.pure
def test_network_policy_takes_other_operator_pod_labels() -> None:
    policy = r.render_network_policy(
        make_spec(), {"app": "haproxy"}, operator_pod_labels={"app": "my-operator"}
    )
    peers = [peer for rule in _rules_admitting(policy, 8265) for peer in rule["from"]]
    assert {"app": "my-operator"} in [p["podSelector"]["matchLabels"] for p in peers]


@pytest.mark.pure
def test_network_policy_adds_a_namespace_selector_for_an_ingress_elsewhere() -> None:
    policy = r.render_network_policy(make_spec(), {"app": "haproxy"}, ingress_namespace="edge")
    first = policy["spec"]["ingress"][0]
    assert first["from"] == [
        {
            "podSelector": {"matchLabels": {"app": "haproxy"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}},
        }
    ]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("kwargs", "scrapers"),
    [
        # GKE's managed collection, which the cluster turns on, runs its collectors here.
        ({}, "gke-gmp-system"),
        # A self-deployed prometheus-engine operator runs them in gmp-system.
        ({"monitoring_namespace": "gmp-system"}, "gmp-system"),
    ],
)
def test_network_policy_admits_the_metrics_ports_from_the_collectors_namespace(
    kwargs: dict[str, Any], scrapers: str
) -> None:
    policy = r.render_network_policy(make_spec(), {"app": "haproxy"}, **kwargs)
    collectors = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": scrapers}}}
    for port in (8080, 9101):
        peers = [peer for rule in _rules_admitting(policy, port) for peer in rule["from"]]
        assert collectors in peers, port
    # The collectors reach the metrics ports and nothing else.
    (rule,) = [rule for rule in policy["spec"]["ingress"] if collectors in rule["from"]]
    assert rule == {"from": [collectors], "ports": _tcp_ports(8080, 9101)}


def _tcp_ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


@pytest.mark.pure
def test_pod_monitoring_scrapes_ray_metrics_and_haproxy_on_named_ports() -> None:
    spec = make_spec()
    monitor = r.render_pod_monitoring(spec)
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.googleapis.com/v1",
        "PodMonitoring",
    )
    assert monitor["spec"]["selector"] == {"matchLabels": {"raygke.io/rayservice": "echo"}}
    named = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert named == {"metrics", "haproxy-metrics"}
    # Each series carries its pod's KubeRay node type: the head's alert selects on it.
    assert monitor["spec"]["targetLabels"] == {
        "fromPod": [{"from": "ray.io/node-type", "to": r.NODE_TYPE_TARGET_LABEL}]
    }
    # The named ports exist on every Ray container with the right numbers.
    for pod in pods(r.render_rayservice(spec)):
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        assert ports["metrics"] == 8080 and ports["haproxy-metrics"] == 9101


@pytest.mark.pure
def test_the_serve_service_is_headless_and_keeps_its_ports_through_kuberay() -> None:
    spec = make_spec()
    manifest = r.render_rayservice(spec)
    svc = manifest["spec"]["serveService"]
    assert svc == r.render_serve_service(spec.name)
    assert svc["metadata"] == {"name": r.serve_service_name(spec.name)}
    assert r.serve_service_name("echo") == "echo-serve-svc"
    # Headless: one A record per serving pod, for the tier's server-template. KubeRay keeps
    # clusterIP (common/service.go BuildServeService deep-copies the spec).
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["type"] == "ClusterIP"
    # KubeRay writes the selector (`ray.io/cluster` of the active cluster + `ray.io/serve`).
    assert "selector" not in svc["spec"]
    # KubeRay keeps a user port only where its name is a head container port named serve/serve-*;
    # ours are exactly those, with the numbers the tier sends to.
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head_serving = {
        p["name"]: p["containerPort"]
        for p in head["containers"][0]["ports"]
        if p["name"] == "serve" or p["name"].startswith("serve-")
    }
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {n: (c, c) for n, c in head_serving.items()}
    assert ports == {
        "serve": (r.RAY_SERVE_HTTP_PORT, r.RAY_SERVE_HTTP_PORT),
        "serve-grpc": (r.RAY_SERVE_GRPC_PORT, r.RAY_SERVE_GRPC_PORT),
    }
