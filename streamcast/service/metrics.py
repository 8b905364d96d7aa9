"""Prometheus metrics of the service. The names are a contract with the Grafana dashboard.

=========================================== ========= =====================================
name                                        type      meaning
=========================================== ========= =====================================
streamcast_ticks_total{result}              counter   messages consumed: accepted|rejected
streamcast_forecasts_total                  counter   forecasts produced and acknowledged
streamcast_dead_letters_total{reason}       counter   dead letters produced, by reason
streamcast_batch_size                       histogram records per micro-batch (poll)
streamcast_inference_seconds                histogram time of ``Pipeline.process`` per
                                                      micro-batch (one ORT call per batch)
streamcast_delivery_seconds                 histogram delivery per micro-batch: outputs
                                                      produced and acknowledged, offsets
                                                      committed (exactly-once: the transaction)
streamcast_end_to_end_latency_seconds       histogram tick's Kafka timestamp to its
                                                      forecast produced and acknowledged
streamcast_active_keys                      gauge     keys held in the state store
streamcast_evictions_total{cause}           counter   keys dropped: ttl|lru
streamcast_consumer_lag{partition}          gauge     records behind the broker's end offset
                                                      (asked every few seconds; revoked
                                                      partitions' series are removed)
streamcast_partition_stalled{partition}     gauge     1: records wait, none delivered for
                                                      ready_stale_s
streamcast_restarts_total                   counter   key resets to warm-up (long gaps)
streamcast_broker_errors_total{op}          counter   retriable broker failures: connect,
                                                      fetch, produce, commit
streamcast_transactions_total{result}       counter   exactly-once: per-partition transactions
                                                      committed|failed (failed -> rewind)
streamcast_rewinds_total                    counter   exactly-once: rewinds to the committed
                                                      offsets after a failed batch
streamcast_restore_seconds                  histogram time to read changelog partitions
                                                      into the store on assignment/rewind
streamcast_restored_keys_total              counter   keys restored from the changelog
streamcast_internal_errors_total            counter   keys/forecasts isolated because processing
                                                      raised (dead-lettered internal_error)
streamcast_alerts_total{kind,detector}      counter   drift alerts published: error_drift,
                                                      input_drift, recovered; ewma, ks
streamcast_keys_in_alarm{detector}          gauge     keys whose drift alarm is raised
streamcast_forecast_scored_total{step}      counter   forecast steps scored against actuals
                                                      (one whole forecast per key per horizon)
streamcast_forecast_abs_error_total{step}   counter   sum of |error| / scale of those steps
streamcast_forecast_squared_error_total{..} counter   sum of (error / scale)^2
streamcast_interval_covered_total{level,..} counter   scored steps inside the level's interval
streamcast_model_swaps_total{result}        counter   new artifacts: swapped|refused
streamcast_build_info{version,model_name,   gauge     always 1; labels say what runs (one
  model_version}                                      series: a hot swap replaces it)
process_*                                   various   the process: CPU seconds, resident and
                                                      virtual memory, open and max file
                                                      descriptors, start time (Linux /proc)
python_info{version,implementation,...}     gauge     the interpreter
=========================================== ========= =====================================

Each :class:`Metrics` owns its registry, so several services (tests) can live in one process.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from streamcast import __version__
from streamcast.core.quality import QualityTotals

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)


def observe_many(histogram: Histogram, values: npt.NDArray[np.float64]) -> None:
    """Observe many values at once: one bucket increment per bucket, not per value.

    Equivalent to ``for v in values: histogram.observe(v)`` (tested), which costs a lock
    round trip per value: thousands per micro-batch. Uses the client's bucket fields.
    """
    if len(values) == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # Bucket i counts values <= bounds[i] (non-cumulative storage, as observe() does).
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
    histogram._sum.inc(float(np.sum(values)))


class Metrics:
    """The service's metric families, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ticks = Counter(
            "streamcast_ticks", "Ticks consumed, by result", ["result"], registry=r
        )
        self.forecasts = Counter(
            "streamcast_forecasts", "Forecasts produced and acknowledged", registry=r
        )
        self.dead_letters = Counter(
            "streamcast_dead_letters", "Dead letters produced, by reason", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "streamcast_batch_size", "Records per micro-batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "streamcast_inference_seconds",
            "Pipeline time per micro-batch (decode excluded; one ONNX Runtime call per batch)",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "streamcast_delivery_seconds",
            "Delivery time per micro-batch: outputs produced and acknowledged, offsets "
            "committed (exactly-once: the whole transaction)",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "streamcast_end_to_end_latency_seconds",
            "From a tick's Kafka timestamp to its forecast produced and acknowledged",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_keys = Gauge("streamcast_active_keys", "Keys in the state store", registry=r)
        self.evictions = Counter(
            "streamcast_evictions", "Keys evicted, by cause", ["cause"], registry=r
        )
        self.consumer_lag = Gauge(
            "streamcast_consumer_lag",
            "Records waiting per owned partition: the broker's end offset minus the "
            "delivered position (asked every few seconds)",
            ["partition"],
            registry=r,
        )
        self.partition_stalled = Gauge(
            "streamcast_partition_stalled",
            "1 while an owned partition has records waiting but none was delivered for "
            "ready_stale_s",
            ["partition"],
            registry=r,
        )
        self.restarts = Counter(
            "streamcast_restarts", "Keys reset to warm-up after a long gap", registry=r
        )
        self.broker_errors = Counter(
            "streamcast_broker_errors", "Retriable broker errors, by operation", ["op"], registry=r
        )
        self.transactions_total = Counter(
            "streamcast_transactions",
            "Exactly-once transactions (one per input partition and batch), by result",
            ["result"],
            registry=r,
        )
        self.rewinds = Counter(
            "streamcast_rewinds", "Rewinds to the committed offsets after a failure", registry=r
        )
        self.restore_seconds = Histogram(
            "streamcast_restore_seconds",
            "Time to restore changelog partitions into the state store",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.restored_keys = Counter(
            "streamcast_restored_keys", "Keys restored from the state changelog", registry=r
        )
        self.internal_errors = Counter(
            "streamcast_internal_errors",
            "Keys or forecasts isolated because processing them raised (a bug): their ticks "
            "are dead-lettered with reason internal_error and the stream goes on",
            registry=r,
        )
        self.alerts = Counter(
            "streamcast_alerts",
            "Drift alerts published, by kind (error_drift, input_drift, recovered) and "
            "detector (ewma, ks)",
            ["kind", "detector"],
            registry=r,
        )
        self.scored = Counter(
            "streamcast_forecast_scored",
            "Forecast steps scored against their actuals (a rotating sample of every key's "
            "forecasts: one whole forecast per key per horizon), by horizon step",
            ["step"],
            registry=r,
        )
        self.abs_error = Counter(
            "streamcast_forecast_abs_error",
            "Sum of |actual - forecast| / scale of the scored steps, by horizon step "
            "(rate over streamcast_forecast_scored_total: the scaled MAE)",
            ["step"],
            registry=r,
        )
        self.sq_error = Counter(
            "streamcast_forecast_squared_error",
            "Sum of ((actual - forecast) / scale)^2 of the scored steps, by horizon step",
            ["step"],
            registry=r,
        )
        self.covered = Counter(
            "streamcast_interval_covered",
            "Scored steps whose actual fell inside the prediction interval, by level and "
            "horizon step (over streamcast_forecast_scored_total: the online coverage)",
            ["level", "step"],
            registry=r,
        )
        self.keys_in_alarm = Gauge(
            "streamcast_keys_in_alarm",
            "Keys whose error or input drift alarm is raised (not yet recovered)",
            ["detector"],
            registry=r,
        )
        self.model_swaps = Counter(
            "streamcast_model_swaps",
            "New model artifacts found at the model path: swapped in, or refused (the "
            "running model keeps serving)",
            ["result"],
            registry=r,
        )
        self.build_info = Gauge(
            "streamcast_build_info",
            "What is running (value is always 1)",
            ["version", "model_name", "model_version"],
            registry=r,
        )
        # process_* (CPU, memory, file descriptors, start time) and python_info: the
        # client's own collectors, registered here because the registry is private
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        for result in ("accepted", "rejected"):
            self.ticks.labels(result=result)
        for cause in ("ttl", "lru"):
            self.evictions.labels(cause=cause)
        for result in ("committed", "failed"):
            self.transactions_total.labels(result=result)
        for result in ("swapped", "refused"):
            self.model_swaps.labels(result=result)
        for kind, detector in (
            ("error_drift", "ewma"), ("input_drift", "ks"), ("recovered", "ewma"),
            ("recovered", "ks"),
        ):  # fmt: skip
            self.alerts.labels(kind=kind, detector=detector)

    def observe_quality(self, totals: QualityTotals) -> None:
        """Add a batch's per-step error sums (steps are 1-based in the labels)."""
        for k in np.flatnonzero(totals.count).tolist():
            step = str(k + 1)
            self.scored.labels(step=step).inc(int(totals.count[k]))
            self.abs_error.labels(step=step).inc(float(totals.abs_error[k]))
            self.sq_error.labels(step=step).inc(float(totals.sq_error[k]))
            for i, level in enumerate(totals.levels):
                covered = int(totals.covered[i, k])
                self.covered.labels(level=f"{level:g}", step=step).inc(covered)

    # -- what the sinks report (streamcast.kafka.sink.SinkObserver) -----------------------

    def transactions(self, result: str, count: int) -> None:
        """``count`` exactly-once transactions ended with ``result`` (committed|failed)."""
        self.transactions_total.labels(result=result).inc(count)

    def restored(self, keys: int, seconds: float) -> None:
        """``keys`` were restored from the changelog in ``seconds``."""
        self.restore_seconds.observe(seconds)
        self.restored_keys.inc(keys)

    def rewound(self) -> None:
        """State and offsets were rewound to the last commit after a failure."""
        self.rewinds.inc()

    def set_build_info(self, model: str, model_version: str) -> None:
        """Publish the running version and model (the only series: a swap replaces it)."""
        self.build_info.clear()
        self.build_info.labels(
            version=__version__, model_name=model, model_version=model_version
        ).set(1)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
