"""Serve autoscaling for the llm app's LLMServer on a serving signal read from Prometheus.

Owns `ServingSignalPolicy`, a Ray Serve custom autoscaling policy (ray/serve/config.py
`AutoscalingPolicy`: a class, built once with `policy_kwargs`, called every control-loop tick with an
`AutoscalingContext`, returning `(desired replicas, state)`), and `policy_config`, the
`autoscaling_config.policy` entry that names it. The signal is either vLLM's time to first token
(p90 over a rate window) or its waiting requests per replica, each against the stack's target
(app/contracts.py `AutoscaleOn`). Prometheus is Ray's to ask: `PrometheusQueryMixin`
(ray/serve/autoscaling_policy.py) runs the queries in a background thread against
`RAY_PROMETHEUS_HOST` and hands back the latest answer, or None.

Does not own: where Prometheus is (the pods' env: infra/specs.py from `ray.prometheusUrl`; the local
run's: raygke/local.py), the bounds and delays around the policy (Ray applies min/max replicas and
its delays to whatever the policy returns: autoscaling_state.py `_apply_autoscaling_config`).
Imports Ray only: Serve pickles this module by value into its controller.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ray.serve.autoscaling_policy import (
    PrometheusQueryMixin,
    replica_queue_length_autoscaling_policy,
)
from ray.serve.config import AutoscalingContext

# vLLM's metrics as Ray exports them, with the labels read here. The image carries app/ only, so the
# names are restated; tests/test_autoscaling_policy.py checks them against the dashboards' catalog
# (components/render/observability.py CATALOG), their one home.
TTFT_METRIC = "ray_vllm_time_to_first_token_seconds"
WAITING_METRIC = "ray_vllm_num_requests_waiting"
MODEL_LABEL = "model_name"  # Ray Serve LLM sets it to the model id (engines/vllm/vllm_models.py)

TTFT_QUANTILE = 0.9
# Within 10% of the target the replicas stay as they are: Kubernetes' HPA tolerance, so that a
# signal hovering at the target does not add and remove a replica every tick.
TOLERANCE = 0.1
POLICY_PATH = "app.autoscaling:ServingSignalPolicy"


def ttft_query(model_id: str, window_s: int) -> str:
    """TTFT p90 of the model over the last `window_s`, in seconds; empty while nothing is served
    (histogram_quantile of zero rates is NaN, which Ray's mixin drops)."""
    return (
        f"histogram_quantile({TTFT_QUANTILE}, sum by (le) (rate({TTFT_METRIC}_bucket"
        f"{{{MODEL_LABEL}={_string(model_id)}}}[{window_s}s])))"
    )


def waiting_query(model_id: str) -> str:
    """Requests waiting in the model's engines, all replicas together."""
    return f"sum({WAITING_METRIC}{{{MODEL_LABEL}={_string(model_id)}}})"


def _string(value: str) -> str:
    """A PromQL string literal: JSON's quoting is a subset of the Go escapes PromQL takes."""
    return json.dumps(value)


class ServingSignalPolicy(PrometheusQueryMixin):
    """Replicas in proportion to the signal over its target (the HPA rule: ceil(current x
    signal / target)), bounded by the deployment's min and max replicas, held at the highest
    recommendation of the last `hold_s` seconds (the HPA's scale-down stabilization window):
    a load step scales up at once, a dip scales down only once it has lasted `hold_s`.

    With no answer from Prometheus (unset, unreachable, stale, or no sample: TTFT is NaN while
    idle) it decides as Ray's default policy does, on the ongoing requests Serve counts itself,
    rather than keep the current target: an idle deployment must still come down to its minimum,
    and a Prometheus outage must not freeze the replicas where a load peak left them."""

    def __init__(
        self,
        *,
        signal: str,
        query: str,
        target: float,
        hold_s: float,
        **kwargs: Any,
    ) -> None:
        if signal not in ("ttft", "queue"):
            raise ValueError(f"signal must be 'ttft' or 'queue'; got {signal!r}")
        if target <= 0:
            raise ValueError(f"target must be > 0; got {target!r}")
        super().__init__(prometheus_queries=[query], **kwargs)
        self.signal, self.query, self.target, self.hold_s = signal, query, target, hold_s

    def recommend(self, ctx: AutoscalingContext) -> tuple[int, float | None]:
        """The replicas the signal asks for now (before bounds and hold), and the signal's value."""
        current = ctx.current_num_replicas
        value = (self.prometheus_metrics or {}).get(self.query)
        if value is None or current == 0:  # no answer; or nothing running to measure
            desired, _ = replica_queue_length_autoscaling_policy(ctx)
            return math.ceil(desired), value
        per_replica = value / current if self.signal == "queue" else value
        ratio = per_replica / self.target
        if abs(ratio - 1) <= TOLERANCE:
            return ctx.target_num_replicas, value
        return math.ceil(current * ratio), value

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time if ctx.current_time is not None else time.time()
        wanted, value = self.recommend(ctx)
        wanted = max(ctx.capacity_adjusted_min_replicas, wanted)
        wanted = min(ctx.capacity_adjusted_max_replicas, wanted)
        # [time, replicas] pairs (JSON-friendly) of the hold window; the newest last.
        held = [
            [t, n] for t, n in ctx.policy_state.get("recommendations", []) if now - t < self.hold_s
        ]
        held.append([now, wanted])
        desired = max(n for _, n in held)
        state = {
            "recommendations": held,
            "signal": self.signal,
            "value": value,  # None: Prometheus had no answer, Ray's default decided
            "wanted": wanted,
        }
        return desired, state


def policy_config(
    *, model_id: str, signal: str, target: float, window_s: int, hold_s: float
) -> dict[str, Any]:
    """`autoscaling_config.policy` for the LLMServer deployment: the class by import path and its
    constructor's keyword arguments (JSON only: ray/serve/config.py policy_kwargs_json_serializable).
    `target`: seconds of TTFT p90, or waiting requests per replica."""
    query = ttft_query(model_id, window_s) if signal == "ttft" else waiting_query(model_id)
    return {
        "policy_function": POLICY_PATH,
        "policy_kwargs": {"signal": signal, "query": query, "target": target, "hold_s": hold_s},
    }
