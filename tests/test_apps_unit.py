"""The Serve apps' pure logic: args validation, request parsing, the MiniDLRM and its batching,
the llm config mapping. No Ray cluster."""

import inspect
import json
from collections.abc import Callable

import grpc  # noqa: F401  (the apps import it; fail here first if it is missing)
import numpy as np
import pydantic
import pytest
import torch

from app import echo, llm, recsys
from app.protos import recsys_pb2

pytestmark = pytest.mark.pure


# --- echo ---------------------------------------------------------------------------------------


def test_echo_args_defaults_and_forbid_unknown() -> None:
    args = echo.EchoArgs()
    assert (args.payload_size, args.version) == (1024, "v1")
    with pytest.raises(pydantic.ValidationError, match="payload_sise"):
        echo.EchoArgs.model_validate({"payload_sise": 3})
    with pytest.raises(pydantic.ValidationError, match="tpot_s"):
        echo.EchoArgs(tpot_s=-1)


def test_echo_unary_parsing_defaults_and_limits() -> None:
    args = echo.EchoArgs(payload_size=16, max_payload_size=100)
    assert echo.parse_unary({}, args) == ("", 16)
    assert echo.parse_unary({"size": "0", "message": "hi"}, args) == ("hi", 16)  # 0: default
    assert echo.parse_unary({"size": 7}, args) == ("", 7)
    with pytest.raises(echo.BadRequest, match="size must be <= 100"):
        echo.parse_unary({"size": 101}, args)
    with pytest.raises(echo.BadRequest, match="size must be an integer"):
        echo.parse_unary({"size": "ten"}, args)
    with pytest.raises(echo.BadRequest, match="size must be an integer"):
        echo.parse_unary({"size": True}, args)
    with pytest.raises(echo.BadRequest, match="size must be >= 0"):
        echo.parse_unary({"size": -1}, args)
    with pytest.raises(echo.BadRequest, match="message must be a string"):
        echo.parse_unary({"message": 5}, args)


def test_echo_stream_parsing_limits_chunks_and_pacing() -> None:
    args = echo.EchoArgs(chunks=4, max_chunks=10, tpot_s=0.02, max_delay_ms=500)
    assert echo.parse_stream({}, args) == (4, 1024, 0.0, 0.02)
    assert echo.parse_stream({"chunks": "10", "size": "3"}, args) == (10, 3, 0.0, 0.02)
    assert echo.parse_stream({"ttft_ms": "200", "tpot_ms": 50}, args) == (4, 1024, 0.2, 0.05)
    with pytest.raises(echo.BadRequest, match="chunks must be <= 10"):
        echo.parse_stream({"chunks": 11}, args)
    with pytest.raises(echo.BadRequest, match="tpot_ms must be <= 500; got 501"):
        echo.parse_stream({"tpot_ms": 501}, args)


def test_sse_event_is_one_data_line() -> None:
    assert echo.sse_event({"index": 1, "payload": "ab"}) == b'data: {"index":1,"payload":"ab"}\n\n'
    assert echo.sse_event("[DONE]") == b"data: [DONE]\n\n"


@pytest.mark.parametrize("module", [echo, recsys, llm])
def test_builder_annotation_is_the_args_class(module: object) -> None:
    # Serve validates `args` only when the annotation is the class itself (not a string).
    builder = module.build_app  # type: ignore[attr-defined]
    param = next(iter(inspect.signature(builder).parameters.values()))
    assert inspect.isclass(param.annotation)
    assert issubclass(param.annotation, pydantic.BaseModel)


def test_deployment_names_are_the_documented_constants() -> None:
    assert echo.DEPLOYMENTS == ("EchoIngress", "Echo", "Streamer")
    assert recsys.DEPLOYMENTS == ("RecsysIngress", "Ranker")
    app = echo.build_app(echo.EchoArgs())
    assert app._bound_deployment.name == echo.INGRESS_DEPLOYMENT  # type: ignore[attr-defined]
    app = recsys.build_app(recsys.RecsysArgs())
    assert app._bound_deployment.name == recsys.INGRESS_DEPLOYMENT  # type: ignore[attr-defined]


# --- recsys: model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> recsys.MiniDLRM:
    return recsys.make_model(cardinality=50, seed=3)


def test_minidlrm_shapes_and_ranges(model: recsys.MiniDLRM) -> None:
    f = recsys.synthesize(rows=9, seed=1)
    assert f.dense.shape == (9, 13) and f.sparse.shape == (9, 26)
    with torch.inference_mode():
        scores = model(torch.from_numpy(f.dense), torch.from_numpy(f.sparse))
    assert scores.shape == (9,)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert model.top[0].in_features == 64 + 351
    assert len(model.embeddings) == 26
    assert model.embeddings[0].weight.shape == (50, 64)
    assert not model.training


def test_minidlrm_deterministic_by_seed_and_leaves_global_rng(model: recsys.MiniDLRM) -> None:
    before = torch.random.get_rng_state()
    same = recsys.make_model(cardinality=50, seed=3)
    other = recsys.make_model(cardinality=50, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    f = recsys.synthesize(rows=5, seed=2)
    dense, sparse = torch.from_numpy(f.dense), torch.from_numpy(f.sparse)
    # Model output is compared with a tolerance: float32 kernels differ across CPUs (Intel, AMD).
    with torch.inference_mode():
        torch.testing.assert_close(model(dense, sparse), same(dense, sparse))
        assert not torch.allclose(model(dense, sparse), other(dense, sparse), atol=1e-3)


def test_minidlrm_loads_weights_path(tmp_path, model: recsys.MiniDLRM) -> None:
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = recsys.make_model(cardinality=50, seed=99, weights_path=str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_sparse_ids_wrap_around_the_table(model: recsys.MiniDLRM) -> None:
    f = recsys.synthesize(rows=3, seed=5)
    dense = torch.from_numpy(f.dense)
    ids = torch.from_numpy(f.sparse) % 50
    with torch.inference_mode():
        torch.testing.assert_close(model(dense, ids), model(dense, ids + 50 * 7))


def test_synthesize_is_deterministic() -> None:
    a, b = recsys.synthesize(4, seed=7), recsys.synthesize(4, seed=7)
    assert np.array_equal(a.dense, b.dense) and np.array_equal(a.sparse, b.sparse)
    assert not np.array_equal(a.sparse, recsys.synthesize(4, seed=8).sparse)


def test_pick_device() -> None:
    assert recsys.pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert recsys.pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            recsys.pick_device("cuda")


# --- recsys: batching and parsing ----------------------------------------------------------------


def test_merge_then_split_round_trips_request_order(model: recsys.MiniDLRM) -> None:
    requests = [recsys.synthesize(n, seed=n) for n in (1, 4, 2)]
    merged = recsys.merge(requests)
    assert merged.rows == 7
    with torch.inference_mode():
        scores = model(torch.from_numpy(merged.dense), torch.from_numpy(merged.sparse)).tolist()
        alone = [
            model(torch.from_numpy(r.dense), torch.from_numpy(r.sparse)).tolist() for r in requests
        ]
    parts = recsys.split(scores, [r.rows for r in requests])
    assert [len(p) for p in parts] == [1, 4, 2]
    for part, single in zip(parts, alone, strict=True):
        assert part == pytest.approx(single, abs=1e-6)


def test_split_rejects_a_count_mismatch() -> None:
    with pytest.raises(ValueError, match="3 scores for 4 rows"):
        recsys.split([0.1, 0.2, 0.3], [2, 2])


def test_recsys_json_parsing() -> None:
    assert recsys.parse_json_request({}, recsys.RecsysArgs()).rows == 32
    args = recsys.RecsysArgs(max_rows=8)
    assert recsys.parse_json_request({"rows": "5", "seed": 1}, args).rows == 5
    explicit = {"dense": [[0.5] * 13] * 2, "sparse": [[1] * 26] * 2}
    f = recsys.parse_json_request(explicit, args)
    assert f.dense.dtype == np.float32 and f.sparse.dtype == np.int64 and f.rows == 2
    bad = [
        ({"rows": 9}, "rows must be between 1 and 8"),
        ({"rows": "x"}, "rows must be an integer"),
        ({"rows": 0}, "rows must be between"),
        ({"rows": 2, "seed": -1}, "seed must be >= 0; got -1"),
        ({"dense": [[0.5] * 12], "sparse": [[1] * 26]}, r"dense\[0\] must be a list of 13"),
        ({"dense": [[0.5] * 13], "sparse": [[1.5] * 26]}, r"sparse\[0\] holds 1.5"),
        ({"dense": [["a"] * 13], "sparse": [[1] * 26]}, r"dense\[0\] holds 'a'"),
        ({"dense": [[0.5] * 13], "sparse": [[-1] * 26]}, "sparse ids must be >= 0"),
        ({"dense": [[0.5] * 13] * 2, "sparse": [[1] * 26]}, "sparse has 1 rows but dense has 2"),
        ({"dense": [[0.5] * 13] * 9, "sparse": [[1] * 26] * 9}, "rows must be <= 8"),
        ({"sparse": [[1] * 26]}, "dense must be a non-empty list"),
    ]
    for params, message in bad:
        with pytest.raises(recsys.BadRequest, match=message):
            recsys.parse_json_request(params, args)


def test_recsys_grpc_parsing() -> None:
    args = recsys.RecsysArgs(max_rows=4, rows=3)
    assert recsys.parse_grpc_request(recsys_pb2.RankRequest(), args).rows == 3
    req = recsys_pb2.RankRequest(dense=[0.1] * 26, sparse=[3] * 52)
    f = recsys.parse_grpc_request(req, args)
    assert f.rows == 2 and f.sparse.shape == (2, 26)
    bad = [
        (recsys_pb2.RankRequest(rows=5), "rows must be between 1 and 4"),
        (recsys_pb2.RankRequest(rows=2, seed=-3), "seed must be >= 0; got -3"),
        (recsys_pb2.RankRequest(dense=[0.1] * 14, sparse=[1] * 26), "dense must hold rows"),
        (recsys_pb2.RankRequest(dense=[0.1] * 13, sparse=[1] * 25), "sparse must hold"),
        (recsys_pb2.RankRequest(rows=2, dense=[0.1] * 13, sparse=[1] * 26), "rows is 2"),
        (recsys_pb2.RankRequest(dense=[float("nan")] * 13, sparse=[1] * 26), "finite"),
    ]
    for request, message in bad:
        with pytest.raises(recsys.BadRequest, match=message):
            recsys.parse_grpc_request(request, args)


def test_recsys_args_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="device"):
        recsys.RecsysArgs.model_validate({"device": "tpu"})
    with pytest.raises(pydantic.ValidationError, match="max_batch_size"):
        recsys.RecsysArgs(max_batch_size=0)


# --- llm -----------------------------------------------------------------------------------------


def _llm(**kw: object) -> llm.LlmArgs:
    base: dict[str, object] = {
        "model_id": "qwen-0.5b",
        "source": "gcs",
        "model_source": "/gcs/models/qwen",
    }
    return llm.LlmArgs.model_validate(base | kw)


def test_llm_config_kwargs_gcs() -> None:
    kw = llm.llm_config_kwargs(_llm(tensor_parallel_size=2, max_model_len=4096), env={})
    assert kw["model_loading_config"] == {
        "model_id": "qwen-0.5b",
        "model_source": "/gcs/models/qwen",
    }
    assert kw["accelerator_type"] == "H100"
    assert kw["engine_kwargs"]["tensor_parallel_size"] == 2
    assert kw["engine_kwargs"]["max_model_len"] == 4096
    assert kw["engine_kwargs"]["max_num_seqs"] == 256
    assert kw["deployment_config"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 1}
    assert "runtime_env" not in kw
    json.dumps(kw)  # it travels in a serve config: plain JSON only


def test_llm_config_kwargs_hub_token() -> None:
    args = _llm(source="hub", model_source="Qwen/Qwen2.5-0.5B-Instruct")
    kw = llm.llm_config_kwargs(args, env={"HF_TOKEN": "t"})
    assert "runtime_env" not in kw  # pods already carry HF_TOKEN
    with pytest.raises(ValueError, match="HF_TOKEN is unset"):
        llm.llm_config_kwargs(args, env={})
    renamed = _llm(source="hub", model_source="org/m", hf_token_env="MY_TOKEN")
    kw = llm.llm_config_kwargs(renamed, env={"MY_TOKEN": "s"})
    assert kw["runtime_env"] == {"env_vars": {"HF_TOKEN": "s"}}
    public = _llm(source="hub", model_source="org/m", hf_token_env=None)
    assert "runtime_env" not in llm.llm_config_kwargs(public, env={})


def _tiny_cpu(**kw: object) -> llm.LlmArgs:
    return _llm(device="cpu", source="local", model_source="/tmp/tiny-llm", kv_cache_gib=1, **kw)


def test_llm_config_kwargs_cpu() -> None:
    kw = llm.llm_config_kwargs(_tiny_cpu(load_format="dummy", enforce_eager=True), env={})
    assert "accelerator_type" not in kw  # Ray Serve LLM refuses a label on CPU
    assert kw["accelerator_config"] == {"kind": "cpu"}
    assert kw["placement_group_config"] == {"bundles": [{"CPU": 1}]}
    engine = kw["engine_kwargs"]
    assert (engine["load_format"], engine["enforce_eager"]) == ("dummy", True)
    assert engine["kv_cache_memory_bytes"] == 1 << 30
    assert "gpu_memory_utilization" not in engine
    assert "runtime_env" not in kw
    json.dumps(kw)


def _tiny_cpu_prefix_router() -> llm.LlmArgs:
    return _tiny_cpu(router="prefix-cache-affinity", min_replicas=2, max_replicas=2)


@pytest.mark.parametrize(
    "args", [_tiny_cpu, _llm, _tiny_cpu_prefix_router], ids=["cpu", "gpu", "cpu-prefix-router"]
)
def test_llm_config_kwargs_pass_ray_serve_llms_own_validation(
    args: Callable[[], llm.LlmArgs],
) -> None:
    from ray.serve.llm import LLMConfig

    config = LLMConfig(**llm.llm_config_kwargs(args(), env={}))
    assert config.accelerator_config.kind == ("gpu" if args is _llm else "cpu")
    if args is _tiny_cpu_prefix_router:
        # LLMConfig validates deployment_config as Serve's DeploymentConfig, which imports the
        # router class from its path: the path resolves to Ray Serve LLM's router.
        from ray.serve._private.config import DeploymentConfig
        from ray.serve.llm.request_router import PrefixCacheAffinityRouter

        router = DeploymentConfig(**config.deployment_config).request_router_config
        assert router.get_request_router_class() is PrefixCacheAffinityRouter


def test_llm_cpu_args_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="kv_cache_gib is required"):
        _llm(device="cpu", source="local", model_source="/tmp/m")
    with pytest.raises(pydantic.ValidationError, match="accelerator_type must be null"):
        _tiny_cpu(accelerator_type="H100")
    assert _tiny_cpu(accelerator_type=None).accelerator_type is None
    with pytest.raises(pydantic.ValidationError, match="tensor_parallel_size must be 1"):
        _tiny_cpu(tensor_parallel_size=2)
    with pytest.raises(pydantic.ValidationError, match="absolute directory"):
        _llm(device="cpu", source="local", model_source="tiny-llm", kv_cache_gib=1)


def test_llm_args_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="absolute path"):
        _llm(model_source="gs://bucket/qwen")
    with pytest.raises(pydantic.ValidationError, match="repo id"):
        _llm(source="hub", model_source="/gcs/x")
    with pytest.raises(pydantic.ValidationError, match="min_replicas"):
        _llm(min_replicas=3, max_replicas=2)
    with pytest.raises(pydantic.ValidationError, match="tensor_parallel_size"):
        _llm(tensor_parallel_size=16)


def test_llm_deployment_names() -> None:
    assert llm.deployment_names(_llm(model_id="meta/llama-3.1")) == (
        "OpenAiIngress",
        "LLMServer:meta--llama-3_1",
    )


def test_llm_build_app_when_ray_serve_llm_imports() -> None:
    try:
        import ray.serve.llm  # noqa: F401
    except ImportError as e:
        pytest.skip(f"ray.serve.llm does not import here (needs vllm/pyarrow): {e}")
    app = llm.build_app(_llm())
    assert app is not None


# --- llm: request routing -------------------------------------------------------------------------


def _prefix(**kw: object) -> llm.LlmArgs:
    return _llm(router="prefix-cache-affinity", **kw)


def test_llm_default_router_leaves_rays_own() -> None:
    """No request_router_config: Ray picks its default for the mode (power of two choices through
    OpenAiIngress; round robin under direct streaming, builder.py _get_direct_streaming_serve_options),
    which an explicit class would override."""
    for args in (_llm(), _llm(router="default"), _tiny_cpu()):
        assert (
            "request_router_config" not in llm.llm_config_kwargs(args, env={})["deployment_config"]
        )


@pytest.mark.parametrize(
    "args, router_kwargs",
    [
        pytest.param(
            _prefix(),
            {
                "imbalanced_threshold": 64,
                "match_rate_threshold": 0.1,
                "do_eviction": True,
                "eviction_threshold_chars": 400_000,
                "eviction_target_chars": 360_000,
            },
            id="defaults",
        ),
        pytest.param(
            _prefix(
                prefix_imbalanced_threshold=0,
                prefix_match_rate_threshold=0.5,
                prefix_eviction_chars=10_000,
            ),
            {
                "imbalanced_threshold": 0,
                "match_rate_threshold": 0.5,
                "do_eviction": True,
                "eviction_threshold_chars": 10_000,
                "eviction_target_chars": 9_000,
            },
            id="set",
        ),
        pytest.param(
            _prefix(prefix_eviction_chars=None, prefix_match_rate_threshold=1),
            {"imbalanced_threshold": 64, "match_rate_threshold": 1.0},
            id="no-eviction",
        ),
        pytest.param(
            _tiny_cpu(router="prefix-cache-affinity", min_replicas=2, max_replicas=2),
            {
                "imbalanced_threshold": 64,
                "match_rate_threshold": 0.1,
                "do_eviction": True,
                "eviction_threshold_chars": 400_000,
                "eviction_target_chars": 360_000,
            },
            id="cpu",
        ),
    ],
)
def test_llm_prefix_router_reaches_the_deployment_config(
    args: llm.LlmArgs, router_kwargs: dict[str, object]
) -> None:
    deployment = llm.llm_config_kwargs(args, env={})["deployment_config"]
    assert deployment["request_router_config"] == {
        "request_router_class": "ray.serve.llm.request_router.PrefixCacheAffinityRouter",
        "request_router_kwargs": router_kwargs,
    }
    assert deployment["autoscaling_config"] == {
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
    }
    json.dumps(deployment)  # Serve refuses request_router_kwargs that are not JSON


@pytest.mark.parametrize(
    "kw, match",
    [
        pytest.param({"router": "prefix"}, "router", id="unknown-router"),
        pytest.param({"router": "power-of-two"}, "router", id="power-of-two-is-default"),
        pytest.param(
            {"prefix_imbalanced_threshold": 8},
            r"prefix_imbalanced_threshold applies only with router 'prefix-cache-affinity'; got "
            r"router 'default' and prefix_imbalanced_threshold 8; allowed: router: "
            r"prefix-cache-affinity, or no prefix_imbalanced_threshold",
            id="knob-without-router",
        ),
        pytest.param(
            {"router": "default", "prefix_eviction_chars": None},
            "prefix_eviction_chars applies only with router 'prefix-cache-affinity'",
            id="eviction-off-without-router",
        ),
        pytest.param(
            {"router": "prefix-cache-affinity", "prefix_match_rate_threshold": 1.5},
            "prefix_match_rate_threshold",
            id="match-rate-above-1",
        ),
        pytest.param(
            {"router": "prefix-cache-affinity", "prefix_imbalanced_threshold": -1},
            "prefix_imbalanced_threshold",
            id="negative-gap",
        ),
        pytest.param(
            {"router": "prefix-cache-affinity", "prefix_eviction_chars": 10},
            "prefix_eviction_chars",
            id="eviction-bound-too-small",
        ),
    ],
)
def test_llm_router_args_validation(kw: dict[str, object], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        _llm(**kw)


def test_llm_prefix_router_is_rays_by_source() -> None:
    """The class path and keyword names, against Ray's source (importing ray.serve.llm loads vllm):
    the public class exists where app/llm.py names it, and every keyword is an argument of the
    router's initialize_state."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    ray_dir = Path(spec.origin).parent
    module, _, cls = llm.PREFIX_CACHE_AFFINITY_ROUTER.rpartition(".")
    public = ast.parse((ray_dir.parent / (module.replace(".", "/") + ".py")).read_text())
    assert cls in {n.name for n in public.body if isinstance(n, ast.ClassDef)}
    impl = ray_dir / "llm/_internal/serve/routing_policies/prefix_aware/prefix_aware_router.py"
    [router] = [
        n for n in ast.parse(impl.read_text()).body if isinstance(n, ast.ClassDef) and n.name == cls
    ]
    [init] = [
        n for n in router.body if isinstance(n, ast.FunctionDef) and n.name == "initialize_state"
    ]
    accepted = {a.arg for a in init.args.args} - {"self"}
    kwargs = llm.prefix_router_config(_prefix())["request_router_kwargs"]
    assert set(kwargs) <= accepted
    # Ray's own default is no bound on the queue gap: the stack always gives one (app/contracts.py).
    defaults = dict(zip(reversed(init.args.args), reversed(init.args.defaults), strict=False))
    assert {a.arg: ast.unparse(d) for a, d in defaults.items()}["imbalanced_threshold"] == (
        "float('inf')"
    )
