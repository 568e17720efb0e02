"""The GPU cost estimate: the dated price table, each stack's figures, every capacity mode, min and max size."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.render.gpu_machines import H100_MACHINES
from infra.cost import (
    MODES,
    PRICE_FILE,
    MachinePrices,
    PriceTableError,
    estimate_cost,
    load_price_table,
    mode_price,
    render_cost_lines,
)
from infra.stack_file import load_stack_config

STACKS = ("dev", "staging", "prod")


def _cost(stack: str) -> dict[str, Any]:
    return estimate_cost(load_stack_config(stack))


@pytest.mark.pure
def test_the_table_is_dated_sourced_and_says_list_prices():
    table = load_price_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of)
    assert "github.com/Cyclenerd/google-cloud-pricing-cost-calculator" in table.source
    text = PRICE_FILE.read_text()
    assert "LIST PRICES AS OF" in text and "refreshed" in text
    # every shape priced in the default region, every figure positive
    assert set(table.regions[table.default_region]) == set(H100_MACHINES)
    for machines in table.regions.values():
        for p in machines.values():
            assert 0 < p.spot < p.flex_start < p.on_demand
            assert p.committed_1y is not None and p.spot < p.committed_1y < p.on_demand


@pytest.mark.pure
def test_flex_start_is_the_documented_53_percent_off_on_demand():
    for machines in load_price_table().regions.values():
        for p in machines.values():
            assert p.flex_start == pytest.approx(p.on_demand * 0.47, abs=0.0001)


@pytest.mark.pure
def test_a3_high_prices_scale_with_the_gpu_count():
    us = load_price_table().regions["us-central1"]
    for n in (2, 4, 8):
        assert us[f"a3-highgpu-{n}g"].on_demand == pytest.approx(
            n * us["a3-highgpu-1g"].on_demand, rel=1e-4
        )


@pytest.mark.pure
@pytest.mark.parametrize(
    ("mode", "expected", "basis"),
    [
        ("on-demand", 10.0, "on-demand"),
        ("spot", 3.0, "spot"),
        ("flex-start", 4.7, "flex-start"),
        ("reservation", 7.0, "1-year committed use"),
    ],
)
def test_each_mode_pays_its_price(mode: Any, expected: float, basis: str):
    prices = MachinePrices(on_demand=10.0, spot=3.0, flex_start=4.7, committed_1y=7.0)
    assert mode_price(prices, mode) == (expected, basis)


@pytest.mark.pure
def test_a_reservation_without_a_committed_price_pays_on_demand():
    prices = MachinePrices(on_demand=10.0, spot=3.0, flex_start=4.7)
    assert mode_price(prices, "reservation") == (10.0, "on-demand")


@pytest.mark.config
@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_costs_its_pool_at_min_and_max_size(stack: str):
    config = load_stack_config(stack)
    table = load_price_table()
    cost = _cost(stack)
    pool = config.gpu_pool
    prices, region = table.lookup(config.region, pool.machine_type)
    node, basis = mode_price(prices, pool.capacity.mode)
    assert cost["capacity_mode"] == pool.capacity.mode and cost["basis"] == basis
    assert cost["prices_as_of"] == table.as_of and cost["price_region"] == region
    assert cost["nodes_min"] == pool.min_nodes and cost["nodes_max"] == pool.max_nodes
    assert cost["hourly"] == {
        "min": round(node * pool.min_nodes, 2),
        "max": round(node * pool.max_nodes, 2),
    }
    assert cost["monthly"] == {
        "min": round(node * pool.min_nodes * 730, 2),
        "max": round(node * pool.max_nodes * 730, 2),
    }
    assert list(cost["by_mode"]) == list(MODES)
    assert cost["by_mode"][pool.capacity.mode]["monthly"] == cost["monthly"]


@pytest.mark.config
def test_the_stacks_figures_from_the_table():
    dev, staging, prod = (_cost(s) for s in STACKS)
    # dev: a3-highgpu-1g on Spot in us-central1, 0..2 nodes
    assert dev["node_hourly"] == 4.4245 and dev["monthly"] == {"min": 0.0, "max": 6459.77}
    # staging: a3-highgpu-8g on demand in us-east4, 0..2 nodes
    assert staging["node_hourly"] == 88.5558 and staging["hourly"] == {"min": 0.0, "max": 177.11}
    # prod: a3-megagpu-8g reserved, 2..4 nodes; the table has no us-central1 row for it: the default
    assert prod["price_region"] == "us-east4" and prod["region"] == "us-central1"
    assert prod["basis"] == "1-year committed use" and prod["node_hourly"] == 63.9434
    assert prod["monthly"] == {"min": 93357.36, "max": 186714.73}
    assert prod["by_mode"]["on-demand"]["hourly"] == {"min": 185.88, "max": 371.75}


@pytest.mark.config
def test_every_mode_side_by_side_marks_what_google_does_not_sell():
    by_mode = _cost("dev")["by_mode"]  # a3-highgpu-1g: Spot or flex-start only
    assert not by_mode["on-demand"]["available"] and not by_mode["reservation"]["available"]
    assert by_mode["spot"]["available"] and by_mode["flex-start"]["available"]
    assert by_mode["spot"]["monthly"]["max"] < by_mode["flex-start"]["monthly"]["max"]
    assert all(figures["available"] for figures in _cost("prod")["by_mode"].values())


@pytest.mark.config
def test_the_plan_lines_show_the_mode_the_date_and_the_comparison():
    lines = render_cost_lines(_cost("prod"))
    assert lines[0].startswith(
        "cost: a3-megagpu-8g x 2..4 nodes, reservation at 1-year committed use"
    )
    assert "as of 2026-02-12" in lines[0] and "the default" in lines[0]
    assert "$93,357.36..$186,714.73 per month" in lines[1]
    assert any(line.startswith("   * reservation") for line in lines)
    assert sum(1 for line in lines if line.startswith("     ")) == len(MODES) - 1


@pytest.mark.pure
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("asOf"), r"`asOf` is required"),
        (lambda d: d["regions"]["us-east4"].pop("a3-megagpu-8g"), r"missing \['a3-megagpu-8g'\]"),
        (
            lambda d: d["regions"]["us-east4"]["a3-highgpu-1g"].update(spot=-1),
            r"regions.us-east4.a3-highgpu-1g.spot must be a positive hourly USD price; got -1",
        ),
        (
            lambda d: d["regions"]["us-east4"].update({"a2-highgpu-1g": {"onDemand": 1}}),
            r"a2-highgpu-1g: unknown machine type; allowed",
        ),
        (
            lambda d: d["regions"]["us-east4"]["a3-highgpu-1g"].update(sustained=1),
            r"unknown keys \['sustained'\]",
        ),
    ],
)
def test_a_broken_table_is_refused_with_the_key(tmp_path: Path, edit: Any, match: str):
    doc = yaml.safe_load(PRICE_FILE.read_text())
    edit(doc)
    broken = tmp_path / "gpu_prices.yaml"
    broken.write_text(yaml.safe_dump(doc))
    with pytest.raises(PriceTableError, match=match):
        load_price_table(broken)


@pytest.mark.pure
def test_the_cost_module_does_not_import_pulumi():
    import subprocess
    import sys

    probe = (
        "import sys, infra.cost; print([m for m in ('pulumi', 'pulumi_gcp') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
