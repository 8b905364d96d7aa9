"""Metrics: the dashboard's names exist, and bulk observation equals one-by-one."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from streamcast.service.metrics import Metrics, observe_many

DASHBOARD_NAMES = [
    "streamcast_ticks_total",
    "streamcast_forecasts_total",
    "streamcast_dead_letters_total",
    "streamcast_batch_size_bucket",
    "streamcast_inference_seconds_bucket",
    "streamcast_end_to_end_latency_seconds_bucket",
    "streamcast_active_keys",
    "streamcast_evictions_total",
    "streamcast_consumer_lag",
    "streamcast_restarts_total",
    "streamcast_broker_errors_total",
    "streamcast_build_info",
]


def test_every_dashboard_metric_is_exposed() -> None:
    metrics = Metrics()
    metrics.set_build_info("m", "3")
    metrics.dead_letters.labels(reason="not_json").inc()
    metrics.consumer_lag.labels(partition="0").set(4)
    metrics.broker_errors.labels(op="fetch").inc()
    text = metrics.exposition().decode()
    for name in DASHBOARD_NAMES:
        assert f"\n{name}" in text, name
    assert 'streamcast_build_info{model_name="m",model_version="3",version=' in text
    metrics.set_build_info("m", "4")  # a hot swap: one series, the new version
    text = metrics.exposition().decode()
    assert text.count("\nstreamcast_build_info{") == 1
    assert 'model_version="4"' in text


def test_process_metrics_are_exposed() -> None:
    text = Metrics().exposition().decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
    ):
        assert f"\n{name}" in text, name


def test_observe_many_equals_observing_one_by_one() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.exponential(0.3, 500), [0.005, 0.01, 60.0, 1e6, 0.0]])
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.01, 0.1, 1.0, 60.0)
    h1 = Histogram("h", "x", buckets=buckets, registry=one)
    h2 = Histogram("h", "x", buckets=buckets, registry=many)
    for v in values:
        h1.observe(float(v))
    observe_many(h2, values)
    observe_many(h2, np.zeros(0))

    def samples(registry: CollectorRegistry) -> dict[str, float]:
        return {
            s.name + str(sorted(s.labels.items())): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(many), samples(one)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert np.isclose(got[name], value), name
