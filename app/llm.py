"""The llm app: Ray Serve LLM's OpenAI-compatible application for the H100 pools.

Owns: the pure mapping from `LlmArgs` (the serve config's `args`, defined in app/contracts.py) to
`LLMConfig` keyword arguments (`llm_config_kwargs`, tested here), and `build_app`, which hands them to
`ray.serve.llm.build_openai_app`. Ray Serve LLM answers `/v1/models` and `/v1/chat/completions`.
Does not own: the model bytes (a GCS bucket mounted by the GCS FUSE CSI driver, or the Hugging
Face hub), the token Secret or the mount (the RayService spec wires both), GPU node pools.

`ray.serve.llm` is imported inside `build_app` only: it needs vllm (and pyarrow), which the
cluster image has and the local environment does not.

Deployment names (the stack config overrides per name): Ray Serve LLM names them itself,
`OpenAiIngress` and `LLMServer:<model id, "/" -> "--", "." -> "_">` (see `deployment_names`).
"""

import os
from collections.abc import Mapping
from typing import Any

from ray import serve

from app.contracts import (
    HF_TOKEN_ENV,
    LLM_INGRESS_DEPLOYMENT,
    SERVER_DEPLOYMENT_PREFIX,
    LlmArgs,
)

INGRESS_DEPLOYMENT = LLM_INGRESS_DEPLOYMENT


def deployment_names(args: LlmArgs) -> tuple[str, str]:
    """(ingress, server) deployment names as Ray Serve LLM derives them from the model id."""
    server = args.model_id.replace("/", "--").replace(".", "_")
    return INGRESS_DEPLOYMENT, SERVER_DEPLOYMENT_PREFIX + server


def llm_config_kwargs(args: LlmArgs, env: Mapping[str, str]) -> dict[str, Any]:
    """`LLMConfig(**kwargs)` for these args. `env` is the replica's environment (os.environ on the
    cluster), read only for the hub token; raises ValueError naming the variable if it is unset."""
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": args.model_id, "model_source": args.model_source},
        "accelerator_type": args.accelerator_type,
        "engine_kwargs": {
            "tensor_parallel_size": args.tensor_parallel_size,
            "max_model_len": args.max_model_len,
            "max_num_seqs": args.max_num_seqs,
            "gpu_memory_utilization": args.gpu_memory_utilization,
        },
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": args.min_replicas,
                "max_replicas": args.max_replicas,
            }
        },
    }
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


# No `from __future__ import annotations` here: Serve reads the builder's annotation at runtime
# to validate the config's `args` into LlmArgs.
def build_app(args: LlmArgs) -> serve.Application:
    """The OpenAI-compatible application (needs vllm: cluster image only)."""
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(**llm_config_kwargs(args, os.environ))
    return build_openai_app({"llm_configs": [config]})
