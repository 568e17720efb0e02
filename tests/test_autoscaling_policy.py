"""app/autoscaling.py: the LLMServer's policy on a serving signal, called as Serve's controller calls
it (a real `AutoscalingContext`, built as ray/serve/_private/autoscaling_state.py
get_autoscaling_context builds it) with Prometheus's answer put in the mixin's cache: the policy's
input is that answer; asking Prometheus over HTTP is Ray's code."""

from __future__ import annotations

import time
from typing import Any

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import (
    PrometheusSample,
    PrometheusVector,
    _apply_autoscaling_config,
)
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from app import autoscaling
from app.autoscaling import ServingSignalPolicy, policy_config
from components.render.observability import CATALOG

pytestmark = pytest.mark.pure

MODEL = "Qwen/Qwen2.5-0.5B"
HOLD_S = 300.0
T0 = 1_000_000.0


def make_policy(signal: str = "ttft", target: float = 0.5) -> ServingSignalPolicy:
    kwargs = policy_config(model_id=MODEL, signal=signal, target=target, window_s=60, hold_s=HOLD_S)
    policy = ServingSignalPolicy(**kwargs["policy_kwargs"], prometheus_address="http://unused")
    policy._started = True  # no refresh thread: the test is Prometheus
    return policy


def answer(policy: ServingSignalPolicy, value: float | None) -> None:
    """Prometheus's latest answer to the policy's query: one sample, or an empty vector (None)."""
    samples = () if value is None else (PrometheusSample(labels={}, value=value, timestamp=0.0),)
    policy._cache.results = {policy.query: PrometheusVector(samples=samples)}
    policy._cache.timestamp = time.monotonic()


def context(
    *,
    current: int,
    target: int | None = None,
    ongoing: float = 0.0,
    state: dict[str, Any] | None = None,
    now: float = T0,
    min_replicas: int = 1,
    max_replicas: int = 4,
    delays_s: float | None = None,
) -> AutoscalingContext:
    delays = (
        {} if delays_s is None else {"upscale_delay_s": delays_s, "downscale_delay_s": delays_s}
    )
    config = AutoscalingConfig(
        min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing_requests=2, **delays
    )
    dep = DeploymentID(name="LLMServer:Qwen--Qwen2_5-0_5B", app_name="llm")
    return AutoscalingContext(
        deployment_id=dep,
        deployment_name=dep.name,
        app_name=dep.app_name,
        current_num_replicas=current,
        target_num_replicas=current if target is None else target,
        running_replicas=[],
        total_num_requests=ongoing,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics={},
        capacity_adjusted_min_replicas=min_replicas,
        capacity_adjusted_max_replicas=max_replicas,
        policy_state=dict(state or {}),
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=config,
    )


def test_ttft_above_target_scales_up_in_proportion():
    policy = make_policy("ttft", target=0.5)
    answer(policy, 1.2)  # p90 1.2 s against 0.5 s on 1 replica: ceil(2.4)
    desired, state = policy(context(current=1))
    assert desired == 3
    assert state["value"] == 1.2 and state["wanted"] == 3


def test_within_tolerance_keeps_the_target():
    policy = make_policy("ttft", target=0.5)
    answer(policy, 0.53)
    assert policy(context(current=2, target=3))[0] == 3


def test_bounded_by_min_and_max_replicas():
    policy = make_policy("ttft", target=0.1)
    answer(policy, 10.0)  # 100x the target
    assert policy(context(current=2, max_replicas=4))[0] == 4
    low = make_policy("ttft", target=5.0)
    answer(low, 0.01)
    assert low(context(current=3, min_replicas=2))[0] == 2


def test_scale_down_waits_for_the_hold():
    policy = make_policy("ttft", target=0.5)
    answer(policy, 1.0)
    desired, state = policy(context(current=2, now=T0))
    assert desired == 4
    answer(policy, 0.1)  # the load is gone: the signal alone asks for 1
    desired, state = policy(context(current=4, state=state, now=T0 + 60))
    assert (desired, state["wanted"]) == (4, 1)
    desired, state = policy(context(current=4, state=state, now=T0 + HOLD_S - 1))
    assert desired == 4
    desired, state = policy(context(current=4, state=state, now=T0 + HOLD_S + 1))
    assert desired == 1
    assert all(t > T0 + 1 - HOLD_S for t, _ in state["recommendations"])


def test_queue_depth_per_replica():
    policy = make_policy("queue", target=4)
    answer(policy, 24)  # 24 waiting over 2 replicas: 12 each, 3x the target
    assert policy(context(current=2))[0] == 4  # ceil(6) bounded by max 4
    answer(policy, 0)
    assert policy(context(current=2, now=T0 + 2 * HOLD_S))[0] == 1


@pytest.mark.parametrize("value", [None, "no answer"])
def test_no_data_falls_back_to_rays_default_policy(value):
    policy = make_policy("ttft", target=0.5)
    if value is None:
        answer(policy, None)  # idle: histogram_quantile is NaN, the vector comes back empty
    # else: Prometheus never answered (the cache is empty)
    # Ray's default: ongoing 6 over target_ongoing_requests 2 on 1 replica -> 3
    desired, state = policy(context(current=1, ongoing=6))
    assert (desired, state["value"]) == (3, None)
    # and an idle deployment still comes down to its minimum once the hold has passed
    desired, _ = policy(context(current=3, ongoing=0, state=state, now=T0 + HOLD_S + 1))
    assert desired == 1


def test_a_stale_answer_is_no_answer():
    policy = make_policy("ttft", target=0.5)
    answer(policy, 5.0)
    policy._cache.timestamp -= policy._cache_ttl_s + 1
    assert policy(context(current=1, ongoing=2))[0] == 1  # Ray's default: 2 / 2 per replica


def test_under_serves_wrapper_the_hold_is_the_only_delay():
    """The controller wraps the policy in Ray's delays and bounds (autoscaling_state.py
    `_apply_autoscaling_config`); app/llm.py sets both delays to 0 with the policy on, so a load
    step acts on the next tick and the policy's hold is the one place a scale-down waits."""
    policy = make_policy("ttft", target=0.5)
    wrapped = _apply_autoscaling_config(policy)
    answer(policy, 1.0)
    desired, state = wrapped(context(current=1, delays_s=0))
    assert desired == 2
    answer(policy, 0.1)
    assert wrapped(context(current=2, state=state, now=T0 + 10, delays_s=0))[0] == 2


def test_serve_takes_the_policy_config():
    """Serve's own model imports and pickles the class from the import path, and its controller
    instantiates it with policy_kwargs (autoscaling_state.py _resolve_policy_callable)."""
    config = policy_config(model_id=MODEL, signal="queue", target=2, window_s=60, hold_s=HOLD_S)
    policy = AutoscalingPolicy(**config)
    assert policy.get_policy() is not None
    AutoscalingConfig(min_replicas=1, max_replicas=2, policy=config)


def test_queries_read_the_catalogued_metrics():
    """The image carries app/ only, so the names are restated: the dashboards' catalog is their
    home, and the labels the queries read must be the ones it records."""
    for name in (autoscaling.TTFT_METRIC, autoscaling.WAITING_METRIC):
        assert name in CATALOG
        assert autoscaling.MODEL_LABEL in CATALOG[name].labels
    assert CATALOG[autoscaling.TTFT_METRIC].type == "histogram"
    assert "le" in CATALOG[autoscaling.TTFT_METRIC].labels
    assert autoscaling.ttft_query('a"b', 30) == (
        "histogram_quantile(0.9, sum by (le) (rate(ray_vllm_time_to_first_token_seconds_bucket"
        '{model_name="a\\"b"}[30s])))'
    )


def test_refuses_a_bad_signal_or_target():
    with pytest.raises(ValueError, match="signal must be 'ttft' or 'queue'; got 'p99'"):
        ServingSignalPolicy(signal="p99", query="x", target=1, hold_s=1)
    with pytest.raises(ValueError, match="target must be > 0; got 0"):
        ServingSignalPolicy(signal="ttft", query="x", target=0, hold_s=1)


def test_prometheus_arriving_later_is_no_answer_until_then():
    """The local run starts Ray before its Prometheus (raygke/local.py): until it answers, Ray's
    mixin logs the refused query and reads None, so Ray's default decides; no exception."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    kwargs = policy_config(model_id=MODEL, signal="ttft", target=0.5, window_s=60, hold_s=HOLD_S)
    policy = ServingSignalPolicy(
        **kwargs["policy_kwargs"], prometheus_address=f"http://127.0.0.1:{port}"
    )
    try:
        for _ in range(3):
            desired, state = policy(context(current=1, ongoing=4))
            assert (desired, state["value"]) == (2, None)
            time.sleep(0.2)
    finally:
        policy._cache.stop.set()  # the refresh thread Ray started
