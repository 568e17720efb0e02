"""Latency statistics from raw samples, and a log-bucketed histogram for compact storage and plots.

Owns: percentiles (numpy's default linear interpolation, computed here so results never depend on
per-worker means or rounded buckets), summaries, and the histogram used in reports.
Does not own: collecting samples (load.py) or deciding what passes (gates.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# The percentiles every report carries.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, interpolated linearly like numpy."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100]; got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True)
class Summary:
    """Distribution of one measure, in the unit it was given (milliseconds in reports)."""

    count: int
    mean: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    p99_9: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: Iterable[float]) -> Summary | None:
    """Summary of raw samples; None when there are none (a level with only errors)."""
    ordered = sorted(values)
    if not ordered:
        return None
    points = {name: percentile(ordered, q) for name, q in QUANTILES}
    return Summary(
        count=len(ordered),
        mean=statistics.fmean(ordered),
        min=ordered[0],
        max=ordered[-1],
        p50=points["p50"],
        p90=points["p90"],
        p99=points["p99"],
        p99_9=points["p99_9"],
    )


class LogHistogram:
    """Counts in geometric buckets: any quantile within `precision` relative error of a sample.

    Bucket i covers [lowest * growth**i, lowest * growth**(i+1)); values below `lowest` land in
    bucket 0. Mergeable and small, so reports can carry whole distributions.
    """

    def __init__(self, lowest: float = 0.001, precision: float = 0.01) -> None:
        if lowest <= 0 or not 0 < precision < 1:
            raise ValueError("lowest must be > 0 and precision in (0, 1)")
        self.lowest = lowest
        self.precision = precision
        # With this growth, lower_edge * (1 + precision) is within `precision` of the whole bucket.
        self.growth = (1 + precision) / (1 - precision)
        self._log_growth = math.log(self.growth)
        self.counts: dict[int, int] = {}
        self.total = 0

    def bucket(self, value: float) -> int:
        if value <= self.lowest:
            return 0
        return int(math.log(value / self.lowest) / self._log_growth)

    def record(self, value: float, count: int = 1) -> None:
        index = self.bucket(value)
        self.counts[index] = self.counts.get(index, 0) + count
        self.total += count

    def record_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.record(value)

    def midpoint(self, index: int) -> float:
        """The bucket's representative value: within `precision` of anything recorded in it."""
        return self.lowest * self.growth**index * (1 + self.precision)

    def quantile(self, q: float) -> float:
        """Value at quantile q (0..1): the representative of the bucket holding that rank."""
        if self.total == 0:
            raise ValueError("quantile of an empty histogram")
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return self.midpoint(index)
        return self.midpoint(max(self.counts))

    def as_dict(self) -> dict[str, object]:
        """Sparse form for JSON reports: bucket midpoints and counts, in ascending order."""
        ordered = sorted(self.counts)
        return {
            "lowest": self.lowest,
            "precision": self.precision,
            "midpoints": [round(self.midpoint(i), 6) for i in ordered],
            "counts": [self.counts[i] for i in ordered],
        }
