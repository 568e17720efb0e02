"""What each app accepts from the stack config: its `args` model and its deployment names.

Owns the contract between app/ and the stack config, in one place both read: the apps build their
Serve applications from these models, and infra/config.py validates a stack's `args`, `localArgs`
and `deployments` keys against them at plan time. Imports pydantic only (no Ray, torch or vLLM), so
`raygke plan` stays fast and runs where those are missing. Does not own how an app serves requests
(app/echo.py, app/recsys.py, app/llm.py) nor replica counts or resources (the stack config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Ray Serve's codecs for handle calls over gRPC that need no extra package (msgpack and orjson
# need ormsgpack / orjson in the image). pickle skips cloudpickle's by-value machinery, which the
# plain dicts, protobuf-free payloads and numpy arrays our deployments exchange never need.
HandleSerialization = Literal["cloudpickle", "pickle"]

# --------------------------------------------------------------------------------------------- echo
ECHO_INGRESS_DEPLOYMENT = "EchoIngress"
ECHO_DEPLOYMENT = "Echo"
STREAMER_DEPLOYMENT = "Streamer"
ECHO_DEPLOYMENTS = (ECHO_INGRESS_DEPLOYMENT, ECHO_DEPLOYMENT, STREAMER_DEPLOYMENT)


class EchoArgs(BaseModel):
    """The serve config's `args` for the echo app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload_size: int = Field(default=1024, ge=0, description="default reply payload characters")
    max_payload_size: int = Field(
        default=1 << 20, ge=1, description="largest payload a request may ask"
    )
    chunks: int = Field(default=20, ge=1, description="default chunks per stream")
    max_chunks: int = Field(default=1000, ge=1, description="most chunks a request may ask")
    # Seconds, at most a minute: 200 is milliseconds written as seconds, a stream that never ends.
    ttft_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="delay before the first chunk (time to first token), s",
    )
    tpot_s: float = Field(
        default=0.0, ge=0, le=60, description="delay between chunks (time per output token), s"
    )
    max_delay_ms: int = Field(
        default=5000, ge=0, description="largest ttft_ms / tpot_ms a stream request may ask"
    )
    version: str = Field(
        default="v1", min_length=1, description="echoed in replies, to watch redeploys"
    )
    handle_serialization: HandleSerialization = Field(
        default="cloudpickle",
        description="how the ingress's calls to Echo and Streamer are serialized over gRPC",
    )


# --------------------------------------------------------------------------------------------- recsys
RECSYS_INGRESS_DEPLOYMENT = "RecsysIngress"
RANKER_DEPLOYMENT = "Ranker"
RECSYS_DEPLOYMENTS = (RECSYS_INGRESS_DEPLOYMENT, RANKER_DEPLOYMENT)


# The ranker's embedding tables: NUM_SPARSE tables of `cardinality` rows of EMBEDDING_DIM float32s,
# what the stack's memory check sizes (infra/checks.py) and what app/recsys.py builds.
NUM_SPARSE = 26
EMBEDDING_DIM = 64
EMBEDDING_BYTES = 4


def embedding_bytes(cardinality: int) -> int:
    """The bytes one Ranker replica's embedding tables hold."""
    return NUM_SPARSE * cardinality * EMBEDDING_DIM * EMBEDDING_BYTES


class RecsysArgs(BaseModel):
    """The serve config's `args` for the recsys app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(default=32, ge=1, description="rows synthesized when a request gives none")
    max_rows: int = Field(default=1024, ge=1, description="most rows one request may carry")
    cardinality: int = Field(default=1000, ge=2, description="rows per embedding table")
    seed: int = Field(default=0, description="weight init seed (ignored with weights_path)")
    weights_path: str | None = Field(default=None, description="a MiniDLRM state dict (torch.save)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(
        default=16, ge=1, description="most requests merged into one forward"
    )
    batch_wait_timeout_s: float = Field(
        default=0.002, ge=0, description="how long a batch waits to fill"
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="intra-op threads; None: torch's"
    )
    handle_serialization: HandleSerialization = Field(
        default="cloudpickle", description="how the ingress's calls to the Ranker are serialized"
    )


# --------------------------------------------------------------------------------------------- llm
LLM_INGRESS_DEPLOYMENT = "OpenAiIngress"
SERVER_DEPLOYMENT_PREFIX = "LLMServer:"
# Direct streaming's ingress request router (ray/llm/_internal/serve/core/ingress/builder.py
# _build_openai_ingress_request_router: serve.deployment(LLMRouter), named after its class).
LLM_ROUTER_DEPLOYMENT = "LLMRouter"
ACCELERATOR_TYPE = "H100"  # Ray's accelerator label for nvidia-h100-80gb nodes
HF_TOKEN_ENV = "HF_TOKEN"  # where vLLM and huggingface_hub read the token

# How Serve picks the LLMServer replica for each request (the deployment's request router; app/llm.py
# maps each to Ray's class). default: Ray's own (power of two choices between the two replicas with
# the shorter queues; round robin under direct streaming). prefix-cache-affinity: Ray Serve LLM's
# PrefixCacheAffinityRouter, which sends a prompt to the replica that already served its longest
# prefix, so vLLM's prefix cache holds it (docs/decisions.md, "Request routing for llm apps").
LlmRouter = Literal["default", "prefix-cache-affinity"]
PREFIX_CACHE_AFFINITY: LlmRouter = "prefix-cache-affinity"
# Ray leaves the router prefix-first whatever the queues (imbalanced_threshold inf), and Ray Serve LLM
# lets an LLMServer replica take 1e9 requests: one system prompt shared by all traffic would pin
# every request to the replica that saw it first. 64 is the absolute queue gap at which vLLM's
# production-stack router and SGLang's gateway leave their cache_aware policy for load.
PREFIX_IMBALANCED_THRESHOLD = 64
# Ray's eviction pair (400_000 chars, down to 360_000) as one bound per replica, off by Ray's default:
# the prefix tree is a detached actor that lives as long as the app and keeps every prompt it saw.
PREFIX_EVICTION_CHARS = 400_000
PREFIX_EVICTION_TARGET = 0.9  # evicted down to this share of the bound, as Ray's own pair
PREFIX_KNOBS = (
    "prefix_imbalanced_threshold",
    "prefix_match_rate_threshold",
    "prefix_eviction_chars",
)


# What the LLMServer autoscales on (app/autoscaling.py; docs/observability.md, "LLM autoscaling on a
# serving signal"): ttft: vLLM's time to first token, p90 over `window_s`; queue: requests waiting in
# the engines per replica. Unset: Ray's default, ongoing requests per replica.
AutoscaleSignal = Literal["ttft", "queue"]
# The signal's target field per signal, and the fields only the other signal takes.
SIGNAL_TARGETS: dict[str, str] = {"ttft": "target_ms", "queue": "target_per_replica"}


class AutoscaleOn(BaseModel):
    """`args.autoscale_on` of the llm app: the serving signal its replicas follow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: AutoscaleSignal
    # Milliseconds, at most 10 minutes: more is microseconds written as milliseconds.
    target_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="ttft only: the TTFT p90 to hold, ms"
    )
    target_per_replica: float | None = Field(
        default=None, gt=0, le=100_000, description="queue only: waiting requests per replica"
    )
    # A rate needs two scrapes in its window: 10 s covers the local run's 5 s scrapes; the
    # cluster's 30 s scrapes need 60 (infra/serve_rules.py).
    window_s: int = Field(
        default=60, ge=10, le=3600, description="ttft only: the rate window of the p90, s"
    )
    hold_s: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="how long the highest recommendation holds before replicas come down, s",
    )

    @model_validator(mode="after")
    def _target(self) -> AutoscaleOn:
        wanted = SIGNAL_TARGETS[self.signal]
        if getattr(self, wanted) is None:
            raise ValueError(
                f"signal {self.signal} needs {wanted}; e.g. "
                + ("target_ms: 500" if self.signal == "ttft" else "target_per_replica: 4")
            )
        for other in set(SIGNAL_TARGETS.values()) - {wanted}:
            if getattr(self, other) is not None:
                raise ValueError(
                    f"{other} applies only to signal "
                    f"{next(s for s, f in SIGNAL_TARGETS.items() if f == other)}; got signal "
                    f"{self.signal} and {other} {getattr(self, other)!r}; allowed: {wanted}"
                )
        if self.signal == "queue" and "window_s" in self.model_fields_set:
            raise ValueError(
                f"window_s applies only to signal ttft (the queue is read as it is now); got "
                f"signal queue and window_s {self.window_s}"
            )
        return self

    @property
    def target(self) -> float:
        """The policy's target: seconds of TTFT p90, or waiting requests per replica."""
        if self.signal == "ttft":
            return (self.target_ms or 0) / 1000
        return self.target_per_replica or 0


class LlmArgs(BaseModel):
    """The serve config's `args` for the llm app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1, description="the name clients send as `model`")
    source: Literal["gcs", "hub", "local"] = Field(
        description="gcs: weights under a GCS FUSE mount path; hub: a Hugging Face repo id; "
        "local: a directory on the replica's machine (the local run's tiny model, app/tiny_llm.py)"
    )
    model_source: str = Field(
        min_length=1,
        description="gcs: absolute mount path (/gcs/models/x); hub: org/name; local: absolute path",
    )
    hf_token_env: str | None = Field(
        default=HF_TOKEN_ENV,
        description="env var holding the hub token (filled from a Secret); None: public",
    )
    device: Literal["gpu", "cpu"] = Field(
        default="gpu", description="gpu: the H100 pools; cpu: vLLM's CPU build (the local run)"
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=8, description="GPUs per replica (1-8 per node)"
    )
    max_model_len: int = Field(default=8192, ge=128)
    max_num_seqs: int = Field(default=256, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="gpu only")
    load_format: Literal["auto", "dummy"] = Field(
        default="auto",
        description="dummy: random weights of the config's shape (a model directory without weights)",
    )
    enforce_eager: bool = Field(
        default=False, description="no CUDA graphs or compilation: faster start, slower steps"
    )
    cpus_per_replica: int = Field(
        default=1, ge=1, description="cpu only: logical CPUs the engine's placement bundle holds"
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        description="KV cache memory per replica; None: vLLM's share of gpu_memory_utilization",
    )
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    accelerator_type: str | None = Field(
        default=ACCELERATOR_TYPE,
        description="gpu only: Ray's accelerator label the replicas need; None: any GPU",
    )
    router: LlmRouter = Field(
        default="default",
        description="how Serve picks the replica for each request: default (Ray's power of two "
        "choices) or prefix-cache-affinity (the replica that served the prompt's longest prefix)",
    )
    autoscale_on: AutoscaleOn | None = Field(
        default=None,
        description="the serving signal the LLMServer's replicas follow (TTFT or queue depth, "
        "read from Prometheus); None: Ray's default, ongoing requests",
    )
    prefix_imbalanced_threshold: int = Field(
        default=PREFIX_IMBALANCED_THRESHOLD,
        ge=0,
        le=1_000_000,
        description="prefix-cache-affinity only: when the replicas' queues differ by more "
        "requests than this, the replica is picked by load, not by prefix",
    )
    prefix_match_rate_threshold: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="prefix-cache-affinity only: the least share of a prompt a replica must "
        "have seen to be preferred; below it, the replica holding the fewest prompts",
    )
    prefix_eviction_chars: int | None = Field(
        default=PREFIX_EVICTION_CHARS,
        ge=1000,
        description="prefix-cache-affinity only: prompt characters the router remembers per "
        "replica before it forgets the least recently used (down to 90%); None: never forget",
    )

    @model_validator(mode="after")
    def _check(self) -> LlmArgs:
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
        if self.source == "local" and not self.model_source.startswith("/"):
            raise ValueError(
                "model_source must be an absolute directory on the replica's machine when source "
                f"is 'local'; got {self.model_source!r}"
            )
        if self.router != PREFIX_CACHE_AFFINITY:
            for knob in PREFIX_KNOBS:
                if knob in self.model_fields_set:
                    raise ValueError(
                        f"{knob} applies only with router {PREFIX_CACHE_AFFINITY!r}; got router "
                        f"{self.router!r} and {knob} {getattr(self, knob)!r}; allowed: router: "
                        f"{PREFIX_CACHE_AFFINITY}, or no {knob}"
                    )
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        if self.autoscale_on is not None and self.min_replicas == self.max_replicas:
            raise ValueError(
                f"autoscale_on needs room to scale: min_replicas and max_replicas are both "
                f"{self.min_replicas}; allowed: max_replicas > min_replicas, or no autoscale_on"
            )
        if self.device == "cpu":
            # Ray Serve LLM refuses an accelerator label on CPU; only a label the stack set is
            # an error (the default belongs to the GPU path).
            if self.accelerator_type is not None and "accelerator_type" in self.model_fields_set:
                raise ValueError(
                    f"accelerator_type must be null when device is 'cpu'; got "
                    f"{self.accelerator_type!r}"
                )
            if self.kv_cache_gib is None:
                raise ValueError(
                    "kv_cache_gib is required when device is 'cpu': without it vLLM's CPU engine "
                    "reserves gpu_memory_utilization of the machine's RAM; e.g. kv_cache_gib: 1"
                )
            if self.tensor_parallel_size != 1:
                raise ValueError(
                    "tensor_parallel_size must be 1 when device is 'cpu' (one engine process per "
                    f"replica); got {self.tensor_parallel_size}"
                )
        return self


# --------------------------------------------------------------------------------------------- all
@dataclass(frozen=True)
class AppContract:
    args: type[BaseModel]
    # The deployment names the stack may override; None: the app names its own (Ray Serve LLM),
    # so the stack may override none.
    deployments: tuple[str, ...] | None


CONTRACTS: dict[str, AppContract] = {
    "echo": AppContract(EchoArgs, ECHO_DEPLOYMENTS),
    "recsys": AppContract(RecsysArgs, RECSYS_DEPLOYMENTS),
    "llm": AppContract(LlmArgs, None),
}
