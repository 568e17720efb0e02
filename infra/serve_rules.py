"""What Ray Serve 2.60 and vLLM 0.29 would refuse at deploy, refused at plan time instead.

Owns `serve_problems`: the rules of Ray's own models for each deployment option the stack sets, and
the llm app's engine arguments checkable without a GPU, each read from the pinned versions' source
(cited per rule) and each problem naming the stack key, the value and what is allowed. What the
stack's models already refuse the way Ray does (infra/config.py: `DeploymentConfig`, `Autoscaling`;
app/contracts.py: `LlmArgs`) is not repeated here; tests/test_serve_rules.py proves the union
agrees with Ray's models. Imports neither Ray nor vLLM (planning loads no engine): Ray's accelerator
label and vLLM's limits are restated here and compared with the installed packages by the tests.
Also Ray Serve LLM's rules for direct streaming (`ray.tuning.llmDirectStreaming`), for every app
built by its OpenAI builder: the llm app, and a custom app whose importPath is that builder.
Does not own: the GPU count per replica against a node (infra/checks.py, `_app_problems`), where
the bucket is mounted (infra/config.py), nor building the serve config (infra/serve_config.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from pydantic import ValidationError

from app.contracts import (
    LLM_INGRESS_DEPLOYMENT,
    PREFIX_CACHE_AFFINITY,
    SERVER_DEPLOYMENT_PREFIX,
    LlmArgs,
)
from app.tiny_llm import MAX_POSITIONS as TINY_LLM_MAX_POSITIONS
from infra.config import (
    HA_PROXY_ENV,
    LLM_DIRECT_STREAMING_ENV,
    AppConfig,
    StackConfig,
    shown_value,
)

# Ray's accelerator label for each GKE GPU a pool may hold: Ray labels a node by the GPU's NVML
# name through NVIDIA_GPU_NAME_PATTERN (ray/_private/accelerators/nvidia_gpu.py,
# NvidiaGPUAcceleratorManager.get_current_node_accelerator_type): both H100 shapes report
# "NVIDIA H100 80GB HBM3", which Ray labels "H100" (ray.util.accelerators.accelerators.NVIDIA_H100,
# a value of Ray Serve LLM's AcceleratorType, ray/llm/_internal/serve/core/configs/accelerators.py).
RAY_ACCELERATOR_LABELS: dict[str, str] = {
    "nvidia-h100-80gb": "H100",
    "nvidia-h100-mega-80gb": "H100",
}

# Ray's resource unit: quantities are stored as integers of 1/10000 (ray._raylet.RESOURCE_UNIT_SCALING).
RAY_RESOURCE_UNIT_SCALING = 10_000

# vLLM's smallest default max_num_batched_tokens for its OpenAI server, which the llm app never sets
# (vllm/engine/arg_utils.py, EngineArgs.get_batch_defaults): 2048 on CPU (x world size 1) and on a GPU
# the process building the engine config cannot query (Ray's workers), 8192 on an H100 it can. The
# scheduler refuses fewer batched tokens than max_num_seqs (vllm/config/scheduler.py,
# SchedulerConfig.verify_max_model_len), so max_num_seqs above this may fail at engine start.
VLLM_MIN_DEFAULT_BATCHED_TOKENS = 2048


# Ray Serve LLM's OpenAI builder, as a custom app's importPath may name it (Serve imports
# `module:attr` or `module.attr`): the public one (ray/serve/llm/__init__.py) and the one it calls.
RAY_OPENAI_BUILDERS = frozenset(
    {
        "ray.serve.llm:build_openai_app",
        "ray.llm._internal.serve.core.ingress.builder:build_openai_app",
    }
)
# The one ingress class direct streaming takes (builder.py _validate_direct_streaming_ingress_config
# compares with this class itself: even ray.serve.llm.ingress.OpenAiIngress, its subclass, is refused).
RAY_OPENAI_INGRESS_CLASS = "ray.llm._internal.serve.core.ingress.ingress:OpenAiIngress"
# Ray Serve's test of the body-forwarding flag LoRA needs under direct streaming
# (ray/serve/_private/constants.py: get_env_bool, only "1" is true).
FORWARD_BODY_ENV = "RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY"


def serve_problems(c: StackConfig) -> list[str]:
    """Every deployment option and llm engine argument Ray or vLLM would refuse at deploy."""
    problems: list[str] = []
    for app in c.apps:
        problems += _deployment_problems(app)
        if app.kind == "llm":
            problems += _llm_problems(c, app)
    problems += _direct_streaming_problems(c)
    problems += _prefix_router_problems(c)
    return problems


# ------------------------------------------------------------------------------------ deployments
def _deployment_problems(app: AppConfig) -> Iterator[str]:
    """Ray's own checks that the stack's models (DeploymentConfig, Autoscaling) do not make.

    Every other option the stack sets is refused by its model exactly where Ray refuses it
    (tests/test_serve_rules.py holds the table and the property): num_replicas >= 1
    (ray/serve/schema.py DeploymentSchema.num_replicas: PositiveInt), num_replicas or autoscaling
    (DeploymentSchema.validate_num_replicas_and_autoscaling_config), max_ongoing_requests >= 1
    (DeploymentSchema, gt=0), health checks > 0 and graceful shutdown >= 0 (DeploymentSchema and
    ray/serve/_private/config.py DeploymentConfig), num_cpus / num_gpus >= 0 (RayActorOptionsSchema),
    num_gpus above 1 whole (stricter than Ray's CPU-only check: NVIDIA's accelerator manager's rule),
    autoscaling min >= 0, max >= 1, min <= max, target > 0, delays >= 0
    (ray/serve/config.py AutoscalingConfig and its replicas_settings_valid).
    """
    for name, dep in sorted(app.deployments.items()):
        for key, quantity in (("numCpus", dep.num_cpus), ("numGpus", dep.num_gpus)):
            # ray/serve/_private/config.py ReplicaConfig._validate_ray_actor_options ->
            # ray/_common/ray_option_utils.py _validate_resource_quantity: Ray counts resources in
            # units of 1 / RESOURCE_UNIT_SCALING (10000), so a non-zero quantity under one unit is
            # refused when Serve builds the replica.
            if quantity and int(quantity * RAY_RESOURCE_UNIT_SCALING) == 0:
                yield (
                    f"apps[{app.name}].deployments.{name}.{key} must be 0 or at least "
                    f"{1 / RAY_RESOURCE_UNIT_SCALING:g} (Ray's resource precision); got "
                    f"{quantity:g}; allowed: 0, or {1 / RAY_RESOURCE_UNIT_SCALING:g} and more"
                )
        queued = dep.max_queued_requests
        # ray/serve/_private/config.py DeploymentConfig.validate_max_queued_requests: -1 (no limit)
        # or >= 1; DeploymentSchema (ray/serve/schema.py) takes any StrictInt, so Serve refuses 0
        # only when the controller builds the deployment, after the RayService is applied.
        if queued is not None and queued != -1 and queued < 1:
            yield (
                f"apps[{app.name}].deployments.{name}.maxQueuedRequests must be -1 (no limit) or "
                f"a positive integer, as Ray Serve's DeploymentConfig requires; got {queued} "
                "(0 would refuse every request); allowed: -1, 1, 2, ..."
            )


# ------------------------------------------------------------------------------------ llm app
def _llm_problems(c: StackConfig, app: AppConfig) -> Iterator[str]:
    where = f"apps[{app.name}]"
    try:
        cluster = LlmArgs.model_validate(dict(app.args))
    except ValidationError:  # AppConfig._contract names these keys already
        return
    yield from _cluster_args_problems(c, app, cluster)
    yield from _hub_token_problems(c, f"{where}.args", cluster)
    yield from _context_problems(c, app, cluster, local=False)
    yield from _batch_problems(app, cluster, local=False)
    yield from _autoscale_problems(c, app, cluster)
    if not app.local_args:
        return
    try:
        local = LlmArgs.model_validate({**app.args, **app.local_args})
    except ValidationError:
        return
    if not app.runs_locally:  # `raygke local` leaves it out
        return
    yield from _tiny_model_problems(app, local)
    yield from _hub_token_problems(c, f"{where}.localArgs", local)
    yield from _context_problems(c, app, local, local=True)
    yield from _batch_problems(app, local, local=True)


def _key(app: AppConfig, field: str, *, local: bool) -> str:
    """The stack key that sets `field` for the cluster (args) or the local run (localArgs over args)."""
    section = "localArgs" if local and field in app.local_args else "args"
    return f"apps[{app.name}].{section}.{field}"


def _cluster_args_problems(c: StackConfig, app: AppConfig, args: LlmArgs) -> Iterator[str]:
    if args.load_format == "dummy":
        # vllm/config/load.py LoadFormats: dummy initialises random weights; only the local run
        # (the tiny model without weights, app/tiny_llm.py) may ask for it.
        yield (
            f"apps[{app.name}].args.load_format is 'dummy': vLLM would serve random weights of the "
            "model's shape in the cluster; allowed there: 'auto' (put load_format: dummy in "
            "localArgs for a local run)"
        )
    if args.device == "gpu" and args.accelerator_type is not None:
        pool = c.gpu_pool.accelerator_type
        label = RAY_ACCELERATOR_LABELS.get(pool)
        # Ray Serve LLM schedules each engine worker on `accelerator_type:<label>`
        # (ray/llm/_internal/serve/core/configs/llm_config.py LLMConfig.accelerator_type): a label
        # no node of the pool carries leaves the replicas pending forever.
        if label is not None and args.accelerator_type != label:
            yield (
                f"apps[{app.name}].args.accelerator_type {args.accelerator_type!r} is not the label "
                f"Ray gives gpuPool.acceleratorType {pool!r} nodes ({label!r}), so no replica "
                f"would ever be placed; allowed: {label!r}, or null for any GPU"
            )
    # The mount point is the bucket's root: a model directory lies below it (the under-the-mount
    # rule is infra/checks.py's _model_bucket_problems).
    bucket = c.ray_service.model_bucket
    if (
        args.source == "gcs"
        and bucket is not None
        and PurePosixPath(args.model_source) == PurePosixPath(bucket.mount_path)
    ):
        yield (
            f"apps[{app.name}].args.model_source {args.model_source!r} is the mount point of "
            f"rayService.modelBucket itself, not a model directory in bucket "
            f"{bucket.bucket!r}; allowed: {bucket.mount_path}/<model directory>"
        )


def _hub_token_problems(c: StackConfig, key: str, args: LlmArgs) -> Iterator[str]:
    """A gated hub model's token reaches the replicas only through the pods' env, which is
    ray.extraEnv (infra/specs.py: RayConfig.serve_flags plus CLUSTER_ENV); app/llm.py
    llm_config_kwargs raises at deploy where the variable is unset or empty."""
    if args.source != "hub" or not args.hf_token_env:
        return
    env = args.hf_token_env
    if env not in c.ray.extra_env:
        yield (
            f"{key}: source is 'hub' and the token is read from {env}, which ray.extraEnv does "
            f"not set, so the app fails at deploy; allowed: ray.extraEnv.{env} set (a Pulumi "
            "secret), or hf_token_env: null for a public model"
        )
    elif not c.ray.extra_env[env]:  # empty: nothing secret to hide
        yield f"ray.extraEnv.{env} is empty but {key} reads the hub token from it; set the token"


def _context_problems(
    c: StackConfig, app: AppConfig, args: LlmArgs, *, local: bool
) -> Iterator[str]:
    """The smoke LLM phase's request must fit the context: vLLM answers 400 to a prompt whose
    tokens plus max_tokens exceed max_model_len (vllm/renderers/params.py, _token_len_check)."""
    smoke = c.smoke.llm
    need = smoke.input_tokens + smoke.output_tokens
    if need > args.max_model_len:
        where = "the local run's" if local else "the cluster's"
        yield (
            f"smoke.llm.inputTokens ({smoke.input_tokens}) + outputTokens ({smoke.output_tokens}) "
            f"= {need} exceeds {_key(app, 'max_model_len', local=local)} ({args.max_model_len}), "
            f"{where} context: vLLM refuses every smoke request; allowed: a sum <= "
            f"{args.max_model_len}, or a larger max_model_len"
        )


def _batch_problems(app: AppConfig, args: LlmArgs, *, local: bool) -> Iterator[str]:
    if args.max_num_seqs > VLLM_MIN_DEFAULT_BATCHED_TOKENS:
        yield (
            f"{_key(app, 'max_num_seqs', local=local)} must be <= "
            f"{VLLM_MIN_DEFAULT_BATCHED_TOKENS}: vLLM's default max_num_batched_tokens for its "
            f"OpenAI server ({VLLM_MIN_DEFAULT_BATCHED_TOKENS} on CPU and where the engine cannot "
            "query the GPU) must be >= max_num_seqs, or the engine refuses to start; got "
            f"{args.max_num_seqs}"
        )


# How often the cluster's PodMonitorings scrape Ray's pods (components/render/rayservice.py
# render_pod_monitoring's default; tests/test_serve_rules.py compares): a rate needs two samples.
RAY_SCRAPE_INTERVAL_S = 30


def _autoscale_problems(c: StackConfig, app: AppConfig, args: LlmArgs) -> Iterator[str]:
    """The cluster's half of `autoscale_on` (app/contracts.py refuses what needs no other key).
    Without RAY_PROMETHEUS_HOST Ray's mixin never asks (autoscaling_policy.py
    PrometheusQueryMixin._ensure_refreshing) and the policy would silently be Ray's default."""
    on = args.autoscale_on
    if on is None:
        return
    key = f"apps[{app.name}].args.autoscale_on"
    if c.ray.prometheus_url is None:
        yield (
            f"{key} reads {on.signal} from Prometheus, but ray.prometheusUrl is unset, so the "
            "pods have no RAY_PROMETHEUS_HOST and the policy would only ever fall back to Ray's "
            "default; allowed: ray.prometheusUrl set to the GMP query frontend (e.g. "
            "http://frontend.gmp-public.svc:9090), or no autoscale_on"
        )
    if on.signal == "ttft" and on.window_s < 2 * RAY_SCRAPE_INTERVAL_S:
        yield (
            f"{key}.window_s ({on.window_s}) holds fewer than two of the cluster's "
            f"{RAY_SCRAPE_INTERVAL_S} s scrapes, so the TTFT rate has no value and the policy "
            f"falls back to Ray's default; allowed: {2 * RAY_SCRAPE_INTERVAL_S}..3600"
        )


def _tiny_model_problems(app: AppConfig, args: LlmArgs) -> Iterator[str]:
    """The local run's tiny Llama (app/tiny_llm.py: `source: local` and no model_source in
    localArgs, raygke/local.py local_serve_config) has no weights and MAX_POSITIONS positions."""
    if args.source != "local" or "model_source" in app.local_args:
        return
    if args.load_format != "dummy":
        # vllm/model_executor/model_loader/default_loader.py: "Cannot find any model weights".
        yield (
            f"{_key(app, 'load_format', local=True)} is {shown_value(args.load_format)} but the "
            "local run serves app/tiny_llm.py's model, which has no weights; allowed: 'dummy'"
        )
    if args.max_model_len > TINY_LLM_MAX_POSITIONS:
        # vllm/config/model.py _get_and_verify_max_len: above the config's max_position_embeddings
        # (and model_max_length) the engine refuses to start.
        yield (
            f"{_key(app, 'max_model_len', local=True)} ({args.max_model_len}) exceeds the "
            f"{TINY_LLM_MAX_POSITIONS} positions of app/tiny_llm.py's model, which the local run "
            f"serves; vLLM refuses to start; allowed: 128..{TINY_LLM_MAX_POSITIONS}"
        )


# ------------------------------------------------------------------------------------ direct streaming
def _import_path(path: str) -> str:
    """`module.attr` written as `module:attr`, as Serve's import_attr reads both."""
    return path if ":" in path else ":".join(path.rsplit(".", 1))


def builds_openai_app(app: AppConfig) -> bool:
    """Whether Ray Serve LLM's OpenAI builder builds the app: the llm app (app/llm.py build_app)
    or a custom app whose importPath is the builder itself."""
    if app.kind == "llm":
        return True
    return app.kind == "custom" and _import_path(app.import_path or "") in RAY_OPENAI_BUILDERS


def _direct_streaming_keys(c: StackConfig) -> tuple[str, str]:
    """The stack key that turned Ray Serve LLM's direct streaming on, and how to turn it off."""
    if c.ray.effective_tuning is not None:
        return "ray.tuning.llmDirectStreaming", "set ray.tuning.llmDirectStreaming: false"
    env = f"ray.extraEnv.{LLM_DIRECT_STREAMING_ENV}"
    return env, f"remove {env}"


def _direct_streaming_problems(c: StackConfig) -> Iterator[str]:
    """What Ray refuses at deploy about an app Ray Serve LLM builds in direct streaming: its
    builder (ray/llm/_internal/serve/core/ingress/builder.py build_openai_app, L240-279) makes the
    LLMServer deployment the ingress and attaches an LLMRouter as the ingress request router."""
    if not c.ray.llm_direct_streaming:
        return
    apps = [app for app in c.apps if builds_openai_app(app)]
    if not apps:
        return
    on_by, off = _direct_streaming_keys(c)
    names = ", ".join(f"apps[{app.name}]" for app in apps)
    if c.ray.node_flags.get(HA_PROXY_ENV) != "1":
        # ray/serve/_private/build_app.py L145-146: an app with an ingress request router is
        # refused unless RAY_SERVE_ENABLE_HA_PROXY is "1" (the router answers Ray's HAProxy only).
        # The value is not shown: extraEnv may hold secrets.
        why = (
            f"ray.extraEnv.{HA_PROXY_ENV} turns it off"
            if HA_PROXY_ENV in c.ray.extra_env
            else f"serveProfile {c.ray.serve_profile} runs Ray's Python proxy"
        )
        yield (
            f"{on_by} builds {names} in Ray Serve LLM's direct streaming, which needs Ray's "
            f"HAProxy ingress ({HA_PROXY_ENV}=1), but {why}: Ray Serve refuses the app at deploy; "
            f"allowed: Ray's HAProxy ingress on (serveProfile tuned or flags-only without "
            f"ray.extraEnv.{HA_PROXY_ENV}), or {off}"
        )
    for app in apps:
        yield from _direct_streaming_app_problems(c, app, on_by, off)


def _direct_streaming_app_problems(
    c: StackConfig, app: AppConfig, on_by: str, off: str
) -> Iterator[str]:
    where = f"apps[{app.name}]"
    because = f"under {on_by} (Ray Serve LLM's direct streaming)"
    args = dict(app.args)
    configs = args.get("llm_configs")
    models = (
        [str(m["model_loading_config"]["model_id"]) for m in configs if _model_id(m)]
        if isinstance(configs, list)
        else []
    )
    if app.kind == "llm":
        models = [str(args.get("model_id"))]
    servers = [SERVER_DEPLOYMENT_PREFIX + m.replace("/", "--").replace(".", "_") for m in models]
    if LLM_INGRESS_DEPLOYMENT in app.deployments:
        # The app has no OpenAiIngress deployment; Serve refuses an override of a deployment the
        # app does not have (ray/serve/_private/application_state.py override_deployment_info,
        # L1887-1892: "Deployment ... does not exist"). The llm app's deployments are refused
        # before this (AppConfig: Ray Serve LLM names its own).
        instead = f"configure {' or '.join(servers)} instead" if servers else "remove it"
        yield (
            f"{where}.deployments.{LLM_INGRESS_DEPLOYMENT} is set, but {because} the app has no "
            f"{LLM_INGRESS_DEPLOYMENT} deployment (the LLMServer is its ingress) and Ray Serve "
            f"refuses the override at deploy; allowed: {instead}, or {off}"
        )
    if app.kind != "custom":
        return  # app/llm.py builds one LLMConfig, no ingress options, no LoRA
    if isinstance(configs, list) and len(configs) > 1:
        # builder.py L259-265: exactly one LLM config per app.
        yield (
            f"{where}.args.llm_configs has {len(configs)} models, but {because} Ray Serve LLM "
            f"builds exactly one per app and refuses more at deploy; allowed: one LLM config per "
            f"app (one app per model), or {off}"
        )
    if args.get("ingress_deployment_config"):
        # builder.py L221-228 (_validate_direct_streaming_ingress_config).
        yield (
            f"{where}.args.ingress_deployment_config is set, but {because} the LLMServer is the "
            "ingress and Ray Serve LLM refuses ingress options at deploy; allowed: the server's "
            f"options in each LLM config's deployment_config, or {off}"
        )
    ingress = args.get("ingress_cls_config")
    if isinstance(ingress, dict) and (
        ingress.get("ingress_extra_kwargs")
        or _import_path(str(ingress.get("ingress_cls") or RAY_OPENAI_INGRESS_CLASS))
        != RAY_OPENAI_INGRESS_CLASS
    ):
        # builder.py L229-238: any ingress class but Ray's own, or extra kwargs for it.
        yield (
            f"{where}.args.ingress_cls_config is set, but {because} the LLMServer is the ingress "
            f"and Ray Serve LLM refuses an ingress class or its kwargs at deploy; allowed: no "
            f"ingress_cls_config, or {off}"
        )
    forward_body = c.ray.node_flags.get(FORWARD_BODY_ENV) == "1"
    for index, config in enumerate(configs if isinstance(configs, list) else []):
        if isinstance(config, dict) and config.get("lora_config") and not forward_body:
            # builder.py L109-116 (_build_openai_ingress_request_router).
            yield (
                f"{where}.args.llm_configs[{index}].lora_config is set, but {because} LoRA "
                f"needs {FORWARD_BODY_ENV}=1 (the router reads the adapter from the body), which "
                f"ray.extraEnv does not set; Ray Serve LLM refuses the app at deploy; allowed: "
                f"ray.extraEnv.{FORWARD_BODY_ENV}: '1', or no lora_config, or {off}"
            )


def _model_id(config: object) -> bool:
    """An LLM config given inline with its model id (a path to a YAML file is read only by Ray)."""
    return (
        isinstance(config, dict)
        and isinstance(config.get("model_loading_config"), dict)
        and ("model_id" in config["model_loading_config"])
    )


# ------------------------------------------------------------------------------------ request routers
# Ray Serve LLM's prefix-aware router under each import path a custom app may give it (Serve imports
# `module:attr` or `module.attr`): the public class (ray/serve/llm/request_router.py, the one the llm
# app's `router: prefix-cache-affinity` names, app/llm.py) and the one it subclasses.
PREFIX_ROUTER_CLASSES = frozenset(
    {
        "ray.serve.llm.request_router:PrefixCacheAffinityRouter",
        "ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router:"
        "PrefixCacheAffinityRouter",
    }
)


def _prefix_router_keys(app: AppConfig) -> Iterator[str]:
    """The stack keys that give an app Ray Serve LLM's prefix-aware router."""
    if app.kind == "llm":
        if app.args.get("router") == PREFIX_CACHE_AFFINITY:
            yield f"apps[{app.name}].args.router"
        elif app.local_args.get("router") == PREFIX_CACHE_AFFINITY:
            yield f"apps[{app.name}].localArgs.router"
        return
    configs = app.args.get("llm_configs")
    for index, config in enumerate(configs if isinstance(configs, list) else []):
        deployment = config.get("deployment_config") if isinstance(config, dict) else None
        router = deployment.get("request_router_config") if isinstance(deployment, dict) else None
        cls = router.get("request_router_class") if isinstance(router, dict) else None
        if isinstance(cls, str) and _import_path(cls) in PREFIX_ROUTER_CLASSES:
            yield (
                f"apps[{app.name}].args.llm_configs[{index}].deployment_config."
                "request_router_config.request_router_class"
            )


def _prefix_router_problems(c: StackConfig) -> Iterator[str]:
    """The prefix-aware router routes by what it has recorded, and it records a prompt only in
    on_request_routed (prefix_aware_router.py L394-418), which Serve calls once a handle has sent the
    request to the replica it picked (ray/serve/_private/router.py L1072). In direct streaming no
    handle sends it: Ray's HAProxy asks LLMRouter for a replica, which only picks one
    (router.py L361-363: handle.choose_replica(_reserve=False); ray/serve/_private/router.py
    L1289-1317), and forwards the request itself. The router's prefix tree stays empty: without the
    request body (RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY unset, Ray's default) it sees no prompt
    and falls back to a random pick (prefix_aware_router.py L357-391); with the body, every match rate
    is 0, every replica ties as the "smallest tenant" (prefix_tree.py L546-562) and LLMRouter takes the
    first of them (ray/serve/_private/router.py L1309-1316): one replica gets every request until the
    queues differ by more than the router's imbalanced threshold."""
    if not c.ray.llm_direct_streaming:
        return
    on_by, off = _direct_streaming_keys(c)
    if c.ray.node_flags.get(FORWARD_BODY_ENV) == "1":
        effect = (
            "with the request body it finds no prefix in an empty tree and sends every request to "
            "the same replica until the queues differ by more than its imbalanced threshold"
        )
    else:
        effect = (
            f"without the request body ({FORWARD_BODY_ENV} is not '1') it sees no prompt and "
            "picks a replica at random"
        )
    for app in c.apps:
        if not builds_openai_app(app):
            continue
        for key in _prefix_router_keys(app):
            instead = "router: default" if app.kind == "llm" else "another request_router_class"
            yield (
                f"{key} selects Ray Serve LLM's PrefixCacheAffinityRouter, which cannot route by "
                f"prefix under {on_by} (Ray Serve LLM's direct streaming): Ray's HAProxy sends each "
                "request straight to the replica LLMRouter picks, no handle sends it, so the router "
                f"never records a prompt; {effect}; allowed: {instead}, or {off}"
            )
