"""The body of the service's main loop: what happens to one fetched micro-batch.

At-least-once (:meth:`BatchHandler.handle`): process in a worker thread -> produce
forecasts and dead letters -> await *every* acknowledgement -> only then commit the
consumed offsets, retrying broker errors with backoff.

Exactly-once (:meth:`BatchHandler.handle_exactly_once`): under the
:class:`~streamcast.kafka.transactional.TransactionalBroker`'s batch lock, process, then commit
one transaction per input partition (outputs, state changelog, offset); a failed batch
leaves the broker dirty and :meth:`BatchHandler.rewound` rewinds it to the committed
offsets and the changelog's state before the next fetch.

Both count what was acknowledged (metrics and the totals the service reports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
from aiokafka.errors import CommitFailedError, KafkaError

from streamcast.config import Settings
from streamcast.core.records import Rejection
from streamcast.kafka.transactional import FencedError, TransactionalBroker
from streamcast.kafka.wire import Broker, Consumed, OutRecord
from streamcast.service.metrics import Metrics, observe_many
from streamcast.service.processor import (
    BatchProcessor,
    CoreStep,
    DurableProcessor,
    dead_letters,
    forecast_records,
    partitioned_outputs,
)

# These lines are the service's: log filters and dashboards key on the logger name.
log = logging.getLogger("streamcast.service")

T = TypeVar("T")


class BatchHandler:
    """Processes, publishes and commits micro-batches; keeps the totals since start."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        delay: Callable[[int], float],
        pause: Callable[[float], Awaitable[None]],
    ) -> None:
        """``delay(attempt)`` is the retry backoff; ``pause(seconds)`` the sleep between
        rewind attempts (it returns early once the service is stopping)."""
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._delay = delay
        self._pause = pause
        self._positions: dict[tuple[str, int], int] = {}
        self._rewind_attempt = 0
        #: totals since start (tests and the final log line read them)
        self.consumed = 0
        self.batches = 0
        self.forecasts = 0
        self.dead_lettered = 0

    # -- at-least-once ---------------------------------------------------------------------

    async def handle(
        self, broker: Broker, core: BatchProcessor, records: Sequence[Consumed]
    ) -> None:
        """One micro-batch: process, produce, await acks, commit."""
        self.metrics.batch_size.observe(len(records))
        step, out, n_forecasts = await asyncio.to_thread(
            self._compute, core, records, self._clock()
        )
        await self._retry("produce", broker.publish, out)
        offsets = next_offsets(records)
        self._account(records, step, n_forecasts, offsets)
        await self._commit(broker, offsets)

    def _compute(
        self, core: BatchProcessor, records: Sequence[Consumed], now_s: float
    ) -> tuple[CoreStep, list[OutRecord], int]:
        """The CPU part of a micro-batch (worker thread): step, then encode the output."""
        started = time.perf_counter()
        step = core.process(records, now_s)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        topics = self.settings.topics
        out = forecast_records(topics.forecasts, step.forecasts)
        n_forecasts = len(out)
        out += dead_letters(topics.dead_letter, records, step.rejections)
        return step, out, n_forecasts

    async def _commit(self, broker: Broker, offsets: dict[tuple[str, int], int]) -> None:
        try:
            await self._retry("commit", broker.commit, offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions away: their new owner re-reads from the last
            # commit, which repeats output (at-least-once) but loses nothing.
            log.warning("commit rejected after a rebalance", extra={"error": repr(exc)})

    async def _retry(self, op: str, call: Callable[[T], Awaitable[None]], arg: T) -> None:
        """Retry a broker operation with backoff until it succeeds or the drain runs out."""
        attempt = 0
        while True:
            try:
                await call(arg)
            except CommitFailedError:
                raise
            except KafkaError as exc:
                self.metrics.broker_errors.labels(op=op).inc()
                delay = self._delay(attempt)
                log.warning(
                    f"{op} failed; retrying",
                    extra={
                        "attempt": attempt + 1,
                        "retry_in_s": round(delay, 2),
                        "error": repr(exc),
                    },
                )
                attempt += 1
                await asyncio.sleep(delay)
            else:
                return

    # -- exactly-once ----------------------------------------------------------------------

    async def rewound(self, broker: TransactionalBroker) -> bool:
        """Rewind if a batch or an assignment failed; False when it must be retried."""
        if not broker.needs_rewind:
            self._rewind_attempt = 0
            return True
        try:
            async with broker.exclusive():
                await broker.rewind()
        except (KafkaError, OSError) as exc:
            self.metrics.broker_errors.labels(op="rewind").inc()
            delay = self._delay(self._rewind_attempt)
            self._rewind_attempt += 1
            log.warning(
                "rewind failed; retrying", extra={"retry_in_s": round(delay, 2), "error": repr(exc)}
            )
            await self._pause(delay)
            return False
        self.metrics.rewinds.inc()
        return True

    async def handle_exactly_once(
        self, broker: TransactionalBroker, core: DurableProcessor, records: Sequence[Consumed]
    ) -> None:
        """One micro-batch under the broker's batch lock: process, then one transaction
        per input partition (outputs, changelog, offset). A failure leaves the broker
        dirty; the next iteration rewinds (FencedError ends the service)."""
        async with broker.exclusive() as current:
            if not current:
                return  # a rebalance or rewind came between: these are read again
            self.metrics.batch_size.observe(len(records))
            step, by_partition, n_forecasts = await asyncio.to_thread(
                self._compute_grouped, core, records, self._clock()
            )
            offsets = next_offsets(records)
            try:
                await broker.commit_batch(by_partition, offsets)
            except FencedError:
                raise
            except (KafkaError, OSError) as exc:
                self.metrics.broker_errors.labels(op="transaction").inc()
                log.warning(
                    "transaction failed; rewinding to the committed offsets",
                    extra={"error": repr(exc)},
                )
                return
            self._account(records, step, n_forecasts, offsets)

    def _compute_grouped(
        self, core: DurableProcessor, records: Sequence[Consumed], now_s: float
    ) -> tuple[CoreStep, dict[int, list[OutRecord]], int]:
        """The CPU part of an exactly-once batch: outputs grouped per input partition."""
        started = time.perf_counter()
        step = core.process(records, now_s)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        by_partition, n_forecasts = partitioned_outputs(self.settings, core, records, step)
        return step, by_partition, n_forecasts

    # -- accounting ------------------------------------------------------------------------

    def observe_lag(self, broker: Broker) -> None:
        """Consumer lag per partition, from the offsets after the last acknowledged batch."""
        for partition, lag in broker.lag(self._positions).items():
            self.metrics.consumer_lag.labels(partition=str(partition)).set(lag)

    def _account(
        self,
        records: Sequence[Consumed],
        step: CoreStep,
        n_forecasts: int,
        offsets: dict[tuple[str, int], int],
    ) -> None:
        """Metrics and totals of a batch whose output was acknowledged."""
        self._count(records, step.rejections, n_forecasts, step)
        self._observe_latency(records, step, self._clock())
        self._positions.update(offsets)
        self.consumed += len(records)
        self.batches += 1

    def _observe_latency(self, records: Sequence[Consumed], step: CoreStep, acked: float) -> None:
        sent_ms = np.fromiter(
            (records[i].timestamp for i in step.trigger_positions.tolist()),
            dtype=np.int64,
            count=len(step.trigger_positions),
        )
        observe_many(self.metrics.latency, np.maximum(0.0, acked - sent_ms / 1000.0))

    def _count(
        self,
        records: Sequence[Consumed],
        rejections: Sequence[Rejection],
        forecasts: int,
        step: CoreStep,
    ) -> None:
        m = self.metrics
        rejected = len({r.index for r in rejections})
        m.ticks.labels(result="rejected").inc(rejected)
        m.ticks.labels(result="accepted").inc(len(records) - rejected)
        m.forecasts.inc(forecasts)
        self.forecasts += forecasts
        self.dead_lettered += len(rejections)
        for rej in rejections:
            m.dead_letters.labels(reason=str(rej.reason)).inc()
        counters = step.counters
        m.evictions.labels(cause="ttl").inc(counters.get("expired_ttl", 0))
        m.evictions.labels(cause="lru").inc(counters.get("evicted_lru", 0))
        m.restarts.inc(counters.get("resets", 0))
        if "active_keys" in counters:
            m.active_keys.set(counters["active_keys"])


def next_offsets(records: Sequence[Consumed]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): last offset + 1}``: what to commit after ``records``."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets
