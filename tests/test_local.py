"""raygke/local.py's pure decisions: which apps run on this machine, the tiny model's place, and the
logical CPUs the Ray head is given (the live run is tests/test_local_run.py and tests/test_llm_live.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stackfiles import NS, mutated

from infra.serve_config import LOCAL_MAX_REPLICAS
from infra.stack_file import load_stack_config, parse_stack_config
from raygke.local import LLM_SERVE_CPUS, LocalError, local_serve_config, logical_cpus

pytestmark = pytest.mark.pure


def test_prods_llm_app_runs_here_on_the_tiny_model_written_into_the_run(tmp_path: Path) -> None:
    config = load_stack_config("prod")
    serve_config = local_serve_config(config, tmp_path / "models")
    [llm] = [a for a in serve_config["applications"] if a["name"] == "llm"]
    assert llm["args"]["model_source"] == str(tmp_path / "models" / "llm")
    assert (tmp_path / "models" / "llm" / "config.json").is_file()
    assert llm["args"]["device"] == "cpu"
    # Without a place for the model the llm app is left out; the others still run.
    names = [a["name"] for a in local_serve_config(config)["applications"]]
    assert names == ["echo", "recsys"]
    # echo: 3 deployments x 1 replica; recsys: 2 autoscaling deployments x 4 replicas at most;
    # llm: its two deployments and the engine's bundle of 1 CPU.
    assert logical_cpus(config, serve_config) == 3 + 2 * LOCAL_MAX_REPLICAS + LLM_SERVE_CPUS + 1


def test_an_llm_app_without_device_cpu_is_skipped_and_a_model_source_given_is_kept(
    tmp_path: Path,
) -> None:
    def llm_local_args(local_args: dict[str, object]):
        def mutate(doc: dict[str, object]) -> None:
            apps = doc[f"{NS}:apps"]
            assert isinstance(apps, list)
            next(a for a in apps if a["kind"] == "llm")["localArgs"] = local_args
            if not local_args:  # an llm app left out has no local objectives
                del doc[f"{NS}:smoke"]["localSlo"]["llm"]

        return parse_stack_config("prod", mutated("prod", mutate))

    gpu_only = llm_local_args({})
    names = [a["name"] for a in local_serve_config(gpu_only, tmp_path)["applications"]]
    assert "llm" not in names
    own = {
        "device": "cpu",
        "source": "local",
        "model_source": "/srv/models/mine",
        "kv_cache_gib": 1,
    }
    served = local_serve_config(llm_local_args(own), tmp_path)
    [llm] = [a for a in served["applications"] if a["name"] == "llm"]
    assert llm["args"]["model_source"] == "/srv/models/mine"
    assert not (tmp_path / "llm").exists()


def test_a_stack_with_nothing_that_runs_here_is_refused() -> None:
    def only_llm(doc: dict[str, object]) -> None:
        apps = doc[f"{NS}:apps"]
        assert isinstance(apps, list)
        doc[f"{NS}:apps"] = [{**a, "localArgs": {}} for a in apps if a["kind"] == "llm"]
        del doc[f"{NS}:smoke"]["localSlo"]["llm"]

    config = parse_stack_config("prod", mutated("prod", only_llm))
    with pytest.raises(LocalError, match="has no app that runs without a GPU"):
        local_serve_config(config)
