"""The pipeline benchmark reads the freshness to the commit from the worker's histogram (bench/pipeline.py),
interpolated as Prometheus's histogram_quantile does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from pipeline import histogram_quantile


def _exposed(values: list[float]) -> str:
    registry = CollectorRegistry()
    histogram = Histogram("ctwa_worker_freshness_seconds", "", buckets=(0.1, 0.2, 0.5, 1.0), registry=registry)
    for value in values:
        histogram.observe(value)
    return generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.15),  # the 50th of 100 falls halfway into (0.1, 0.2], which holds the 25th to the 75th
        (0.25, 0.1),
        (0.9, 0.425),  # 0.2 + 0.3 * (90 - 75) / (95 - 75)
        (0.99, 1.0),  # beyond the last finite bucket: its upper bound, as Prometheus answers
    ],
)
def test_a_quantile_is_interpolated_within_its_bucket(q: float, expected: float) -> None:
    values = [0.05] * 25 + [0.15] * 50 + [0.3] * 20 + [5.0] * 5
    assert histogram_quantile(q, _exposed(values), "ctwa_worker_freshness_seconds") == pytest.approx(expected)
