"""infra/platform_rules.py: what GCP, Kubernetes and our tier's software accept. Every shipped stack
and the insecure fixture pass; each rule fires on several parsed configs, naming key, value and
what is allowed, and stays quiet on the nearby configs that are fine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stackfiles import NS, STACKS, cases, edit, mutated

import infra.stack_file
from components.render.cidr import covers_everything
from infra.config import StackConfig
from infra.platform_rules import (
    MIN_HAPROXY,
    check_artifact_registry_path,
    check_project_id,
    haproxy_version,
    node_addresses_needed,
    platform_problems,
)
from infra.stack_file import load_stack_config, parse_stack_config, read_stack_file

pytestmark = pytest.mark.config

FIXTURES = Path(__file__).parent / "fixtures"
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch):
    """Parse a stack's config map with every other check in force, but without this module's
    problems (once infra/checks.py runs platform_problems, a config built to break one of its
    rules would not parse): the test then asks platform_problems itself."""
    real = infra.stack_file.stack_problems

    def others_only(c: StackConfig) -> list[str]:
        ours = set(platform_problems(c))
        return [p for p in real(c) if p not in ours]

    monkeypatch.setattr(infra.stack_file, "stack_problems", others_only)

    def build(stack: str, *mutations: Any) -> StackConfig:
        return parse_stack_config(stack, mutated(stack, *mutations))

    return build


def _set(key: str, value: Any):
    def mutate(config: dict[str, Any]) -> None:
        config[key] = value

    return mutate


def _one(problems: list[str], *fragments: str) -> str:
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])
    return problems[0]


# ---------------------------------------------------------------------------------------------- shipped
@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_has_no_platform_problem(stack: str):
    assert platform_problems(load_stack_config(stack)) == []


def test_the_insecure_fixture_has_no_platform_problem():
    config = parse_stack_config("insecure", read_stack_file("insecure", FIXTURES))
    assert platform_problems(config) == []


# ---------------------------------------------------------------------------------------------- naming
BAD_PROJECTS = [
    ("display-name", "My GCP Project", "display name"),
    ("capitals", "My-gcp-project", "display name"),
    ("project-number", "123456789012", "project number"),
    ("trailing-hyphen", "my-gcp-project-", "not ending with '-'"),
    ("too-short", "abc", "6-30"),
    ("too-long", "a" * 31, "6-30"),
    ("digit-first", "1-gcp-project", "starting with a letter"),
    ("underscore", "my_gcp_project", "lowercase letters"),
]


@pytest.mark.parametrize("value, hint", cases(BAD_PROJECTS))
def test_gcp_project_must_be_a_project_id(parse, value: str, hint: str):
    problems = platform_problems(parse("dev", _set("gcp:project", value)))
    _one(problems, "gcp:project", repr(value), hint)


@pytest.mark.parametrize("value", ["my-gcp-project", "abcdef", "a" * 30, "example.com:my-project"])
def test_project_ids_that_are_fine(parse, value: str):
    assert check_project_id(value) is None
    assert platform_problems(parse("dev", _set("gcp:project", value))) == []


BAD_RESERVATIONS = [
    ("capitals", "Raygke-H100"),
    ("underscore", "h100_mega"),
    ("leading-hyphen", "-raygke"),
    ("trailing-hyphen", "raygke-"),
    ("digit-first", "9raygke"),
    ("too-long", "r" * 64),
]


@pytest.mark.parametrize("value", cases(BAD_RESERVATIONS))
def test_reservation_name_is_rfc_1035(parse, value: str):
    config = parse("prod", edit("gpuPool", ("capacity",), name=value))
    _one(platform_problems(config), "gpuPool.capacity.name", repr(value), "RFC 1035", "1-63")


@pytest.mark.parametrize("value", ["r", "raygke-h100-mega", "r" * 63])
def test_reservation_names_that_are_fine(parse, value: str):
    assert platform_problems(parse("prod", edit("gpuPool", ("capacity",), name=value))) == []


def test_a_shared_reservations_project_is_a_project_id(parse):
    config = parse("prod", edit("gpuPool", ("capacity",), project="Shared Capacity"))
    _one(platform_problems(config), "gpuPool.capacity.project", "'Shared Capacity'")
    fine = parse("prod", edit("gpuPool", ("capacity",), project="shared-capacity"))
    assert platform_problems(fine) == []


AR = "us-central1-docker.pkg.dev"
BAD_REPOSITORIES = [
    ("location-not-a-region", "us-central-docker.pkg.dev/my-gcp-project/raygke/ray", "location"),
    ("location-a-continent", "northamerica-docker.pkg.dev/my-gcp-project/raygke/ray", "location"),
    ("no-image-segment", f"{AR}/my-gcp-project/raygke", "<project>/<repository>/<image>"),
    ("project-only", f"{AR}/my-gcp-project", "<project>/<repository>/<image>"),
    ("project-too-short", f"{AR}/proj/raygke/ray", "project segment"),
    ("repository-digit-first", f"{AR}/my-gcp-project/9raygke/ray", "repository segment"),
    ("repository-underscore", f"{AR}/my-gcp-project/ray_gke/ray", "repository segment"),
]


@pytest.mark.parametrize("value, hint", cases(BAD_REPOSITORIES))
def test_artifact_registry_paths_are_checked(parse, value: str, hint: str):
    config = parse("dev", edit("ray", imageRepository=value))
    _one(platform_problems(config), "ray.imageRepository", repr(value), hint, "LOCATION-docker")


GOOD_REPOSITORIES = [
    "europe-docker.pkg.dev/my-gcp-project/raygke/ray-serve-gke",
    "us-docker.pkg.dev/my-gcp-project/raygke/team/ray-serve-gke",
    "us-docker.pkg.dev/example.com/my-project/raygke/ray-serve-gke",
    "northamerica-northeast1-docker.pkg.dev/my-gcp-project/raygke/ray-serve-gke",
    "gcr.io/my-gcp-project/ray-serve-gke",  # another registry: its own rules
    "docker.io/myorg/ray-serve-gke",
    "ghcr.io/myorg/ray-serve-gke",
]


@pytest.mark.parametrize("value", GOOD_REPOSITORIES)
def test_image_repositories_that_are_fine(parse, value: str):
    assert check_artifact_registry_path(value) is None
    assert platform_problems(parse("dev", edit("ray", imageRepository=value))) == []


@pytest.mark.parametrize(
    "value", ["rayproject/ray", "docker.io/rayproject/ray", "rayproject/ray-ml"]
)
def test_upstream_ray_image_lacks_our_apps(parse, value: str):
    problem = _one(
        platform_problems(parse("dev", edit("ray", imageRepository=value))),
        "ray.imageRepository",
        repr(value),
        "app.echo:build_app",
        "app/Dockerfile",
    )
    assert "apps[recsys] (app.recsys:build_app)" in problem


def test_upstream_ray_image_is_fine_for_apps_of_your_own(parse):
    custom = {"name": "mine", "kind": "custom", "routePrefix": "/mine", "protocols": ["http"]}
    config = parse(
        "dev",
        edit("ray", imageRepository="rayproject/ray"),
        _set(f"{NS}:apps", [{**custom, "importPath": "mypkg.serve:app"}]),
    )
    assert platform_problems(config) == []
    ours = parse(
        "dev",
        edit("ray", imageRepository="rayproject/ray"),
        _set(f"{NS}:apps", [{**custom, "importPath": "app.echo:build_app"}]),
    )
    _one(platform_problems(ours), "apps[mine] (app.echo:build_app)")


def _namespace(section: str, value: str):
    """The stacks leave the kuberay section out (its defaults): set it whole."""
    if section == "kuberay":
        return _set(f"{NS}:kuberay", {"namespace": value})
    return edit(section, namespace=value)


RESERVED = [
    ("ray-default", "rayService", "default"),
    ("ray-kube-system", "rayService", "kube-system"),
    ("ray-kube-any", "rayService", "kube-ray"),
    ("ray-gke", "rayService", "gke-managed-system"),
    ("ray-gmp", "rayService", "gmp-system"),
    ("kuberay-kube-public", "kuberay", "kube-public"),
    ("kuberay-node-lease", "kuberay", "kube-node-lease"),
    ("kuberay-gke-gmp", "kuberay", "gke-gmp-system"),
]


@pytest.mark.parametrize("section, value", cases(RESERVED))
def test_namespaces_the_program_must_not_create(parse, section: str, value: str):
    config = parse("dev", _namespace(section, value))
    _one(platform_problems(config), f"{section}.namespace", repr(value), "pulumi destroy")


@pytest.mark.parametrize("value", ["ray-serve", "kuberay-system", "ray"])
def test_one_namespace_for_both_components_is_refused(parse, value: str):
    config = parse("staging", _namespace("rayService", value), _namespace("kuberay", value))
    _one(platform_problems(config), "rayService.namespace and kuberay.namespace", repr(value))


@pytest.mark.parametrize("value", ["serving", "kubernetes-apps", "my-gke", "gmpx"])
def test_namespaces_that_are_fine(parse, value: str):
    assert platform_problems(parse("dev", edit("rayService", namespace=value))) == []


# ---------------------------------------------------------------------------------------------- addressing
SMALL_SUBNETS = [
    # dev needs 12 addresses, prod 18 (test_node_address_count_follows_gkes_rule)
    ("dev-slash-29", "dev", "10.10.0.0/29", ()),
    ("dev-slash-30", "dev", "10.10.0.0/30", ()),
    ("prod-surge-in-every-zone", "prod", "10.50.0.0/28", ()),
    ("prod-one-more-node", "prod", "10.50.0.0/28", (edit("cluster", ("systemPool",), maxNodes=7),)),
    (
        "dev-many-system-nodes",
        "dev",
        "10.10.0.0/27",
        (edit("cluster", ("systemPool",), maxNodes=30),),
    ),
]


@pytest.mark.parametrize("stack, cidr, more", cases(SMALL_SUBNETS))
def test_subnet_must_hold_every_node(parse, stack: str, cidr: str, more: tuple):
    config = parse(stack, edit("network", subnetCidr=cidr), *more)
    need = node_addresses_needed(config)
    _one(
        platform_problems(config),
        f"network.subnetCidr {cidr}",
        f"the nodes need {need}",
        "allowed: a /",
    )


def test_node_address_count_follows_gkes_rule():
    dev, prod = load_stack_config("dev"), load_stack_config("prod")
    # maxNodes of both pools, the system pool's default surge (1) in each of its zones (dev's
    # cluster is zonal, prod's regional: 3), the GPU pool's (0), one internal load balancer, four
    # addresses Google keeps
    assert node_addresses_needed(dev) == 4 + 2 + 1 * 1 + 0 + 1 + 4
    assert node_addresses_needed(prod) == 6 + 4 + 1 * 3 + 0 + 1 + 4


@pytest.mark.parametrize(
    "stack, cidr, more",
    [
        ("dev", "10.10.0.0/28", ()),
        ("prod", "10.50.0.0/27", ()),  # 32 for 18
        (
            "dev",
            "10.10.0.0/28",
            (edit("ingress", exposure="external", sourceRanges=["203.0.113.0/24"]),),
        ),
    ],
)
def test_subnets_that_are_big_enough(parse, stack: str, cidr: str, more: tuple):
    assert platform_problems(parse(stack, edit("network", subnetCidr=cidr), *more)) == []


def _redis(address: str):
    return edit(
        "rayService",
        faultTolerance={
            "enabled": True,
            "redisAddress": address,
            "redisPassword": {"name": "redis-auth", "key": "password"},
        },
    )


BAD_REDIS = [
    ("in-pods", "10.20.0.5:6379", "network.podsCidr"),
    ("in-services", "10.24.0.10:6379", "network.servicesCidr"),
    ("in-master", "172.16.0.2:6379", "network.masterCidr"),
    ("loopback", "127.0.0.1:6379", "loopback"),
    ("unspecified", "0.0.0.0:6379", "loopback"),
    ("link-local", "169.254.10.1:6379", "link-local"),
    ("subnet-gateway", "10.10.0.1:6379", "four addresses Google keeps"),
    ("subnet-broadcast", "10.10.15.255:6379", "four addresses Google keeps"),
]


@pytest.mark.parametrize("address, hint", cases(BAD_REDIS))
def test_redis_address_is_not_a_pod_service_or_control_plane(parse, address: str, hint: str):
    config = parse("dev", _redis(address))
    _one(platform_problems(config), "rayService.faultTolerance.redisAddress", repr(address), hint)


@pytest.mark.parametrize(
    "address", ["10.10.0.50:6379", "10.99.0.3:6379", "192.168.1.4:6380", "redis.internal:6379"]
)
def test_redis_addresses_that_are_fine(parse, address: str):
    assert platform_problems(parse("dev", _redis(address))) == []


EVERYONE = [
    ("ipv4-halves", ["0.0.0.0/1", "128.0.0.0/1"], "IPv4"),
    ("ipv4-quarters", ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"], "IPv4"),
    ("ipv4-with-extra", ["10.0.0.0/8", "0.0.0.0/1", "128.0.0.0/1"], "IPv4"),
    ("ipv6-halves", ["::/1", "8000::/1"], "IPv6"),
    ("mixed-families", ["203.0.113.0/24", "::/1", "8000::/1"], "IPv6"),
]


@pytest.mark.parametrize("cidrs, family", cases(EVERYONE))
def test_covers_everything_finds_the_union(cidrs: list[str], family: str):
    assert covers_everything(cidrs) == family


@pytest.mark.parametrize(
    "cidrs",
    [
        ["0.0.0.0/1", "128.0.0.0/2"],
        ["0.0.0.0/1", "::/1"],
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        [],
    ],
)
def test_covers_everything_leaves_partial_sets(cidrs: list[str]):
    assert covers_everything(cidrs) is None


def test_covers_everything_on_single_ranges():
    assert covers_everything(["0.0.0.0/0"]) == "IPv4"
    assert covers_everything(["::/0"]) == "IPv6"
    with pytest.raises(ValueError):
        covers_everything(["not-a-cidr"])


def _networks(cidrs: list[str]):
    return edit(
        "cluster", authorizedNetworks=[{"cidr": c, "name": f"n{i}"} for i, c in enumerate(cidrs)]
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pytest.mark.parametrize("cidrs, family", cases(EVERYONE))
def test_authorized_networks_open_to_everyone_are_refused(parse, stack, cidrs, family):
    config = parse(stack, _networks(cidrs))
    _one(platform_problems(config), "cluster.authorizedNetworks", f"all of {family}", "5.6.3")


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pytest.mark.parametrize("cidrs, family", cases(EVERYONE))
def test_source_ranges_open_to_everyone_are_refused(parse, stack, cidrs, family):
    config = parse(stack, edit("ingress", sourceRanges=cidrs))
    _one(platform_problems(config), "ingress.sourceRanges", f"all of {family}", "RAYGKE-NET-1")


def test_open_ranges_pass_where_the_controls_are_advisory(parse):
    halves = ["0.0.0.0/1", "128.0.0.0/1"]
    config = parse("dev", _networks(halves), edit("ingress", sourceRanges=halves))
    assert platform_problems(config) == []


# ---------------------------------------------------------------------------------------------- silent settings
@pytest.mark.parametrize("stack, port", [("dev", 8443), ("staging", 10443), ("dev", 444)])
def test_https_port_without_a_certificate_does_nothing(parse, stack: str, port: int):
    config = parse(stack, edit("ingress", httpsPort=port))
    _one(platform_problems(config), f"ingress.httpsPort is {port}", "ingress.tlsSecret")


@pytest.mark.parametrize(
    "stack, edits",
    [
        ("prod", {"httpsPort": 8443}),  # with tlsSecret
        ("dev", {"httpsPort": 443}),  # the default, written out
        ("dev", {}),
    ],
)
def test_https_ports_that_are_fine(parse, stack: str, edits: dict):
    assert platform_problems(parse(stack, edit("ingress", **edits))) == []


@pytest.mark.parametrize("stack", STACKS)
def test_incremental_upgrade_is_bypassed_by_our_tier(parse, stack: str):
    upgrade = {"type": "NewClusterWithIncrementalUpgrade", "gatewayClassName": "gke-l7-rilb"}
    config = parse(stack, edit("rayService", upgradeStrategy=upgrade))
    _one(
        platform_problems(config),
        "rayService.upgradeStrategy.type NewClusterWithIncrementalUpgrade",
        "KubeRay's headless serve Service",
        "ignores spec.serveService",
        "allowed: NewCluster",
    )


@pytest.mark.parametrize("stack, delay", [("dev", 90), ("staging", 0), ("prod", 400)])
def test_a_deletion_delay_without_an_old_cluster_does_nothing(parse, stack: str, delay: int):
    upgrade = {"type": "None", "oldClusterDeletionDelaySeconds": delay}
    config = parse(stack, edit("rayService", upgradeStrategy=upgrade))
    _one(
        platform_problems(config),
        f"oldClusterDeletionDelaySeconds is {delay} but upgradeStrategy.type is None",
        "never has an old cluster",
    )


OLD_HAPROXY = [
    ("2.4-alpine", "haproxy:2.4.22-alpine", (2, 4)),
    ("2.2", "haproxy:2.2", (2, 2)),
    ("2.5-digest", f"docker.io/library/haproxy:2.5.14@{DIGEST}", (2, 5)),
    ("haproxytech", "haproxytech/haproxy-alpine:2.0.33", (2, 0)),
    ("1.8", "haproxy:1.8.31", (1, 8)),
]


@pytest.mark.parametrize("image, version", cases(OLD_HAPROXY))
def test_haproxy_older_than_our_cfg_is_refused(parse, image: str, version: tuple[int, int]):
    assert haproxy_version(image) == version
    config = parse("dev", edit("ingress", image=image))
    need = ".".join(map(str, MIN_HAPROXY))
    _one(platform_problems(config), "ingress.image", repr(image), f"{need} or newer")


@pytest.mark.parametrize(
    "image",
    [
        "haproxy:2.6.0",
        "haproxy:2.8.5-alpine",
        "haproxy:3.2.8-alpine",
        "registry.example.com/tier/haproxy:2.10.1",
        "haproxy:lts-alpine",  # no version in the tag: nothing to compare
        "my-registry.example.com/tier/edge:1.0",  # not HAProxy's image: its tag is not HAProxy's
    ],
)
def test_haproxy_images_that_are_fine(parse, image: str):
    assert platform_problems(parse("dev", edit("ingress", image=image))) == []


def test_every_problem_at_once(parse):
    config = parse(
        "dev",
        _set("gcp:project", "My Project"),
        edit("ray", imageRepository="rayproject/ray"),
        edit("ingress", httpsPort=8443, image="haproxy:2.4.0"),
        edit("network", subnetCidr="10.10.0.0/29"),
    )
    keys = [p.split(" ")[0] for p in platform_problems(config)]
    assert keys == [
        "gcp:project",
        "ray.imageRepository",
        "network.subnetCidr",
        "ingress.httpsPort",
        "ingress.image",
    ]
