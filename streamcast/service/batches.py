"""The body of the service's main loop: what happens to fetched micro-batches.

Under the sink's batch hold: process in a worker thread (decode, pipeline, encode) ->
deliver the outputs and offsets through the :class:`~streamcast.kafka.sink.Sink` ->
account for what was delivered. While a batch is delivered (produce, acknowledgements,
commit: the event loop's work and the broker's), the next one is fetched and processed
in the worker thread, so both cores work; deliveries stay strictly in order
(:meth:`BatchHandler.handle`). The handler does not know which guarantee the sink
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
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from streamcast.errors import BatchRolledBackError, TransientError
from streamcast.kafka.sink import Sink
from streamcast.kafka.wire import Consumed
from streamcast.service.metrics import Metrics, observe_many
from streamcast.service.processor import BatchProcessor, BatchResult
from streamcast.service.waits import Retry

#: what a run of batches fetches next, given the delivery under way (records that came
#: before it was done; nothing ends the run)
More = Callable[[asyncio.Future[Any]], Awaitable[Sequence[Consumed]]]

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
        self,
        sink: Sink,
        processor: BatchProcessor,
        records: Sequence[Consumed],
        more: More | None = None,
    ) -> None:
        """A run of micro-batches under one hold of the sink (see the module docstring).

        ``records`` are processed and their delivery starts; while it is under way,
        ``more(delivery)`` fetches the next batch (when the sink :meth:`~Sink.continues`) and the
        worker thread processes it, so the event loop's produce, acknowledgements and
        commit overlap the next batch's computing. Deliveries stay in order, each only
        after the previous one succeeded: offsets are committed only after their
        outputs are acknowledged, exactly as without the overlap. If a delivery fails,
        the batch processed behind it is dropped unsent: exactly-once rewinds the state
        before the next fetch, and at-least-once reads its records again on restart.
        The run ends when ``more`` is None or returns nothing.
        """
        async with sink.batch() as current:
            if not current:
                return  # a rebalance or rewind came between: these are read again
            result: BatchResult | None = await self._process(processor, records)
            n_records = len(records)
            while result is not None:
                following: tuple[int, BatchResult] | None = None
                async with asyncio.TaskGroup() as tasks:
                    delivery = tasks.create_task(self._deliver(sink, result))
                    if more is not None and sink.continues():
                        nxt = await more(delivery)
                        if nxt and sink.continues():
                            following = (len(nxt), await self._process(processor, nxt))
                if not delivery.result():
                    return
                self._account(n_records, result)
                n_records, result = following if following is not None else (0, None)

    async def _process(self, processor: BatchProcessor, records: Sequence[Consumed]) -> BatchResult:
        """Process one micro-batch in the worker thread."""
        self.metrics.batch_size.observe(len(records))
        result = await asyncio.to_thread(processor.process, records, self._clock())
        self.metrics.inference_seconds.observe(result.seconds)
        return result

    async def _deliver(self, sink: Sink, result: BatchResult) -> bool:
        """Deliver one batch, retrying transient failures; False when it was not."""
        began = time.perf_counter()
        try:
            await self._retry.call("deliver", lambda: sink.deliver(result.outputs, result.offsets))
        except BatchRolledBackError as exc:
            self.metrics.broker_errors.labels(op="transaction").inc()
            log.warning("batch rolled back", extra={"error": str(exc)})
            return False
        except TransientError as exc:
            log.warning(
                "stopping before the batch was delivered; it is read again on restart",
                extra={"error": str(exc)},
            )
            return False
        self.metrics.delivery_seconds.observe(time.perf_counter() - began)
        return True

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
