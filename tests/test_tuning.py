"""`serveProfile: tuned`: what it adds to Ray's two flags, where the stack's own values win, and the
knob combinations it rejects (with key, value and what is allowed, before any resource registers).
Its speed is measured by bench/ablation.py and bench/ab.py, never asserted here."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, get_args

import pytest

from app.contracts import HandleSerialization
from app.echo import EchoArgs
from app.recsys import RecsysArgs
from infra.config import (
    RECSYS_MAX_BATCH_SIZE,
    TUNED_MAX_ONGOING_REQUESTS,
    ConfigError,
    TuningConfig,
    load_stack_config,
    parse_stack_config,
    read_stack_file,
    with_serve_profile,
)
from infra.program import run_program
from infra.serve_config import (
    FLAGS_ONLY,
    RAY_HAPROXY_THREADS,
    build_serve_config,
    scale_flags_for_local,
    serve_flags,
)
from raygke.mocks import Inventory, run_with_mocks

pytestmark = [pytest.mark.config, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "ray-serve-gke"


def _apps(config: Any) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in build_serve_config(config)["applications"]}


def test_the_profiles_env_flags():
    dev = load_stack_config("dev")
    assert serve_flags(with_serve_profile(dev, "ray-defaults").ray) == {}
    assert serve_flags(with_serve_profile(dev, "flags-only").ray) == FLAGS_ONLY
    assert serve_flags(dev.ray) == FLAGS_ONLY  # tuned's env lever is set per machine: below
    pinned = dev.ray.model_copy(update={"tuning": TuningConfig(haproxy_threads=2)})
    assert serve_flags(pinned) == {**FLAGS_ONLY, "RAY_SERVE_HAPROXY_NBTHREAD": "2"}


@pytest.mark.parametrize(("cores", "threads"), [(1, "1"), (2, "1"), (6, "3"), (16, "4")])
def test_on_one_machine_rays_haproxy_gets_half_the_cores(cores: int, threads: str):
    ray = load_stack_config("dev").ray
    local = scale_flags_for_local(ray, serve_flags(ray), cores)
    assert local == {**serve_flags(ray), "RAY_SERVE_HAPROXY_NBTHREAD": threads}
    assert "RAY_SERVE_HAPROXY_NBTHREAD" not in serve_flags(ray)  # the cluster keeps Ray's 4
    flags_only = with_serve_profile(load_stack_config("dev"), "flags-only").ray
    assert scale_flags_for_local(flags_only, FLAGS_ONLY, cores) == FLAGS_ONLY
    pinned = ray.model_copy(update={"tuning": TuningConfig(haproxy_threads=3)})
    assert (
        scale_flags_for_local(pinned, serve_flags(pinned), cores)["RAY_SERVE_HAPROXY_NBTHREAD"]
        == "3"
    )


def test_flags_only_serves_the_stack_as_ray_would():
    """B of the A/B: the same apps, deployments and resources, and nothing of the tuning."""
    tuned = _apps(load_stack_config("dev"))
    plain = _apps(with_serve_profile(load_stack_config("dev"), "flags-only"))
    assert plain.keys() == tuned.keys()
    for name, app in plain.items():
        assert app["args"] == next(a.args for a in load_stack_config("dev").apps if a.name == name)
        assert all("max_ongoing_requests" not in d for d in app["deployments"])
        strip = [
            {k: v for k, v in d.items() if k != "max_ongoing_requests"}
            for d in tuned[name]["deployments"]
        ]
        assert strip == app["deployments"]


def test_tuned_adds_its_levers_and_the_stack_wins():
    raw = copy.deepcopy(read_stack_file("dev"))
    echo = next(a for a in raw[f"{NS}:apps"] if a["name"] == "echo")
    echo["deployments"]["Echo"]["maxOngoingRequests"] = 8
    apps = _apps(parse_stack_config("dev", raw))
    limits = {d["name"]: d["max_ongoing_requests"] for d in apps["echo"]["deployments"]}
    tuned = TUNED_MAX_ONGOING_REQUESTS
    assert limits == {"Echo": 8, "EchoIngress": tuned, "Streamer": tuned}


def test_the_llm_app_keeps_ray_serve_llms_own_limits():
    apps = _apps(load_stack_config("prod"))
    llm = next(a for a in apps.values() if a["import_path"] == "app.llm:build_app")
    assert all("max_ongoing_requests" not in d for d in llm["deployments"])


def test_the_apps_take_the_codecs_the_ablation_measures_and_the_batch_the_config_checks():
    """infra/ never imports app/: the recsys batch default is kept in step here."""
    for codec in get_args(HandleSerialization):
        assert EchoArgs(handle_serialization=codec).handle_serialization == codec
        assert RecsysArgs(handle_serialization=codec).handle_serialization == codec
    assert RecsysArgs().max_batch_size == RECSYS_MAX_BATCH_SIZE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_the_ray_defaults_the_tuning_replaces_are_ray_2_60s():
    from ray.serve._private import constants

    assert constants.DEFAULT_MAX_ONGOING_REQUESTS == 5  # what docs/performance.md says tuned raises
    assert RAY_HAPROXY_THREADS == constants.RAY_SERVE_HAPROXY_NBTHREAD


def _ray(**values: Any) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        config[f"{NS}:ray"].update(values)

    return mutate


def _recsys(args: dict[str, Any] | None = None, ranker: dict[str, Any] | None = None):
    def mutate(config: dict) -> None:
        app = next(a for a in config[f"{NS}:apps"] if a["kind"] == "recsys")
        app["args"].update(args or {})
        app["deployments"]["Ranker"].update(ranker or {})

    return mutate


BAD = [
    (
        "tuning-outside-tuned",
        _ray(serveProfile="flags-only", tuning={"maxOngoingRequests": 32}),
        r"ray.tuning applies only to serveProfile: tuned; got serveProfile: flags-only",
    ),
    (
        "extra-env-overrides-tuning",
        _ray(extraEnv={"RAY_SERVE_HAPROXY_NBTHREAD": "8"}),
        r"ray.extraEnv.RAY_SERVE_HAPROXY_NBTHREAD conflicts with ray.tuning.haproxyThreads, "
        r"which sets it; set ray.tuning.haproxyThreads instead",
    ),
    (
        "tuned-limit-below-batch",
        _ray(tuning={"maxOngoingRequests": 8}),
        r"ray.tuning.maxOngoingRequests \(8\) must be >= apps\[recsys\].args.max_batch_size "
        r"\(16\).*allowed: 16 or more",
    ),
    (
        "ranker-limit-below-batch",
        _recsys(args={"max_batch_size": 32}, ranker={"maxOngoingRequests": 20}),
        r"apps\[recsys\].deployments.Ranker.maxOngoingRequests \(20\) must be >= "
        r"apps\[recsys\].args.max_batch_size \(32\)",
    ),
    (
        "haproxy-threads-zero",
        _ray(tuning={"haproxyThreads": 0}),
        r"ray.tuning.haproxyThreads.*greater than or equal to 1; got 0",
    ),
]


@pytest.mark.parametrize(("mutate", "pattern"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tuning_is_rejected(mutate: Callable[[dict], None], pattern: str):
    raw = copy.deepcopy(read_stack_file("dev"))
    mutate(raw)
    with pytest.raises(ConfigError, match=pattern):
        parse_stack_config("dev", raw)


@pytest.mark.mocks
def test_bad_tuning_registers_nothing():
    raw = copy.deepcopy(read_stack_file("dev"))
    _ray(tuning={"maxOngoingRequests": 8})(raw)
    inventory = Inventory()
    with pytest.raises(ConfigError, match="maxOngoingRequests"):
        run_with_mocks(run_program, stack="dev", config=raw, inventory=inventory)
    assert inventory.resources == []


def test_flags_only_keeps_rays_batching_limit_and_is_accepted():
    """Ray's default limit under flags-only is the profile's choice, not a stack error."""
    raw = copy.deepcopy(read_stack_file("dev"))
    _ray(serveProfile="flags-only")(raw)
    assert parse_stack_config("dev", raw).ray.tuned is None
    assert TuningConfig().max_ongoing_requests >= RECSYS_MAX_BATCH_SIZE
