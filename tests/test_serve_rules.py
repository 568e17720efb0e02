"""infra/serve_rules.py: what Ray Serve 2.60 and vLLM 0.29 would refuse at deploy, refused at plan
time; with Ray's own models (imported here, never by the module) as the oracle for every deployment
option the stack sets."""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from stackfiles import SECRET, STACKS, cases

from app.contracts import LlmArgs
from app.tiny_llm import MAX_POSITIONS
from infra.config import MAX_SCALE_DELAY_S, StackConfig
from infra.serve_config import build_serve_config
from infra.serve_rules import (
    FORWARD_BODY_ENV,
    PREFIX_ROUTER_CLASSES,
    RAY_ACCELERATOR_LABELS,
    RAY_OPENAI_BUILDERS,
    RAY_OPENAI_INGRESS_CLASS,
    RAY_RESOURCE_UNIT_SCALING,
    VLLM_MIN_DEFAULT_BATCHED_TOKENS,
    serve_problems,
)
from infra.stack_file import load_stack_config

pytestmark = pytest.mark.pure
ROOT = Path(__file__).parents[1]


@functools.cache
def _dump(stack: str) -> dict[str, Any]:
    return load_stack_config(stack).model_dump(by_alias=True)


def stack_with(stack: str = "prod", **edits: Any) -> StackConfig:
    """A shipped stack re-validated with edits: `app_<name>={key: value}` replaces keys of that app
    (None removes one), any other keyword replaces a top-level section key the same way."""
    data = copy.deepcopy(_dump(stack))
    for name, update in edits.items():
        if name.startswith("app_"):
            node = next(a for a in data["apps"] if a["name"] == name.removeprefix("app_"))
        else:
            node = data[name]
        for key, value in update.items():
            if value is None:
                node.pop(key, None)
            else:
                node[key] = value
    return StackConfig.model_validate(data)


def llm_with(*, args: dict[str, Any] | None = None, local: dict[str, Any] | None = None, **edits):
    """prod with its llm app's args / localArgs updated (None as a value removes the key)."""
    app = next(a for a in _dump("prod")["apps"] if a["name"] == "llm")
    new_args = {k: v for k, v in {**app["args"], **(args or {})}.items() if v is not None}
    new_local = {k: v for k, v in {**app["localArgs"], **(local or {})}.items() if v is not None}
    return stack_with(app_llm={"args": new_args, "localArgs": new_local}, **edits)


def about(problems: list[str], key: str) -> list[str]:
    return [p for p in problems if key in p]


# ---------------------------------------------------------------------------------------- shipped
@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_have_no_problem(stack):
    assert serve_problems(load_stack_config(stack)) == []


def test_planning_loads_no_engine():
    code = (
        "import sys\n"
        "from infra.stack_file import load_stack_config\n"
        "from infra.serve_rules import serve_problems\n"
        "for s in ('dev', 'staging', 'prod'):\n"
        "    serve_problems(load_stack_config(s))\n"
        "print(sorted(m for m in ('ray', 'torch', 'vllm') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------- deployments
def echo_with(dep: dict[str, Any]) -> StackConfig:
    """prod with its echo app's Echo deployment set to `dep` (stack keys), the others as shipped."""
    deployments = {**_dump("prod")["apps"][0]["deployments"], "Echo": dep}
    return stack_with(app_echo={"deployments": deployments})


@pytest.mark.parametrize(
    "queued, refused",
    cases([("zero", 0, True), ("no-limit", -1, False), ("one", 1, False), ("many", 500, False)]),
)
def test_max_queued_requests(queued, refused):
    problems = serve_problems(echo_with({"numReplicas": 2, "maxQueuedRequests": queued}))
    assert bool(about(problems, "apps[echo].deployments.Echo.maxQueuedRequests")) == refused
    if refused:
        assert "got 0" in problems[0] and "allowed: -1, 1, 2" in problems[0]


def test_max_queued_requests_below_minus_one_is_the_models():
    with pytest.raises(ValidationError, match="maxQueuedRequests"):
        echo_with({"maxQueuedRequests": -2})


@pytest.mark.parametrize(
    "key, quantity, refused",
    cases(
        [
            ("cpu-tiny", "numCpus", 0.00005, True),
            ("cpu-unit", "numCpus", 0.0001, False),
            ("cpu-zero", "numCpus", 0, False),
            ("gpu-tiny", "numGpus", 0.00009, True),
            ("gpu-half", "numGpus", 0.5, False),
            ("gpu-zero", "numGpus", 0, False),
        ]
    ),
)
def test_resource_precision(key, quantity, refused):
    problems = serve_problems(echo_with({key: quantity}))
    found = about(problems, f"apps[echo].deployments.Echo.{key}")
    assert bool(found) == refused
    if refused:
        assert "allowed: 0, or 0.0001 and more" in found[0]


# Ray's verdict on the Serve config entry our renderer writes for a deployment: the schema Serve
# parses the RayService's serveConfigV2 with, the DeploymentConfig and the replica's actor options
# the controller builds from it.
RAY_KEYS = {
    "numReplicas": "num_replicas",
    "maxOngoingRequests": "max_ongoing_requests",
    "maxQueuedRequests": "max_queued_requests",
    "gracefulShutdownWaitLoopS": "graceful_shutdown_wait_loop_s",
    "gracefulShutdownTimeoutS": "graceful_shutdown_timeout_s",
    "healthCheckPeriodS": "health_check_period_s",
    "healthCheckTimeoutS": "health_check_timeout_s",
}
AUTOSCALING_KEYS = {
    "minReplicas": "min_replicas",
    "maxReplicas": "max_replicas",
    "targetOngoingRequests": "target_ongoing_requests",
    "upscaleDelayS": "upscale_delay_s",
    "downscaleDelayS": "downscale_delay_s",
}


def ray_entry(dep: dict[str, Any]) -> dict[str, Any]:
    """The stack's deployment keys as Ray's (infra/serve_config.py's mapping, written out)."""
    out: dict[str, Any] = {RAY_KEYS[k]: v for k, v in dep.items() if k in RAY_KEYS}
    if "autoscaling" in dep:
        out["autoscaling_config"] = {AUTOSCALING_KEYS[k]: v for k, v in dep["autoscaling"].items()}
    actor = {k: dep[s] for s, k in (("numCpus", "num_cpus"), ("numGpus", "num_gpus")) if s in dep}
    if actor:
        out["ray_actor_options"] = actor
    return out


def ray_refuses(entry: dict[str, Any]) -> bool:
    import warnings

    from ray._common.ray_option_utils import validate_actor_options
    from ray.serve._private.config import DeploymentConfig as RayDeploymentConfig
    from ray.serve.schema import DeploymentSchema

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DeploymentSchema(name="Echo", **entry)
            RayDeploymentConfig(**{k: v for k, v in entry.items() if k != "ray_actor_options"})
            validate_actor_options(dict(entry.get("ray_actor_options", {})), in_options=True)
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return True
    return False


def we_refuse(dep: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Our verdict (the stack's models refuse the deployment, or serve_problems names it) and, where
    the models take it, the Serve config entry the renderer writes: what Ray would read."""
    try:
        config = echo_with(dep)
    except ValidationError:
        return True, None
    rendered = next(
        d
        for a in build_serve_config(config)["applications"]
        if a["name"] == "echo"
        for d in a["deployments"]
        if d["name"] == "Echo"
    )
    for key, value in ray_entry(dep).items():  # the renderer writes what the stack set
        given = rendered.get(key) or {}
        if isinstance(value, dict):
            assert {k: v for k, v in value.items() if v} == {
                k: v for k, v in given.items() if k in value and v
            }, key
        else:
            assert rendered.get(key) == value, key
    refused = bool(about(serve_problems(config), "apps[echo].deployments.Echo."))
    return refused, {k: v for k, v in rendered.items() if k != "name"}


def stricter_than_ray(dep: dict[str, Any]) -> bool:
    """Where the stack refuses on purpose what Ray 2.60 takes (infra/config.py says why)."""
    auto = dep.get("autoscaling", {})
    delays = [auto.get(k) for k in ("upscaleDelayS", "downscaleDelayS")]
    loop = dep.get("gracefulShutdownWaitLoopS", 2.0)
    timeout = dep.get("gracefulShutdownTimeoutS", 20.0)
    gpus = dep.get("numGpus", 0)
    return (
        any(d is not None and d > MAX_SCALE_DELAY_S for d in delays)  # ms written as s
        or (isinstance(loop, int | float) and isinstance(timeout, int | float) and loop > timeout)
        or (isinstance(gpus, int | float) and gpus > 1 and gpus != int(gpus))  # NVIDIA's rule
    )


def assert_parity(dep: dict[str, Any]) -> None:
    ours, rendered = we_refuse(dep)
    ray = ray_refuses(rendered if rendered is not None else ray_entry(dep))
    if stricter_than_ray(dep):
        assert ours, dep
    else:
        assert ours == ray, (dep, "ours" if ours else "ray")


PARITY_TABLE = [
    ("replicas", {"numReplicas": 2}),
    ("replicas-zero", {"numReplicas": 0}),
    ("replicas-negative", {"numReplicas": -1}),
    ("ongoing-one", {"maxOngoingRequests": 1}),
    ("ongoing-zero", {"maxOngoingRequests": 0}),
    ("queued-zero", {"maxQueuedRequests": 0}),
    ("queued-minus-one", {"maxQueuedRequests": -1}),
    ("queued-minus-two", {"maxQueuedRequests": -2}),
    ("queued-many", {"maxQueuedRequests": 100}),
    ("shutdown-zero", {"gracefulShutdownTimeoutS": 0, "gracefulShutdownWaitLoopS": 0}),
    ("shutdown-negative", {"gracefulShutdownTimeoutS": -1}),
    ("wait-loop-negative", {"gracefulShutdownWaitLoopS": -0.5}),
    ("health-period-zero", {"healthCheckPeriodS": 0}),
    ("health-timeout-zero", {"healthCheckTimeoutS": 0}),
    ("health-ok", {"healthCheckPeriodS": 2, "healthCheckTimeoutS": 5}),
    ("cpus-negative", {"numCpus": -1}),
    ("cpus-tiny", {"numCpus": 0.00001}),
    ("gpus-tiny", {"numGpus": 0.00001}),
    ("gpus-half", {"numGpus": 0.5}),
    ("both-scalings", {"numReplicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}),
    ("auto", {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}}),
    ("auto-zero-min", {"autoscaling": {"minReplicas": 0, "maxReplicas": 1}}),
    ("auto-min-above-max", {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
    ("auto-max-zero", {"autoscaling": {"minReplicas": 0, "maxReplicas": 0}}),
    ("auto-min-negative", {"autoscaling": {"minReplicas": -1, "maxReplicas": 2}}),
    (
        "auto-target-zero",
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetOngoingRequests": 0}},
    ),
    (
        "auto-target-small",
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetOngoingRequests": 0.1}},
    ),
    (
        "auto-up-negative",
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "upscaleDelayS": -1}},
    ),
    ("auto-down-zero", {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "downscaleDelayS": 0}}),
]


@pytest.mark.parametrize("dep", cases(PARITY_TABLE))
def test_deployment_parity_with_ray(dep):
    assert_parity(dep)


def test_parity_table_covers_both_verdicts():
    verdicts = {ray_refuses(ray_entry(dep)) for _, dep in PARITY_TABLE}
    assert {we_refuse(dep)[0] for _, dep in PARITY_TABLE} == {True, False}
    assert verdicts == {True, False}


_count = st.integers(min_value=-2, max_value=6)
_seconds = st.one_of(
    st.sampled_from([0, 0.0, -0.0, 1e-9, math.inf]),
    st.floats(min_value=-5, max_value=120, allow_nan=False),
)
_quantity = st.one_of(
    st.sampled_from([0, 0.00001, 0.00009, 0.0001, 0.5, 1, 2, 1.5]),
    st.floats(min_value=-1, max_value=4, allow_nan=False),
)
_autoscaling = st.fixed_dictionaries(
    {"minReplicas": _count, "maxReplicas": _count},
    optional={
        "targetOngoingRequests": _seconds,
        "upscaleDelayS": _seconds,
        "downscaleDelayS": _seconds,
    },
)
_deployment = st.fixed_dictionaries(
    {},
    optional={
        "numReplicas": _count,
        "autoscaling": _autoscaling,
        "maxOngoingRequests": _count,
        "maxQueuedRequests": _count,
        "gracefulShutdownWaitLoopS": _seconds,
        "gracefulShutdownTimeoutS": _seconds,
        "healthCheckPeriodS": _seconds,
        "healthCheckTimeoutS": _seconds,
        "numCpus": _quantity,
        "numGpus": _quantity,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_deployment)
def test_deployment_parity_with_ray_property(dep):
    assert_parity(dep)


@pytest.mark.parametrize(
    "low, high", cases([("ok", 0, 2), ("equal", 2, 2), ("inverted", 3, 2), ("max-zero", 0, 0)])
)
def test_llm_replicas_parity_with_ray(low, high):
    """The llm app's min/max replicas become Ray Serve LLM's autoscaling_config (app/llm.py), which
    LLMConfig.validate_deployment_config checks with Ray's DeploymentConfig."""
    from ray.serve._private.config import DeploymentConfig as RayDeploymentConfig

    try:
        RayDeploymentConfig.model_validate(
            {"autoscaling_config": {"min_replicas": low, "max_replicas": high}}
        )
        ray = False
    except ValueError:
        ray = True
    try:
        llm_with(args={"min_replicas": low, "max_replicas": high})
        ours = False
    except ValidationError:
        ours = True
    assert ours == ray


# ---------------------------------------------------------------------------------------- llm app
def test_accelerator_labels_are_rays():
    from ray._private.accelerators.nvidia_gpu import NVIDIA_GPU_NAME_PATTERN
    from ray.llm._internal.serve.core.configs.accelerators import AcceleratorType

    from components.render.gpu_machines import H100_MACHINES

    assert {m.accelerator_type for m in H100_MACHINES.values()} == set(RAY_ACCELERATOR_LABELS)
    assert set(RAY_ACCELERATOR_LABELS.values()) <= {t.value for t in AcceleratorType}
    # the NVML name an A3 High or Mega node's H100 reports
    match = NVIDIA_GPU_NAME_PATTERN.match("NVIDIA H100 80GB HBM3")
    assert match and match.group(1).replace(" ", "-") == "H100"


def test_resource_unit_is_rays():
    import ray._raylet

    unit = ray._raylet.RESOURCE_UNIT_SCALING  # pyright: ignore[reportAttributeAccessIssue]
    assert unit == RAY_RESOURCE_UNIT_SCALING


@pytest.mark.parametrize(
    "where, value, refused",
    cases(
        [
            ("cluster-dummy", "args", "dummy", True),
            ("cluster-auto", "args", "auto", False),
            ("local-dummy", "local", "dummy", False),
        ]
    ),
)
def test_dummy_weights_only_locally(where, value, refused):
    c = llm_with(**{where: {"load_format": value}})
    found = about(serve_problems(c), "apps[llm].args.load_format")
    assert bool(found) == refused
    if refused:
        assert "random weights" in found[0] and "allowed there: 'auto'" in found[0]


@pytest.mark.parametrize(
    "label, refused",
    cases(
        [("h100", "H100", False), ("a100", "A100", True), ("l4", "L4", True), ("any", None, False)]
    ),
)
def test_accelerator_type_matches_pool(label, refused):
    app = next(a for a in _dump("prod")["apps"] if a["name"] == "llm")
    # null: any GPU; no localArgs, which would inherit the label onto vLLM's CPU build
    c = stack_with(app_llm={"args": {**app["args"], "accelerator_type": label}, "localArgs": {}})
    found = about(serve_problems(c), "apps[llm].args.accelerator_type")
    assert bool(found) == refused
    if refused:
        assert "nvidia-h100-mega-80gb" in found[0] and "allowed: 'H100'" in found[0]


HUB = {"source": "hub", "model_source": "meta-llama/Llama-3.1-8B-Instruct"}


@pytest.mark.parametrize(
    "token_env, extra_env, refused",
    cases(
        [
            ("default-unset", "HF_TOKEN", {}, True),
            ("default-set", "HF_TOKEN", {"HF_TOKEN": SECRET}, False),
            ("default-empty", "HF_TOKEN", {"HF_TOKEN": ""}, True),
            ("other-name-set", "MY_HUB_TOKEN", {"MY_HUB_TOKEN": SECRET}, False),
            ("other-name-unset", "MY_HUB_TOKEN", {"HF_TOKEN": SECRET}, True),
        ]
    ),
)
def test_hub_token_reaches_the_pods(token_env, extra_env, refused):
    app = next(a for a in _dump("prod")["apps"] if a["name"] == "llm")
    c = stack_with(
        app_llm={"args": {**app["args"], **HUB, "hf_token_env": token_env}, "localArgs": {}},
        ray={"extraEnv": extra_env},
    )
    problems = serve_problems(c)
    assert bool(about(problems, token_env)) == refused
    assert not any(SECRET in p for p in problems)


def test_public_hub_model_needs_no_token():
    data = _dump("prod")
    app = next(a for a in data["apps"] if a["name"] == "llm")
    c = stack_with(app_llm={"args": {**app["args"], **HUB, "hf_token_env": None}, "localArgs": {}})
    assert serve_problems(c) == []


def test_hub_token_of_the_local_run():
    """The local run's replicas read the token from the same ray.extraEnv (RayConfig.serve_flags)."""
    local = {**HUB, "load_format": None, "max_model_len": 512}
    c = llm_with(local=local)
    found = about(serve_problems(c), "apps[llm].localArgs: source is 'hub'")
    assert len(found) == 1 and "ray.extraEnv.HF_TOKEN set" in found[0]
    assert serve_problems(llm_with(local=local, ray={"extraEnv": {"HF_TOKEN": SECRET}})) == []


@pytest.mark.parametrize(
    "source, refused",
    cases(
        [
            ("mount-point", "/gcs/models", True),
            ("mount-point-slash", "/gcs/models/", True),
            ("model-dir", "/gcs/models/llama", False),
            ("nested", "/gcs/models/meta/llama", False),
        ]
    ),
)
def test_model_source_is_below_the_mount(source, refused):
    found = about(serve_problems(llm_with(args={"model_source": source})), "model_source")
    assert bool(found) == refused
    if refused:
        assert "mount point" in found[0] and "allowed: /gcs/models/<model directory>" in found[0]


@pytest.mark.parametrize(
    "tokens, keys",
    cases(
        [
            ("fits-both", (256, 256), []),
            ("over-local", (257, 256), ["apps[llm].localArgs.max_model_len"]),
            ("over-both", (8000, 200), ["apps[llm].args.max_model_len", "localArgs.max_model_len"]),
        ]
    ),
)
def test_smoke_request_fits_the_context(tokens, keys):
    inputs, outputs = tokens
    smoke = {**_dump("prod")["smoke"]["llm"], "inputTokens": inputs, "outputTokens": outputs}
    c = stack_with(smoke={"llm": smoke})
    found = about(serve_problems(c), "smoke.llm.inputTokens")
    assert len(found) == len(keys)
    for key, line in zip(keys, found, strict=True):
        assert key in line and f"= {inputs + outputs} exceeds" in line


def test_smoke_request_local_context_counts_only_where_it_runs_locally():
    """Without localArgs' device: cpu the local run leaves the app out: only the cluster counts."""
    smoke = {**_dump("prod")["smoke"]["llm"], "inputTokens": 400, "outputTokens": 200}
    c = llm_with(local={"device": None, "kv_cache_gib": None}, smoke={"llm": smoke})
    assert about(serve_problems(c), "smoke.llm") == []


@pytest.mark.parametrize(
    "where, seqs, key",
    cases(
        [
            ("cluster-over", "args", VLLM_MIN_DEFAULT_BATCHED_TOKENS + 1, "args.max_num_seqs"),
            ("cluster-at", "args", VLLM_MIN_DEFAULT_BATCHED_TOKENS, None),
            ("local-over", "local", 4096, "localArgs.max_num_seqs"),
        ]
    ),
)
def test_max_num_seqs_within_vllm_default_batch(where, seqs, key):
    found = about(serve_problems(llm_with(**{where: {"max_num_seqs": seqs}})), "max_num_seqs")
    assert [key in line for line in found] == ([True] if key else [])


def test_vllm_default_batch_is_vllms():
    """The smallest OpenAI-server default in vllm/engine/arg_utils.py, read from its source."""
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    assert spec is not None and spec.origin is not None
    source = (Path(spec.origin).parent / "engine" / "arg_utils.py").read_text()
    assert f"UsageContext.OPENAI_API_SERVER: {VLLM_MIN_DEFAULT_BATCHED_TOKENS}," in source
    assert "OPENAI_API_SERVER: 2048 * world_size" in source


@pytest.mark.parametrize(
    "local, key",
    cases(
        [
            ("default-len", {"max_model_len": None}, "apps[llm].args.max_model_len (8192)"),
            ("too-long", {"max_model_len": MAX_POSITIONS + 1}, "localArgs.max_model_len"),
            ("at-limit", {"max_model_len": MAX_POSITIONS}, None),
            ("real-weights", {"load_format": "auto"}, "localArgs.load_format"),
            ("own-model", {"load_format": "auto", "model_source": "/models/m"}, None),
        ]
    ),
)
def test_tiny_model_limits(local, key):
    smoke = {**_dump("prod")["smoke"]["llm"]}
    found = [
        p for p in serve_problems(llm_with(local=local, smoke={"llm": smoke})) if "tiny_llm" in p
    ]
    assert [key in line for line in found] == ([True] if key else [])


def test_llm_args_the_contract_refuses_are_left_to_it():
    """A bad args value is AppConfig's (app/contracts.py) to name: the model refuses first."""
    with pytest.raises(ValidationError, match="max_model_len"):
        llm_with(args={"max_model_len": 0})
    assert LlmArgs.model_fields["max_model_len"].metadata  # ge=128 lives there


# ---------------------------------------------------------------------------------------- direct streaming
RAY_BUILDER = "ray.serve.llm:build_openai_app"


def model(model_id: str, **extra: Any) -> dict[str, Any]:
    """One LLM config as Ray Serve LLM's builder args take it inline."""
    return {"model_loading_config": {"model_id": model_id, "model_source": "/srv/m"}, **extra}


LORA = {"dynamic_lora_loading_path": "s3://adapters/lora"}


def ray_llm_app(name: str, builder: str = RAY_BUILDER, **app: Any) -> dict[str, Any]:
    """A custom app (stack keys) that deploys Ray Serve LLM's OpenAI builder itself, one model."""
    args = {"llm_configs": [model(f"{name}-model")], **app.pop("args", {})}
    return {
        "name": name,
        "kind": "custom",
        "routePrefix": f"/{name}",
        "importPath": builder,
        "protocols": ["http"],
        "args": args,
        **app,
    }


def stack_plus(stack: str, *apps: dict[str, Any], ray: dict[str, Any] | None = None) -> StackConfig:
    """A shipped stack with `apps` added and `ray` keys set."""
    data = _dump(stack)
    return StackConfig.model_validate(
        {**data, "apps": [*data["apps"], *apps], "ray": {**data["ray"], **(ray or {})}}
    )


OFF = {"tuning": {"llmDirectStreaming": False}}
HA_OFF = {"extraEnv": {"RAY_SERVE_ENABLE_HA_PROXY": "0"}}
EXTRA_ON = {"extraEnv": {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"}}


@pytest.mark.parametrize(
    "stack, ray, refused",
    cases(
        [
            ("prod-tuned", "prod", {}, False),
            ("prod-ha-off", "prod", HA_OFF, True),
            ("prod-ha-off-mode-off", "prod", {**HA_OFF, **OFF}, False),
            (
                "prod-ray-defaults-extra-on",
                "prod",
                {"serveProfile": "ray-defaults", **EXTRA_ON},
                True,
            ),
            ("prod-flags-only-extra-on", "prod", {"serveProfile": "flags-only", **EXTRA_ON}, False),
            ("prod-ray-defaults", "prod", {"serveProfile": "ray-defaults"}, False),
            ("dev-ha-off-no-llm-app", "dev", HA_OFF, False),
            ("staging-ha-off-no-llm-app", "staging", HA_OFF, False),
        ]
    ),
)
def test_direct_streaming_needs_rays_haproxy(stack, ray, refused):
    """ray/serve/_private/build_app.py: an app with an ingress request router needs HAProxy; only
    stacks with an app Ray Serve LLM builds are concerned."""
    c = stack_plus(stack, ray=ray)
    found = about(serve_problems(c), "which needs Ray's HAProxy ingress")
    assert bool(found) == refused
    if refused:
        assert "apps[llm]" in found[0] and "allowed: Ray's HAProxy ingress on" in found[0]
        assert found[0].startswith(
            "ray.tuning.llmDirectStreaming"
            if "serveProfile" not in ray
            else "ray.extraEnv.RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"
        )


def test_direct_streaming_without_haproxy_names_every_app_it_builds():
    c = stack_plus("dev", ray_llm_app("chat"), ray_llm_app("code"), ray=HA_OFF)
    [found] = about(serve_problems(c), "which needs Ray's HAProxy ingress")
    assert "apps[chat], apps[code] in Ray Serve LLM's direct streaming" in found
    assert "ray.extraEnv.RAY_SERVE_ENABLE_HA_PROXY turns it off" in found
    assert found.endswith("or set ray.tuning.llmDirectStreaming: false")


# (id, the custom app's extra keys, the stack key named, a phrase of what is allowed)
DIRECT_STREAMING_APPS = [
    (
        "openai-ingress-override",
        {"deployments": {"OpenAiIngress": {"numReplicas": 2}}},
        "apps[chat].deployments.OpenAiIngress",
        "configure LLMServer:chat-model instead, or set ray.tuning.llmDirectStreaming: false",
    ),
    (
        "two-models",
        {"args": {"llm_configs": [model("a"), model("b")]}},
        "apps[chat].args.llm_configs has 2 models",
        "one LLM config per app (one app per model)",
    ),
    (
        "ingress-options",
        {"args": {"ingress_deployment_config": {"num_replicas": 2}}},
        "apps[chat].args.ingress_deployment_config",
        "the server's options in each LLM config's deployment_config",
    ),
    (
        "public-ingress-class",
        {"args": {"ingress_cls_config": {"ingress_cls": "ray.serve.llm.ingress:OpenAiIngress"}}},
        "apps[chat].args.ingress_cls_config",
        "no ingress_cls_config",
    ),
    (
        "ingress-kwargs",
        {"args": {"ingress_cls_config": {"ingress_extra_kwargs": {"x": 1}}}},
        "apps[chat].args.ingress_cls_config",
        "no ingress_cls_config",
    ),
    (
        "lora",
        {"args": {"llm_configs": [model("chat-model", lora_config=LORA)]}},
        "apps[chat].args.llm_configs[0].lora_config",
        "ray.extraEnv.RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY: '1'",
    ),
]
DIRECT_STREAMING_FINE = [
    ("one-model", {}),
    ("server-override", {"deployments": {"LLMServer:chat-model": {"numReplicas": 2}}}),
    (
        "rays-own-ingress-class",
        {"args": {"ingress_cls_config": {"ingress_cls": RAY_OPENAI_INGRESS_CLASS}}},
    ),
]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("app, key, allowed", cases(DIRECT_STREAMING_APPS))
def test_direct_streaming_refuses_what_rays_builder_refuses(stack, app, key, allowed):
    """Every shipped stack, with a custom app that deploys Ray Serve LLM's builder itself."""
    c = stack_plus(stack, ray_llm_app("chat", **copy.deepcopy(app)))
    [found] = about(serve_problems(c), key)
    assert "under ray.tuning.llmDirectStreaming" in found and allowed in found
    # Off, the builder takes them all (the llm app of prod stays as shipped).
    assert (
        serve_problems(stack_plus(stack, ray_llm_app("chat", **copy.deepcopy(app)), ray=OFF)) == []
    )


@pytest.mark.parametrize("app", cases(DIRECT_STREAMING_FINE))
def test_direct_streaming_takes_one_model_and_its_server(app):
    assert serve_problems(stack_plus("prod", ray_llm_app("chat", **app))) == []


def test_direct_streaming_problems_are_per_app():
    """Three apps on Ray's builder, written both ways Serve imports: each named once, the fine one
    not at all; LoRA's flag set by extraEnv takes LoRA."""
    two = {"args": {"llm_configs": [model("a"), model("b")]}}
    lora = {"args": {"llm_configs": [model("c", lora_config=LORA)]}}
    c = stack_plus(
        "staging",
        ray_llm_app("chat", **two),
        ray_llm_app("code", "ray.serve.llm.build_openai_app", **lora),
        ray_llm_app("ok"),
    )
    problems = serve_problems(c)
    assert len(problems) == 2
    assert about(problems, "apps[chat].args.llm_configs has 2")
    assert about(problems, "apps[code].args.llm_configs[0].lora_config")
    forward = {"extraEnv": {"RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY": "1"}}
    c = stack_plus("staging", ray_llm_app("code", **lora), ray=forward)
    assert serve_problems(c) == []


def test_an_llm_apps_openai_ingress_is_refused_before_the_rule():
    """The llm app's deployments are Ray Serve LLM's to name: the model refuses any override,
    OpenAiIngress included, in either mode."""
    app = next(a for a in _dump("prod")["apps"] if a["name"] == "llm")
    for ray in ({}, OFF):
        with pytest.raises(ValidationError, match=r"apps\[llm\].deployments: Ray Serve LLM names"):
            stack_with(app_llm={"deployments": {"OpenAiIngress": {"numReplicas": 2}}}, ray=ray)
    assert app.get("deployments") in (None, {})


def ray_builder_refuses(args: dict[str, Any], forward_body: bool = False) -> bool:
    """Ray Serve LLM's build_openai_app in direct streaming on these args (Ray's module flags set
    as the nodes' env would set them); the deployment itself is not built (that needs a cluster)."""
    import warnings
    from unittest import mock

    from ray.llm._internal.serve.core.ingress import builder

    class Built:
        def _with_ingress_request_router(self, router):
            return router

    with (
        warnings.catch_warnings(),
        mock.patch.object(builder, "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING", True),
        mock.patch.object(builder, "RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY", forward_body),
        mock.patch.object(builder, "_build_direct_streaming_llm_deployment", lambda c: Built()),
    ):
        warnings.simplefilter("ignore")
        try:
            builder.build_openai_app(args)
        except ValueError:
            return True
    return False


@pytest.mark.parametrize(
    "app",
    cases(
        [(i, app) for i, app, *_ in DIRECT_STREAMING_APPS if "deployments" not in app]
        + [(i, app) for i, app in DIRECT_STREAMING_FINE if "deployments" not in app]
    ),
)
def test_direct_streaming_parity_with_rays_builder(app):
    entry = ray_llm_app("chat", **copy.deepcopy(app))
    ours = bool(serve_problems(stack_plus("prod", entry)))
    assert ours == ray_builder_refuses(entry["args"])


def test_direct_streaming_parity_for_our_llm_app(tmp_path):
    """app/llm.py's one LLMConfig (prod's, on the CPU build as the local run has it) goes through
    Ray's direct-streaming checks, as serve_problems says."""
    from app.llm import llm_config_kwargs

    args = LlmArgs.model_validate(
        {
            **_dump("prod")["apps"][2]["args"],
            **_dump("prod")["apps"][2]["localArgs"],
            "model_source": str(tmp_path),
        }
    )
    assert not ray_builder_refuses({"llm_configs": [llm_config_kwargs(args, {})]})
    assert serve_problems(load_stack_config("prod")) == []


def test_direct_streaming_constants_are_rays():
    """The names and paths serve_rules and infra/config.py restate, against the installed Ray and
    vLLM (read from source where importing would start an engine)."""
    from ray.llm._internal.serve.core.ingress import builder, ingress, router
    from ray.serve._private import build_app, constants

    from app.contracts import LLM_ROUTER_DEPLOYMENT
    from infra.config import HA_PROXY_ENV, LLM_DIRECT_STREAMING_ENV, VLLM_RAY_V2_EXECUTOR_ENV

    llm_constants = Path(builder.__file__).parents[2] / "constants.py"
    assert f'os.environ.get("{LLM_DIRECT_STREAMING_ENV}", "0") == "1"' in llm_constants.read_text()
    assert f'os.environ.get("{HA_PROXY_ENV}", "0") == "1"' in Path(constants.__file__).read_text()
    assert FORWARD_BODY_ENV in Path(constants.__file__).read_text()
    assert "if ingress_request_router is not None and not RAY_SERVE_ENABLE_HA_PROXY" in (
        Path(build_app.__file__).read_text()
    )
    assert router.LLMRouter.__name__ == LLM_ROUTER_DEPLOYMENT
    for path in RAY_OPENAI_BUILDERS:
        module, attr = path.split(":")
        assert getattr(importlib.import_module(module), attr).__name__ == "build_openai_app"
    module, attr = RAY_OPENAI_INGRESS_CLASS.split(":")
    assert getattr(importlib.import_module(module), attr) is ingress.OpenAiIngress
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None
    envs = (Path(spec.origin).parent / "envs.py").read_text()
    # vLLM 0.29's default is already 1: the profile sets it for an image with another vLLM.
    assert f'int(os.getenv("{VLLM_RAY_V2_EXECUTOR_ENV}", "1"))' in envs


# ---------------------------------------------------------------------------------------- request routers
PREFIX = {"router": "prefix-cache-affinity"}
FORWARD_BODY = {"extraEnv": {FORWARD_BODY_ENV: "1"}}
PUBLIC_ROUTER = "ray.serve.llm.request_router.PrefixCacheAffinityRouter"
INTERNAL_ROUTER = (
    "ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router:"
    "PrefixCacheAffinityRouter"
)


def routed_app(name: str, router_class: str) -> dict[str, Any]:
    """A custom app on Ray's builder whose one model names a request router class."""
    config = model(
        f"{name}-model",
        deployment_config={"request_router_config": {"request_router_class": router_class}},
    )
    return ray_llm_app(name, args={"llm_configs": [config]})


# (id, the stack, the key named or None, a phrase of the effect)
PREFIX_ROUTER_CASES = [
    (
        "args-direct-streaming",
        lambda: llm_with(args=PREFIX),
        "apps[llm].args.router selects Ray Serve LLM's PrefixCacheAffinityRouter",
        "picks a replica at random",
    ),
    (
        "local-args-direct-streaming",
        lambda: llm_with(local=PREFIX),
        "apps[llm].localArgs.router selects",
        "picks a replica at random",
    ),
    (
        "args-direct-streaming-with-body",
        lambda: llm_with(args=PREFIX, ray={**_dump("prod")["ray"], **FORWARD_BODY}),
        "apps[llm].args.router selects",
        "sends every request to the same replica",
    ),
    (
        "custom-public-path",
        lambda: stack_plus("dev", routed_app("chat", PUBLIC_ROUTER)),
        "apps[chat].args.llm_configs[0].deployment_config.request_router_config."
        "request_router_class selects",
        "allowed: another request_router_class, or set ray.tuning.llmDirectStreaming: false",
    ),
    (
        "custom-internal-path",
        lambda: stack_plus("staging", routed_app("chat", INTERNAL_ROUTER)),
        "apps[chat].args.llm_configs[0]",
        "picks a replica at random",
    ),
    (
        "extra-env-turns-it-on",
        lambda: llm_with(
            args=PREFIX,
            ray={**_dump("prod")["ray"], "serveProfile": "flags-only", **EXTRA_ON},
        ),
        "apps[llm].args.router selects",
        "under ray.extraEnv.RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING (Ray Serve LLM's direct "
        "streaming)",
    ),
    ("off", lambda: llm_with(args=PREFIX, ray={**_dump("prod")["ray"], **OFF}), None, ""),
    (
        "flags-only",
        lambda: llm_with(args=PREFIX, ray={**_dump("prod")["ray"], "serveProfile": "flags-only"}),
        None,
        "",
    ),
    ("default-router", lambda: llm_with(args={"router": "default"}), None, ""),
    (
        "custom-other-router",
        lambda: stack_plus(
            "dev", routed_app("chat", "ray.serve.experimental.round_robin_router:RoundRobinRouter")
        ),
        None,
        "",
    ),
]


@pytest.mark.parametrize("stack, key, effect", cases(PREFIX_ROUTER_CASES))
def test_prefix_router_is_refused_under_direct_streaming(stack, key, effect):
    found = about(serve_problems(stack()), "PrefixCacheAffinityRouter")
    if key is None:
        assert found == []
        return
    [problem] = found
    assert problem.startswith(key) and effect in problem
    assert "allowed: " in problem and ("router: default" in problem) == ("apps[llm]" in key)


def test_prefix_router_is_named_once_per_app():
    """args and localArgs both set: the args key, once; two apps: each named."""
    c = stack_plus("prod", routed_app("chat", PUBLIC_ROUTER))
    c = StackConfig.model_validate(
        {
            **c.model_dump(by_alias=True),
            "apps": [
                {**a, "args": {**a["args"], **PREFIX}, "localArgs": {**a["localArgs"], **PREFIX}}
                if a["name"] == "llm"
                else a
                for a in c.model_dump(by_alias=True)["apps"]
            ],
        }
    )
    found = about(serve_problems(c), "PrefixCacheAffinityRouter")
    assert [p.split(" ")[0] for p in found] == [
        "apps[llm].args.router",
        "apps[chat].args.llm_configs[0].deployment_config.request_router_config."
        "request_router_class",
    ]


def test_prefix_router_refusal_rests_on_rays_source():
    """What the refusal reads in Ray 2.60, pinned (read from source: importing ray.serve.llm loads
    vllm): the prefix router records prompts only in on_request_routed; Serve calls that only after
    a handle sends a request; LLMRouter only picks (`_reserve=False`), taking the first replica of
    the first rank; the router's classes are where the rule names them."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    ray_dir = Path(spec.origin).parent
    prefix = (
        ray_dir / "llm/_internal/serve/routing_policies/prefix_aware/prefix_aware_router.py"
    ).read_text()
    assert prefix.count("self._tree_actor.insert.remote(") == 1
    assert prefix.index("def on_request_routed") < prefix.index("self._tree_actor.insert.remote(")
    serve_router = (ray_dir / "serve/_private/router.py").read_text()
    assert serve_router.count(".on_request_routed(") == 1  # the handle's send path only
    assert 'reserve = request_kwargs.pop("_reserve", True)' in serve_router
    assert "replica = (await candidates.__anext__())[0]" in serve_router
    llm_router = (ray_dir / "llm/_internal/serve/core/ingress/router.py").read_text()
    assert 'choose_replica_kwargs = {"_reserve": False}' in llm_router
    for path in PREFIX_ROUTER_CLASSES:
        module, attr = path.split(":")
        text = (ray_dir.parent / (module.replace(".", "/") + ".py")).read_text()
        assert f"class {attr}(" in text
    from app.llm import PREFIX_CACHE_AFFINITY_ROUTER

    module, _, attr = PREFIX_CACHE_AFFINITY_ROUTER.rpartition(".")
    assert f"{module}:{attr}" in PREFIX_ROUTER_CLASSES


# ---------------------------------------------------------------------------------------- autoscale_on
TTFT = {"signal": "ttft", "target_ms": 500}
QUEUE = {"signal": "queue", "target_per_replica": 4}
FRONTEND = "http://frontend.gmp-public.svc:9090"
# The local run's replicas stay 1..1 in prod: autoscale_on needs room there too, or none.
LOCAL_ROOM = {"max_replicas": 2}


def with_prometheus(url: str | None = FRONTEND) -> dict[str, Any]:
    return {"ray": {**_dump("prod")["ray"], "prometheusUrl": url}}


# (id, the stack, the phrases of the one problem, or None)
AUTOSCALE_CASES = [
    (
        "ttft-without-prometheus",
        lambda: llm_with(args={"autoscale_on": TTFT}, local=LOCAL_ROOM),
        (
            "apps[llm].args.autoscale_on reads ttft from Prometheus, but ray.prometheusUrl is unset",
            "allowed: ray.prometheusUrl set to the GMP query frontend",
        ),
    ),
    (
        "queue-without-prometheus",
        lambda: llm_with(args={"autoscale_on": QUEUE}, local=LOCAL_ROOM),
        ("apps[llm].args.autoscale_on reads queue from Prometheus", "or no autoscale_on"),
    ),
    (
        "window-of-one-scrape",
        lambda: llm_with(
            args={"autoscale_on": {**TTFT, "window_s": 30}}, local=LOCAL_ROOM, **with_prometheus()
        ),
        (
            "apps[llm].args.autoscale_on.window_s (30) holds fewer than two of the cluster's 30 s",
            "allowed: 60..3600",
        ),
    ),
    (
        "window-just-short",
        lambda: llm_with(
            args={"autoscale_on": {**TTFT, "window_s": 59}}, local=LOCAL_ROOM, **with_prometheus()
        ),
        ("window_s (59)", "allowed: 60..3600"),
    ),
    (
        "ttft-with-prometheus",
        lambda: llm_with(args={"autoscale_on": TTFT}, local=LOCAL_ROOM, **with_prometheus()),
        None,
    ),
    (
        "queue-with-prometheus",
        lambda: llm_with(args={"autoscale_on": QUEUE}, local=LOCAL_ROOM, **with_prometheus()),
        None,
    ),
    (
        # the local run has its own Prometheus (raygke/local.py): no cluster key needed
        "local-only",
        lambda: llm_with(local={**LOCAL_ROOM, "autoscale_on": {**TTFT, "window_s": 10}}),
        None,
    ),
]


@pytest.mark.parametrize("stack, phrases", cases(AUTOSCALE_CASES))
def test_autoscale_on_needs_prometheus_and_a_window_of_two_scrapes(stack, phrases):
    found = about(serve_problems(stack()), "autoscale_on")
    if phrases is None:
        assert found == []
        return
    [problem] = found
    for phrase in phrases:
        assert phrase in problem


def test_the_scrape_interval_is_the_pod_monitorings():
    from infra.rendered import render_stack
    from infra.serve_rules import RAY_SCRAPE_INTERVAL_S

    monitoring = render_stack(load_stack_config("prod")).ray_pod_monitoring
    intervals = {e["interval"] for e in monitoring["spec"]["endpoints"]}
    assert intervals == {f"{RAY_SCRAPE_INTERVAL_S}s"}
