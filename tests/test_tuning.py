"""`serveProfile: tuned`: what it adds to Ray's two flags, where the stack's own values win, and the
knob combinations it rejects (with key, value and what is allowed, before any resource registers).
Its speed is measured by bench/ablation.py and bench/ab.py, never asserted here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import pytest
from stackfiles import NS, cases, edit, mutated

from app.contracts import HandleSerialization
from app.echo import EchoArgs
from app.recsys import RecsysArgs
from infra.config import FLAGS_ONLY, RECSYS_MAX_BATCH_SIZE, TuningConfig, with_serve_profile
from infra.program import run_program
from infra.serve_config import RAY_HAPROXY_THREADS
from infra.stack_file import ConfigError, load_stack_config, parse_stack_config
from raygke.mocks import Inventory, run_with_mocks

pytestmark = [pytest.mark.config, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_the_profiles_env_flags():
    dev = load_stack_config("dev")
    assert with_serve_profile(dev, "ray-defaults").ray.serve_flags == {}
    assert with_serve_profile(dev, "flags-only").ray.serve_flags == FLAGS_ONLY
    # tuned's env lever is set per machine (test_serve_config.py), unless the stack pins it
    assert dev.ray.serve_flags == FLAGS_ONLY
    pinned = dev.ray.model_copy(update={"tuning": TuningConfig(haproxy_threads=2)})
    assert pinned.serve_flags == {**FLAGS_ONLY, "RAY_SERVE_HAPROXY_NBTHREAD": "2"}
    extra = dev.ray.model_copy(update={"extra_env": {"RAY_SERVE_LOG_TO_STDERR": "0"}})
    assert extra.serve_flags == {**FLAGS_ONLY, "RAY_SERVE_LOG_TO_STDERR": "0"}


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


def _recsys(args: dict[str, Any] | None = None, ranker: dict[str, Any] | None = None):
    def mutate(config: dict) -> None:
        app = next(a for a in config[f"{NS}:apps"] if a["kind"] == "recsys")
        app["args"].update(args or {})
        app["deployments"]["Ranker"].update(ranker or {})

    return mutate


BAD = [
    (
        "tuning-outside-tuned",
        edit("ray", serveProfile="flags-only", tuning={"maxOngoingRequests": 32}),
        r"ray.tuning applies only to serveProfile: tuned; got serveProfile: flags-only",
    ),
    (
        "extra-env-overrides-tuning",
        edit("ray", extraEnv={"RAY_SERVE_HAPROXY_NBTHREAD": "8"}),
        r"ray.extraEnv.RAY_SERVE_HAPROXY_NBTHREAD conflicts with ray.tuning.haproxyThreads, "
        r"which sets it; set ray.tuning.haproxyThreads instead",
    ),
    (
        "tuned-limit-below-batch",
        edit("ray", tuning={"maxOngoingRequests": 8}),
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
        edit("ray", tuning={"haproxyThreads": 0}),
        r"ray.tuning.haproxyThreads.*greater than or equal to 1; got 0",
    ),
]


@pytest.mark.parametrize(("mutate", "pattern"), cases(BAD))
def test_bad_tuning_is_rejected(mutate: Callable[[dict], None], pattern: str):
    raw = mutated("dev", mutate)
    with pytest.raises(ConfigError, match=pattern):
        parse_stack_config("dev", raw)


@pytest.mark.mocks
def test_bad_tuning_registers_nothing():
    raw = mutated("dev", edit("ray", tuning={"maxOngoingRequests": 8}))
    inventory = Inventory()
    with pytest.raises(ConfigError, match="maxOngoingRequests"):
        run_with_mocks(run_program, stack="dev", config=raw, inventory=inventory)
    assert inventory.resources == []


def test_flags_only_keeps_rays_batching_limit_and_is_accepted():
    """Ray's default limit under flags-only is the profile's choice, not a stack error."""
    raw = mutated("dev", edit("ray", serveProfile="flags-only"))
    assert parse_stack_config("dev", raw).ray.effective_tuning is None
    assert TuningConfig().max_ongoing_requests >= RECSYS_MAX_BATCH_SIZE
