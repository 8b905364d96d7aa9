"""The broker watch: an unanswered probe and a partition that does not move make the
instance not ready; lag series follow the owned partitions."""

from __future__ import annotations

from streamcast.service.metrics import Metrics
from streamcast.service.watch import BrokerWatch


def _watch(stale_after_s: float = 10.0) -> tuple[BrokerWatch, Metrics, list[float]]:
    now = [0.0]
    metrics = Metrics()
    return BrokerWatch(metrics, stale_after_s, clock=lambda: now[0]), metrics, now


def _sample(metrics: Metrics, name: str, partition: int) -> float | None:
    value = metrics.registry.get_sample_value(name, {"partition": str(partition)})
    return None if value is None else float(value)


def test_a_broker_that_stops_answering_makes_the_instance_not_ready() -> None:
    watch, metrics, now = _watch()
    watch.answered({0: 5}, {0: 100})
    now[0] = 9.0
    watch.failed("KafkaConnectionError")
    assert watch.problem() is None, "within ready_stale_s"
    now[0] = 11.0
    assert watch.problem() == "broker has not answered for 11s"
    assert metrics.registry.get_sample_value("streamcast_broker_errors_total", {"op": "probe"}) == 1
    watch.answered({0: 0}, {0: 105})
    assert watch.problem() is None


def test_a_partition_with_records_waiting_and_no_progress_is_stalled() -> None:
    watch, metrics, now = _watch()
    watch.answered({0: 7, 1: 3}, {0: 10, 1: 20})
    now[0] = 5.0
    watch.answered({0: 9, 1: 0}, {0: 10, 1: 23})
    now[0] = 11.0
    watch.answered({0: 12, 1: 0}, {0: 10, 1: 23})
    assert watch.problem() == "partitions [0] stalled: records wait, none delivered"
    assert _sample(metrics, "streamcast_partition_stalled", 0) == 1.0
    assert _sample(metrics, "streamcast_partition_stalled", 1) == 0.0, "idle is not stalled"
    now[0] = 12.0
    watch.answered({0: 2, 1: 0}, {0: 20, 1: 23})
    assert watch.problem() is None


def test_lag_series_of_partitions_no_longer_owned_are_removed() -> None:
    watch, metrics, _ = _watch()
    watch.answered({0: 4, 1: 6}, {})
    assert _sample(metrics, "streamcast_consumer_lag", 1) == 6.0
    watch.answered({0: 2}, {})
    assert _sample(metrics, "streamcast_consumer_lag", 0) == 2.0
    assert _sample(metrics, "streamcast_consumer_lag", 1) is None, "not double-counted"
