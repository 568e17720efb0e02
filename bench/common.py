"""What the benchmark scripts share (bench/ab.py, bench/ablation.py): where they write, how they
print, the machine they ran on, the spread of a figure over repeats, and their tables.

Owns: the presentation and bookkeeping of figures. Does not own any measuring (raygke/smoke) or any
target (each script states its own). The scripts run as `python bench/<script>.py`, so this module,
beside them, imports as `common`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out" / "bench"


def say(text: str = "") -> None:
    print(text, flush=True)


# Machine --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }


# Statistics over repeats ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    def fmt(self, spec: str, unit: str = "") -> str:
        if self.n == 0:
            return "-"
        m, lo, hi = (format(v, spec) for v in (self.median, self.low, self.high))
        return f"{m}{unit} [{lo} .. {hi}]" if self.n > 1 else f"{m}{unit}"

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def spread(values: Iterable[float]) -> Spread:
    vs = [v for v in values if v == v]  # NaN: a level without successes
    if not vs:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(statistics.median(vs), min(vs), max(vs), len(vs))


# Tables ---------------------------------------------------------------------------------------


def write_figures(out: Path, document: dict[str, Any], title: str, machine: str, md: str) -> None:
    """A benchmark's `figures.json` (the whole document) and `figures.md` (its title, the line
    saying what machine and load it ran on, its table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "figures.md").write_text(f"# {title}\n\nMachine: {machine}.\n\n{md}\n")


def render(header: list[str], rows: list[list[str]]) -> tuple[str, str]:
    """The table as aligned text (for the terminal) and as Markdown."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, ["-" * w for w in widths], *rows]
    )
    md = "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])
    return text, md
