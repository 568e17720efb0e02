"""The llm app: Ray Serve LLM's OpenAI-compatible application for the H100 pools.

Owns: `LlmArgs` (the serve config's `args`), the pure mapping from them to `LLMConfig` keyword
arguments (`llm_config_kwargs`, tested here), and `build_app`, which hands them to
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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

INGRESS_DEPLOYMENT = "OpenAiIngress"
SERVER_DEPLOYMENT_PREFIX = "LLMServer:"
ACCELERATOR_TYPE = "H100"  # Ray's accelerator label for nvidia-h100-80gb nodes
HF_TOKEN_ENV = "HF_TOKEN"  # where vLLM and huggingface_hub read the token


class LlmArgs(BaseModel):
    """The serve config's `args` for the llm app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1, description="the name clients send as `model`")
    source: Literal["gcs", "hub"] = Field(
        description="gcs: weights under a GCS FUSE mount path; hub: a Hugging Face repo id"
    )
    model_source: str = Field(
        min_length=1, description="gcs: absolute mount path (/gcs/models/x); hub: org/name"
    )
    hf_token_env: str | None = Field(
        default=HF_TOKEN_ENV,
        description="env var holding the hub token (filled from a Secret); None: public",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=8, description="GPUs per replica (1-8 per node)"
    )
    max_model_len: int = Field(default=8192, ge=128)
    max_num_seqs: int = Field(default=256, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    accelerator_type: str = ACCELERATOR_TYPE

    @model_validator(mode="after")
    def _check(self) -> "LlmArgs":
        if self.source == "gcs" and not self.model_source.startswith("/"):
            raise ValueError(
                "model_source must be the absolute path where the GCS FUSE CSI driver mounts the "
                f"bucket (e.g. /gcs/models/llama) when source is 'gcs'; got {self.model_source!r}"
            )
        if self.source == "hub" and (
            self.model_source.startswith("/") or "/" not in self.model_source
        ):
            raise ValueError(
                "model_source must be a Hugging Face repo id 'org/name' when source is 'hub'; got "
                f"{self.model_source!r}"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self


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
