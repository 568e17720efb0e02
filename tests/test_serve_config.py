"""infra/serve_config.py: the `serveConfigV2` the RayService carries, built from the stack config, and
the same config (and Ray's env flags) scaled to one machine for `raygke local`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stackfiles import NS, edit, mutated

from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT
from infra.config import (
    FLAGS_ONLY,
    HEALTH_CHECK_PERIOD_S,
    HEALTH_CHECK_TIMEOUT_S,
    TUNED_MAX_ONGOING_REQUESTS,
    TuningConfig,
    with_serve_profile,
    with_tuning,
)
from infra.serve_config import (
    APP_KIND_SPECS,
    LOCAL_MAX_REPLICAS,
    app_kind,
    build_serve_config,
    scale_flags_for_local,
    scale_for_local,
)
from infra.stack_file import ConfigError, load_stack_config, parse_stack_config

pytestmark = pytest.mark.config


def _apps(config: Any) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in build_serve_config(config)["applications"]}


# --- the apps, by kind -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_infra_names_the_apps_as_the_app_modules_do() -> None:
    """infra/ refers to apps by strings only (it must not import Ray); they must not drift."""
    from app import echo, recsys

    assert APP_KIND_SPECS["echo"].grpc_servicer_functions == (echo.GRPC_SERVICER,)
    assert APP_KIND_SPECS["recsys"].grpc_servicer_functions == (recsys.GRPC_SERVICER,)
    for kind, module in (("echo", echo), ("recsys", recsys)):
        module_name, attribute = APP_KIND_SPECS[kind].import_path.split(":")
        assert module_name == module.__name__ and callable(getattr(module, attribute))


def test_a_custom_app_serves_its_own_code_and_an_http_only_app_no_grpc_service():
    custom = {
        "name": "mine",
        "kind": "custom",
        "routePrefix": "/mine",
        "importPath": "team.app:build",
        "grpcService": "team.v1.Mine",
        "grpcServicerFunctions": ["team.pb2_grpc.add_MineServicer_to_server"],
    }
    config = parse_stack_config(
        "dev",
        mutated(
            "dev",
            lambda c: c[f"{NS}:apps"].append(custom),
            edit("apps", [0], protocols=["http"]),
        ),
    )
    echo, _, mine = config.apps
    assert app_kind(mine).import_path == "team.app:build"
    assert app_kind(mine).grpc_service == "team.v1.Mine"
    assert app_kind(echo).import_path == APP_KIND_SPECS["echo"].import_path
    assert app_kind(echo).grpc_service is None and app_kind(echo).grpc_servicer_functions == ()
    document = build_serve_config(config)
    assert document["grpc_options"] == {
        "port": RAY_SERVE_GRPC_PORT,
        "grpc_servicer_functions": [
            APP_KIND_SPECS["recsys"].grpc_servicer_functions[0],
            "team.pb2_grpc.add_MineServicer_to_server",
        ],
    }


# --- the cluster's serveConfigV2 ---------------------------------------------------------------


def test_the_cluster_document_carries_the_stacks_apps_and_deployment_options():
    config = load_stack_config("dev")
    document = build_serve_config(config)
    assert document["http_options"] == {"host": "0.0.0.0", "port": RAY_SERVE_HTTP_PORT}
    assert [a["route_prefix"] for a in document["applications"]] == ["/echo", "/recsys"]
    ranker = next(
        d for d in _apps(config)["recsys"]["deployments"] if d["name"] == "Ranker"
    )  # numReplicas, numCpus and numGpus as the stack sets them; Ray's shutdown defaults stay Ray's
    assert ranker == {
        "name": "Ranker",
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 4, "num_gpus": 1},
        "max_ongoing_requests": TUNED_MAX_ONGOING_REQUESTS,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    }


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_every_deployment_gets_the_projects_health_check_unless_it_sets_one():
    # Streamer left out of the stack: the echo app still defines it, so it still gets one.
    config = parse_stack_config(
        "dev",
        mutated(
            "dev",
            lambda c: c[f"{NS}:apps"][0]["deployments"].pop("Streamer"),
            edit("apps", [0, "deployments", "Echo"], healthCheckTimeoutS=8),
        ),
    )
    document = build_serve_config(config)
    checks = {
        (a["name"], d["name"]): (d["health_check_period_s"], d["health_check_timeout_s"])
        for a in document["applications"]
        for d in a["deployments"]
    }
    default = (HEALTH_CHECK_PERIOD_S, HEALTH_CHECK_TIMEOUT_S)
    assert checks == {
        ("echo", "Echo"): (HEALTH_CHECK_PERIOD_S, 8),
        ("echo", "EchoIngress"): default,
        ("echo", "Streamer"): default,
        ("recsys", "Ranker"): default,
        ("recsys", "RecsysIngress"): default,
    }
    # Ray's own schema of a Serve config takes it as it is.
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(document)


def test_the_llm_app_keeps_rays_health_check_and_a_custom_app_sets_its_listed_ones():
    prod = _apps(load_stack_config("prod"))
    llm = next(a for a in prod.values() if a["import_path"] == "app.llm:build_app")
    assert llm["deployments"] == []  # Ray Serve LLM builds its own, on Ray's defaults
    custom = {
        "name": "mine",
        "kind": "custom",
        "routePrefix": "/mine",
        "importPath": "mine.app:app",
        "protocols": ["http"],
        "deployments": {"Mine": {"numReplicas": 1}},
    }
    config = parse_stack_config("dev", mutated("dev", lambda c: c[f"{NS}:apps"].append(custom)))
    [mine] = _apps(config)["mine"]["deployments"]
    assert (mine["name"], mine["health_check_period_s"]) == ("Mine", HEALTH_CHECK_PERIOD_S)


def test_autoscaling_replaces_num_replicas_and_lifecycle_options_pass_through():
    scaled = {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}, "gracefulShutdownTimeoutS": 10}
    config = parse_stack_config(
        "dev", mutated("dev", lambda c: c[f"{NS}:apps"][0]["deployments"].update(Echo=scaled))
    )
    echo = next(d for d in _apps(config)["echo"]["deployments"] if d["name"] == "Echo")
    assert "num_replicas" not in echo and "ray_actor_options" not in echo
    assert echo["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
    }
    assert echo["graceful_shutdown_timeout_s"] == 10


def test_autoscaling_delays_pass_through_only_when_set():
    delays = {"minReplicas": 1, "maxReplicas": 3, "upscaleDelayS": 1, "downscaleDelayS": 8.5}
    config = parse_stack_config(
        "dev",
        mutated(
            "dev",
            lambda c: c[f"{NS}:apps"][0]["deployments"].update(Echo={"autoscaling": delays}),
        ),
    )
    echo = next(d for d in _apps(config)["echo"]["deployments"] if d["name"] == "Echo")
    assert echo["autoscaling_config"]["upscale_delay_s"] == 1
    assert echo["autoscaling_config"]["downscale_delay_s"] == 8.5


def test_a_negative_autoscaling_delay_is_refused():
    delays = {"minReplicas": 1, "maxReplicas": 3, "downscaleDelayS": -1}
    with pytest.raises(ConfigError, match=r"downscaleDelayS.*greater than or equal to 0.*-1"):
        parse_stack_config(
            "dev",
            mutated(
                "dev",
                lambda c: c[f"{NS}:apps"][0]["deployments"].update(Echo={"autoscaling": delays}),
            ),
        )


def test_no_grpc_options_without_ray_grpc():
    config = parse_stack_config(
        "dev",
        mutated(
            "dev",
            edit("ray", grpc=False),
            *(edit("apps", [i], protocols=["http"]) for i in (0, 1)),
        ),
    )
    assert "grpc_options" not in build_serve_config(config)


def test_flags_only_serves_the_stack_as_ray_would():
    """B of the A/B: the same apps, deployments and resources, and nothing of the tuning."""
    tuned = _apps(load_stack_config("dev"))
    plain = _apps(with_serve_profile(load_stack_config("dev"), "flags-only"))
    assert plain.keys() == tuned.keys()
    for name, app in plain.items():
        assert app["args"] == next(a.args for a in load_stack_config("dev").apps if a.name == name)
        assert all("max_ongoing_requests" not in d for d in app["deployments"])
        strip = [
            {k: v for k, v in d.items() if k != "max_ongoing_requests"}
            for d in tuned[name]["deployments"]
        ]
        assert strip == app["deployments"]


def test_tuned_adds_its_levers_and_the_stack_wins():
    raw = mutated("dev")
    echo = next(a for a in raw[f"{NS}:apps"] if a["name"] == "echo")
    echo["deployments"]["Echo"]["maxOngoingRequests"] = 8
    apps = _apps(parse_stack_config("dev", raw))
    limits = {d["name"]: d["max_ongoing_requests"] for d in apps["echo"]["deployments"]}
    tuned = TUNED_MAX_ONGOING_REQUESTS
    assert limits == {"Echo": 8, "EchoIngress": tuned, "Streamer": tuned}


def test_the_llm_app_keeps_ray_serve_llms_own_limits():
    apps = _apps(load_stack_config("prod"))
    llm = next(a for a in apps.values() if a["import_path"] == "app.llm:build_app")
    assert all("max_ongoing_requests" not in d for d in llm["deployments"])


# --- one machine -------------------------------------------------------------------------------


def test_one_machine_gets_one_cpu_replica_each_and_the_local_args():
    config = load_stack_config("dev")
    cluster = build_serve_config(config)
    local = scale_for_local(config, cluster)
    assert local["http_options"] == {"host": "127.0.0.1", "port": RAY_SERVE_HTTP_PORT}
    assert local["grpc_options"] == cluster["grpc_options"]
    recsys = next(a for a in local["applications"] if a["name"] == "recsys")
    assert recsys["args"] == {"cardinality": 1000}  # localArgs over args
    for app in local["applications"]:
        for dep in app["deployments"]:
            assert dep["num_replicas"] == 1
            assert dep["ray_actor_options"]["num_cpus"] <= 1
            assert "num_gpus" not in dep["ray_actor_options"]
    assert cluster == build_serve_config(config)  # the cluster's document is left as it was


def test_one_machine_keeps_autoscaling_from_at_most_one_up_to_a_cap():
    config = load_stack_config("prod")  # recsys: autoscaling 2..8; Ranker on a GPU
    local = scale_for_local(config, build_serve_config(config))
    recsys = next(a for a in local["applications"] if a["name"] == "recsys")
    for dep in recsys["deployments"]:
        assert dep["autoscaling_config"]["min_replicas"] == 1
        assert dep["autoscaling_config"]["max_replicas"] == LOCAL_MAX_REPLICAS
        assert "num_replicas" not in dep
    echo = next(a for a in local["applications"] if a["name"] == "echo")  # 4 in prod
    assert all(d["num_replicas"] == 1 for d in echo["deployments"])


@pytest.mark.parametrize(("cores", "threads"), [(1, "1"), (2, "1"), (6, "3"), (16, "4")])
def test_on_one_machine_rays_haproxy_gets_half_the_cores(cores: int, threads: str):
    ray = load_stack_config("dev").ray
    assert scale_flags_for_local(ray, cores) == {
        **ray.serve_flags,
        **ray.engine_flags,  # vLLM's, with the LLM mode: every node's env as in the cluster
        "RAY_SERVE_HAPROXY_NBTHREAD": threads,
    }
    assert "RAY_SERVE_HAPROXY_NBTHREAD" not in ray.serve_flags  # the cluster keeps Ray's 4
    flags_only = with_serve_profile(load_stack_config("dev"), "flags-only").ray
    assert scale_flags_for_local(flags_only, cores) == FLAGS_ONLY
    pinned = ray.model_copy(update={"tuning": TuningConfig(haproxy_threads=3)})
    assert scale_flags_for_local(pinned, cores)["RAY_SERVE_HAPROXY_NBTHREAD"] == "3"


# --- the llm app's request router ---------------------------------------------------------------


def _llm_app(**keys: Any) -> Any:
    """A mutation of prod's llm app: its `args` and `localArgs` updated with `keys`' dicts."""

    def mutate(config: dict[str, Any]) -> None:
        app = next(a for a in config[f"{NS}:apps"] if a["kind"] == "llm")
        for key, values in keys.items():
            app[key] = {**app.get(key, {}), **values}

    return mutate


# prod under a profile without Ray Serve LLM's direct streaming, where the router applies (under
# it, infra/serve_rules.py refuses the router: tests/test_serve_rules.py).
NO_DIRECT_STREAMING = edit("ray", serveProfile="flags-only")
PREFIX = {"router": "prefix-cache-affinity", "prefix_match_rate_threshold": 0.3}


@pytest.mark.parametrize(
    "keys, cluster_kwargs, local_kwargs",
    [
        pytest.param(
            {"args": PREFIX},
            {"imbalanced_threshold": 64, "match_rate_threshold": 0.3},
            {"imbalanced_threshold": 64, "match_rate_threshold": 0.3},
            id="args",
        ),
        pytest.param(
            {"localArgs": {**PREFIX, "min_replicas": 2, "max_replicas": 2}},
            None,
            {"imbalanced_threshold": 64, "match_rate_threshold": 0.3},
            id="local-only",
        ),
        pytest.param(
            {"args": PREFIX, "localArgs": {"prefix_imbalanced_threshold": 2}},
            {"imbalanced_threshold": 64, "match_rate_threshold": 0.3},
            {"imbalanced_threshold": 2, "match_rate_threshold": 0.3},
            id="local-knob-over-args",
        ),
        pytest.param({"args": {"router": "default"}}, None, None, id="default"),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_the_llm_router_option_reaches_the_llmserver_deployment(
    keys: dict[str, Any],
    cluster_kwargs: dict[str, Any] | None,
    local_kwargs: dict[str, Any] | None,
    tmp_path: Path,
) -> None:
    """The stack's args travel in the rendered RayService's serveConfigV2 (and the local run's
    scaled copy), and app/llm.py turns them into LLMConfig's deployment_config.request_router_config
    for the LLMServer deployment, with the router's import path."""
    import yaml

    from app.contracts import LlmArgs
    from app.llm import llm_config_kwargs
    from infra.rendered import render_stack

    config = parse_stack_config("prod", mutated("prod", NO_DIRECT_STREAMING, _llm_app(**keys)))
    serve_config = yaml.safe_load(render_stack(config).rayservice["spec"]["serveConfigV2"])
    assert serve_config == build_serve_config(config)
    local = scale_for_local(config, serve_config)
    for document, expected in ((serve_config, cluster_kwargs), (local, local_kwargs)):
        [app] = [a for a in document["applications"] if a["import_path"] == "app.llm:build_app"]
        args = LlmArgs.model_validate(
            {**app["args"], "model_source": str(tmp_path)}
            if app["args"]["source"] == "local"
            else app["args"]
        )
        deployment = llm_config_kwargs(args, env={})["deployment_config"]
        if expected is None:
            assert "request_router_config" not in deployment
            continue
        router = deployment["request_router_config"]
        assert router["request_router_class"] == (
            "ray.serve.llm.request_router.PrefixCacheAffinityRouter"
        )
        assert {k: router["request_router_kwargs"][k] for k in expected} == expected


@pytest.mark.parametrize(
    "keys, message",
    [
        pytest.param(
            {"args": {"router": "prefix"}},
            r"apps\[llm\]\.args\.router: Input should be 'default' or 'prefix-cache-affinity'; "
            r"got 'prefix'",
            id="unknown-router",
        ),
        pytest.param(
            {"localArgs": {"prefix_match_rate_threshold": 0.5}},
            r"apps\[llm\]\.localArgs: prefix_match_rate_threshold applies only with router "
            r"'prefix-cache-affinity'; got router 'default' and prefix_match_rate_threshold 0\.5; "
            r"allowed: router: prefix-cache-affinity, or no prefix_match_rate_threshold",
            id="knob-without-router",
        ),
        pytest.param(
            {"args": {**PREFIX, "prefix_match_rate_threshold": 2}},
            r"apps\[llm\]\.args\.prefix_match_rate_threshold: Input should be less than or equal "
            r"to 1; got 2",
            id="match-rate-out-of-range",
        ),
    ],
)
def test_a_bad_llm_router_option_names_the_key_the_value_and_what_is_allowed(
    keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_stack_config("prod", mutated("prod", NO_DIRECT_STREAMING, _llm_app(**keys)))


# --- the llm app's autoscale_on ------------------------------------------------------------------

FRONTEND = edit("ray", prometheusUrl="http://frontend.gmp-public.svc:9090")
TTFT_ON = {"signal": "ttft", "target_ms": 500, "window_s": 120}
LOCAL_TTFT_ON = {"signal": "ttft", "target_ms": 2000, "window_s": 20, "hold_s": 60}


@pytest.mark.parametrize(
    "keys, cluster_kwargs, local_kwargs",
    [
        pytest.param(
            {"args": {"autoscale_on": TTFT_ON}, "localArgs": {"max_replicas": 2}},
            {"signal": "ttft", "target": 0.5, "hold_s": 300, "window": "[120s]"},
            {"signal": "ttft", "target": 0.5, "hold_s": 300, "window": "[120s]"},
            id="args",
        ),
        pytest.param(
            {"localArgs": {"max_replicas": 2, "autoscale_on": LOCAL_TTFT_ON}},
            None,
            {"signal": "ttft", "target": 2.0, "hold_s": 60, "window": "[20s]"},
            id="local-only",
        ),
        pytest.param(
            {
                "args": {"autoscale_on": {"signal": "queue", "target_per_replica": 4}},
                "localArgs": {"max_replicas": 2, "autoscale_on": None},
            },
            {"signal": "queue", "target": 4, "hold_s": 300, "window": "ray_vllm_num_requests"},
            None,
            id="queue-cluster-only",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_autoscale_on_reaches_the_llmserver_deployment(
    keys: dict[str, Any],
    cluster_kwargs: dict[str, Any] | None,
    local_kwargs: dict[str, Any] | None,
    tmp_path: Path,
) -> None:
    """From the stack's args through serveConfigV2 (and the local run's copy) to LLMConfig's
    deployment_config: the policy by import path with its kwargs, no delays of Ray's own, the
    replica bounds kept; Ray's own DeploymentConfig takes it (it imports and pickles the class)."""
    import yaml
    from ray.serve._private.config import DeploymentConfig

    from app.contracts import LlmArgs
    from app.llm import llm_config_kwargs
    from infra.rendered import render_stack

    config = parse_stack_config("prod", mutated("prod", FRONTEND, _llm_app(**keys)))
    rayservice = render_stack(config).rayservice
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    local = scale_for_local(config, serve_config)
    for document, expected in ((serve_config, cluster_kwargs), (local, local_kwargs)):
        [app] = [a for a in document["applications"] if a["import_path"] == "app.llm:build_app"]
        args = LlmArgs.model_validate(
            {**app["args"], "model_source": str(tmp_path)}
            if app["args"]["source"] == "local"
            else app["args"]
        )
        deployment = llm_config_kwargs(args, env={})["deployment_config"]
        auto = deployment["autoscaling_config"]
        assert (auto["min_replicas"], auto["max_replicas"]) == (
            args.min_replicas,
            args.max_replicas,
        )
        if expected is None:
            assert "policy" not in auto
            continue
        policy = auto["policy"]
        assert policy["policy_function"] == "app.autoscaling:ServingSignalPolicy"
        kwargs = policy["policy_kwargs"]
        assert {k: kwargs[k] for k in ("signal", "target", "hold_s")} == {
            k: expected[k] for k in ("signal", "target", "hold_s")
        }
        assert expected["window"] in kwargs["query"]
        assert f'model_name="{args.model_id}"' in kwargs["query"]
        assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (0, 0)
        DeploymentConfig(**deployment)


def test_prometheus_url_reaches_every_ray_container():
    from infra.rendered import render_stack

    config = parse_stack_config("prod", mutated("prod", FRONTEND))
    pod_specs = [
        group["template"]["spec"]
        for group in (
            render_stack(config).rayservice["spec"]["rayClusterConfig"]["headGroupSpec"],
            *render_stack(config).rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"],
        )
    ]
    for pod in pod_specs:
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["RAY_PROMETHEUS_HOST"] == "http://frontend.gmp-public.svc:9090"
    shipped = render_stack(load_stack_config("prod")).rayservice
    assert "RAY_PROMETHEUS_HOST" not in str(shipped)


@pytest.mark.parametrize(
    "keys, ray, message",
    [
        pytest.param(
            {"args": {"autoscale_on": {"signal": "p99"}}},
            {},
            r"apps\[llm\]\.args\.autoscale_on\.signal: Input should be 'ttft' or 'queue'; got 'p99'",
            id="unknown-signal",
        ),
        pytest.param(
            {"args": {"autoscale_on": {"signal": "latency", "target_ms": 5}}},
            {},
            r"autoscale_on\.signal: Input should be 'ttft' or 'queue'; got 'latency'",
            id="another-unknown-signal",
        ),
        pytest.param(
            {"localArgs": {"max_replicas": 2, "autoscale_on": {"signal": "ttft"}}},
            {},
            r"apps\[llm\]\.localArgs\.autoscale_on: signal ttft needs target_ms; e\.g\. target_ms: 500",
            id="ttft-without-target",
        ),
        pytest.param(
            {"args": {"autoscale_on": {"signal": "queue", "target_ms": 500}}},
            {},
            r"apps\[llm\]\.args\.autoscale_on: signal queue needs target_per_replica",
            id="queue-without-target",
        ),
        pytest.param(
            {"args": {"autoscale_on": {**TTFT_ON, "target_per_replica": 4}}},
            {},
            r"autoscale_on: target_per_replica applies only to signal queue; got signal ttft and "
            r"target_per_replica 4\.0; allowed: target_ms",
            id="both-targets",
        ),
        pytest.param(
            {
                "args": {
                    "autoscale_on": {"signal": "queue", "target_per_replica": 4, "window_s": 60}
                }
            },
            {},
            r"window_s applies only to signal ttft .*got signal queue and window_s 60",
            id="window-on-queue",
        ),
        pytest.param(
            {"args": {"autoscale_on": {**TTFT_ON, "target_ms": 0}}},
            {},
            r"apps\[llm\]\.args\.autoscale_on\.target_ms: Input should be greater than 0; got 0",
            id="zero-target",
        ),
        pytest.param(
            {"args": {"autoscale_on": {**TTFT_ON, "target_ms": 500_000_000}}},
            {},
            r"autoscale_on\.target_ms: Input should be less than or equal to 600000",
            id="target-in-microseconds",
        ),
        pytest.param(
            {"args": {"autoscale_on": {**TTFT_ON, "window_s": 5}}},
            {},
            r"autoscale_on\.window_s: Input should be greater than or equal to 10; got 5",
            id="window-under-two-local-scrapes",
        ),
        pytest.param(
            {"args": {"autoscale_on": TTFT_ON}},
            {},
            r"apps\[llm\]\.localArgs: autoscale_on needs room to scale: min_replicas and "
            r"max_replicas are both 1; allowed: max_replicas > min_replicas, or no autoscale_on",
            id="local-min-equals-max",
        ),
        pytest.param(
            {
                "args": {"autoscale_on": TTFT_ON, "min_replicas": 8},
                "localArgs": {"max_replicas": 2},
            },
            {},
            r"apps\[llm\]\.args: autoscale_on needs room to scale: min_replicas and "
            r"max_replicas are both 8",
            id="cluster-min-equals-max",
        ),
        pytest.param(
            {"args": {"autoscale_on": TTFT_ON}, "localArgs": {"max_replicas": 2}},
            {"prometheusUrl": None},
            r"apps\[llm\]\.args\.autoscale_on reads ttft from Prometheus, but "
            r"ray\.prometheusUrl is unset",
            id="no-prometheus",
        ),
        pytest.param(
            {},
            {"prometheusUrl": "frontend:9090"},
            r"ray\.prometheusUrl must be an http\(s\) base URL .*got 'frontend:9090'",
            id="url-without-scheme",
        ),
        pytest.param(
            {},
            {"prometheusUrl": "http://frontend:9090/api/v1/query?query=up"},
            r"ray\.prometheusUrl must be an http\(s\) base URL of a Prometheus query API, "
            r"without a query string",
            id="url-with-query",
        ),
        pytest.param(
            {},
            {"extraEnv": {"RAY_PROMETHEUS_HOST": "http://x:9090"}},
            r"ray\.extraEnv\.RAY_PROMETHEUS_HOST is set; set ray\.prometheusUrl instead",
            id="env-by-extra-env",
        ),
    ],
)
def test_a_bad_autoscale_on_names_the_key_the_value_and_what_is_allowed(
    keys: dict[str, Any], ray: dict[str, Any], message: str
) -> None:
    ray = {"prometheusUrl": "http://frontend.gmp-public.svc:9090", **ray}
    data = mutated("prod", edit("ray", **ray), _llm_app(**keys))
    if data[f"{NS}:ray"].get("prometheusUrl") is None:
        data[f"{NS}:ray"].pop("prometheusUrl")
    with pytest.raises(ConfigError, match=message):
        parse_stack_config("prod", data)


def test_autoscale_on_is_the_llm_apps_only():
    for kind in ("echo", "recsys"):
        data = mutated("prod")
        app = next(a for a in data[f"{NS}:apps"] if a["kind"] == kind)
        app.setdefault("args", {})["autoscale_on"] = TTFT_ON
        with pytest.raises(
            ConfigError,
            match=rf"apps\[{app['name']}\]\.args\.autoscale_on: unknown key for the {kind} app",
        ):
            parse_stack_config("prod", data)


@pytest.mark.parametrize("direct_streaming", [True, False])
def test_the_llm_apps_entry_lists_no_deployment_in_either_mode(direct_streaming: bool):
    """Ray Serve LLM names the llm app's deployments (OpenAiIngress only without direct
    streaming): the serve config overrides none, so nothing names one the app may not have."""
    config = with_tuning(load_stack_config("prod"), llm_direct_streaming=direct_streaming)
    assert config.ray.llm_direct_streaming is direct_streaming
    for document in (
        build_serve_config(config),
        scale_for_local(config, build_serve_config(config)),
    ):
        [llm] = [a for a in document["applications"] if a["name"] == "llm"]
        assert llm["deployments"] == []
