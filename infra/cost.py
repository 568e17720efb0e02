"""The GPU-node cost estimate every stack exports as its `cost` output, from the dated price table.

Owns: reading infra/gpu_prices.yaml (list prices with their date and source), choosing the price a capacity
mode pays, and the estimate per hour and per month (730 h) at the pool's min and max size, for the stack's
mode and for every mode side by side. Pure: no pulumi import, so `raygke plan` and tests can call it.
Does not own: the machine shapes (components/render/gpu_machines.py) nor any other cost (control plane,
system pool, disks, network, load balancers): those are left out on purpose and the output says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from components.render.gpu_machines import H100_MACHINES
from infra.config import StackConfig

PRICE_FILE = Path(__file__).with_name("gpu_prices.yaml")
COST_SCHEMA_VERSION = 1
Mode = Literal["on-demand", "spot", "flex-start", "reservation"]
MODES: tuple[Mode, ...] = get_args(Mode)
SCOPE = (
    "GPU nodes only, at list prices: excludes the control plane, the system pool, disks, network, "
    "load balancers, taxes and negotiated or sustained-use discounts"
)


class PriceTableError(ValueError):
    """A price table that cannot price every H100 shape; the message names the key and value."""


@dataclass(frozen=True)
class MachinePrices:
    """Hourly USD for one machine type in one region."""

    on_demand: float
    spot: float
    flex_start: float
    committed_1y: float | None = None


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    currency: str
    hours_per_month: int
    default_region: str
    regions: dict[str, dict[str, MachinePrices]]

    def lookup(self, region: str, machine_type: str) -> tuple[MachinePrices, str]:
        """The prices for `machine_type` in `region`, and the region they were listed for."""
        listed = self.regions.get(region, {})
        if machine_type in listed:
            return listed[machine_type], region
        return self.regions[self.default_region][machine_type], self.default_region


def _price(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PriceTableError(f"{where} must be a positive hourly USD price; got {value!r}")
    return float(value)


def load_price_table(path: Path = PRICE_FILE) -> PriceTable:
    """Parse and check the table: dated, sourced, and the default region prices every H100 shape."""
    doc = yaml.safe_load(path.read_text()) or {}
    for key in ("asOf", "source", "defaultRegion", "regions"):
        if not doc.get(key):
            raise PriceTableError(f"{path.name}: `{key}` is required; got {doc.get(key)!r}")
    regions: dict[str, dict[str, MachinePrices]] = {}
    for region, machines in doc["regions"].items():
        regions[region] = {}
        for machine, row in machines.items():
            where = f"{path.name}: regions.{region}.{machine}"
            if machine not in H100_MACHINES:
                raise PriceTableError(
                    f"{where}: unknown machine type; allowed: {sorted(H100_MACHINES)}"
                )
            unknown = set(row) - {"onDemand", "spot", "flexStart", "committed1y"}
            if unknown:
                raise PriceTableError(
                    f"{where}: unknown keys {sorted(unknown)}; allowed: onDemand, spot, flexStart, committed1y"
                )
            regions[region][machine] = MachinePrices(
                on_demand=_price(f"{where}.onDemand", row.get("onDemand")),
                spot=_price(f"{where}.spot", row.get("spot")),
                flex_start=_price(f"{where}.flexStart", row.get("flexStart")),
                committed_1y=(
                    _price(f"{where}.committed1y", row["committed1y"])
                    if row.get("committed1y") is not None
                    else None
                ),
            )
    default = doc["defaultRegion"]
    missing = sorted(set(H100_MACHINES) - set(regions.get(default, {})))
    if missing:
        raise PriceTableError(
            f"{path.name}: defaultRegion {default!r} must price every H100 shape; missing {missing}"
        )
    return PriceTable(
        as_of=str(doc["asOf"]),
        source=" ".join(str(doc["source"]).split()),
        currency=str(doc.get("currency", "USD")),
        hours_per_month=int(doc.get("hoursPerMonth", 730)),
        default_region=default,
        regions=regions,
    )


def mode_price(prices: MachinePrices, mode: Mode) -> tuple[float, str]:
    """The hourly price a node pays under `mode`, and what that price is."""
    if mode == "spot":
        return prices.spot, "spot"
    if mode == "flex-start":
        return prices.flex_start, "flex-start"
    if mode == "reservation" and prices.committed_1y is not None:
        # a reservation is billed at on-demand unless a commitment covers it; the table's CUD is assumed
        return prices.committed_1y, "1-year committed use"
    return prices.on_demand, "on-demand"


def _figures(node_hourly: float, min_nodes: int, max_nodes: int, hours: int) -> dict[str, Any]:
    return {
        "node_hourly": round(node_hourly, 4),
        "hourly": {
            "min": round(node_hourly * min_nodes, 2),
            "max": round(node_hourly * max_nodes, 2),
        },
        "monthly": {
            "min": round(node_hourly * min_nodes * hours, 2),
            "max": round(node_hourly * max_nodes * hours, 2),
        },
    }


@functools.cache
def shipped_price_table() -> PriceTable:
    """The table this package ships, read and checked once per process (frozen: safe to share)."""
    return load_price_table()


def estimate_cost(config: StackConfig, table: PriceTable | None = None) -> dict[str, Any]:
    """The `cost` stack output: the stack's capacity mode, then every mode side by side (JSON-ready)."""
    table = table or shipped_price_table()
    pool = config.gpu_pool
    prices, listed_region = table.lookup(config.region, pool.machine_type)
    shape = H100_MACHINES[pool.machine_type]
    mode = cast(Mode, pool.capacity.mode)  # queued-provisioning never passes the config
    by_mode: dict[str, Any] = {}
    for each in MODES:
        price, basis = mode_price(prices, each)
        by_mode[each] = {
            **_figures(price, pool.min_nodes, pool.max_nodes, table.hours_per_month),
            "basis": basis,
            # Google sells 1/2/4-GPU A3 High only as Spot or flex-start: shown for comparison, not offered
            "available": not (shape.spot_or_flex_only and each in ("on-demand", "reservation")),
        }
    chosen = by_mode[mode]
    return {
        "schema_version": COST_SCHEMA_VERSION,
        "currency": table.currency,
        "prices_as_of": table.as_of,
        "price_source": table.source,
        "region": config.region,
        "price_region": listed_region,
        "machine_type": pool.machine_type,
        "gpus_per_node": shape.accelerator_count,
        "capacity_mode": mode,
        "nodes_min": pool.min_nodes,
        "nodes_max": pool.max_nodes,
        "hours_per_month": table.hours_per_month,
        "node_hourly": chosen["node_hourly"],
        "basis": chosen["basis"],
        "hourly": chosen["hourly"],
        "monthly": chosen["monthly"],
        "by_mode": by_mode,
        "scope": SCOPE,
    }


def format_usd(value: float, signed: bool = False) -> str:
    """`$1,234.50`; signed: `+$1,234.50`, `-$3.00` or `±$0.00` (a change)."""
    sign = ("+" if value > 0 else "-" if value < 0 else "±") if signed else ""
    return f"{sign}${abs(value):,.2f}"


def render_cost_lines(cost: dict[str, Any]) -> list[str]:
    """A few plain lines for `raygke plan`: the stack's mode first, then the comparison."""
    basis = "" if cost["basis"] == cost["capacity_mode"] else f" at {cost['basis']} prices"
    where = cost["price_region"]
    if where != cost["region"]:
        where += f" prices (the default: no {cost['machine_type']} row for {cost['region']})"
    lines = [
        f"cost: {cost['machine_type']} x {cost['nodes_min']}..{cost['nodes_max']} nodes, "
        f"{cost['capacity_mode']}{basis}; list prices as of {cost['prices_as_of']}, {where}",
        f"  {format_usd(cost['hourly']['min'])}..{format_usd(cost['hourly']['max'])} per hour, "
        f"{format_usd(cost['monthly']['min'])}..{format_usd(cost['monthly']['max'])} per month "
        f"({cost['hours_per_month']} h)",
        "  by mode (per month, min..max):",
    ]
    for mode, figures in cost["by_mode"].items():
        mark = "*" if mode == cost["capacity_mode"] else " "
        note = "" if figures["available"] else "  (not sold for this shape)"
        lines.append(
            f"   {mark} {mode:<20} {format_usd(figures['monthly']['min'])}..{format_usd(figures['monthly']['max'])}"
            f"  [{figures['basis']}]{note}"
        )
    lines.append(f"  {cost['scope']}")
    return lines
