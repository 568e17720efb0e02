"""The stack config: every stacks/*.yaml validates, and every validator fires with a message naming key,
value and what is allowed, before a single resource is registered."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    H100_ZONES,
    ConfigError,
    load_stack_config,
    parse_stack_config,
    read_stack_file,
)
from infra.program import run_program
from raygke.mocks import Inventory, run_with_mocks

STACKS = sorted(
    p.name.split(".")[1] for p in (Path(__file__).parents[1] / "stacks").glob("Pulumi.*.yaml")
)
NS = "ray-serve-gke"

pytestmark = pytest.mark.config


def test_the_three_environments_exist():
    assert STACKS == ["dev", "prod", "staging"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_validates(stack: str):
    config = load_stack_config(stack)
    assert config.environment == stack
    assert config.gpu_pool.zones and all(z in H100_ZONES for z in config.gpu_pool.zones)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_disables_default_providers(stack: str):
    assert read_stack_file(stack)["pulumi:disable-default-providers"] == ["*"]


def test_environments_differ_as_documented():
    dev, staging, prod = (load_stack_config(s) for s in ("dev", "staging", "prod"))
    assert dev.gpu_pool.min_nodes == 0 and dev.gpu_pool.capacity.mode in ("spot", "flex-start")
    assert staging.gpu_pool.machine_type == "a3-highgpu-8g"
    assert prod.gpu_pool.accelerator_count == 8 and prod.gpu_pool.compact_placement
    assert prod.gpu_pool.capacity.mode == "reservation"
    assert prod.cluster.deletion_protection and prod.ray_service.fault_tolerance.enabled
    assert prod.gpu_pool.min_nodes >= 1
    assert prod.ray_service.model_bucket is not None
    assert dev.ray_service.model_bucket is None and staging.ray_service.model_bucket is None


def _set(section: str, **values: Any) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        config[f"{NS}:{section}"].update(values)

    return mutate


def _in(section: str, path: list[str | int], **values: Any) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        node = config[f"{NS}:{section}"]
        for part in path:
            node = node[part]
        node.update(values)

    return mutate


def _drop_authorized_anywhere(config: dict) -> None:
    config[f"{NS}:cluster"]["authorizedNetworks"].append({"cidr": "0.0.0.0/0", "name": "all"})


def _grpc_only_app(config: dict) -> None:
    config[f"{NS}:apps"][0]["protocols"] = ["grpc"]
    config[f"{NS}:rayService"]["upgradeStrategy"] = {
        "type": "NewClusterWithIncrementalUpgrade",
        "gatewayClassName": "gke-l7-rilb",
    }


# (name, stack, mutation, pattern the message must match: key, value and allowed values)
BAD_CONFIGS: list[tuple[str, str, Callable[[dict], None], str]] = [
    (
        "unknown machine type",
        "staging",
        _set("gpuPool", machineType="a3-highgpu-3g"),
        r"gpuPool.machineType must be one of \['a3-highgpu-1g'.*got 'a3-highgpu-3g'",
    ),
    (
        "accelerator type vs machine",
        "prod",
        _set("gpuPool", acceleratorType="nvidia-h100-80gb"),
        r"gpuPool.acceleratorType must be 'nvidia-h100-mega-80gb' for a3-megagpu-8g; got 'nvidia-h100-80gb'",
    ),
    (
        "accelerator count vs machine",
        "staging",
        _set("gpuPool", acceleratorCount=4),
        r"gpuPool.acceleratorCount must be 8 for a3-highgpu-8g; got 4",
    ),
    (
        "small A3 shape on demand",
        "dev",
        _set("gpuPool", capacity={"mode": "on-demand"}),
        r"gpuPool.capacity.mode must be spot, flex-start or queued-provisioning for a3-highgpu-1g.*got 'on-demand'",
    ),
    (
        "zone without H100",
        "dev",
        _set("gpuPool", zones=["us-central1-f"]),
        r"gpuPool.zones \['us-central1-f'\] offered no H100.*as of 2026-11-01; allowed: ",
    ),
    (
        "zone outside the region",
        "dev",
        _set("gpuPool", zones=["us-east4-a"]),
        r"gpuPool.zones: 'us-east4-a' is not in gcp:region 'us-central1'",
    ),
    (
        "min nodes over max",
        "staging",
        _set("gpuPool", minNodes=3, maxNodes=2),
        r"gpuPool.minNodes \(3\) must be <= gpuPool.maxNodes \(2\)",
    ),
    (
        "scale to zero in prod",
        "prod",
        _set("gpuPool", minNodes=0),
        r"gpuPool.minNodes and rayService.workers.minReplicas must be >= 1 in prod.*got 0 and 2",
    ),
    (
        "RayService name too long",
        "dev",
        _set("rayService", name="s" * 48),
        r"rayService.name: RayService name 's{48}' is 48 characters; KubeRay allows at most 47",
    ),
    (
        "RayService name not DNS-1035",
        "dev",
        _set("rayService", name="Serving_1"),
        r"rayService.name: RayService name 'Serving_1' must be a DNS-1035 label",
    ),
    (
        "gRPC ingress on Ray 2.56",
        "dev",
        _set("ray", version="2.56.0"),
        r"ray.grpc needs Ray 2.57\+.*got ray.version 2.56.0",
    ),
    (
        "HAProxy ingress on Ray 2.54",
        "dev",
        _set("ray", version="2.54.0", grpc=False),
        r"ray.version 2.54.0 has no HAProxy ingress",
    ),
    (
        "GPU demand over the worker group",
        "dev",
        _in("apps", [1, "deployments", "Ranker"], numReplicas=3),
        r"apps: need 3 GPUs at peak replicas but rayService.workers.maxReplicas \(2\) x 1 GPUs.*holds 2",
    ),
    (
        "one replica wider than a node",
        "dev",
        _in("apps", [1, "deployments", "Ranker"], numGpus=2),
        r"apps\[recsys\]: a replica needs 2 GPUs, more than the 1 of one a3-highgpu-1g node",
    ),
    (
        "llm tensor parallelism wider than a node",
        "prod",
        _in("apps", [2, "args"], tensor_parallel_size=16),
        r"apps\[llm\]: a replica needs 16 GPUs, more than the 8 of one a3-megagpu-8g node",
    ),
    (
        "llm app with deployment overrides",
        "prod",
        _in("apps", [2], deployments={"LLMServer": {"numGpus": 1}}),
        r"apps\[llm\].deployments: Ray Serve LLM names and sizes its own deployments",
    ),
    (
        "llm app without a model",
        "prod",
        lambda c: c[f"{NS}:apps"][2]["args"].pop("model_source"),
        r"apps\[llm\].args must name model_id, source, model_source; missing \['model_source'\]",
    ),
    (
        "blue/green without headroom",
        "staging",
        _in("apps", [1, "deployments", "Ranker"], autoscaling={"minReplicas": 1, "maxReplicas": 9}),
        r"upgradeStrategy.type NewCluster starts a second cluster.*needs 18 GPUs but .* is 16",
    ),
    (
        "incremental upgrade without gateway",
        "dev",
        _set("rayService", upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"}),
        r"rayService.upgradeStrategy.gatewayClassName is required for NewClusterWithIncrementalUpgrade",
    ),
    (
        "incremental upgrade with a gRPC-only app",
        "dev",
        _grpc_only_app,
        r"NewClusterWithIncrementalUpgrade shifts HTTP traffic only; gRPC-only apps \['echo'\]",
    ),
    (
        "head fault tolerance without Redis",
        "prod",
        _in("rayService", ["faultTolerance"], redisAddress=None),
        r"rayService.faultTolerance.redisAddress is required when enabled is true",
    ),
    (
        "0.0.0.0/0 authorized in prod",
        "prod",
        _drop_authorized_anywhere,
        r"cluster.authorizedNetworks must not contain 0.0.0.0/0 in prod",
    ),
    (
        "duplicate route prefix",
        "dev",
        _in("apps", [1], routePrefix="/echo"),
        r"apps\[recsys\].routePrefix '/echo' is already used by apps\[echo\]",
    ),
    (
        "duplicate ingress ports",
        "dev",
        _set("ingress", grpcPort=80),
        r"ingress.grpcPort \(80\) is already used by ingress.httpPort",
    ),
    (
        "unknown key in a section",
        "dev",
        _set("gpuPool", minNode=1),
        r"gpuPool.minNode: unknown key \(value 1\); allowed keys: acceleratorCount, .*minNodes",
    ),
    (
        "unknown top-level key",
        "dev",
        lambda c: c.update({f"{NS}:gpuPools": {}}),
        r"ray-serve-gke:gpuPools: unknown key; allowed keys: .*ray-serve-gke:gpuPool,",
    ),
    (
        "unknown capacity mode",
        "dev",
        _set("gpuPool", capacity={"mode": "preemptible"}),
        r"gpuPool.capacity: .*expected tags: 'on-demand', 'spot', 'flex-start'.*got \{'mode': 'preemptible'\}",
    ),
    (
        "specific reservation without a name",
        "prod",
        _set("gpuPool", capacity={"mode": "reservation"}),
        r"gpuPool.capacity.name is required when affinity is 'specific'",
    ),
    (
        "flex-start longer than seven days",
        "dev",
        _set("gpuPool", capacity={"mode": "flex-start", "maxRunDurationHours": 200}),
        r"gpuPool.capacity.maxRunDurationHours: Input should be less than or equal to 168; got 200",
    ),
    (
        "queued provisioning with a floor",
        "staging",
        _set("gpuPool", capacity={"mode": "queued-provisioning"}, minNodes=1),
        r"gpuPool.minNodes must be 0 with queued provisioning \(nodes come only on request\); got 1",
    ),
    (
        "compact placement across zones",
        "prod",
        _set("gpuPool", zones=["us-central1-a", "us-central1-b"]),
        r"gpuPool.compactPlacement needs exactly one zone.*got zones \['us-central1-a', 'us-central1-b'\]",
    ),
    (
        "overlapping CIDRs",
        "dev",
        _set("network", podsCidr="10.10.0.0/16"),
        r"network.subnetCidr \(10.10.0.0/20\) overlaps network.podsCidr \(10.10.0.0/16\)",
    ),
    (
        "GPUDirect on a shape without it",
        "dev",
        _set("network", gpudirect=True, gpudirectNetworksOnly=True),
        r"network.gpudirect needs a3-highgpu-8g or a3-megagpu-8g; gpuPool.machineType is a3-highgpu-1g",
    ),
    (
        "GPUDirect without acknowledging it is networks only",
        "prod",
        _set("network", gpudirect=True),
        r"network.gpudirect: true creates only the extra VPCs and node NICs; nothing on the "
        r"Kubernetes side uses them .*Set network.gpudirectNetworksOnly: true",
    ),
    (
        "GPUDirect acknowledgement without GPUDirect",
        "dev",
        _set("network", gpudirectNetworksOnly=True),
        r"network.gpudirectNetworksOnly acknowledges network.gpudirect, which is false",
    ),
    (
        "more workers than GPU nodes",
        "dev",
        _in("rayService", ["workers"], maxReplicas=3),
        r"rayService.workers.maxReplicas \(3\) must be <= gpuPool.maxNodes \(2\)",
    ),
    (
        "unpinned ingress image",
        "dev",
        _set("ingress", image="haproxy:latest"),
        r"ingress.image must be pinned to a version tag or a digest .*got 'haproxy:latest': tag 'latest'",
    ),
    (
        "untagged ingress image",
        "prod",
        _set("ingress", image="haproxy"),
        r"ingress.image must be pinned .*got 'haproxy': no tag",
    ),
    (
        "ingress image with a short digest",
        "staging",
        _set("ingress", image="haproxy:3.2.8-alpine@sha256:abc"),
        r"ingress.image must be pinned .*a digest must be sha256:<64 lowercase hex digits>",
    ),
    (
        "Ray image digest that is not a sha256",
        "prod",
        _set("ray", imageDigest="sha256:" + "A" * 64),
        r"ray.imageDigest must be sha256:<64 lowercase hex digits>",
    ),
    (
        "Ray image digest given as a tag",
        "dev",
        _set("ray", imageDigest="2.60.0-py311-gpu"),
        r"ray.imageDigest must be sha256:<64 lowercase hex digits> .*got '2.60.0-py311-gpu'",
    ),
    (
        "ingress open to the world in prod",
        "prod",
        _set("ingress", sourceRanges=["0.0.0.0/0"]),
        r"ingress.sourceRanges must not contain 0.0.0.0/0 in prod",
    ),
    (
        "no deletion protection in prod",
        "prod",
        _in("cluster", [], deletionProtection=False),
        r"cluster.deletionProtection must be true in prod; got false",
    ),
    (
        "llm app over gRPC",
        "prod",
        _in("apps", [2], protocols=["http", "grpc"]),
        r"apps\[llm\].protocols: the llm app serves the OpenAI HTTP API only",
    ),
    (
        "custom app without import path",
        "dev",
        _in("apps", [0], kind="custom"),
        r"apps\[echo\].importPath is required for kind: custom",
    ),
    (
        "bad environment",
        "dev",
        lambda c: c.update({f"{NS}:environment": "qa"}),
        r"ray-serve-gke:environment: Input should be 'dev', 'staging' or 'prod'; got 'qa'",
    ),
    (
        "missing gcp:project",
        "dev",
        lambda c: c.pop("gcp:project"),
        r"gcp:project: required key is missing",
    ),
    (
        "model bucket name outside GCS naming",
        "prod",
        _in("rayService", ["modelBucket"], bucket="My_Models"),
        r"rayService.modelBucket.bucket: bucket name 'My_Models' must be 3-63 lowercase letters, digits, "
        r"'-', '_' or '.', starting and ending with a letter or digit",
    ),
    (
        "model bucket mount path not absolute",
        "prod",
        _in("rayService", ["modelBucket"], mountPath="gcs/models"),
        r"rayService.modelBucket.mountPath: mount path 'gcs/models' must be an absolute, normalized path",
    ),
    (
        "llm weights from GCS without a model bucket",
        "prod",
        lambda c: c[f"{NS}:rayService"].pop("modelBucket"),
        r"apps\[llm\].args.source is 'gcs' \(model_source '/gcs/models/llama-3.1-8b-instruct'\) but "
        r"rayService.modelBucket is not set; add rayService.modelBucket: \{bucket: <name>, mountPath",
    ),
    (
        "llm weights outside the bucket mount",
        "prod",
        _in("apps", [2, "args"], model_source="/gcs/models-v2/llama"),
        r"apps\[llm\].args.model_source '/gcs/models-v2/llama' must lie under "
        r"rayService.modelBucket.mountPath '/gcs/models', where bucket 'my-gcp-project-models' is mounted",
    ),
    (
        "bad KMS key",
        "prod",
        _set("cluster", kmsKey="gke-secrets"),
        r"cluster.kmsKey must be projects/P/locations/L/keyRings/R/cryptoKeys/K .*got 'gke-secrets'",
    ),
    # --- reliability: shutdown, drains, health checks, disruption budgets, head fault tolerance ---
    (
        "graceful shutdown as long as the drain",
        "staging",
        _in("apps", [0, "deployments", "Streamer"], gracefulShutdownTimeoutS=200),
        r"apps\[echo\].deployments.Streamer.gracefulShutdownTimeoutS \(200\) must be shorter than "
        r"rayService.shutdown.drainDeadlineSeconds \(90; the pod's terminationGracePeriodSeconds is "
        r"120\): .*allowed: 0..89",
    ),
    (
        "drain longer than the termination grace allows",
        "dev",
        _set(
            "rayService", shutdown={"terminationGracePeriodSeconds": 50, "drainDeadlineSeconds": 45}
        ),
        r"rayService.shutdown.drainDeadlineSeconds \(45\) must leave 15 s of "
        r"rayService.shutdown.terminationGracePeriodSeconds \(50\) for `ray stop`.*allowed: 1..35",
    ),
    (
        "termination grace shorter than the head needs",
        "dev",
        _set(
            "rayService", shutdown={"terminationGracePeriodSeconds": 20, "drainDeadlineSeconds": 5}
        ),
        r"rayService.shutdown.terminationGracePeriodSeconds \(20\) must be at least 30: the head "
        r"waits 15 s",
    ),
    (
        "drain shorter than the HAProxy ingress floor",
        "dev",
        _set(
            "rayService", shutdown={"terminationGracePeriodSeconds": 60, "drainDeadlineSeconds": 30}
        ),
        r"rayService.shutdown.drainDeadlineSeconds \(30; .*\) must be longer than 35 s with Ray's "
        r"HAProxy \(direct\) ingress: .*allowed: 36..45",
    ),
    (
        "drain wait loop longer than the shutdown timeout",
        "dev",
        _in("apps", [0, "deployments", "Echo"], gracefulShutdownWaitLoopS=30),
        r"ray-serve-gke:apps\[0\].deployments.Echo: gracefulShutdownWaitLoopS must be <= "
        r"gracefulShutdownTimeoutS \(20, Ray's default\); got 30: .*allowed: 0..20",
    ),
    (
        "negative graceful shutdown timeout",
        "dev",
        _in("apps", [0, "deployments", "Echo"], gracefulShutdownTimeoutS=-1),
        r"apps\[0\].deployments.Echo.gracefulShutdownTimeoutS: Input should be greater than or "
        r"equal to 0; got -1",
    ),
    (
        "health check period of zero",
        "dev",
        _in("apps", [1, "deployments", "Ranker"], healthCheckPeriodS=0),
        r"apps\[1\].deployments.Ranker.healthCheckPeriodS: Input should be greater than 0; got 0",
    ),
    (
        "PDB that blocks every drain",
        "prod",
        _in("rayService", ["workers"], pdbMinAvailable=2),
        r"rayService.workers.pdbMinAvailable \(2\) must be below rayService.workers.minReplicas "
        r"\(2\) or 0: .*every node drain and upgrade blocks; allowed: 0..1",
    ),
    (
        "PDB floor over a group that scales to zero",
        "dev",
        _in("rayService", ["workers"], pdbMinAvailable=1),
        r"rayService.workers.pdbMinAvailable \(1\) must be below rayService.workers.minReplicas "
        r"\(0\) or 0: .*allowed: 0$",
    ),
    (
        "unknown spread mode",
        "dev",
        _in("rayService", ["workers"], spread="zonal"),
        r"rayService.workers.spread: Input should be 'none', 'preferred' or 'required'; got 'zonal'",
    ),
    (
        "prod without head fault tolerance",
        "prod",
        _in("rayService", ["faultTolerance"], enabled=False),
        r"rayService.faultTolerance.enabled must be true in prod; got false",
    ),
    (
        "head fault tolerance without the Redis password",
        "prod",
        lambda c: c[f"{NS}:rayService"]["faultTolerance"].pop("redisPassword"),
        r"rayService.faultTolerance.redisPassword is required when enabled is true: .*got none",
    ),
]


def _mutated(stack: str, mutate: Callable[[dict], None]) -> dict:
    config = copy.deepcopy(read_stack_file(stack))
    mutate(config)
    return config


@pytest.mark.parametrize(
    ("stack", "mutate", "pattern"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_with_key_value_and_allowed(stack, mutate, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_stack_config(stack, _mutated(stack, mutate))


@pytest.mark.mocks
@pytest.mark.parametrize(
    ("stack", "mutate", "pattern"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_registers_nothing(stack, mutate, pattern):
    """The program validates first: under the engine's mocks, not one resource reaches the monitor."""
    inventory = Inventory()
    with pytest.raises(ConfigError, match=pattern):
        run_with_mocks(
            run_program, stack=stack, config=_mutated(stack, mutate), inventory=inventory
        )
    assert inventory.resources == []


def test_at_least_twenty_distinct_validators():
    assert len({pattern for *_, pattern in BAD_CONFIGS}) >= 20


@pytest.mark.parametrize(
    ("model_source", "ok"),
    [("/gcs/models", True), ("/gcs/models/llama/", True), ("/gcs/models/../etc", False)],
)
def test_llm_weights_under_the_mount_are_compared_as_paths(model_source: str, ok: bool):
    config = _mutated("prod", _in("apps", [2, "args"], model_source=model_source))
    if ok:
        assert parse_stack_config("prod", config).ray_service.model_bucket is not None
    else:
        with pytest.raises(ConfigError, match=r"must lie under rayService.modelBucket.mountPath"):
            parse_stack_config("prod", config)


def test_every_problem_is_reported_at_once():
    config = _mutated("prod", _set("gpuPool", minNodes=0))
    config[f"{NS}:cluster"]["authorizedNetworks"].append({"cidr": "0.0.0.0/0", "name": "all"})
    with pytest.raises(ConfigError) as raised:
        parse_stack_config("prod", config)
    assert "no scale to zero" in str(raised.value) and "0.0.0.0/0" in str(raised.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_ray_defaults_the_config_assumes_are_ray_2_60s():
    from ray.serve._private import constants

    from infra import config as cfg

    assert cfg.RAY_GRACEFUL_SHUTDOWN_TIMEOUT_S == constants.DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S
    assert cfg.RAY_GRACEFUL_SHUTDOWN_WAIT_LOOP_S == constants.DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    assert cfg.RAY_HEALTH_CHECK_PERIOD_S == constants.DEFAULT_HEALTH_CHECK_PERIOD_S
    assert cfg.RAY_HEALTH_CHECK_TIMEOUT_S == constants.DEFAULT_HEALTH_CHECK_TIMEOUT_S
    assert (
        cfg.RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
        == constants.RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
    )
    assert (
        cfg.RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S
        == constants.RAY_SERVE_DIRECT_INGRESS_SHUTDOWN_BUFFER_S
    )


@pytest.mark.parametrize(
    ("ray", "drain_ok"),
    [
        ({"serveProfile": "ray-defaults"}, 30),  # no direct ingress: no floor
        ({"extraEnv": {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "10"}}, 16),
    ],
    ids=["ray-defaults", "lowered-drain-period"],
)
def test_the_ingress_drain_floor_follows_the_ray_flags(ray: dict[str, Any], drain_ok: int):
    shutdown = {"terminationGracePeriodSeconds": 60, "drainDeadlineSeconds": drain_ok}
    config = _mutated("dev", _set("rayService", shutdown=shutdown))
    config[f"{NS}:ray"].update(ray)
    parsed = parse_stack_config("dev", config)
    assert parsed.ray_service.shutdown.drain_deadline_seconds == drain_ok


def test_shutdown_and_pdb_defaults_fit_together():
    config = _mutated("dev", lambda c: c[f"{NS}:rayService"].pop("shutdown"))
    shutdown = parse_stack_config("dev", config).ray_service.shutdown
    assert (shutdown.termination_grace_period_seconds, shutdown.drain_deadline_seconds) == (90, 60)
    for floor, expect in [(0, 0), (1, 0), (2, 1), (3, 2)]:
        workers = {"minReplicas": floor, "maxReplicas": 4}
        config = _mutated("prod", _in("rayService", ["workers"], **workers))
        config[f"{NS}:rayService"]["workers"].pop("pdbMinAvailable")
        config[f"{NS}:gpuPool"]["minNodes"] = max(floor, 1)
        if floor == 0:
            config[f"{NS}:environment"] = "staging"  # prod may not scale to zero
        assert parse_stack_config("prod", config).ray_service.workers.min_available == expect


def test_missing_stack_file_names_the_stacks():
    with pytest.raises(
        ConfigError, match=r"no stack file .*Pulumi.qa.yaml; stacks: dev, prod, staging"
    ):
        load_stack_config("qa")


DIGEST_A = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "image",
    [
        "haproxy:3.2.8-alpine",
        f"haproxy@{DIGEST_A}",
        f"haproxy:3.2.8-alpine@{DIGEST_A}",
        f"mirror.gcr.io/library/haproxy:3.2.8-alpine@{DIGEST_A}",
    ],
)
def test_ingress_image_may_be_pinned_by_tag_or_digest(image: str):
    config = _mutated("prod", _set("ingress", image=image))
    assert parse_stack_config("prod", config).ingress.image == image


def test_ray_image_digest_pins_the_tagged_image():
    config = parse_stack_config("prod", _mutated("prod", _set("ray", imageDigest=DIGEST_A)))
    assert config.ray.image == (
        "us-central1-docker.pkg.dev/my-gcp-project/raygke/ray-serve-gke:2.60.0-py311-gpu@"
        + DIGEST_A
    )
    assert load_stack_config("prod").ray.image.endswith(":2.60.0-py311-gpu")  # no digest shipped


def test_gpudirect_networks_only_when_acknowledged():
    config = _mutated("prod", _set("network", gpudirect=True, gpudirectNetworksOnly=True))
    assert parse_stack_config("prod", config).network.gpudirect is True
    assert load_stack_config("prod").network.gpudirect is False  # off in prod: TP within one node
