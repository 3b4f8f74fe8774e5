"""The request latency histogram kept as plain numbers (kvstore.metrics):
Prometheus's bucket rule (a value counts in every bucket whose bound it does
not exceed), cumulative counts, and the sum."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from kvstore.metrics import LATENCY_BUCKETS, LatencyHistogram


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.0001, 0.0003, 0.001, 0.001, 20.0):
        histogram.observe(seconds)
    buckets = dict(histogram.buckets())
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.0001"] == 1  # on the bound: counted there
    assert buckets["0.00025"] == 1
    assert buckets["0.0005"] == 2
    assert buckets["0.001"] == 4
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5  # above every bound
    assert abs(histogram.sum - 20.0024) < 1e-9


def test_it_exposes_as_a_prometheus_histogram() -> None:
    histogram = LatencyHistogram()
    histogram.observe(0.002)

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            family = HistogramMetricFamily("t_seconds", "t", labels=["method"])
            family.add_metric(["Put"], histogram.buckets(), histogram.sum)
            yield family

    registry = CollectorRegistry()
    registry.register(One())
    text = generate_latest(registry).decode()
    assert 't_seconds_bucket{le="0.001",method="Put"} 0.0' in text
    assert 't_seconds_bucket{le="0.0025",method="Put"} 1.0' in text
    assert 't_seconds_count{method="Put"} 1.0' in text
