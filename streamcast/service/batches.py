"""The body of the service's main loop: what happens to one fetched micro-batch.

Under the sink's batch hold: process in a worker thread (decode, pipeline, encode) ->
deliver the outputs and offsets through the :class:`~streamcast.kafka.sink.Sink` ->
account for what was delivered. The handler does not know which guarantee the sink
keeps; it reacts to what delivery says:

- success: the batch's outputs are durable and its offsets committed; count them;
- :class:`~streamcast.errors.TransientError`: nothing was lost; delivery is retried
  with backoff (at-least-once: output may repeat) until it succeeds or a stop is asked;
- :class:`~streamcast.errors.BatchRolledBackError`: the batch was rolled back
  (exactly-once); it is dropped and the sink rewinds before the next fetch;
- anything else (fenced, configuration) ends the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np

from streamcast.errors import BatchRolledBackError, TransientError
from streamcast.kafka.sink import Sink
from streamcast.kafka.wire import Consumed
from streamcast.service.metrics import Metrics, observe_many
from streamcast.service.processor import BatchProcessor, BatchResult
from streamcast.service.waits import Retry

# These lines are the service's: log filters and dashboards key on the logger name.
log = logging.getLogger("streamcast.service")


class BatchHandler:
    """Processes and delivers micro-batches; keeps the totals since start."""

    def __init__(self, metrics: Metrics, retry: Retry, *, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self._retry = retry
        self._clock = clock
        #: totals since start (tests and the final log line read them)
        self.consumed = 0
        self.batches = 0
        self.forecasts = 0
        self.dead_lettered = 0
        #: next offset delivered per input partition (what the broker watch compares)
        self.positions: dict[int, int] = {}

    async def handle(
        self, sink: Sink, processor: BatchProcessor, records: Sequence[Consumed]
    ) -> None:
        """One micro-batch: process, deliver, account (see the module docstring)."""
        async with sink.batch() as current:
            if not current:
                return  # a rebalance or rewind came between: these are read again
            self.metrics.batch_size.observe(len(records))
            result = await asyncio.to_thread(processor.process, records, self._clock())
            self.metrics.inference_seconds.observe(result.seconds)
            try:
                await self._retry.call(
                    "deliver", lambda: sink.deliver(result.outputs, result.offsets)
                )
            except BatchRolledBackError as exc:
                self.metrics.broker_errors.labels(op="transaction").inc()
                log.warning("batch rolled back", extra={"error": str(exc)})
                return
            except TransientError as exc:
                log.warning(
                    "stopping before the batch was delivered; it is read again on restart",
                    extra={"error": str(exc)},
                )
                return
            self._account(len(records), result)

    def _account(self, n_records: int, result: BatchResult) -> None:
        """Metrics and totals of a batch whose outputs were delivered."""
        m = self.metrics
        rejected = len({r.index for r in result.rejections})
        m.ticks.labels(result="rejected").inc(rejected)
        m.ticks.labels(result="accepted").inc(n_records - rejected)
        m.forecasts.inc(result.forecasts)
        for rejection in result.rejections:
            m.dead_letters.labels(reason=str(rejection.reason)).inc()
        counters = result.counters
        m.evictions.labels(cause="ttl").inc(counters.get("expired_ttl", 0))
        m.evictions.labels(cause="lru").inc(counters.get("evicted_lru", 0))
        m.restarts.inc(counters.get("resets", 0))
        failures = counters.get("internal_errors", 0)
        if failures:
            m.internal_errors.inc(failures)
            log.error(
                "processing raised for some keys: their ticks were dead-lettered with reason "
                "internal_error (the detail header has the error); the stream goes on",
                extra={"keys": failures},
            )
        if "active_keys" in counters:
            m.active_keys.set(counters["active_keys"])
        for detector in ("ewma", "ks"):
            if f"alarm_{detector}" in counters:
                m.keys_in_alarm.labels(detector=detector).set(counters[f"alarm_{detector}"])
        for kind, detector in result.alerts:
            m.alerts.labels(kind=kind, detector=detector).inc()
        if result.quality is not None:
            m.observe_quality(result.quality)
        sent_s = result.trigger_timestamps_ms / 1000.0
        observe_many(m.latency, np.maximum(0.0, self._clock() - sent_s))
        self.forecasts += result.forecasts
        self.dead_lettered += len(result.rejections)
        self.consumed += n_records
        self.batches += 1
        for (_, partition), offset in result.offsets.items():
            self.positions[partition] = offset
