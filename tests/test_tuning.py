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
from infra.config import (
    FLAGS_ONLY,
    LLM_DIRECT_STREAMING_ENV,
    RECSYS_MAX_BATCH_SIZE,
    TUNING_ENV_KEYS,
    VLLM_RAY_V2_EXECUTOR_ENV,
    TuningConfig,
    with_serve_profile,
    with_tuning,
)
from infra.program import run_program
from infra.serve_config import RAY_HAPROXY_THREADS
from infra.stack_file import ConfigError, load_stack_config, parse_stack_config
from raygke.mocks import Inventory, run_with_mocks

pytestmark = [pytest.mark.config, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


DIRECT = {LLM_DIRECT_STREAMING_ENV: "1"}  # tuned's Ray Serve LLM direct streaming
ENGINE = {VLLM_RAY_V2_EXECUTOR_ENV: "1"}  # and vLLM's executor with it


def test_the_profiles_env_flags():
    dev = load_stack_config("dev")
    assert with_serve_profile(dev, "ray-defaults").ray.serve_flags == {}
    assert with_serve_profile(dev, "flags-only").ray.serve_flags == FLAGS_ONLY
    for profile in ("ray-defaults", "flags-only"):  # the A/B's other arms: no LLM mode either
        ray = with_serve_profile(dev, profile).ray
        assert ray.node_flags == ray.serve_flags and not ray.llm_direct_streaming
    # tuned's HAProxy threads are set per machine (test_serve_config.py), unless the stack pins them
    assert dev.ray.serve_flags == {**FLAGS_ONLY, **DIRECT}
    assert dev.ray.engine_flags == ENGINE and dev.ray.llm_direct_streaming
    assert dev.ray.node_flags == {**FLAGS_ONLY, **DIRECT, **ENGINE}
    pinned = dev.ray.model_copy(update={"tuning": TuningConfig(haproxy_threads=2)})
    assert pinned.serve_flags == {**FLAGS_ONLY, **DIRECT, "RAY_SERVE_HAPROXY_NBTHREAD": "2"}
    extra = dev.ray.model_copy(update={"extra_env": {"RAY_SERVE_LOG_TO_STDERR": "0"}})
    assert extra.serve_flags == {**FLAGS_ONLY, **DIRECT, "RAY_SERVE_LOG_TO_STDERR": "0"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_tuned_without_direct_streaming_is_rays_two_flags(stack):
    """ray.tuning.llmDirectStreaming: false, in the stack file or as the A/B's third arm
    (with_tuning, bench/llm.py): Ray's two flags and nothing of the LLM mode."""
    raw = mutated(stack, edit("ray", tuning={"llmDirectStreaming": False}))
    off = parse_stack_config(stack, raw).ray
    assert off.node_flags == FLAGS_ONLY and not off.llm_direct_streaming
    arm = with_tuning(load_stack_config(stack), llm_direct_streaming=False)
    assert arm.ray == off
    assert with_tuning(arm, llm_direct_streaming=True).ray.node_flags == {
        **FLAGS_ONLY,
        **DIRECT,
        **ENGINE,
    }
    with pytest.raises(ValueError, match="tuning has no key direct_streaming"):
        with_tuning(arm, direct_streaming=False)


def test_tuning_owns_every_flag_it_sets():
    """Each tuning key's variables are what the profile adds to Ray's two flags, and nothing else."""
    owned = {env for envs in TUNING_ENV_KEYS.values() for env in envs}
    pinned = load_stack_config("dev").ray.model_copy(
        update={"tuning": TuningConfig(haproxy_threads=2)}
    )
    assert owned == set(pinned.node_flags) - set(FLAGS_ONLY)


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
        "extra-env-overrides-direct-streaming",
        edit("ray", extraEnv={"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0"}),
        r"ray.extraEnv.RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING conflicts with "
        r"ray.tuning.llmDirectStreaming, which sets it; set ray.tuning.llmDirectStreaming instead",
    ),
    (
        "extra-env-overrides-vllm-executor",
        edit("ray", extraEnv={"VLLM_USE_RAY_V2_EXECUTOR_BACKEND": "0"}),
        r"ray.extraEnv.VLLM_USE_RAY_V2_EXECUTOR_BACKEND conflicts with "
        r"ray.tuning.llmDirectStreaming, which sets it; set ray.tuning.llmDirectStreaming instead",
    ),
    (
        "direct-streaming-not-a-bool",
        edit("ray", tuning={"llmDirectStreaming": "sometimes"}),
        r"ray.tuning.llmDirectStreaming",
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


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_llm_modes_flags_go_on_the_head_and_every_worker(stack):
    """KubeRay's high-throughput guide sets all four variables on the head and the workers: the
    RayService spec's env, which the renderer gives every Ray container."""
    from infra.specs import rayservice_spec

    config = load_stack_config(stack)
    env = rayservice_spec(config).env
    assert {k: env[k] for k in (*FLAGS_ONLY, *DIRECT, *ENGINE)} == {
        **FLAGS_ONLY,
        **DIRECT,
        **ENGINE,
    }
    off = rayservice_spec(with_tuning(config, llm_direct_streaming=False)).env
    assert not set(off) & {*DIRECT, *ENGINE}
