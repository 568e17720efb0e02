"""The stack config: every stacks/*.yaml validates, and every validator fires with a message naming key,
value and what is allowed, before a single resource is registered."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from stackfiles import NS, SECRET, STACKS, cases, edit, mutated, with_secrets

from infra.config import H100_ZONES
from infra.program import run_program
from infra.stack_file import ConfigError, load_stack_config, parse_stack_config, read_stack_file
from raygke.mocks import Inventory, run_with_mocks

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


def _drop_authorized_anywhere(config: dict) -> None:
    config[f"{NS}:cluster"]["authorizedNetworks"].append({"cidr": "0.0.0.0/0", "name": "all"})


def _deletion_delay(seconds: int, *more: Callable[[dict], None]) -> Callable[[dict], None]:
    """Set rayService.upgradeStrategy.oldClusterDeletionDelaySeconds, then apply `more`."""

    def mutate(config: dict) -> None:
        edit("rayService", ["upgradeStrategy"], oldClusterDeletionDelaySeconds=seconds)(config)
        for also in more:
            also(config)

    return mutate


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
        edit("gpuPool", machineType="a3-highgpu-3g"),
        r"gpuPool.machineType must be one of \['a3-highgpu-1g'.*got 'a3-highgpu-3g'",
    ),
    (
        "accelerator type vs machine",
        "prod",
        edit("gpuPool", acceleratorType="nvidia-h100-80gb"),
        r"gpuPool.acceleratorType must be 'nvidia-h100-mega-80gb' for a3-megagpu-8g; got 'nvidia-h100-80gb'",
    ),
    (
        "accelerator count vs machine",
        "staging",
        edit("gpuPool", acceleratorCount=4),
        r"gpuPool.acceleratorCount must be 8 for a3-highgpu-8g; got 4",
    ),
    (
        "small A3 shape on demand",
        "dev",
        edit("gpuPool", capacity={"mode": "on-demand"}),
        r"gpuPool.capacity.mode must be spot or flex-start for a3-highgpu-1g.*got 'on-demand'",
    ),
    (
        "zone without H100",
        "dev",
        edit("gpuPool", zones=["us-central1-f"]),
        r"gpuPool.zones \['us-central1-f'\] offered no H100.*as of 2026-11-01; allowed: ",
    ),
    (
        "zone outside the region",
        "dev",
        edit("gpuPool", zones=["us-east4-a"]),
        r"gpuPool.zones: 'us-east4-a' is not in gcp:region 'us-central1'",
    ),
    (
        "min nodes over max",
        "staging",
        edit("gpuPool", minNodes=3, maxNodes=2),
        r"gpuPool.minNodes \(3\) must be <= gpuPool.maxNodes \(2\)",
    ),
    (
        "scale to zero in prod",
        "prod",
        edit("gpuPool", minNodes=0),
        r"gpuPool.minNodes and rayService.workers.minReplicas must be >= 1 in prod.*got 0 and 2",
    ),
    (
        "RayService name too long",
        "dev",
        edit("rayService", name="s" * 48),
        r"rayService.name: RayService name 's{48}' is 48 characters; KubeRay allows at most 47",
    ),
    (
        "RayService name not DNS-1035",
        "dev",
        edit("rayService", name="Serving_1"),
        r"rayService.name: RayService name 'Serving_1' must be a DNS-1035 label",
    ),
    (
        "gRPC ingress on Ray 2.56",
        "dev",
        edit("ray", version="2.56.0"),
        r"ray.grpc needs Ray 2.57\+.*got ray.version 2.56.0",
    ),
    (
        "token auth on Ray 2.50 (Ray's defaults need no HAProxy)",
        "dev",
        edit("ray", version="2.50.0", serveProfile="ray-defaults"),
        r"ray.version 2.50.0: auth_mode token needs Ray 2.52\+",
    ),
    (
        "HAProxy ingress on Ray 2.54",
        "dev",
        edit("ray", version="2.54.0", grpc=False),
        r"ray.version 2.54.0 has no HAProxy ingress",
    ),
    (
        "GPU demand over the worker group",
        "dev",
        edit("apps", [1, "deployments", "Ranker"], numReplicas=3),
        r"apps: need 3 GPUs at peak replicas but rayService.workers.maxReplicas \(2\) x 1 GPUs.*holds 2",
    ),
    (
        "one replica wider than a node",
        "dev",
        edit("apps", [1, "deployments", "Ranker"], numGpus=2),
        r"apps\[recsys\]: a replica needs 2 GPUs, more than the 1 of one a3-highgpu-1g node",
    ),
    (
        "llm tensor parallelism wider than a node",
        "prod",
        edit("apps", [2, "args"], tensor_parallel_size=16),
        r"apps\[llm\].args.tensor_parallel_size: Input should be less than or equal to 8; got 16",
    ),
    (
        "llm app with deployment overrides",
        "prod",
        edit("apps", [2], deployments={"LLMServer": {"numGpus": 1}}),
        r"apps\[llm\].deployments: Ray Serve LLM names and sizes its own deployments",
    ),
    (
        "llm app without a model",
        "prod",
        lambda c: c[f"{NS}:apps"][2]["args"].pop("model_source"),
        r"apps\[llm\].args.model_source is required by the llm app; required: model_id, source, model_source",
    ),
    (
        "blue/green without headroom",
        "staging",
        edit(
            "apps", [1, "deployments", "Ranker"], autoscaling={"minReplicas": 1, "maxReplicas": 9}
        ),
        r"upgradeStrategy.type NewCluster starts a second cluster.*needs 18 GPUs but .* is 16",
    ),
    (
        "incremental upgrade without gateway",
        "dev",
        edit("rayService", upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"}),
        r"rayService.upgradeStrategy.gatewayClassName is required for NewClusterWithIncrementalUpgrade",
    ),
    (
        "incremental upgrade with a gRPC-only app",
        "dev",
        _grpc_only_app,
        r"NewClusterWithIncrementalUpgrade shifts HTTP traffic only; gRPC-only apps \['echo'\]",
    ),
    *(
        (
            f"old cluster deleted while our tier still sends it requests ({stack}, {delay} s)",
            stack,
            _deletion_delay(delay),
            rf"rayService.upgradeStrategy.oldClusterDeletionDelaySeconds \({delay}\) must be at "
            r"least 35: our tier keeps sending new requests to the old cluster's pods for up to 35 s "
            r"after KubeRay switches its serve Service \(DNS hold valid 5 s \+ hold obsolete 30 s\), "
            rf"and the last of them may wait apps\[{app}\].deadlineS {deadline} more; allowed: "
            rf">= {need}, or leave the key out for the derived default",
        )
        for stack, delay, app, deadline, need in [
            ("dev", 0, "echo", 30, 65),
            ("staging", 34, "echo", 30, 65),
            ("prod", 10, "llm", 300, 335),
        ]
    ),
    *(
        (
            f"old cluster deleted before its last request's deadline ({stack}, {delay} s)",
            stack,
            _deletion_delay(delay, *more),
            rf"rayService.upgradeStrategy.oldClusterDeletionDelaySeconds \({delay}\) must be at "
            rf"least {need}: apps\[{app}\].deadlineS {deadline}: a request admitted to the old "
            r"cluster just before our tier forgets it \(35 s after KubeRay switches its serve "
            rf"Service\) could be cut; allowed: >= {need}, or leave the key out for the derived default",
        )
        for stack, delay, more, app, deadline, need in [
            ("dev", 35, (), "echo", 30, 65),
            ("dev", 64, (), "echo", 30, 65),
            ("staging", 100, (edit("apps", [1], deadlineS=120),), "recsys", 120, 155),
            ("prod", 60, (), "llm", 300, 335),  # KubeRay's own default
            ("prod", 334, (), "llm", 300, 335),
        ]
    ),
    (
        "head fault tolerance without Redis",
        "prod",
        edit("rayService", ["faultTolerance"], memorystore=None),
        r"rayService.faultTolerance needs exactly one Redis when enabled is true.*got neither",
    ),
    (
        "0.0.0.0/0 authorized in prod",
        "prod",
        _drop_authorized_anywhere,
        r"cluster.authorizedNetworks must not contain 0.0.0.0/0 or ::/0 in prod; got 0.0.0.0/0",
    ),
    (
        "duplicate route prefix",
        "dev",
        edit("apps", [1], routePrefix="/echo"),
        r"apps\[recsys\].routePrefix '/echo' is already used by apps\[echo\]",
    ),
    (
        "route prefix haproxy.cfg cannot hold",
        "dev",
        edit("apps", [0], routePrefix="/echo?x=1"),
        r"apps\[0\].routePrefix: routePrefix must start with '/', hold only URL path characters .*"
        r"got '/echo\?x=1'",
    ),
    (
        "route prefix ending in '/'",
        "dev",
        edit("apps", [0], routePrefix="/echo/"),
        r"apps\[0\].routePrefix: .*not end with '/'; got '/echo/'",
    ),
    (
        "app name not DNS-1035",
        "dev",
        edit("apps", [0], name="Echo"),
        r"apps\[0\].name: app name must be lowercase letters, digits and '-'; got 'Echo'",
    ),
    (
        "cluster name too long for GKE",
        "dev",
        edit("cluster", name="c" * 41),
        r"cluster.name must be 1-40 lowercase letters, digits or '-', starting with a letter; got 'c{41}'",
    ),
    (
        "duplicate ingress ports",
        "dev",
        edit("ingress", grpcPort=80),
        r"ingress.grpcPort \(80\) is already used by ingress.httpPort",
    ),
    (
        "unknown key in a section",
        "dev",
        edit("gpuPool", minNode=1),
        r"gpuPool.minNode: unknown key \(value 1\); allowed keys: acceleratorCount, .*minNodes",
    ),
    (
        "unknown key under a camelCase section",
        "prod",
        edit("rayService", ["upgradeStrategy"], deletionDelay=90),
        r"rayService.upgradeStrategy.deletionDelay: unknown key \(value 90\); allowed keys: "
        r"acknowledgeNoGpuHeadroom, gatewayClassName, .*oldClusterDeletionDelaySeconds, .*type",
    ),
    (
        "unknown key two camelCase sections down",
        "prod",
        edit("ray", tuning={"llmDirectStream": False}),
        r"ray.tuning.llmDirectStream: unknown key \(value False\); allowed keys: .*llmDirectStreaming",
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
        edit("gpuPool", capacity={"mode": "preemptible"}),
        r"gpuPool.capacity: Input tag 'preemptible' .*expected tags: 'on-demand', 'spot', 'flex-start'",
    ),
    (
        "specific reservation without a name",
        "prod",
        edit("gpuPool", capacity={"mode": "reservation"}),
        r"gpuPool.capacity.name is required when affinity is 'specific'",
    ),
    (
        "flex-start longer than seven days",
        "dev",
        edit("gpuPool", capacity={"mode": "flex-start", "maxRunDurationHours": 200}),
        r"gpuPool.capacity.maxRunDurationHours: Input should be less than or equal to 168; got 200",
    ),
    (
        "queued provisioning",
        "staging",
        edit("gpuPool", capacity={"mode": "queued-provisioning"}, minNodes=0),
        r"gpuPool.capacity.mode queued-provisioning cannot serve a RayService: GKE gives such a pool "
        r"nodes only through ProvisioningRequests.*allowed: flex-start",
    ),
    (
        "compact placement across zones",
        "prod",
        edit("gpuPool", zones=["us-central1-a", "us-central1-b"]),
        r"gpuPool.compactPlacement needs exactly one zone.*got zones \['us-central1-a', 'us-central1-b'\]",
    ),
    (
        "overlapping CIDRs",
        "dev",
        edit("network", podsCidr="10.10.0.0/16"),
        r"network.subnetCidr \(10.10.0.0/20\) overlaps network.podsCidr \(10.10.0.0/16\)",
    ),
    (
        "GPUDirect on a shape without it",
        "dev",
        edit("network", gpudirect=True, gpudirectNetworksOnly=True),
        r"network.gpudirect needs a3-highgpu-8g or a3-megagpu-8g; gpuPool.machineType is a3-highgpu-1g",
    ),
    (
        "GPUDirect without acknowledging it is networks only",
        "prod",
        edit("network", gpudirect=True),
        r"network.gpudirect: true creates only the extra VPCs and node NICs; nothing on the "
        r"Kubernetes side uses them .*Set network.gpudirectNetworksOnly: true",
    ),
    (
        "GPUDirect acknowledgement without GPUDirect",
        "dev",
        edit("network", gpudirectNetworksOnly=True),
        r"network.gpudirectNetworksOnly acknowledges network.gpudirect, which is false",
    ),
    (
        "more workers than GPU nodes",
        "dev",
        edit("rayService", ["workers"], maxReplicas=3),
        r"rayService.workers.maxReplicas \(3\) must be <= gpuPool.maxNodes \(2\)",
    ),
    (
        "unpinned ingress image",
        "dev",
        edit("ingress", image="haproxy:latest"),
        r"ingress.image must be pinned to a version tag or a digest .*got 'haproxy:latest': tag 'latest'",
    ),
    (
        "untagged ingress image",
        "prod",
        edit("ingress", image="haproxy"),
        r"ingress.image must be pinned .*got 'haproxy': no tag",
    ),
    (
        "ingress image with a short digest",
        "staging",
        edit("ingress", image="haproxy:3.2.8-alpine@sha256:abc"),
        r"ingress.image must be pinned .*a digest must be sha256:<64 lowercase hex digits>",
    ),
    (
        "Ray image digest that is not a sha256",
        "prod",
        edit("ray", imageDigest="sha256:" + "A" * 64),
        r"ray.imageDigest must be sha256:<64 lowercase hex digits>",
    ),
    (
        "Ray image digest given as a tag",
        "dev",
        edit("ray", imageDigest="2.60.0-py311-gpu"),
        r"ray.imageDigest must be sha256:<64 lowercase hex digits> .*got '2.60.0-py311-gpu'",
    ),
    (
        "ingress open to the world in prod",
        "prod",
        edit("ingress", sourceRanges=["0.0.0.0/0"]),
        r"ingress.sourceRanges must not contain 0.0.0.0/0 or ::/0 in prod; got 0.0.0.0/0",
    ),
    (
        "no deletion protection in prod",
        "prod",
        edit("cluster", [], deletionProtection=False),
        r"cluster.deletionProtection must be true in prod; got false",
    ),
    (
        "llm app over gRPC",
        "prod",
        edit("apps", [2], protocols=["http", "grpc"]),
        r"apps\[llm\].protocols: the llm app serves the OpenAI HTTP API only",
    ),
    (
        "custom app without import path",
        "dev",
        edit("apps", [0], kind="custom"),
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
        edit("rayService", ["modelBucket"], bucket="My_Models"),
        r"rayService.modelBucket.bucket: bucket name 'My_Models' must be 3-63 lowercase letters, digits, "
        r"'-', '_' or '.', starting and ending with a letter or digit",
    ),
    (
        "model bucket mount path not absolute",
        "prod",
        edit("rayService", ["modelBucket"], mountPath="gcs/models"),
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
        edit("apps", [2, "args"], model_source="/gcs/models-v2/llama"),
        r"apps\[llm\].args.model_source '/gcs/models-v2/llama' must lie under "
        r"rayService.modelBucket.mountPath '/gcs/models', where bucket 'my-gcp-project-models' is mounted",
    ),
    (
        "bad KMS key",
        "prod",
        edit("cluster", kmsKey="gke-secrets"),
        r"cluster.kmsKey must be projects/P/locations/L/keyRings/R/cryptoKeys/K .*got 'gke-secrets'",
    ),
    # --- reliability: shutdown, drains, health checks, disruption budgets, head fault tolerance ---
    (
        "graceful shutdown as long as the drain",
        "staging",
        edit("apps", [0, "deployments", "Streamer"], gracefulShutdownTimeoutS=200),
        r"apps\[echo\].deployments.Streamer.gracefulShutdownTimeoutS \(200\) plus "
        r"apps\[echo\].replicaStartS \(30, the echo default\) must fit in "
        r"rayService.shutdown.drainDeadlineSeconds \(90; the pod's terminationGracePeriodSeconds is "
        r"120\): .*allowed: 0..60",
    ),
    (
        "graceful shutdown that leaves the replacement too little time",
        "prod",
        edit("apps", [0, "deployments", "Streamer"], gracefulShutdownTimeoutS=131),
        r"apps\[echo\].deployments.Streamer.gracefulShutdownTimeoutS \(131\) plus "
        r"apps\[echo\].replicaStartS \(30, the echo default\) must fit in .*allowed: 0..130",
    ),
    (
        "replica start longer than the drain leaves",
        "prod",
        edit("apps", [2], replicaStartS=200),
        r"rayService.shutdown.drainDeadlineSeconds \(160; .*\) must be at least 235 s for "
        r"apps\[llm\]: .*graceful shutdown to 35 s .*apps\[llm\].replicaStartS \(200\) fits in "
        r"between; allowed: 235..235, and terminationGracePeriodSeconds to 250",
    ),
    (
        "replica start longer than Ray's default shutdown leaves without direct ingress",
        "dev",
        lambda c: (
            c[f"{NS}:ray"].update(serveProfile="ray-defaults"),
            c[f"{NS}:apps"][0].update(replicaStartS=50),
        ),
        r"drainDeadlineSeconds \(65; .*\) must be at least 70 s for apps\[echo\]: a deployment "
        r"that sets no gracefulShutdownTimeoutS gets Ray's 20 s",
    ),
    (
        "replica start of zero",
        "dev",
        edit("apps", [0], replicaStartS=0),
        r"apps\[0\].replicaStartS: Input should be greater than or equal to 1; got 0",
    ),
    (
        "replica start in milliseconds",
        "dev",
        edit("apps", [1], replicaStartS=30000),
        r"apps\[1\].replicaStartS: Input should be less than or equal to 1800; got 30000",
    ),
    (
        "drain longer than the termination grace allows",
        "dev",
        edit(
            "rayService", shutdown={"terminationGracePeriodSeconds": 50, "drainDeadlineSeconds": 45}
        ),
        r"rayService.shutdown.drainDeadlineSeconds \(45\) must leave 15 s of "
        r"rayService.shutdown.terminationGracePeriodSeconds \(50\) for `ray stop`.*allowed: 1..35",
    ),
    (
        "termination grace shorter than the head needs",
        "dev",
        edit(
            "rayService", shutdown={"terminationGracePeriodSeconds": 20, "drainDeadlineSeconds": 5}
        ),
        r"rayService.shutdown.terminationGracePeriodSeconds \(20\) must be at least 30: the head "
        r"waits 15 s",
    ),
    (
        "drain shorter than the HAProxy ingress floor",
        "dev",
        edit(
            "rayService", shutdown={"terminationGracePeriodSeconds": 60, "drainDeadlineSeconds": 30}
        ),
        r"rayService.shutdown.drainDeadlineSeconds \(30; .*\) must be at least 65 s for "
        r"apps\[echo\]: with Ray's HAProxy \(direct\) ingress .*graceful shutdown to 35 s "
        r".*allowed: 65..65, and terminationGracePeriodSeconds to 80",
    ),
    (
        "drain that leaves an ingress replacement too little time",
        "staging",
        edit(
            "rayService",
            shutdown={"terminationGracePeriodSeconds": 120, "drainDeadlineSeconds": 64},
        ),
        r"rayService.shutdown.drainDeadlineSeconds \(64; .*\) must be at least 65 s for "
        r"apps\[echo\]: .*allowed: 65..105 \(or a lower replicaStartS\)",
    ),
    (
        "drain wait loop longer than the shutdown timeout",
        "dev",
        edit("apps", [0, "deployments", "Echo"], gracefulShutdownWaitLoopS=30),
        r"ray-serve-gke:apps\[0\].deployments.Echo: gracefulShutdownWaitLoopS must be <= "
        r"gracefulShutdownTimeoutS \(20, Ray's default\); got 30: .*allowed: 0..20",
    ),
    (
        "negative graceful shutdown timeout",
        "dev",
        edit("apps", [0, "deployments", "Echo"], gracefulShutdownTimeoutS=-1),
        r"apps\[0\].deployments.Echo.gracefulShutdownTimeoutS: Input should be greater than or "
        r"equal to 0; got -1",
    ),
    (
        "health check period of zero",
        "dev",
        edit("apps", [1, "deployments", "Ranker"], healthCheckPeriodS=0),
        r"apps\[1\].deployments.Ranker.healthCheckPeriodS: Input should be greater than 0; got 0",
    ),
    (
        "deadline of zero",
        "dev",
        edit("apps", [0], deadlineS=0),
        r"apps\[echo\].deadlineS must be between 1 and 300 seconds \(the tier's client timeout\); "
        r"got 0",
    ),
    (
        "deadline past the tier's client timeout",
        "dev",
        edit("apps", [1], deadlineS=301),
        r"apps\[recsys\].deadlineS must be between 1 and 300 seconds .*; got 301",
    ),
    (
        "deadline that is not whole seconds",
        "dev",
        edit("apps", [0], deadlineS=2.5),
        r"apps\[0\].deadlineS: Input should be a valid integer; got 2.5",
    ),
    (
        "health check that leaves a hung replica for Ray's two minutes",
        "dev",
        edit("apps", [0, "deployments", "Echo"], healthCheckPeriodS=10, healthCheckTimeoutS=30),
        r"apps\[echo\].deployments.Echo: healthCheckPeriodS \(10\) and healthCheckTimeoutS \(30\) "
        r"let a hung replica stall the app for 3 x \(10 \+ 30\) = 120 s, more than the 60 s allowed; "
        r"allowed: period \+ timeout <= 20 s",
    ),
    (
        "long health check period over the project's default timeout",
        "dev",
        edit("apps", [1, "deployments", "Ranker"], healthCheckPeriodS=30),
        r"apps\[recsys\].deployments.Ranker: healthCheckPeriodS \(30\) and healthCheckTimeoutS "
        r"\(\d+\) let a hung replica stall the app for 3 x \(30 \+ \d+\) = \d+ s",
    ),
    (
        "health check timeout that replaces busy replicas",
        "dev",
        edit("apps", [0, "deployments", "Streamer"], healthCheckTimeoutS=0.5),
        r"apps\[echo\].deployments.Streamer.healthCheckTimeoutS must be at least 1 s: a shorter one "
        r"replaces replicas that are only busy; got 0.5",
    ),
    (
        "PDB that blocks every drain",
        "prod",
        edit("rayService", ["workers"], pdbMinAvailable=2),
        r"rayService.workers.pdbMinAvailable \(2\) must be below rayService.workers.minReplicas "
        r"\(2\) or 0: .*every node drain and upgrade blocks; allowed: 0..1",
    ),
    (
        "PDB floor over a group that scales to zero",
        "dev",
        edit("rayService", ["workers"], pdbMinAvailable=1),
        r"rayService.workers.pdbMinAvailable \(1\) must be below rayService.workers.minReplicas "
        r"\(0\) or 0: .*allowed: 0$",
    ),
    (
        "unknown spread mode",
        "dev",
        edit("rayService", ["workers"], spread="zonal"),
        r"rayService.workers.spread: Input should be 'none', 'preferred' or 'required'; got 'zonal'",
    ),
    (
        "prod without head fault tolerance",
        "prod",
        edit("rayService", ["faultTolerance"], enabled=False),
        r"rayService.faultTolerance.enabled must be true in prod; got false",
    ),
    (
        "head fault tolerance on a Redis brought without its password",
        "staging",
        edit("rayService", faultTolerance={"enabled": True, "redisAddress": "10.1.2.3:6379"}),
        r"rayService.faultTolerance.redisPassword is required with redisAddress: .*got none",
    ),
]


def _env(stack_env: str) -> Callable[[dict], None]:
    return lambda c: c.update({f"{NS}:environment": stack_env})


# Mistakes that would plan with exit 0 and fail only at deploy without their rule, more than one per class.
DEPLOY_TIME_MISTAKES: list[tuple[str, str, Callable[[dict], None], str]] = [
    # resource quantities
    (
        "memory in GB",
        "dev",
        edit("rayService", ["workers"], memory="200GB"),
        r"rayService.workers.memory: must be a Kubernetes memory quantity .*32GB is not one\); got '200GB'",
    ),
    (
        "head memory with a space",
        "staging",
        edit("rayService", ["head"], memory="16 Gi"),
        r"rayService.head.memory: must be a Kubernetes memory quantity .*got '16 Gi'",
    ),
    (
        "cpu in cores",
        "prod",
        edit("rayService", ["workers"], cpu="20cores"),
        r"rayService.workers.cpu: must be a Kubernetes CPU quantity such as 500m, 4 or 2.5.*got '20cores'",
    ),
    (
        "zero head cpu",
        "dev",
        edit("rayService", ["head"], cpu=0),
        r"rayService.head.cpu: must be a Kubernetes CPU quantity .*positive.*got '0'",
    ),
    (
        "1.5 GPUs per replica",
        "staging",
        edit("apps", [1, "deployments", "Ranker"], numGpus=1.5),
        r"apps\[1\].deployments.Ranker.numGpus: .*numGpus above 1 must be a whole number.*"
        r"allowed: a fraction in \(0, 1\], or 2, 3, ...; got 1.5",
    ),
    (
        "2.25 GPUs per replica",
        "dev",
        edit("apps", [0, "deployments", "Echo"], numGpus=2.25),
        r"apps\[0\].deployments.Echo.numGpus: .*whole number.*got 2.25",
    ),
    # names of Kubernetes and GCP objects
    (
        "uppercase namespace",
        "dev",
        edit("rayService", [], namespace="Ray-Serve"),
        r"rayService.namespace: a Namespace name must be a DNS-1123 label.*got 'Ray-Serve'",
    ),
    (
        "namespace with a dot",
        "prod",
        lambda c: c.update({f"{NS}:kuberay": {"namespace": "kuberay.system"}}),
        r"kuberay.namespace: a Namespace name must be a DNS-1123 label.*got 'kuberay.system'",
    ),
    (
        "namespace over 63 characters",
        "staging",
        edit("rayService", [], namespace="n" * 64),
        r"rayService.namespace: a Namespace name must be a DNS-1123 label: at most 63",
    ),
    (
        "TLS secret with an underscore",
        "staging",
        edit("ingress", tlsSecret="serving_tls"),
        r"ingress.tlsSecret: a Secret name must be a DNS-1123 subdomain.*got 'serving_tls'",
    ),
    (
        "Redis password Secret in capitals",
        "prod",
        edit(
            "rayService",
            faultTolerance={
                "enabled": True,
                "redisAddress": "10.0.0.3:6379",
                "redisPassword": {"name": "Redis-Auth", "key": "password"},
            },
        ),
        r"rayService.faultTolerance.redisPassword.name: a Secret name must be a DNS-1123 subdomain.*got 'Redis-Auth'",
    ),
    (
        "Redis password key with a slash",
        "prod",
        edit(
            "rayService",
            faultTolerance={
                "enabled": True,
                "redisAddress": "10.0.0.3:6379",
                "redisPassword": {"name": "ray-redis", "key": "auth/string"},
            },
        ),
        r"rayService.faultTolerance.redisPassword.key: a Secret key must be .*got 'auth/string'",
    ),
    (
        "gateway class with capitals",
        "dev",
        edit(
            "rayService",
            upgradeStrategy={
                "type": "NewClusterWithIncrementalUpgrade",
                "gatewayClassName": "GKE_L7",
            },
        ),
        r"rayService.upgradeStrategy.gatewayClassName: a GatewayClass name must be a DNS-1123 subdomain.*got 'GKE_L7'",
    ),
    (
        "node pool name too long",
        "dev",
        edit("gpuPool", name="h100-serving-pool-for-the-team"),
        r"gpuPool.name must be 1-27 lower-case letters.*got 'h100-serving-pool-for-the-team'",
    ),
    (
        "env var name with a space",
        "dev",
        edit("ray", [], extraEnv={"MY VAR": "x"}),
        r"ray.extraEnv.MY VAR.\[key\]: an environment variable name must be",
    ),
    # image repository carrying its own tag or digest
    (
        "image repository with a tag",
        "dev",
        edit("ray", imageRepository="us-docker.pkg.dev/p/r/ray-serve-gke:v3"),
        r"ray.imageRepository must be a repository without a tag or digest .*got "
        r"'us-docker.pkg.dev/p/r/ray-serve-gke:v3': remove ':v3', e.g. 'us-docker.pkg.dev/p/r/ray-serve-gke'",
    ),
    (
        "image repository with a digest",
        "prod",
        edit("ray", imageRepository="us-docker.pkg.dev/p/r/ray@sha256:" + "a" * 64),
        r"ray.imageRepository must be a repository without a tag or digest.*remove '@sha256:a{64}'",
    ),
    (
        "image repository with a registry port and a tag",
        "staging",
        edit("ray", imageRepository="localhost:5000/ray:2.60.0"),
        r"ray.imageRepository must be a repository without a tag.*remove ':2.60.0', e.g. 'localhost:5000/ray'",
    ),
    (
        "image repository that is not one",
        "dev",
        edit("ray", imageRepository="Us-Docker/Ray Serve"),
        r"ray.imageRepository: .*is not an image reference",
    ),
    # app args and deployments against the apps' own code (app/contracts.py)
    (
        "echo args key misspelt",
        "dev",
        edit("apps", [0, "args"], payload_sise=10),
        r"apps\[echo\].args.payload_sise: unknown key for the echo app; allowed: payload_size, "
        r"max_payload_size, .*handle_serialization",
    ),
    (
        "recsys args value of the wrong type",
        "staging",
        edit("apps", [1, "args"], device="tpu"),
        r"apps\[recsys\].args.device: Input should be 'auto', 'cpu' or 'cuda'; got 'tpu'",
    ),
    (
        "recsys localArgs key misspelt",
        "dev",
        edit("apps", [1, "localArgs"], cardinalty=10),
        r"apps\[recsys\].localArgs.cardinalty: unknown key for the recsys app; allowed: rows, ",
    ),
    (
        "echo deployment the app does not define",
        "dev",
        edit("apps", [0, "deployments"], EchoServer={"numReplicas": 1}),
        r"apps\[echo\].deployments.EchoServer: the echo app defines no deployment 'EchoServer' .*"
        r"allowed: EchoIngress, Echo, Streamer",
    ),
    (
        "recsys deployment in lower case",
        "prod",
        edit("apps", [1, "deployments"], ranker={"numReplicas": 1}),
        r"apps\[recsys\].deployments.ranker: the recsys app defines no deployment 'ranker'.*allowed: RecsysIngress, Ranker",
    ),
    (
        "llm min replicas over max",
        "prod",
        edit("apps", [2, "args"], min_replicas=3, max_replicas=2),
        r"apps\[llm\].args: min_replicas \(3\) must be <= max_replicas \(2\)",
    ),
    (
        "llm args key from another app",
        "prod",
        edit("apps", [2, "args"], max_batch_size=8),
        r"apps\[llm\].args.max_batch_size: unknown key for the llm app; allowed: model_id, source",
    ),
    # environment vs stack
    (
        "prod file saying staging",
        "prod",
        _env("staging"),
        r"environment 'staging' does not match stack 'prod': the stack name must be 'staging' or "
        r"start with 'staging-'.*set ray-serve-gke:environmentOverride: <why>",
    ),
    (
        "staging file saying dev",
        "staging",
        _env("dev"),
        r"environment 'dev' does not match stack 'staging'",
    ),
    (
        "override on a matching stack",
        "dev",
        lambda c: c.update({f"{NS}:environmentOverride": "no reason at all"}),
        r"environmentOverride is set but stack 'dev' matches environment 'dev'; remove it",
    ),
    # IPv6 "anywhere"
    (
        "::/0 authorized in prod",
        "prod",
        lambda c: c[f"{NS}:cluster"]["authorizedNetworks"].append({"cidr": "::/0", "name": "v6"}),
        r"cluster.authorizedNetworks must not contain 0.0.0.0/0 or ::/0 in prod; got ::/0",
    ),
    (
        "ingress open to IPv6 in prod",
        "prod",
        edit("ingress", sourceRanges=["10.0.0.0/8", "0::/0"]),
        r"ingress.sourceRanges must not contain 0.0.0.0/0 or ::/0 in prod; got ::/0",
    ),
    (
        "IPv6 pod range",
        "dev",
        edit("network", [], podsCidr="fd00::/64"),
        r"network.podsCidr: must be an IPv4 CIDR .*got 'fd00::/64'",
    ),
]
BAD_CONFIGS += DEPLOY_TIME_MISTAKES

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
# What a first `pulumi up` would trip over: what the stack says it brings or creates, more than one
# instance of each rule.
FIRST_DEPLOY_MISTAKES: list[tuple[str, str, Callable[[dict], None], str]] = [
    (
        "queued provisioning in dev",
        "dev",
        edit("gpuPool", capacity={"mode": "queued-provisioning"}, minNodes=0),
        r"queued-provisioning cannot serve a RayService",
    ),
    (
        "a specific reservation of unknown size",
        "prod",
        edit("gpuPool", ["capacity"], nodes=None),
        r"gpuPool.capacity.nodes is required when affinity is 'specific'",
    ),
    (
        "a reservation smaller than the pool's peak",
        "prod",
        edit("gpuPool", ["capacity"], nodes=3),
        r"gpuPool.maxNodes \(4\) must be <= gpuPool.capacity.nodes \(3\): a specific reservation "
        r"never falls back",
    ),
    (
        "a one-node reservation under a two-node pool",
        "staging",
        edit(
            "gpuPool",
            capacity={"mode": "reservation", "affinity": "specific", "name": "r", "nodes": 1},
        ),
        r"gpuPool.maxNodes \(2\) must be <= gpuPool.capacity.nodes \(1\)",
    ),
    (
        "Memorystore and a Redis brought",
        "prod",
        edit(
            "rayService",
            ["faultTolerance"],
            redisAddress="10.0.0.3:6379",
            redisPassword={"name": "ray-redis", "key": "password"},
        ),
        r"rayService.faultTolerance needs exactly one Redis when enabled is true.*got both",
    ),
    (
        "Memorystore with a password Secret",
        "prod",
        edit("rayService", ["faultTolerance"], redisPassword={"name": "r", "key": "password"}),
        r"rayService.faultTolerance.redisPassword must be empty with memorystore",
    ),
    (
        "a Redis brought without its password",
        "prod",
        edit("rayService", ["faultTolerance"], memorystore=None, redisAddress="10.0.0.3:6379"),
        r"rayService.faultTolerance.redisPassword is required with redisAddress",
    ),
    (
        "a certificate without its key",
        "prod",
        edit("ingress", tlsCertificate=PEM_CERT),
        r"ingress.tlsKey is required with ingress.tlsCertificate",
    ),
    (
        "a key without its certificate",
        "prod",
        edit("ingress", tlsKey=PEM_KEY),
        r"ingress.tlsCertificate is required with ingress.tlsKey",
    ),
    (
        "a certificate with no Secret to hold it",
        "dev",
        edit("ingress", tlsCertificate=PEM_CERT, tlsKey=PEM_KEY),
        r"ingress.tlsCertificate needs ingress.tlsSecret",
    ),
    (
        "a key that is not PEM",
        "prod",
        edit("ingress", tlsCertificate=PEM_CERT, tlsKey="c2VjcmV0LWtleQ=="),
        r"ingress.tlsKey must be PEM text holding PRIVATE KEY; got text without it \(the value is "
        r"not shown\)",
    ),
    (
        "a certificate that is not PEM",
        "prod",
        edit("ingress", tlsCertificate="MIIB...", tlsKey=PEM_KEY),
        r"ingress.tlsCertificate must be PEM text holding BEGIN CERTIFICATE",
    ),
]
FIRST_DEPLOY_MISTAKES += [
    (
        f"extraEnv setting {key}, which the cluster sets",
        "dev",
        lambda c, key=key: c[f"{NS}:ray"].setdefault("extraEnv", {}).update({key: "0"}),
        rf"ray.extraEnv.{key} is set by the cluster itself .* would be ignored",
    )
    for key in ("RAY_SERVE_LOG_TO_STDERR", "RAY_SERVE_DEFAULT_HTTP_HOST")
]
BAD_CONFIGS += FIRST_DEPLOY_MISTAKES

# What a stack means, not only its shape: things that must fit what hosts them, and units.
MEANING_MISTAKES: list[tuple[str, str, Callable[[dict], None], str]] = [
    (
        "a replica wider than a worker pod",
        "dev",
        edit("apps", [0, "deployments", "Echo"], numCpus=24),
        r"apps\[echo\].deployments.Echo.numCpus \(24\) must fit one Ray worker pod: "
        r"rayService.workers.cpu is '20'.*allowed: at most 20",
    ),
    (
        "a replica wider than a staging worker",
        "staging",
        edit("apps", [0, "deployments", "Echo"], numCpus=300),
        r"apps\[echo\].deployments.Echo.numCpus \(300\) must fit one Ray worker pod",
    ),
    (
        "more replica CPUs than the workers hold",
        "dev",
        edit("apps", [0, "deployments", "Echo"], numReplicas=50),
        r"apps: their replicas ask at least 5\d CPUs at peak .* holds 40",
    ),
    (
        "an autoscaled ranker past the workers' CPUs",
        "dev",
        edit(
            "apps",
            [1, "deployments", "Ranker"],
            numReplicas=None,
            numCpus=2,
            numGpus=0,
            autoscaling={"minReplicas": 1, "maxReplicas": 30},
        ),
        r"apps: their replicas ask at least 6\d CPUs at peak",
    ),
    (
        "embedding tables past the worker's memory",
        "dev",
        edit("apps", [1, "deployments", "Ranker"], numGpus=0),
        None,  # filled below: the dev ranker on CPU with a huge cardinality
    ),
    (
        "embedding tables past an H100",
        "dev",
        edit("apps", [1], args={"cardinality": 20_000_000}),
        r"apps\[recsys\].args.cardinality \(20000000\) makes 124.0 GiB of embedding tables per "
        r"Ranker replica .* more than 1 x 80 GB of H100 memory \(80.0 GiB\); allowed: a "
        r"cardinality of at most 12905550$",
    ),
    (
        "more Ray pods than the tier's backend slots",
        "staging",
        edit("rayService", ["workers"], maxReplicas=8),
        r"rayService.workers.maxReplicas \(8\) makes up to 18 Ray pods \(a NewCluster upgrade runs "
        r"two clusters\), but our tier routes to at most 16",
    ),
    (
        "ten workers past the slots in dev",
        "dev",
        edit("rayService", ["workers"], maxReplicas=10),
        r"makes up to 22 Ray pods .* allowed: maxReplicas <= 7",
    ),
    # units and scales
    (
        "an upscale delay in milliseconds",
        "dev",
        edit(
            "apps",
            [1, "deployments", "Ranker"],
            numReplicas=None,
            autoscaling={"minReplicas": 1, "maxReplicas": 2, "upscaleDelayS": 30000},
        ),
        r"upscaleDelayS: Input should be less than or equal to 3600; got 30000",
    ),
    (
        "a downscale delay in milliseconds",
        "dev",
        edit(
            "apps",
            [1, "deployments", "Ranker"],
            numReplicas=None,
            autoscaling={"minReplicas": 1, "maxReplicas": 2, "downscaleDelayS": 600000},
        ),
        r"downscaleDelayS: Input should be less than or equal to 3600",
    ),
    (
        "stream pacing in milliseconds",
        "dev",
        edit("apps", [0], args={"ttft_s": 200}),
        r"apps\[echo\].args.ttft_s.*less than or equal to 60",
    ),
    (
        "token pacing in milliseconds",
        "staging",
        edit("apps", [0], args={"tpot_s": 100}),
        r"apps\[echo\].args.tpot_s.*less than or equal to 60",
    ),
    (
        "an error-rate gate of 1",
        "dev",
        edit("smoke", maxErrorRate=1),
        r"smoke.maxErrorRate: Input should be less than 1; got 1",
    ),
    (
        "an error-rate gate as a percentage",
        "staging",
        edit("smoke", maxErrorRate=5),
        r"smoke.maxErrorRate: Input should be less than 1; got 5",
    ),
    (
        "a p99 gate in seconds",
        "dev",
        edit("smoke", p99Ms=0.5),
        r"smoke.p99Ms: Input should be greater than or equal to 1; got 0.5",
    ),
    (
        "a TTFT gate in seconds",
        "prod",
        edit("smoke", ["llm"], ttftMs=0.2),
        r"smoke.llm.ttftMs: Input should be greater than or equal to 1; got 0.2",
    ),
    (
        "a local p99 gate in seconds",
        "prod",
        edit("smoke", ["localSlo"], p99Ms=0.6),
        r"smoke.localSlo.p99Ms: Input should be greater than or equal to 1; got 0.6",
    ),
    (
        "a local error-rate gate as a percentage",
        "dev",
        edit("smoke", localSlo={"maxErrorRate": 2}),
        r"smoke.localSlo.maxErrorRate: Input should be less than 1; got 2",
    ),
    (
        "a local TTFT gate in seconds",
        "prod",
        edit("smoke", ["localSlo", "llm"], ttftMs=0.5),
        r"smoke.localSlo.llm.ttftMs: Input should be greater than or equal to 1; got 0.5",
    ),
    (
        "a local request length",
        "prod",
        edit("smoke", ["localSlo", "llm"], inputTokens=64),
        r"smoke.localSlo.llm.inputTokens: a local run sends the cluster's request "
        r"\(smoke.llm.inputTokens\).*allowed keys: concurrency, ttftMs, tpotMs",
    ),
    (
        "an unknown local SLO key",
        "staging",
        edit("smoke", localSlo={"p99ms": 900}),
        r"smoke.localSlo.p99ms: unknown key \(value 900\); allowed keys: concurrency, llm, "
        r"maxErrorRate, p99Ms",
    ),
    (
        "an unknown local llm SLO key",
        "prod",
        edit("smoke", ["localSlo", "llm"], itlMs=10),
        r"smoke.localSlo.llm.itlMs: unknown key \(value 10\); allowed keys: concurrency, tpotMs, "
        r"ttftMs",
    ),
    (
        "a local llm SLO where the llm app needs a GPU",
        "prod",
        lambda c: c[f"{NS}:apps"][-1].update(localArgs={}),
        r"smoke.localSlo.llm sets the llm objectives of a local run, but no llm app runs on one: "
        r"its llm apps \(llm\) need a GPU; give one localArgs device: cpu, or remove",
    ),
    (
        "a local llm SLO on a stack without an llm app",
        "staging",
        edit("smoke", localSlo={"llm": {"ttftMs": 3000}}),
        r"smoke.localSlo.llm sets the llm objectives of a local run, but no llm app runs on one: "
        r"it has no llm app",
    ),
    (
        "a local llm SLO where the llm app stays on the GPU locally",
        "prod",
        lambda c: c[f"{NS}:apps"][-1]["localArgs"].update(device="gpu"),
        r"smoke.localSlo.llm sets the llm objectives.*its llm apps \(llm\) need a GPU",
    ),
    (
        "an empty local SLO",
        "dev",
        edit("smoke", localSlo={}),
        r"smoke.localSlo sets nothing; remove it, or set one of concurrency, p99Ms, maxErrorRate, "
        r"llm",
    ),
    (
        "an empty local llm SLO",
        "prod",
        edit("smoke", ["localSlo"], llm={}),
        r"smoke.localSlo.llm sets nothing; remove it, or set one of concurrency, ttftMs, tpotMs",
    ),
    (
        "a local concurrency of 0",
        "staging",
        edit("smoke", localSlo={"concurrency": 0}),
        r"smoke.localSlo.concurrency: Input should be greater than or equal to 1; got 0",
    ),
    (
        "worker CPUs in millicores",
        "dev",
        edit("rayService", ["workers"], cpu="500m"),
        r"rayService.workers.cpu: .*must be at least 1 CPU for a Ray pod .*got '500m'",
    ),
    (
        "head CPUs in millicores",
        "staging",
        edit("rayService", ["head"], cpu="100m"),
        r"rayService.head.cpu: .*must be at least 1 CPU for a Ray pod",
    ),
    (
        "worker memory in mebibytes",
        "dev",
        edit("rayService", ["workers"], memory="200Mi"),
        r"rayService.workers.memory: .*must be at least 1Gi for a Ray pod .*got '200Mi'",
    ),
    (
        "head memory in mebibytes",
        "prod",
        edit("rayService", ["head"], memory="512Mi"),
        r"rayService.head.memory: .*must be at least 1Gi",
    ),
]
MEANING_MISTAKES[4] = (
    "embedding tables past the worker's memory",
    "dev",
    lambda c: (
        edit("apps", [1, "deployments", "Ranker"], numGpus=0)(c),
        edit("apps", [1], args={"cardinality": 1_000_000_000})(c),
    ),
    r"apps\[recsys\].args.cardinality \(1000000000\) makes 6198.9 GiB of embedding tables .* more "
    r"than rayService.workers.memory \(200.0 GiB\)",
)
BAD_CONFIGS += MEANING_MISTAKES


def _ray_llm_app(**app: Any) -> Callable[[dict], None]:
    """Add a custom app that deploys Ray Serve LLM's OpenAI builder itself (one model, `app` keys
    over it): the llm app's args cannot reach Ray's direct-streaming refusals, this one's can."""

    def mutate(config: dict) -> None:
        config[f"{NS}:apps"].append(
            {
                "name": "chat",
                "kind": "custom",
                "routePrefix": "/chat",
                "importPath": "ray.serve.llm:build_openai_app",
                "protocols": ["http"],
                "args": {
                    "llm_configs": [
                        {"model_loading_config": {"model_id": "chat-model", "model_source": "/m"}}
                    ]
                },
                **app,
            }
        )

    return mutate


# Ray Serve LLM's direct streaming (`serveProfile: tuned`'s ray.tuning.llmDirectStreaming), refused
# where Ray would refuse the app at deploy (infra/serve_rules.py).
DIRECT_STREAMING_MISTAKES: list[tuple[str, str, Callable[[dict], None], str]] = [
    (
        "direct streaming with Ray's HAProxy turned off",
        "prod",
        edit("ray", extraEnv={"RAY_SERVE_ENABLE_HA_PROXY": "0"}),
        r"ray.tuning.llmDirectStreaming builds apps\[llm\] in Ray Serve LLM's direct streaming, "
        r"which needs Ray's HAProxy ingress \(RAY_SERVE_ENABLE_HA_PROXY=1\), but "
        r"ray.extraEnv.RAY_SERVE_ENABLE_HA_PROXY turns it off.*allowed: .*or set "
        r"ray.tuning.llmDirectStreaming: false",
    ),
    (
        "direct streaming by extraEnv under Ray's defaults",
        "staging",
        lambda c: (
            edit(
                "ray",
                serveProfile="ray-defaults",
                grpc=False,
                extraEnv={"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"},
            )(c),
            _ray_llm_app()(c),
        ),
        r"ray.extraEnv.RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING builds apps\[chat\] .* but "
        r"serveProfile ray-defaults runs Ray's Python proxy.*or remove "
        r"ray.extraEnv.RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING",
    ),
    (
        "OpenAiIngress overridden under direct streaming",
        "dev",
        _ray_llm_app(deployments={"OpenAiIngress": {"numReplicas": 2}}),
        r"apps\[chat\].deployments.OpenAiIngress is set, but under ray.tuning.llmDirectStreaming "
        r"\(Ray Serve LLM's direct streaming\) the app has no OpenAiIngress deployment.*allowed: "
        r"configure LLMServer:chat-model instead, or set ray.tuning.llmDirectStreaming: false",
    ),
    (
        "two models in one app under direct streaming",
        "prod",
        _ray_llm_app(
            args={
                "llm_configs": [
                    {"model_loading_config": {"model_id": m, "model_source": "/m"}}
                    for m in ("a", "b")
                ]
            }
        ),
        r"apps\[chat\].args.llm_configs has 2 models, but under ray.tuning.llmDirectStreaming.*"
        r"allowed: one LLM config per app",
    ),
]
BAD_CONFIGS += DIRECT_STREAMING_MISTAKES


@pytest.mark.parametrize("stack", STACKS)
def test_direct_streaming_takes_rays_builder_apps_it_can_build(stack: str):
    """The same custom apps are fine with the server's deployment configured, or the mode off."""
    server = _ray_llm_app(deployments={"LLMServer:chat-model": {"numReplicas": 2}})
    assert parse_stack_config(stack, mutated(stack, server)).ray.llm_direct_streaming
    ingress = _ray_llm_app(deployments={"OpenAiIngress": {"numReplicas": 2}})
    off = edit("ray", tuning={"llmDirectStreaming": False})
    assert not parse_stack_config(stack, mutated(stack, ingress, off)).ray.llm_direct_streaming


@pytest.mark.parametrize(("stack", "mutate", "pattern"), cases(BAD_CONFIGS))
def test_bad_config_is_rejected_with_key_value_and_allowed(stack, mutate, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_stack_config(stack, mutated(stack, mutate))


@pytest.mark.mocks
@pytest.mark.parametrize(("stack", "mutate", "pattern"), cases(BAD_CONFIGS))
def test_bad_config_registers_nothing(stack, mutate, pattern):
    """The program validates first: under the engine's mocks, not one resource reaches the monitor."""
    inventory = Inventory()
    with pytest.raises(ConfigError, match=pattern):
        run_with_mocks(run_program, stack=stack, config=mutated(stack, mutate), inventory=inventory)
    assert inventory.resources == []


@pytest.mark.parametrize("stack", STACKS)
def test_a_local_slo_keeps_the_clusters_objectives_it_does_not_set(stack: str):
    smoke = load_stack_config(stack).smoke
    local = smoke.local_slo
    if local is None:
        return
    assert local.p99_ms is None or local.p99_ms >= 1
    # lengths are never the local block's: the local context check reads smoke.llm's
    assert not hasattr(local.llm, "input_tokens") and not hasattr(local.llm, "output_tokens")


def test_prod_ships_a_local_slo_and_other_stacks_may_leave_it_out():
    assert load_stack_config("prod").smoke.local_slo is not None
    dev = parse_stack_config("dev", mutated("dev", edit("smoke", localSlo={"p99Ms": 1500})))
    assert dev.smoke.local_slo is not None and dev.smoke.local_slo.p99_ms == 1500
    assert dev.smoke.p99_ms == 1000 and dev.smoke.local_slo.llm is None


def test_at_least_twenty_distinct_validators():
    assert len({pattern for *_, pattern in BAD_CONFIGS}) >= 20


@pytest.mark.parametrize(
    ("model_source", "problem"),
    [
        ("/gcs/models/llama/", None),
        ("/gcs/models/a/b", None),
        ("/gcs/models/../etc", r"must lie under rayService.modelBucket.mountPath"),
        ("/gcs/models", r"is the mount point of rayService.modelBucket itself"),
        ("/gcs/models/", r"is the mount point of rayService.modelBucket itself"),
    ],
)
def test_llm_weights_under_the_mount_are_compared_as_paths(model_source: str, problem: str | None):
    config = mutated("prod", edit("apps", [2, "args"], model_source=model_source))
    if problem is None:
        assert parse_stack_config("prod", config).ray_service.model_bucket is not None
    else:
        with pytest.raises(ConfigError, match=problem):
            parse_stack_config("prod", config)


def test_every_problem_is_reported_at_once():
    config = mutated("prod", edit("gpuPool", minNodes=0))
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
    assert (
        cfg.RAY_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
        == constants.RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
    )
    assert (
        cfg.RAY_DIRECT_INGRESS_SHUTDOWN_BUFFER_S
        == constants.RAY_SERVE_DIRECT_INGRESS_SHUTDOWN_BUFFER_S
    )
    assert cfg.RAY_HEALTH_CHECK_PERIOD_S == constants.DEFAULT_HEALTH_CHECK_PERIOD_S
    assert cfg.RAY_HEALTH_CHECK_TIMEOUT_S == constants.DEFAULT_HEALTH_CHECK_TIMEOUT_S
    assert cfg.RAY_HEALTH_CHECK_FAILURES == constants.REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD


@pytest.mark.parametrize(
    ("ray", "drain_ok"),
    [
        ({"serveProfile": "ray-defaults"}, 50),  # no floor: Ray's 20 s + 30 s to start
        ({"extraEnv": {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "10"}}, 45),  # 15 + 30
    ],
    ids=["ray-defaults", "lowered-drain-period"],
)
def test_the_ingress_drain_floor_follows_the_ray_flags(ray: dict[str, Any], drain_ok: int):
    shutdown = {"terminationGracePeriodSeconds": 70, "drainDeadlineSeconds": drain_ok}
    config = mutated("dev", edit("rayService", shutdown=shutdown))
    config[f"{NS}:ray"].update(ray)
    parsed = parse_stack_config("dev", config)
    assert parsed.ray_service.shutdown.drain_deadline_seconds == drain_ok


def test_shutdown_and_pdb_defaults_fit_together():
    config = mutated("dev", lambda c: c[f"{NS}:rayService"].pop("shutdown"))
    shutdown = parse_stack_config("dev", config).ray_service.shutdown
    assert (shutdown.termination_grace_period_seconds, shutdown.drain_deadline_seconds) == (90, 70)
    for floor, expect in [(0, 0), (1, 0), (2, 1), (3, 2)]:
        workers = {"minReplicas": floor, "maxReplicas": 4}
        config = mutated("prod", edit("rayService", ["workers"], **workers))
        config[f"{NS}:rayService"]["workers"].pop("pdbMinAvailable")
        config[f"{NS}:gpuPool"]["minNodes"] = max(floor, 1)
        if floor == 0:
            config[f"{NS}:environment"] = "staging"  # prod may not scale to zero
            config[f"{NS}:environmentOverride"] = "a staging copy of prod's shape"
        assert parse_stack_config("prod", config).ray_service.workers.min_available == expect


# --- what the new rules still accept ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "mutate"),
    [
        ("dev", edit("apps", [1, "deployments", "Ranker"], numGpus=0.5)),  # a share of one GPU
        ("staging", edit("apps", [1, "deployments", "Ranker"], numGpus=2)),  # whole GPUs
        (
            "dev",
            edit("rayService", ["workers"], cpu=20, memory="214748364800"),
        ),  # numbers are quantities
        ("dev", edit("rayService", ["head"], cpu="1500m", memory="8G")),
        ("dev", edit("ingress", sourceRanges=["10.0.0.0/8", "2001:db8::/32"])),  # IPv6 client range
        ("prod", edit("ray", imageRepository="localhost:5000/team/ray-serve-gke")),  # port, no tag
        ("prod", edit("apps", [2, "args"], min_replicas=2, max_replicas=2)),
        ("dev", edit("apps", [0], deadlineS=300)),  # the tier's client timeout itself
        (
            "dev",
            edit("apps", [0, "deployments", "Echo"], healthCheckPeriodS=5, healthCheckTimeoutS=15),
        ),
        (
            "prod",
            lambda c: c.update(
                {
                    f"{NS}:environment": "staging",
                    f"{NS}:environmentOverride": "a prod-sized rehearsal",
                }
            ),
        ),
    ],
    ids=[
        "half-gpu",
        "two-gpus",
        "numeric-quantities",
        "milli-and-decimal",
        "ipv6-range",
        "registry-port",
        "llm-min-equals-max",
        "longest-deadline",
        "hung-bound-at-the-maximum",
        "acknowledged-override",
    ],
)
def test_what_deploys_still_plans(stack: str, mutate: Callable[[dict], None]):
    parse_stack_config(stack, mutated(stack, mutate))


# --- how long the old cluster stays after an upgrade --------------------------------------------


def _longest_deadline(config: dict) -> int:
    return max(app.get("deadlineS", 30) for app in config[f"{NS}:apps"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_derived_deletion_delay_outlasts_the_tiers_last_request(stack: str):
    """Unset, the delay is KubeRay's 60 s raised to the tier's forget time (35 s) plus the longest
    deadline in the stack file (prod's llm app: 300 s -> 335), and every stack renders it."""
    from components.render.rayservice import KUBERAY_CLUSTER_DELETION_DELAY_S
    from infra.rendered import render_stack
    from infra.specs import cluster_deletion_delay_s

    expected = max(KUBERAY_CLUSTER_DELETION_DELAY_S, 35 + _longest_deadline(read_stack_file(stack)))
    config = load_stack_config(stack)
    assert config.ray_service.upgrade_strategy.old_cluster_deletion_delay_seconds is None
    assert cluster_deletion_delay_s(config) == expected
    assert render_stack(config).rayservice["spec"]["rayClusterDeletionDelaySeconds"] == expected
    assert expected == {"dev": 65, "staging": 65, "prod": 335}[stack]


@pytest.mark.parametrize("stack", STACKS)
def test_the_tiers_forget_time_is_what_its_haproxy_cfg_holds(stack: str):
    """The delay is derived from the same DNS holds the tier's rendered haproxy.cfg carries."""
    from infra.rendered import render_stack
    from infra.specs import tier_backends

    config = load_stack_config(stack)
    text = render_stack(config).tier["config"]["data"]["haproxy.cfg"]
    holds = re.findall(r"^    hold (valid|obsolete) (\d+)s$", text, re.MULTILINE)
    assert sorted(holds) == [("obsolete", "30"), ("valid", "5")]
    assert tier_backends(config).forget_s == sum(int(seconds) for _, seconds in holds) == 35


@pytest.mark.parametrize(
    ("stack", "delay", "more"),
    [
        ("dev", 65, {}),  # the floor itself
        ("staging", 600, {}),
        ("prod", 335, {}),
        ("prod", 3600, {}),
        ("dev", 45, {"deadlines": 10}),  # short deadlines: below KubeRay's 60 s is allowed
    ],
    ids=["dev-floor", "staging-longer", "prod-floor", "prod-hour", "dev-short-deadlines"],
)
def test_an_explicit_deletion_delay_at_or_above_the_floor_is_rendered(
    stack: str, delay: int, more: dict[str, int]
):
    from infra.rendered import render_stack
    from infra.specs import cluster_deletion_delay_s

    config = mutated(stack, _deletion_delay(delay))
    if "deadlines" in more:
        for app in config[f"{NS}:apps"]:
            app["deadlineS"] = more["deadlines"]
    parsed = parse_stack_config(stack, config)
    assert parsed.ray_service.upgrade_strategy.old_cluster_deletion_delay_seconds == delay
    assert cluster_deletion_delay_s(parsed) == delay
    assert render_stack(parsed).rayservice["spec"]["rayClusterDeletionDelaySeconds"] == delay


@pytest.mark.parametrize("stack", STACKS)
def test_without_upgrades_no_old_cluster_and_no_deletion_delay(stack: str):
    """`type: None` never starts a second cluster: no old one to delete, so KubeRay gets no delay."""
    from infra.rendered import render_stack

    parsed = parse_stack_config(
        stack, mutated(stack, edit("rayService", upgradeStrategy={"type": "None"}))
    )
    assert "rayClusterDeletionDelaySeconds" not in render_stack(parsed).rayservice["spec"]


def test_a_stack_named_after_its_environment_with_a_suffix_needs_no_override():
    assert parse_stack_config("prod-eu", read_stack_file("prod")).environment == "prod"


def test_checking_a_stack_needs_no_engine_nor_ray():
    """Loading and checking every stack file (the rendered graph and the scheduling check included)
    imports no Pulumi SDK, and neither Ray nor torch."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from infra.stack_file import load_stack_config\n"
        "from infra.scheduling import scheduling_plan\n"
        f"for stack in {STACKS!r}:\n"
        "    scheduling_plan(load_stack_config(stack))\n"
        "heavy = ('pulumi', 'pulumi_gcp', 'pulumi_kubernetes', 'ray', 'torch', 'vllm')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- no secret in any message -------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "mutate", "pattern"), cases(BAD_CONFIGS))
def test_no_message_shows_an_extra_env_value(stack, mutate, pattern):
    config = with_secrets(mutated(stack, mutate))
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(stack, config)
    assert SECRET not in str(raised.value)


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
    config = mutated("prod", edit("ingress", image=image))
    assert parse_stack_config("prod", config).ingress.image == image


def test_ray_image_digest_pins_the_tagged_image():
    config = parse_stack_config("prod", mutated("prod", edit("ray", imageDigest=DIGEST_A)))
    assert config.ray.image == (
        "us-central1-docker.pkg.dev/my-gcp-project/raygke/ray-serve-gke:2.60.0-py311-gpu@"
        + DIGEST_A
    )
    assert load_stack_config("prod").ray.image.endswith(":2.60.0-py311-gpu")  # no digest shipped


def test_gpudirect_networks_only_when_acknowledged():
    config = mutated("prod", edit("network", gpudirect=True, gpudirectNetworksOnly=True))
    assert parse_stack_config("prod", config).network.gpudirect is True
    assert load_stack_config("prod").network.gpudirect is False  # off in prod: TP within one node


# --- rules whose scope is a policy control's ------------------------------------------------------
POLICY_RULES: list[tuple[str, Callable[[dict], None], str]] = [
    ("RAYGKE-GKE-3", edit("gpuPool", minNodes=0), r"gpuPool.minNodes and .* must be >= 1 in"),
    (
        "RAYGKE-GKE-3",
        lambda c: c[f"{NS}:rayService"]["workers"].update(minReplicas=0, pdbMinAvailable=0),
        r"rayService.workers.minReplicas must be >= 1 in",
    ),
    (
        "5.6.3",
        lambda c: c[f"{NS}:cluster"]["authorizedNetworks"].append({"cidr": "::/0", "name": "v6"}),
        r"cluster.authorizedNetworks must not contain 0.0.0.0/0 or ::/0 in",
    ),
    (
        "RAYGKE-NET-1",
        edit("ingress", sourceRanges=["0.0.0.0/0"]),
        r"ingress.sourceRanges must not contain 0.0.0.0/0 or ::/0 in",
    ),
    (
        "RAYGKE-NET-1",
        edit("ingress", exposure="internal", sourceRanges=["10.0.0.0/8", "0.0.0.0/0"]),
        r"ingress.sourceRanges must not contain",
    ),
    ("RAYGKE-GKE-1", edit("cluster", [], deletionProtection=False), "deletionProtection must be"),
    (
        "RAYGKE-K8S-5",
        lambda c: c[f"{NS}:rayService"].update(faultTolerance={"enabled": False}),
        "faultTolerance.enabled must be true in",
    ),
]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(("control_id", "mutate", "pattern"), POLICY_RULES)
def test_a_policy_rule_binds_where_its_control_fails_a_plan(
    stack: str, control_id: str, mutate: Callable[[dict], None], pattern: str
):
    """One owner for where a rule binds: the policy catalogue. A stack file breaking the rule is
    refused exactly in the environments where the control is mandatory."""
    from policy import CONTROLS_BY_ID

    control = CONTROLS_BY_ID[control_id]
    config = mutated(stack, mutate)
    environment = config[f"{NS}:environment"]
    binds = control.applies_to(environment) and control.severity_in(environment) == "mandatory"
    if binds:
        with pytest.raises(ConfigError, match=pattern):
            parse_stack_config(stack, config)
    else:
        try:
            parse_stack_config(stack, config)
        except ConfigError as exc:
            assert not re.search(pattern, str(exc)), str(exc)


def test_a_key_never_reaches_a_message():
    key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
    config = mutated("dev", edit("ingress", tlsCertificate="not a certificate", tlsKey=key))
    with pytest.raises(ConfigError) as raised:
        parse_stack_config("dev", config)
    assert "TOPSECRETKEYMATERIAL" not in str(raised.value)


def test_encrypted_values_in_a_stack_file_stand_in_as_set():
    """`pulumi config set --secret --path ingress.tlsKey` writes `{secure: v1:...}`; reading the file
    without Pulumi (`raygke plan`) takes it as set, unseen."""
    config = mutated(
        "prod", edit("ingress", tlsCertificate={"secure": "v1:abc"}, tlsKey={"secure": "v1:def"})
    )
    parsed = parse_stack_config("prod", config)
    assert parsed.ingress.tls_from_stack and parsed.ingress.tls_key == "[encrypted]"
