"""The whole program under Pulumi's mocks, once per stack: inventory, key inputs, providers, schemas, outputs,
and the `raygke plan` CLI that prints it."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import yaml
from schemas import validate_core, validate_rayservice
from stackfiles import NS, edit, mutated

from components.render.haproxy import Timeouts
from infra.config import HEALTH_CHECK_PERIOD_S, HEALTH_CHECK_TIMEOUT_S
from infra.outputs import DEFAULT_SLO, SMOKE_SCHEMA_VERSION
from infra.program import run_program
from infra.serve_config import build_serve_config
from infra.stack_file import load_stack_config
from raygke.mocks import Secret, run_with_mocks
from raygke.plan import Plan, plan_stack, render_text

STACKS = ("dev", "staging", "prod")
RAYSERVICE = "kubernetes:ray.io/v1:RayService"
CORE_TYPES = {
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
}
EXPECTED_TYPES = {
    "raygke:network:Network",
    "raygke:cluster:GkeCluster",
    "raygke:gpu_node_pool:H100NodePool",
    "raygke:kuberay_operator:KubeRayOperator",
    "raygke:haproxy_ingress:HaproxyIngress",
    "raygke:ray_service:RayServeApp",
    "gcp:compute/network:Network",
    "gcp:compute/subnetwork:Subnetwork",
    "gcp:compute/router:Router",
    "gcp:compute/routerNat:RouterNat",
    "gcp:container/cluster:Cluster",
    "gcp:container/nodePool:NodePool",
    "gcp:serviceaccount/account:Account",
    "kubernetes:helm.sh/v3:Release",
    "kubernetes:yaml/v2:ConfigGroup",
    RAYSERVICE,
    *CORE_TYPES,
}

pytestmark = pytest.mark.mocks


@functools.cache
def planned(stack: str) -> Plan:
    return plan_stack(stack)


def gpu_pool(plan: Plan):
    return next(
        r
        for r in plan.inventory.of_type("gcp:container/nodePool:NodePool")
        if r.inputs["nodeConfig"].get("guestAccelerators")
    )


@pytest.mark.parametrize("stack", STACKS)
def test_inventory_holds_every_layer(stack: str):
    assert planned(stack).inventory.types() >= EXPECTED_TYPES


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_goes_through_an_explicit_provider(stack: str):
    inventory = planned(stack).inventory
    gke = inventory.one("pulumi:providers:kubernetes", "gke").urn
    gcp = inventory.one("pulumi:providers:gcp", "gcp")
    apis = inventory.one("pulumi:providers:gcp", "gcp-apis").urn
    for r in inventory.resources:
        if not r.custom or r.type.startswith("pulumi:providers:"):
            continue
        if r.type == "gcp:projects/service:Service":
            expected = apis  # the APIs come first, on a provider of their own
        else:
            expected = gke if r.type.startswith("kubernetes:") else gcp.urn
        assert r.provider.startswith(expected + "::"), (r.type, r.name, r.provider)
    # Every other GCP resource waits for the APIs: its provider does.
    services = {r.urn for r in inventory.of_type("gcp:projects/service:Service")}
    assert services and services <= set(gcp.dependencies)


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_pool_matches_the_stack(stack: str):
    config = load_stack_config(stack)
    pool = gpu_pool(planned(stack))
    node = pool.inputs["nodeConfig"]
    assert node["machineType"] == config.gpu_pool.machine_type
    [accelerator] = node["guestAccelerators"]
    assert accelerator["type"] == config.gpu_pool.accelerator_type
    assert accelerator["count"] == config.gpu_pool.accelerator_count
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"} in node["taints"]
    assert node["shieldedInstanceConfig"]["enableSecureBoot"] is True
    assert pool.inputs["nodeLocations"] == config.gpu_pool.zones


def test_capacity_modes_per_environment():
    dev, prod = gpu_pool(planned("dev")), gpu_pool(planned("prod"))
    assert dev.inputs["nodeConfig"]["spot"] is True
    affinity = prod.inputs["nodeConfig"]["reservationAffinity"]
    assert affinity["consumeReservationType"] == "SPECIFIC_RESERVATION"
    assert affinity["values"] == ["raygke-h100-mega"]
    assert prod.inputs["placementPolicy"]["type"] == "COMPACT"
    assert prod.inputs["autoscaling"]["totalMinNodeCount"] >= 1


def test_prod_cluster_is_hardened():
    cluster = planned("prod").inventory.one("gcp:container/cluster:Cluster")
    inputs = cluster.inputs
    assert inputs["deletionProtection"] is True
    assert inputs["privateClusterConfig"]["enablePrivateNodes"] is True
    assert inputs["databaseEncryption"]["state"] == "ENCRYPTED"
    cidrs = [b["cidrBlock"] for b in inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]]
    assert "0.0.0.0/0" not in cidrs


@pytest.mark.schema
def test_prod_mounts_the_model_bucket_and_grants_its_workers_read():
    config = load_stack_config("prod")
    bucket = config.ray_service.model_bucket
    assert bucket is not None
    inventory = planned("prod").inventory
    ksa = inventory.one("kubernetes:core/v1:ServiceAccount")
    name, namespace = "serving-model-reader", config.ray_service.namespace
    assert ksa.inputs["metadata"] == {"name": name, "namespace": namespace}
    validate_core({"apiVersion": "v1", "kind": "ServiceAccount", **ksa.inputs})
    member = inventory.one("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert member.inputs == {
        "bucket": bucket.bucket,
        "role": "roles/storage.objectViewer",
        "member": "principal://iam.googleapis.com/projects/123456789012/locations/global/"
        f"workloadIdentityPools/{config.project}.svc.id.goog/subject/ns/{namespace}/sa/{name}",
    }
    cluster = inventory.one(RAYSERVICE).inputs["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        assert group["template"]["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
        assert pod["serviceAccountName"] == name
        [volume] = [v for v in pod["volumes"] if "csi" in v]
        assert volume["csi"]["volumeAttributes"]["bucketName"] == bucket.bucket
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts[bucket.mount_path]["readOnly"] is True
    llm = next(a for a in config.apps if a.kind == "llm")
    assert llm.args["model_source"].startswith(bucket.mount_path + "/")
    for stack in ("dev", "staging"):
        types = planned(stack).inventory.types()
        assert "gcp:storage/bucketIAMMember:BucketIAMMember" not in types
        assert "kubernetes:core/v1:ServiceAccount" not in types


def test_prod_creates_no_gpudirect_networks_nothing_would_use():
    # GPUDirect-TCPXO is opt-in (network.gpudirect + gpudirectNetworksOnly): the prod llm app runs
    # tensor parallel within one node, and the Kubernetes side of TCPXO is not built.
    networks = planned("prod").inventory.of_type("gcp:compute/network:Network")
    assert len(networks) == 1


@pytest.mark.schema
@pytest.mark.parametrize("stack", STACKS)
def test_rayservice_validates_and_carries_the_stack_serve_config(stack: str):
    config = load_stack_config(stack)
    registered = planned(stack).inventory.one(RAYSERVICE)
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayService", **registered.inputs}
    validate_rayservice(manifest)
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == build_serve_config(config)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == config.ray.version
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in pods:
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == config.ray.image
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert {k: env[k] for k in config.ray.serve_flags} == config.ray.serve_flags
        # A reload of Ray's HAProxy must not cut streams our tier lets run (docs/reliability.md).
        assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) >= Timeouts().tunnel_s
        # Serve's logs reach the container's stderr, which Cloud Logging reads, though the flags
        # turn Ray's default off (tests/test_local_run.py shows where they go either way).
        assert env["RAY_SERVE_LOG_TO_STDERR"] == "1"


@pytest.mark.parametrize("stack", STACKS)
def test_pods_drain_spread_and_budget_as_the_stack_says(stack: str):
    config = load_stack_config(stack)
    svc = config.ray_service
    inventory = planned(stack).inventory
    cluster = inventory.one(RAYSERVICE).inputs["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (worker_group,) = cluster["workerGroupSpecs"]
    worker = worker_group["template"]["spec"]
    grace = svc.shutdown.termination_grace_period_seconds
    assert head["terminationGracePeriodSeconds"] == worker["terminationGracePeriodSeconds"] == grace
    pre_stop = worker["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2]
    assert f"--deadline-remaining-seconds {svc.shutdown.drain_deadline_seconds} " in pre_stop
    spread = worker.get("topologySpreadConstraints", [])
    when = {"preferred": ["ScheduleAnyway"], "required": ["DoNotSchedule"], "none": []}
    assert [c["whenUnsatisfiable"] for c in spread] == when[svc.workers.spread]
    pdb = next(
        r.inputs["spec"]
        for r in inventory.of_type("kubernetes:policy/v1:PodDisruptionBudget")
        if r.inputs["metadata"]["name"] == f"{svc.name}-workers"
    )
    # A drain may always evict a worker: the floor stays below the group's minReplicas.
    assert pdb["minAvailable"] == svc.workers.min_available
    assert pdb["minAvailable"] == 0 or pdb["minAvailable"] < svc.workers.min_replicas
    # Every Serve option the stack sets reaches serveConfigV2, and only those; every deployment
    # but Ray Serve LLM's gets a health check, the stack's or the project's default.
    serve = yaml.safe_load(inventory.one(RAYSERVICE).inputs["spec"]["serveConfigV2"])
    lifecycle = ("graceful_shutdown_timeout_s",)
    health = ("health_check_period_s", "health_check_timeout_s")
    rendered = {
        (a["name"], d["name"]): {k: d[k] for k in (*lifecycle, *health) if k in d}
        for a in serve["applications"]
        for d in a["deployments"]
    }
    stacked = {
        (app.name, name): {
            **{k: getattr(dep, k) for k in lifecycle if getattr(dep, k) is not None},
            **dict(zip(health, app.health_checks()[name], strict=True)),
        }
        for app in config.apps
        for name, dep in app.deployments.items()
    }
    assert rendered == stacked


def test_environments_choose_their_reliability_settings():
    dev, staging, prod = (planned(s).inventory.one(RAYSERVICE) for s in STACKS)

    def serve_options(reg, app: str, deployment: str) -> dict:
        apps = yaml.safe_load(reg.inputs["spec"]["serveConfigV2"])["applications"]
        found = next(a for a in apps if a["name"] == app)
        return next(d for d in found["deployments"] if d["name"] == deployment)

    # dev keeps Ray's replica defaults; staging and prod give long streams time to finish.
    assert "graceful_shutdown_timeout_s" not in serve_options(dev, "echo", "Streamer")
    assert serve_options(staging, "echo", "Streamer")["graceful_shutdown_timeout_s"] == 60
    assert serve_options(prod, "echo", "Streamer")["graceful_shutdown_timeout_s"] == 90
    ranker = serve_options(prod, "recsys", "Ranker")
    assert (ranker["health_check_period_s"], ranker["health_check_timeout_s"]) == (5, 15)
    # Everything else gets the project's health check (docs/reliability.md), not Ray's.
    echo = serve_options(dev, "echo", "Echo")
    assert (echo["health_check_period_s"], echo["health_check_timeout_s"]) == (
        HEALTH_CHECK_PERIOD_S,
        HEALTH_CHECK_TIMEOUT_S,
    )
    prod_config = load_stack_config("prod")
    assert prod_config.ray_service.workers.spread == "required"
    assert prod_config.ray_service.fault_tolerance.enabled
    assert "gcsFaultToleranceOptions" in prod.inputs["spec"]["rayClusterConfig"]
    grace = {
        s: load_stack_config(s).ray_service.shutdown.termination_grace_period_seconds
        for s in STACKS
    }
    assert grace["dev"] < grace["staging"] < grace["prod"], grace  # Spot in dev: the shortest


@pytest.mark.schema
@pytest.mark.parametrize("stack", STACKS)
def test_core_objects_validate_against_kubernetes_schemas(stack: str):
    checked = 0
    for r in planned(stack).inventory.resources:
        if r.type in CORE_TYPES:
            group_version, kind = r.type.removeprefix("kubernetes:").rsplit(":", 1)
            group, version = group_version.split("/")
            api_version = version if group == "core" else f"{group}/{version}"
            validate_core({"apiVersion": api_version, "kind": kind, **r.inputs})
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("stack", STACKS)
def test_smoke_output_is_the_documented_contract(stack: str):
    config = load_stack_config(stack)
    outputs = planned(stack).outputs
    smoke = outputs["smoke"]
    assert smoke["schema_version"] == SMOKE_SCHEMA_VERSION
    assert smoke["source"] == "pulumi" and smoke["stack"] == stack
    assert smoke["http_url"] == "http://203.0.113.20:80"
    assert smoke["grpc_target"] == "203.0.113.20:9000"
    assert [a["name"] for a in smoke["apps"]] == [a.name for a in config.apps]
    echo = next(a for a in smoke["apps"] if a["kind"] == "echo")
    assert echo["grpc_service"] == "raygke.echo.v1.EchoService"
    assert echo["grpc_application"] == "echo"
    # what the stack's `ray` section sets, as a local run of it reports (test_local_run.py), not
    # what the cluster's pods add for themselves (their listen address, HAProxy's hard-stop)
    assert smoke["serve_flags"] == config.ray.serve_flags  # no stack sets a non-Serve extraEnv
    assert smoke["serve_flags"]["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert smoke["gpu"]["count_per_node"] == config.gpu_pool.accelerator_count
    assert smoke["kuberay_version"] == "1.7.0" and smoke["ray_version"] == "2.60.0"
    assert isinstance(outputs["kubeconfig"], Secret)
    assert "gke-gcloud-auth-plugin" in outputs["kubeconfig"].value


def test_the_smoke_output_reports_serve_flags_and_never_other_extra_env():
    secret_env = {"RAY_SERVE_REQUEST_PROCESSING_TIMEOUT_S": "30", "DB_PASSWORD": "hunter2-token"}
    config = mutated("dev", edit("ray", extraEnv=secret_env))
    _, outputs = run_with_mocks(run_program, stack="dev", config=config)
    smoke = outputs["smoke"]
    assert smoke["serve_flags"]["RAY_SERVE_REQUEST_PROCESSING_TIMEOUT_S"] == "30"
    assert "DB_PASSWORD" not in smoke["serve_flags"]
    assert "hunter2-token" not in repr(smoke)


def test_the_stacks_smoke_section_is_the_slo_output():
    llm = {"concurrency": 4, "ttftMs": 800, "tpotMs": 40, "inputTokens": 64, "outputTokens": 32}
    smoke = {"concurrency": 3, "p99Ms": 123.5, "maxErrorRate": 0.02, "llm": llm}
    _, outputs = run_with_mocks(
        run_program, stack="dev", config=mutated("dev", edit("smoke", **smoke))
    )
    assert outputs["smoke"]["slo"] == {
        "concurrency": 3,
        "p99_ms": 123.5,
        "max_error_rate": 0.02,
        "llm": {
            "concurrency": 4,
            "ttft_ms": 800,
            "tpot_ms": 40,
            "input_tokens": 64,
            "output_tokens": 32,
        },
    }
    _, outputs = run_with_mocks(
        run_program, stack="dev", config=mutated("dev", lambda c: c.pop(f"{NS}:smoke"))
    )
    assert outputs["smoke"]["slo"] == DEFAULT_SLO


def test_ingress_ports_in_the_stack_file_reach_the_service_and_the_outputs():
    config = mutated(
        "prod", edit("ingress", httpPort=8080, grpcPort=50051, httpsPort=8443, tlsSecret="tls")
    )
    inventory, outputs = run_with_mocks(run_program, stack="prod", config=config)
    [lb] = [
        s
        for s in inventory.of_type("kubernetes:core/v1:Service")
        if s.inputs["spec"].get("type") == "LoadBalancer"
    ]
    assert [(p["name"], p["port"]) for p in lb.inputs["spec"]["ports"]] == [
        ("http", 8080),
        ("https", 8443),
        ("grpc", 50051),
    ]
    smoke = outputs["smoke"]
    assert (smoke["http_url"], smoke["grpc_target"]) == (
        "http://203.0.113.20:8080",
        "203.0.113.20:50051",
    )


def test_plan_text_is_deterministic_and_masks_secrets():
    first = render_text(planned("dev"))
    again = render_text(plan_stack("dev"))
    assert first == again
    assert "gke-gcloud-auth-plugin" not in first
    assert "kubeconfig: [secret]" in first
    assert first.startswith("stack dev: ")


def test_plan_states_each_apps_deadline_and_hung_replica_bound():
    text = render_text(planned("prod"))
    section = text.split(
        "deadlines and hung replicas (checked before deploy; docs/reliability.md):\n"
    )[1]
    p, t = HEALTH_CHECK_PERIOD_S, HEALTH_CHECK_TIMEOUT_S
    assert section.splitlines()[:3] == [
        f"  echo: deadline 30 s at our tier; a hung replica is replaced within 3 x ({p:g} + {t:g}) "
        f"= {3 * (p + t):g} s (health check every {p:g} s, timeout {t:g} s)",
        "  recsys: deadline 30 s at our tier; a hung replica is replaced within 3 x (5 + 15) = 60 s "
        "(Ranker: health check every 5 s, timeout 15 s)",
        "  llm: deadline 300 s at our tier; a hung replica is replaced within 3 x (10 + 30) = 120 s "
        "(Ray's health check, every 10 s, timeout 30 s: Ray Serve LLM builds its deployments)",
    ]


def test_each_apps_deadline_reaches_the_clusters_haproxy_cfg():
    config = mutated("dev", edit("apps", [0], deadlineS=12))
    inventory, _ = run_with_mocks(run_program, stack="dev", config=config)
    [cfg] = [
        r.inputs["data"]["haproxy.cfg"]
        for r in inventory.of_type("kubernetes:core/v1:ConfigMap")
        if "haproxy.cfg" in r.inputs.get("data", {})
    ]
    assert "    http-request set-timeout server 12s if dl_http_echo\n" in cfg
    assert "    http-request set-timeout server 12s if dl_grpc_echo\n" in cfg
    assert "    http-request set-timeout server 30s if dl_http_recsys\n" in cfg


def test_plan_cli_prints_the_tree_and_bad_stacks_fail_in_one_line():
    ok = subprocess.run(
        [sys.executable, "-m", "raygke.cli", "plan", "--stack", "dev"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "raygke:ray_service:RayServeApp  serving" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "raygke.cli", "plan", "--stack", "qa"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("raygke: no stack file") and "Traceback" not in bad.stderr


def test_components_are_importable_by_other_programs():
    import pulumi

    import components

    assert len(components.__all__) == 14
    for name in components.__all__:
        exported = getattr(components, name)
        if not name.endswith("Args"):
            assert issubclass(exported, pulumi.ComponentResource), name


def test_pure_modules_load_without_the_pulumi_engine():
    """The local run and config validation import only pure code: no pulumi, no cloud SDKs."""
    probe = (
        "import sys, infra.config, infra.checks, infra.rendered, infra.stack_file, infra.serve_config,"
        " infra.outputs, components.render.haproxy, components.render.ingress_tier, policy;"
        "print(sorted(m for m in ('pulumi', 'pulumi_gcp', 'pulumi_kubernetes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_components_export_list_matches_the_lazy_table():
    import components

    assert sorted(components.__all__) == sorted(components._EXPORTS)


def test_plan_reports_policy_violations_for_the_stack_environment():
    # prod: only the digest advisories (the deploy workflow pins digests from CI); nothing mandatory
    prod = planned("prod").violations
    assert {(v.control_id, v.severity) for v in prod} == {("RAYGKE-K8S-4", "advisory")}
    assert "policy: 0 mandatory, 3 advisory" in render_text(planned("prod"))
    dev = planned("dev")
    assert [v.control_id for v in dev.violations] == ["5.6.3"]  # dev's open control plane
    assert all(v.severity == "advisory" for v in dev.violations)


def test_plan_runs_after_asyncio_run_left_no_event_loop():
    """`asyncio.run` (the smoke client, other tests) leaves the thread without a loop; plans still run."""
    import asyncio

    asyncio.run(asyncio.sleep(0))
    assert plan_stack("dev").inventory.resources


@pytest.mark.parametrize("stack", STACKS)
def test_the_rendered_graph_is_what_the_program_registers(stack: str):
    """The checks read infra/rendered.py's graph; it must be the very objects `pulumi up` would
    send: every rendered object equals the one registered under mocks, field for field."""
    from infra.rendered import render_stack
    from raygke.manifests import manifest

    rendered = render_stack(load_stack_config(stack))
    registered = {}
    for reg in planned(stack).inventory.resources:
        if (obj := manifest(reg)) is not None:
            meta = obj.get("metadata", {})
            registered[(obj["kind"], meta.get("namespace"), meta.get("name"))] = obj
    for obj in rendered.objects():
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key in registered, f"{key} is rendered but not registered"
        assert _known_at_plan(registered[key]) == _known_at_plan(obj), key


def _known_at_plan(obj: dict) -> dict:
    """`obj` without what exists only at deploy: Secret data, a created Redis's address."""
    from components.render.rayservice import REDIS_ADDRESS_AT_DEPLOY

    obj = {k: v for k, v in obj.items() if k not in ("stringData", "data")}
    options = obj.get("spec", {}).get("rayClusterConfig", {}).get("gcsFaultToleranceOptions")
    if options:
        options = {**options, "redisAddress": REDIS_ADDRESS_AT_DEPLOY}
        cluster = {**obj["spec"]["rayClusterConfig"], "gcsFaultToleranceOptions": options}
        obj = {**obj, "spec": {**obj["spec"], "rayClusterConfig": cluster}}
    return obj


# ---------------------------------------------------------------------------------------------- first deploy
@pytest.mark.parametrize("stack", STACKS)
def test_the_stack_enables_its_apis_and_leaves_them_on(stack: str):
    from infra.specs import stack_apis

    services = planned(stack).inventory.of_type("gcp:projects/service:Service")
    assert sorted(s.inputs["service"] for s in services) == stack_apis(load_stack_config(stack))
    assert all(s.inputs["disableOnDestroy"] is False for s in services)


def test_prod_grants_gkes_service_agent_its_secrets_key_before_the_cluster():
    inventory = planned("prod").inventory
    grant = inventory.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    key = load_stack_config("prod").cluster.kms_key
    assert grant.inputs == {
        "cryptoKeyId": key,
        "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        # the mocks' project number (gcp.organizations.getProject)
        "member": "serviceAccount:service-123456789012@container-engine-robot.iam.gserviceaccount.com",
    }
    cluster = inventory.one("gcp:container/cluster:Cluster")
    assert grant.urn in cluster.dependencies


def test_prod_creates_its_memorystore_redis_and_the_secret_the_head_reads():
    inventory = planned("prod").inventory
    redis = inventory.one("gcp:redis/instance:Instance")
    assert redis.inputs["connectMode"] == "PRIVATE_SERVICE_ACCESS" and redis.inputs["authEnabled"]
    assert redis.inputs["tier"] == "STANDARD_HA"
    connection = inventory.one("gcp:servicenetworking/connection:Connection")
    assert connection.urn in redis.dependencies
    secret = inventory.one("kubernetes:core/v1:Secret", "serving-redis")
    assert secret.inputs["metadata"] == {"name": "serving-redis", "namespace": "ray-serve"}
    rayservice = inventory.one(RAYSERVICE)
    options = rayservice.inputs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "10.120.0.3:6379"  # the mocks' Memorystore host
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == {
        "name": "serving-redis",
        "key": "password",
    }
    assert secret.urn in rayservice.dependencies


def test_a_certificate_in_the_stack_becomes_the_tiers_tls_secret():
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    config = mutated("prod", edit("ingress", tlsCertificate=cert, tlsKey=key))
    inventory, _ = run_with_mocks(run_program, stack="prod", config=config)
    secret = inventory.one("kubernetes:core/v1:Secret", "ingress-tls")
    assert secret.inputs["type"] == "kubernetes.io/tls"
    assert secret.inputs["metadata"] == {"name": "serving-tls", "namespace": "ray-serve"}
    deployment = inventory.one("kubernetes:apps/v1:Deployment", "ingress")
    assert secret.urn in deployment.dependencies


@pytest.mark.parametrize(
    ("stack", "keys"),
    [
        ("dev", ["gcp:project", "gpuPool.maxNodes", "ray.imageRepository"]),
        ("staging", ["gcp:project", "gpuPool.maxNodes", "ray.imageRepository"]),
        (
            "prod",
            [
                "gcp:project",
                "gpuPool.capacity",
                "ray.imageRepository",
                "cluster.kmsKey",
                "rayService.modelBucket.bucket",
                "ingress.tlsSecret",
            ],
        ),
    ],
)
def test_the_plan_lists_what_to_have_before_pulumi_up(stack: str, keys: list[str]):
    import json

    from raygke.plan import render_json

    plan = planned(stack)
    assert [p.key for p in plan.prerequisites] == keys
    assert all(p.how for p in plan.prerequisites)
    document = json.loads(render_json(plan))
    assert [p["key"] for p in document["prerequisites"]] == keys
    assert "before `pulumi up`, have" in render_text(plan)


@pytest.mark.parametrize(
    ("stack", "capacity", "quota"),
    [
        ("dev", {"mode": "spot"}, "PREEMPTIBLE_NVIDIA_H100_GPUS"),
        ("dev", {"mode": "flex-start"}, "PREEMPTIBLE_NVIDIA_H100_GPUS"),
        ("staging", {"mode": "on-demand"}, "(NVIDIA_H100_GPUS)"),
        ("prod", {"mode": "spot"}, "PREEMPTIBLE_NVIDIA_H100_MEGA_GPUS"),
    ],
)
def test_the_quota_named_is_the_one_the_capacity_mode_consumes(stack, capacity, quota):
    from infra.prerequisites import prerequisites
    from infra.stack_file import parse_stack_config

    config = parse_stack_config(stack, mutated(stack, edit("gpuPool", capacity=capacity)))
    (item,) = [p for p in prerequisites(config) if p.key == "gpuPool.maxNodes"]
    assert quota in item.what


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_prometheus_url_is_a_prerequisite_the_plan_lists(stack: str) -> None:
    """The query API an llm app's autoscaler reads is not created by the program: the plan lists
    it, with the project the frontend must query; without the key nothing is listed."""
    from infra.prerequisites import prerequisites
    from infra.stack_file import parse_stack_config

    url = "http://frontend.gmp-public.svc:9090"
    config = parse_stack_config(stack, mutated(stack, edit("ray", prometheusUrl=url)))
    (item,) = [p for p in prerequisites(config) if p.key == "ray.prometheusUrl"]
    assert url in item.what and f"--query.project-id={config.project}" in item.how
    shipped = parse_stack_config(stack, mutated(stack))
    assert not [p for p in prerequisites(shipped) if p.key == "ray.prometheusUrl"]
