"""The scheduling check: GKE's allocatable formula against its published figures, every misfit class
refused at plan time with the pod, the pool, what it asks and what a node gives, the node-pool limits,
and every shipped stack fitting with room to spare (its headroom printed)."""

from __future__ import annotations

import dataclasses

import pytest
from stackfiles import NS, STACKS, cases, edit, mutated

from components.render import node_fit as sched
from components.render.node_pool import GPU_TAINT_KEY, GPU_TAINT_VALUE, POOL_LABEL
from components.render.quantity import cpu_millis, memory_bytes
from infra.scheduling import scheduling_plan
from infra.stack_file import ConfigError, load_stack_config, parse_stack_config

GIB = 2**30


# ---------------------------------------------------------------------------------------------- formula
@pytest.mark.parametrize(
    ("machine", "cpu", "gib"),
    [
        # docs/scheduling.md "The figures", from GKE's published reservation tiers
        ("e2-standard-4", 3.92, 13.3),
        ("e2-standard-8", 7.91, 28.3),
        ("a3-highgpu-1g", 25.9, 222),
        ("a3-highgpu-8g", 207.4, 1828),
        ("a3-megagpu-8g", 207.4, 1828),
    ],
)
def test_allocatable_matches_gkes_published_figures(machine: str, cpu: float, gib: float):
    shape = sched.machine_shape(machine)
    assert shape is not None
    got = sched.allocatable(shape)
    assert got.cpu_m / 1000 == pytest.approx(cpu, abs=0.01 if cpu < 10 else 0.05)
    assert got.memory / GIB == pytest.approx(gib, abs=0.05 if gib < 100 else 0.6)
    assert got.gpus == shape.gpus


def test_reservation_tiers_by_hand():
    # 4 vCPU: 6% of 1000m + 1% of 1000m + 0.5% of 2000m = 80m; 16 GiB: 1 + 0.8 + 0.8 GiB + 100 MiB
    got = sched.allocatable(sched.MachineShape("x", 4, 16))
    assert got.cpu_m == 4000 - 80
    assert abs(got.memory - (16 * GIB - 2.6 * GIB - 100 * 2**20)) <= 1


def test_gpu_nodes_budget_more_daemonsets_than_cpu_nodes():
    cpu_node, gpu_node = sched.daemonset_budget(False), sched.daemonset_budget(True)
    assert cpu_node.cpu_m == sum(d.cpu_m for d in sched.EVERY_NODE_DAEMONSETS)
    extra = gpu_node - cpu_node
    assert extra.cpu_m == sum(d.cpu_m for d in sched.GPU_NODE_DAEMONSETS) > 0
    assert {d.name for d in sched.GPU_NODE_DAEMONSETS} >= {
        "nvidia-gpu-device-plugin",
        "nvidia-driver-installer",
    }


def test_every_shape_the_config_allows_is_known():
    from components.render.gpu_machines import H100_MACHINES

    for machine in [*H100_MACHINES, *sched.SYSTEM_MACHINES]:
        shape = sched.machine_shape(machine)
        assert shape is not None and sched.allocatable(shape).cpu_m > 0


# ---------------------------------------------------------------------------------------------- pods
def test_effective_request_counts_sidecars_and_the_largest_init_container():
    spec = {
        "containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        "initContainers": [
            {"resources": {"requests": {"cpu": "3", "memory": "1Mi"}}},  # runs alone, first
            {"restartPolicy": "Always", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
        ],
    }
    asks = sched.pod_asks(spec)
    assert asks.cpu_m == 3000  # the init container's 3 CPU beats 1 + 0.5
    assert asks.memory == 2 * GIB  # requests default to limits for the native sidecar


def test_a_limit_above_the_request_is_not_counted():
    asks = sched.container_asks(
        {"resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}}
    )
    assert asks == sched.Amount(1000, 256 * 2**20)


def test_rendered_pods_carry_the_sidecars_others_inject():
    plan = scheduling_plan(load_stack_config("prod"))
    by_name = {p.name: p for p in plan.pods}
    head, workers = by_name["rayService.head"], by_name["rayService.workers"]
    assert head.asks.cpu_m == cpu_millis("4") + sched.KUBERAY_AUTOSCALER.cpu_m
    assert head.count == 2, "NewCluster upgrades run a second head"
    assert workers.asks.memory == memory_bytes("1700Gi") + sched.GCSFUSE_SIDECAR.memory
    assert workers.asks.gpus == 8 and workers.count == 4
    assert "GCS FUSE" in workers.extras and "autoscaler" in head.extras


def test_gcsfuse_annotations_override_the_sidecar_default():
    got = sched.gcsfuse_sidecar(
        {"annotations": {"gke-gcsfuse/volumes": "true", "gke-gcsfuse/cpu-request": "1"}}
    )
    assert got == sched.Amount(1000, sched.GCSFUSE_SIDECAR.memory)
    assert sched.gcsfuse_sidecar({"annotations": {}}) is None


def _pool(machine: str, max_nodes: int = 2, gpu: bool = False, name: str = "p") -> sched.NodePool:
    return sched.NodePool(
        name=name,
        key="gpuPool" if gpu else "cluster.systemPool",
        machine_type=machine,
        min_nodes=0,
        max_nodes=max_nodes,
        zones=1,
        labels={POOL_LABEL: name},
        taints=(
            ({"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NoSchedule"},)
            if gpu
            else ()
        ),
    )


def test_pods_follow_their_node_selector_and_tolerations():
    system, gpu = (
        _pool("e2-standard-4", name="system"),
        _pool("a3-highgpu-1g", gpu=True, name="h100"),
    )
    toleration = {
        "key": GPU_TAINT_KEY,
        "operator": "Equal",
        "value": GPU_TAINT_VALUE,
        "effect": "NoSchedule",
    }
    unpinned = sched.PodDemand("a", sched.Amount(100, GIB), 1)
    assert sched.pools_for(unpinned, [system, gpu]) == [system]  # the taint keeps it off GPUs
    worker = sched.PodDemand("w", sched.Amount(100, GIB, 1), 1, {POOL_LABEL: "h100"}, (toleration,))
    assert sched.pools_for(worker, [system, gpu]) == [gpu]
    untolerated = sched.PodDemand("w", sched.Amount(100, GIB, 1), 1, {POOL_LABEL: "h100"})
    problems, _ = sched.check_scheduling([untolerated], [system, gpu])
    assert problems and "no node pool matches" in problems[0]


@pytest.mark.parametrize(("machine", "gpus"), [("a3-highgpu-1g", 2), ("a3-highgpu-8g", 16)])
def test_more_gpus_per_pod_than_a_node_has(machine: str, gpus: int):
    pool = _pool(machine, gpu=True, name="h100")
    toleration = {"key": GPU_TAINT_KEY, "operator": "Exists"}
    pod = sched.PodDemand(
        "rayService.workers", sched.Amount(1000, GIB, gpus), 1, {POOL_LABEL: "h100"}, (toleration,)
    )
    problems, _ = sched.check_scheduling([pod], [pool])
    assert len(problems) == 1
    assert f"/ {gpus} GPU per pod" in problems[0]
    assert f"at most {pool.shape.gpus} GPUs per pod" in problems[0]


@pytest.mark.parametrize(("machine", "cpu"), [("e2-standard-2", "2"), ("e2-standard-4", "4")])
def test_operator_bigger_than_a_system_node(machine: str, cpu: str):
    values = {
        "resources": {"requests": {"cpu": cpu, "memory": "512Mi"}},
        "nodeSelector": {POOL_LABEL: "system"},
    }
    pod = sched.helm_values_pod("kuberay operator", values)
    problems, _ = sched.check_scheduling([pod], [_pool(machine, name="system")])
    assert len(problems) == 1
    assert problems[0].startswith(f"kuberay operator asks {int(cpu)}.00 CPU")
    assert f"one {machine} node of the system pool gives" in problems[0]


# ---------------------------------------------------------------------------------------------- through the config
MISFITS = [
    # (id, stack, mutation, pattern); most classes have an instance on two stacks, as "(dev)"/"(prod)"
    (
        "head as before (dev)",
        "dev",
        edit("rayService", ["head"], cpu="4", memory="16Gi"),
        r"rayService.head asks 4.50 CPU / 16.5 GiB per pod \(4.00 CPU / 16.0 GiB of its own, with "
        r"KubeRay's autoscaler sidecar 0.50 CPU / 0.5 GiB\); one e2-standard-4 node of the system pool "
        r"gives 3.92 CPU / 13.3 GiB \(allocatable\) less 0.37 CPU / 0.7 GiB for GKE's DaemonSets: "
        r"3.55 CPU / 12.6 GiB; allowed: rayService.head.cpu at most 3050m and "
        r"rayService.head.memory at most \d+Mi",
    ),
    (
        "head as before (staging)",
        "staging",
        edit("rayService", ["head"], cpu="8", memory="32Gi"),
        r"rayService.head asks 8.50 CPU / 32.5 GiB .* one e2-standard-8 node of the system pool gives "
        r"7.91 CPU / 28.3 GiB \(allocatable\)",
    ),
    (
        "head memory only (prod)",
        "prod",
        edit("rayService", ["head"], memory="28Gi"),
        r"allowed: rayService.head.memory at most \d+Mi, or a bigger cluster.systemPool.machineType",
    ),
    (
        "worker CPU over a3-highgpu-1g",
        "dev",
        edit("rayService", ["workers"], cpu="26"),
        r"rayService.workers asks 26.00 CPU / 200.0 GiB / 1 GPU per pod; one a3-highgpu-1g node of the "
        r"h100 pool gives 25.86 CPU .*allowed: rayService.workers.cpu at most 25295m",
    ),
    (
        "worker CPU over a3-highgpu-8g",
        "staging",
        edit("rayService", ["workers"], cpu="208"),
        r"rayService.workers asks 208.00 CPU .* one a3-highgpu-8g node .*rayService.workers.cpu at most",
    ),
    (
        "worker memory over a3-highgpu-1g",
        "dev",
        edit("rayService", ["workers"], memory="230Gi"),
        r"one a3-highgpu-1g node .*allowed: rayService.workers.memory at most \d+Mi, or a bigger "
        r"gpuPool.machineType",
    ),
    (
        "worker memory over a3-megagpu-8g with the GCS FUSE sidecar",
        "prod",
        edit("rayService", ["workers"], memory="1870Gi"),
        r"rayService.workers asks .* with GKE's GCS FUSE sidecar 0.25 CPU / 0.2 GiB\); one a3-megagpu-8g "
        r"node .*rayService.workers.memory at most",
    ),
    (
        "worker replicas over maxNodes (dev)",
        "dev",
        edit("rayService", ["workers"], maxReplicas=3),
        r"rayService.workers.maxReplicas \(3\) must be <= gpuPool.maxNodes \(2\) x 1 rayService.workers "
        r"pod per a3-highgpu-1g node",
    ),
    (
        "worker replicas over maxNodes (prod)",
        "prod",
        edit("rayService", ["workers"], maxReplicas=5),
        r"rayService.workers.maxReplicas \(5\) must be <= gpuPool.maxNodes \(4\) .*allowed: "
        r"rayService.workers.maxReplicas <= 4",
    ),
    (
        "tier over the system pool (dev)",
        "dev",
        edit("ingress", [], maxReplicas=12),
        r"cluster.systemPool.maxNodes \(4\) is too few for the system pool's pods at their peak: .*13 x "
        r"ingress \(HAProxy tier\) \(1.00 CPU / 0.2 GiB: ingress.maxReplicas 12 \+ 1 rollout surge\).* "
        r"allowed: cluster.systemPool.maxNodes >= \d+",
    ),
    (
        "tier over the system pool (prod)",
        "prod",
        edit("ingress", [], maxReplicas=40),
        r"cluster.systemPool.maxNodes \(6\) is too few .*2 x rayService.head .*a second head",
    ),
    (
        "system pool min over max (dev)",
        "dev",
        edit("cluster", ["systemPool"], minNodes=5, maxNodes=4),
        r"cluster.systemPool.minNodes \(5\) must be <= cluster.systemPool.maxNodes \(4\)",
    ),
    (
        "system pool min over max (prod)",
        "prod",
        edit("cluster", ["systemPool"], minNodes=7),
        r"cluster.systemPool.minNodes \(7\) must be <= cluster.systemPool.maxNodes \(6\)",
    ),
    (
        "GPU pool min over max (staging)",
        "staging",
        edit("gpuPool", [], minNodes=3, maxNodes=2),
        r"gpuPool.minNodes \(3\) must be <= gpuPool.maxNodes \(2\)",
    ),
    (
        "GPU pool min over max (prod)",
        "prod",
        edit("gpuPool", [], minNodes=5),
        r"gpuPool.minNodes \(5\) must be <= gpuPool.maxNodes \(4\)",
    ),
    (
        "GPU pool over GKE's per-zone limit",
        "dev",
        edit("gpuPool", [], maxNodes=1001),
        r"gpuPool.maxNodes \(1001\) is over GKE's limit of 1000 nodes per node pool per zone \(1 zone\); "
        r"allowed: 1..1000",
    ),
    (
        "system pool over GKE's limit on a regional cluster",
        "staging",
        edit("cluster", ["systemPool"], maxNodes=3001),
        r"cluster.systemPool.maxNodes \(3001\) is over GKE's limit .*\(3 zones\); allowed: 1..3000",
    ),
    (
        "pod range for one node (dev)",
        "dev",
        edit("network", [], podsCidr="10.20.0.0/24"),
        r"network.podsCidr \(10.20.0.0/24\) holds pod ranges for 1 nodes, but the pools may reach 7 "
        r"\(cluster.systemPool.maxNodes 4 \+ 1 surge \+ gpuPool.maxNodes 2\): GKE gives every node a /24 "
        r"\(256 addresses, twice its 110 max pods .*allowed: /21 or larger",
    ),
    (
        "pod range for eight nodes (prod)",
        "prod",
        edit("network", [], podsCidr="10.60.0.0/21"),
        r"network.podsCidr \(10.60.0.0/21\) holds pod ranges for 8 nodes, but the pools may reach 13 "
        r"\(cluster.systemPool.maxNodes 6 \+ 3 surge \+ gpuPool.maxNodes 4\)",
    ),
    (
        "system machine type without a known shape",
        "dev",
        edit("cluster", ["systemPool"], machineType="e2-custom-3"),
        r"cluster.systemPool.machineType must be one of \[.*'e2-standard-4'.*\] .*got 'e2-custom-3'",
    ),
]


@pytest.mark.parametrize(("stack", "mutate", "pattern"), cases(MISFITS))
def test_misfits_fail_the_plan_naming_pod_pool_ask_and_room(stack, mutate, pattern):
    with pytest.raises(ConfigError, match=pattern) as caught:
        parse_stack_config(stack, mutated(stack, mutate))
    assert f"{NS}:" in str(caught.value), "every line names its stack key"


# ---------------------------------------------------------------------------------------------- node pools
@pytest.mark.parametrize(
    ("max_pods", "size", "nodes_in_a_14"),
    [(110, 256, 1024), (64, 128, 2048), (32, 64, 4096), (8, 16, 16384)],
)
def test_per_node_pod_range_is_twice_max_pods_rounded_up(
    max_pods: int, size: int, nodes_in_a_14: int
):
    assert sched.node_pod_range_size(max_pods) == size
    assert sched.pods_range_nodes(14, max_pods) == nodes_in_a_14


def test_pod_range_counts_surge_nodes_in_every_zone():
    pool = sched.NodePool("system", "cluster.systemPool", "e2-standard-4", 1, 3, 3, {}, max_surge=1)
    # 3 nodes + 1 surge node in each of 3 zones = 6 node ranges of /24
    (problem,) = sched.node_pool_problems([pool], "10.0.0.0/22")
    assert "holds pod ranges for 4 nodes, but the pools may reach 6" in problem
    assert sched.node_pool_problems([pool], "10.0.0.0/21") == []


# ---------------------------------------------------------------------------------------------- shipped stacks
MIN_POD_ROOM = sched.Amount(500, 1 * GIB)  # what each pod leaves on its node, at least


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_fits_with_room_to_spare(stack: str):
    plan = scheduling_plan(load_stack_config(stack))
    report = f"{stack} headroom:\n" + "\n".join(plan.headroom())
    assert plan.problems == (), report
    assert {fit.pool.name for fit in plan.fits} == {p.name for p in plan.pools}, report
    for fit in plan.fits:
        for pod in fit.pods:
            room = fit.pod_room(pod)
            assert room.cpu_m >= MIN_POD_ROOM.cpu_m and room.memory >= MIN_POD_ROOM.memory, (
                f"{pod.name} leaves only {room.text()} on a {fit.pool.machine_type}\n{report}"
            )
        if (
            not fit.pool.gpu
        ):  # the system pool keeps a node spare at peak (GPU pools: a node a worker)
            assert fit.spare_nodes >= 1, report
        else:
            assert fit.nodes_needed == fit.pool.max_nodes, report
    print(report)  # shown with -s: the figures docs/scheduling.md quotes


def test_raygke_plan_prints_the_headroom():
    from raygke.plan import plan_stack, render_text

    text = render_text(plan_stack("dev"))
    assert "scheduling headroom" in text
    assert "rayService.head leaves 1.05 CPU / 4.1 GiB" in text


@pytest.mark.parametrize(("stack", "sidecar_cpu"), [("dev", "16"), ("prod", "40")])
def test_the_check_reads_the_rendered_tier_so_a_container_added_to_it_counts(
    stack: str, sidecar_cpu: str
):
    """The tier pod is the rendered Deployment's, every container in it: a sidecar too big for a
    system node fails the check, naming the tier."""
    import copy

    from infra.rendered import render_stack

    config = load_stack_config(stack)
    rendered = render_stack(config)
    assert scheduling_plan(config, rendered).problems == ()
    tier = copy.deepcopy(rendered.tier)
    pod = tier["deployment"]["spec"]["template"]["spec"]
    pod["containers"].append(
        {"name": "log-shipper", "resources": {"requests": {"cpu": sidecar_cpu}}}
    )
    grown = dataclasses.replace(rendered, tier=tier)
    problems = scheduling_plan(config, grown).problems
    assert any("ingress (HAProxy tier)" in p for p in problems), problems
