"""Percentiles, summaries, the log histogram and the open-loop schedule, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygke.smoke.load import open_loop_schedule
from raygke.smoke.stats import LogHistogram, percentile, summarize

pytestmark = pytest.mark.pure

KNOWN = [
    [5.0],
    [1.0, 2.0],
    [3.0, 1.0, 2.0, 10.0],
    [float(v) for v in range(1, 1001)],
    [0.2, 0.2, 0.2, 7.5, 100.0, 3.3, 0.01],
]


@pytest.mark.parametrize("values", KNOWN)
@pytest.mark.parametrize("q", [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0])
def test_percentile_matches_numpy_on_known_samples(values: list[float], q: float) -> None:
    assert percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.floats(0.0, 100.0),
)
def test_percentile_matches_numpy_on_any_samples(values: list[float], q: float) -> None:
    expected = float(np.percentile(values, q))
    assert percentile(sorted(values), q) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"q must be in \[0, 100\]"):
        percentile([1.0], 101)


def test_summary_uses_raw_samples_not_means() -> None:
    # Two "workers": one fast, one slow. A mean-of-means p99 would hide the slow tail.
    fast = [1.0] * 990
    slow = [100.0] * 10
    summary = summarize(fast + slow)
    assert summary is not None
    assert summary.count == 1000
    assert summary.p50 == 1.0
    assert summary.p99 == pytest.approx(float(np.percentile(fast + slow, 99)))
    assert summary.p99_9 == 100.0
    assert summary.max == 100.0 and summary.min == 1.0
    assert summary.mean == pytest.approx(float(np.mean(fast + slow)))


def test_summary_of_nothing_is_none() -> None:
    assert summarize([]) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e5, allow_nan=False), min_size=1, max_size=500))
def test_histogram_quantiles_within_precision_of_numpy(values: list[float]) -> None:
    hist = LogHistogram(lowest=0.001, precision=0.01)
    hist.record_all(values)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert abs(hist.quantile(q) - exact) <= 0.01 * exact + 1e-12


def test_histogram_counts_every_sample_in_its_sparse_form() -> None:
    values = np.random.default_rng(3).lognormal(1.0, 1.0, 2500).tolist()
    hist = LogHistogram()
    hist.record_all(values)
    assert hist.total == 2500 and sum(hist.as_dict()["counts"]) == 2500  # type: ignore[arg-type]


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
def test_open_loop_schedule_clients_together_make_an_even_stream(processes: int) -> None:
    rate, start, end = 250.0, 10.0, 12.0
    merged = sorted(
        t for i in range(processes) for t in open_loop_schedule(rate, processes, i, start, end)
    )
    assert len(merged) == 500
    assert merged[0] == start
    gaps = np.diff(merged)
    assert np.allclose(gaps, 1 / rate)


def test_open_loop_schedule_rejects_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        open_loop_schedule(0.0, 1, 0, 0.0, 1.0)
