"""raygke/smoke/profiles.py: the profiles and the load plan they produce for a contract (targets, closed and
open-loop levels, client processes, command-line overrides)."""

from __future__ import annotations

import copy

import pytest
from smoke_levels import CONTRACT

from raygke.smoke.contract import EXAMPLE, SmokeContract, parse_contract
from raygke.smoke.llm import WORKLOADS, turn_lengths
from raygke.smoke.profiles import (
    FULL,
    MIN_LLM_PROMPTS,
    QUICK,
    auto_processes,
    closed_levels,
    closed_specs,
    llm_open_specs,
    llm_specs,
    llm_workload_specs,
    open_specs,
    targets,
    with_overrides,
)

pytestmark = pytest.mark.pure


def test_quick_profile_fits_two_minutes() -> None:
    # Levels are run back to back: the plan's own seconds must leave room for checks and startup.
    specs = closed_specs(CONTRACT, QUICK)
    opened = open_specs(CONTRACT, QUICK, {s.target: 1000.0 for s in specs})
    planned = sum(s.warmup_s + s.duration_s for s in specs + opened) * QUICK.repeats
    assert planned <= 60
    assert {s.concurrency for s in specs} == {CONTRACT.slo.concurrency}
    assert len(opened) == 1 and opened[0].rate == 500.0


def test_full_profile_covers_every_target_and_level() -> None:
    specs = closed_specs(CONTRACT, FULL)
    assert len(targets(CONTRACT)) == 6  # echo: 4 shapes, recsys: 2
    assert len(specs) == 6 * 4  # levels 1, 8, 32, 128 (the SLO's 8 included once)
    opened = open_specs(CONTRACT, FULL, {s.target: 800.0 for s in specs})
    assert sorted({(s.transport, s.rate) for s in opened}) == [
        ("grpc", 200.0),
        ("grpc", 400.0),
        ("grpc", 600.0),
        ("http", 200.0),
        ("http", 400.0),
        ("http", 600.0),
    ]
    assert open_specs(CONTRACT, FULL, {}) == []  # no peak (all failed): no open loop


def test_targets_follow_each_apps_kind_and_grpc() -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["apps"][1]["grpc_service"] = None  # recsys over HTTP only
    doc["apps"].append({"name": "chat", "kind": "llm", "route_prefix": "/llm"})  # gated, not loaded
    assert targets(parse_contract(doc)) == [
        ("echo", "http", "unary"),
        ("echo", "grpc", "unary"),
        ("echo", "http", "stream"),
        ("echo", "grpc", "stream"),
        ("recsys", "http", "unary"),
    ]


def test_closed_levels_always_include_the_slo_concurrency_once() -> None:
    assert CONTRACT.slo.concurrency == 8
    assert closed_levels(CONTRACT, QUICK) == [8]
    assert closed_levels(CONTRACT, FULL) == [1, 8, 32, 128]
    assert closed_levels(CONTRACT, with_overrides(QUICK, levels=(32, 2))) == [2, 8, 32]


def test_closed_specs_go_target_by_target_with_levels_ascending() -> None:
    specs = closed_specs(CONTRACT, with_overrides(QUICK, levels=(32,)))
    assert [s.label for s in specs[:4]] == [
        "echo/http/unary closed c=8",
        "echo/http/unary closed c=32",
        "echo/grpc/unary closed c=8",
        "echo/grpc/unary closed c=32",
    ]
    assert {(s.duration_s, s.warmup_s, s.timeout_s) for s in specs} == {(4.0, 1.0, 10.0)}


def test_open_loop_rates_are_whole_fractions_of_the_peak_and_at_least_one() -> None:
    (slow,) = open_specs(CONTRACT, QUICK, {"echo/http/unary": 1.0})
    assert (slow.loop, slow.rate, slow.processes) == ("open", 1.0, 1)
    # Only the echo unary targets run open loop; a recsys peak is ignored.
    assert open_specs(CONTRACT, FULL, {"recsys/http/unary": 900.0}) == []
    pinned = open_specs(CONTRACT, with_overrides(QUICK, processes=3), {"echo/http/unary": 10.0})
    assert [(s.rate, s.processes) for s in pinned] == [(5.0, 3)]


def test_overrides_and_auto_processes() -> None:
    p = with_overrides(QUICK, duration_s=1.5, levels=(2, 4), processes=3)
    assert (p.duration_s, p.levels, p.processes, p.warmup_s) == (1.5, (2, 4), 3, QUICK.warmup_s)
    assert {s.processes for s in closed_specs(CONTRACT, p)} == {3}
    assert with_overrides(FULL) == FULL  # None keeps every value
    assert auto_processes(8, cpus=16) == 1
    assert auto_processes(32, cpus=16) == 1
    assert auto_processes(64, cpus=16) == 2
    assert auto_processes(128, cpus=16) == 4
    assert auto_processes(128, cpus=2) == 1


def _with_llm(version: int = 2) -> SmokeContract:
    doc = copy.deepcopy(EXAMPLE)
    doc["apps"].append(
        {"name": "llm", "kind": "llm", "route_prefix": "/llm", "grpc_service": None,
         "grpc_application": None, "model": "tiny"}
    )  # fmt: skip
    if version == 1:
        doc["schema_version"] = 1
        del doc["slo"]["llm"]
    return parse_contract(doc)


def test_llm_levels_are_the_slo_concurrency_and_the_profiles_at_the_slo_lengths() -> None:
    contract = _with_llm()
    llm = contract.slo.llm
    assert llm is not None
    quick = llm_specs(contract, QUICK, {"llm": "tiny"})
    assert [s.concurrency for s in quick] == [llm.concurrency]
    full = llm_specs(contract, FULL, {"llm": "tiny"})
    assert [s.concurrency for s in full] == sorted({*FULL.llm_levels, llm.concurrency})
    for spec in full:
        assert (spec.input_tokens, spec.output_tokens) == (llm.input_tokens, llm.output_tokens)
        assert spec.num_prompts == max(
            MIN_LLM_PROMPTS, spec.concurrency * FULL.llm_prompts_per_user
        )
        assert (spec.model, spec.loop) == ("tiny", "closed")
    drawn = llm_specs(contract, with_overrides(QUICK, llm_range_ratio=0.25), {"llm": "tiny"})
    assert [s.range_ratio for s in drawn] == [0.25]
    assert llm_specs(contract, QUICK, {}) == []  # no model to ask for: its load could not run
    assert llm_specs(_with_llm(version=1), QUICK, {"llm": "tiny"}) == []


def test_llm_open_loop_runs_at_fractions_of_the_peak_shaped_like_the_widest_level() -> None:
    full = llm_specs(_with_llm(), FULL, {"llm": "tiny"})
    opened = llm_open_specs(full, FULL, {"llm": 10.0})
    widest = max(s.concurrency for s in full)
    assert [s.rate for s in opened] == [10.0 * f for f in FULL.llm_rate_fractions]
    assert [s.fraction for s in opened] == list(FULL.llm_rate_fractions)
    assert {(s.loop, s.concurrency) for s in opened} == {("open", 4 * widest)}
    assert llm_open_specs(full, FULL, {"llm": 0.0}) == []


def test_the_workloads_run_beside_the_synthetic_level_at_the_slos_concurrency() -> None:
    contract = _with_llm()
    llm = contract.slo.llm
    assert llm is not None
    assert llm_workload_specs(llm_specs(contract, QUICK, {"llm": "tiny"}), QUICK, 8) == []
    full = llm_specs(contract, FULL, {"llm": "tiny"})
    extra = llm_workload_specs(full, FULL, llm.concurrency)
    assert [s.workload for s in extra] == ["shared-prefix", "multi-turn"]
    [synthetic] = [s for s in full if s.concurrency == llm.concurrency]
    for spec in extra:
        assert (spec.loop, spec.concurrency, spec.input_tokens, spec.output_tokens) == (
            "closed",
            llm.concurrency,
            llm.input_tokens,
            llm.output_tokens,
        )
    shared, multi = extra
    assert shared.num_prompts == synthetic.num_prompts
    turns = turn_lengths(multi)[0]
    assert multi.num_prompts % turns == 0 and multi.num_prompts >= synthetic.num_prompts
    # the sweep is shaped by the synthetic levels only
    opened = llm_open_specs([*full, *extra], FULL, {"llm": 4.0})
    assert {s.workload for s in opened} == {"synthetic"}


def test_quick_sweeps_one_rate_and_full_reaches_past_the_peak() -> None:
    assert QUICK.llm_rate_fractions == (0.5,) and QUICK.llm_workloads == ()
    assert max(FULL.llm_rate_fractions) > 1.0 > min(FULL.llm_rate_fractions)
    assert set(FULL.llm_workloads) == set(WORKLOADS[1:])
    changed = with_overrides(QUICK, llm_rate_fractions=(0.5, 1.0), llm_workloads=("multi-turn",))
    assert (changed.llm_rate_fractions, changed.llm_workloads) == ((0.5, 1.0), ("multi-turn",))
    assert with_overrides(FULL, llm_workloads=()).llm_workloads == ()
