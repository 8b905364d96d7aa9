"""The long-running service: lifecycle phases around the pure core.

Phases, as in uvicorn's server:

1. **startup** — load the model (fail fast on a bad artifact), build the pipeline, open
   the HTTP endpoints, check/create topics and connect to Kafka, retrying with
   exponential backoff (capped, jittered, logged) while the broker is unavailable.
2. **main loop** — ``fetch`` a micro-batch -> decode -> ``Pipeline.process`` in a worker
   thread -> produce forecasts and dead letters -> await *every* acknowledgement -> only
   then commit the consumed offsets. Broker failures mid-run are retried with backoff;
   the in-memory state is kept; bad input never raises (it becomes dead letters).
   With ``processing_guarantee=exactly_once`` the broker is a
   :class:`~streamcast.transactions.TransactionalBroker`: each batch is processed under
   its batch lock and committed as one transaction per input partition (outputs, state
   changelog, offset); a failed batch is followed by a rewind to the committed offsets
   and the changelog's state, retried with backoff while the broker is away.
3. **shutdown** — a first SIGTERM/SIGINT only sets a flag: no new fetch starts, the
   in-flight batch is finished, produced and committed, and the clients are closed, all
   within ``drain_timeout_s`` (after which what is left is cancelled: nothing committed
   that was not produced, so at-least-once holds). A second signal exits at once.

Every background task lives in one ``TaskGroup``; resources are async context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from aiokafka.errors import CommitFailedError, KafkaError

from streamcast.config import Settings
from streamcast.errors import ConfigurationError, ModelError
from streamcast.health import HealthServer
from streamcast.kafka import Broker, Consumed, KafkaBroker, OutRecord, ensure_topics
from streamcast.metrics import Metrics, observe_many
from streamcast.microbatch import (
    BatchProcessor,
    CoreStep,
    DurableProcessor,
    build_core,
    dead_letters,
    forecast_records,
    partitioned_outputs,
)
from streamcast.records import Rejection
from streamcast.transactions import FencedError, TransactionalBroker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: first retry delay; doubles per attempt up to ``retry_max_backoff_s``
BASE_BACKOFF_S = 0.5
#: seconds between progress log lines
PROGRESS_LOG_S = 60.0
#: exit code of a second signal (128 + SIGINT, the shell convention)
FORCED_EXIT = 130
#: closing the Kafka clients gets what is left of the drain budget, within these bounds
#: (an unreachable broker makes a close wait for nothing)
CLOSE_MIN_S = 1.0
CLOSE_MAX_S = 10.0


class ManagedBroker(Broker, Protocol):
    """A :class:`Broker` with a lifecycle (what the service creates and owns)."""

    async def start(self) -> None:
        """Connect; raise a Kafka/OS error when the broker cannot be reached."""
        ...

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        ...


BrokerFactory = Callable[[Settings], ManagedBroker]
TopicCheck = Callable[[Settings], Awaitable[int]]


def backoff_delays(max_s: float, base_s: float = BASE_BACKOFF_S) -> Callable[[int], float]:
    """``attempt -> delay``: exponential from ``base_s``, capped at ``max_s``, with jitter."""

    def delay(attempt: int) -> float:
        raw = min(max_s, base_s * 2.0 ** min(attempt, 30))
        return float(raw * (0.75 + 0.5 * random.random()))

    return delay


class Service:
    """One streamcast instance. ``await run()``; ``request_stop()`` from a signal handler."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker_factory: BrokerFactory | None = None,
        topic_check: TopicCheck = ensure_topics,
        core: BatchProcessor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._broker_factory = broker_factory
        self._topic_check = topic_check
        self._core = core
        self._clock = clock
        self._stopping = asyncio.Event()
        self._signals = 0
        self._stop_requested_at: float | None = None
        self._started = False
        self._broker: ManagedBroker | None = None
        self._last_tick = 0.0
        self._positions: dict[tuple[str, int], int] = {}
        self._delay = backoff_delays(settings.retry_max_backoff_s)
        self._rewind_attempt = 0
        self.http_port: int | None = None
        #: totals since start (tests and the final log line read them)
        self.consumed = 0
        self.batches = 0
        self.forecasts = 0
        self.dead_lettered = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Ask the service to drain and stop (idempotent; safe from a signal handler)."""
        if not self._stopping.is_set():
            log.info("stop requested: finishing the in-flight batch")
            self._stop_requested_at = time.monotonic()
        self._stopping.set()

    def handle_signal(self, signum: int) -> None:
        """First signal: drain. Second: exit immediately (output since the last commit is
        repeated on restart, never lost)."""
        self._signals += 1
        if self._signals == 1:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            self.request_stop()
            return
        log.warning("second signal: exiting now without draining")
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(ValueError, OSError):  # a closed stream: nothing to do
                handler.flush()
        os._exit(FORCED_EXIT)

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)`` for ``/readyz``."""
        if self._core is None:
            return False, "model not loaded"
        if self._broker is None or not self._broker.assigned():
            return False, "no partitions assigned"
        idle = self._clock() - self._last_tick
        if idle > self.settings.ready_stale_s:
            return False, f"main loop stalled for {idle:.0f}s"
        if self.stopping:
            return False, "stopping"
        return True, "ready"

    # -- phases ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped: startup, main loop, shutdown. A service runs once."""
        if self._started:
            raise RuntimeError("a Service runs once; create a new one to run again")
        self._started = True
        core = self._core or load_core(self.settings)
        self._core = core
        if self._broker_factory is None:
            self._broker_factory = self._default_broker_factory(core)
        self.metrics.set_build_info(core.model_name, core.model_version)
        s = self.settings
        health = HealthServer(s.http_host, s.http_port, self.metrics.exposition, self.readiness)
        try:
            async with health, asyncio.TaskGroup() as tasks:
                self.http_port = health.port
                broker = await self._connect()
                if broker is None:
                    return  # stopped before the broker came up
                self._broker = broker
                try:
                    loop_task = tasks.create_task(self._main_loop(broker, core))
                    tasks.create_task(self._drain_watchdog(loop_task))
                    progress = tasks.create_task(self._log_progress())
                    # wait() rather than await: a loop cancelled by the drain watchdog
                    # must not cancel run() itself; a loop that failed is re-raised below.
                    await asyncio.wait({loop_task})
                    progress.cancel()
                finally:
                    self._broker = None
                    await _bounded(broker.close(), self._close_budget(), "closing Kafka clients")
        except BaseExceptionGroup as group:
            raise _first_leaf(group) from None
        log.info(
            "stopped",
            extra={
                "consumed": self.consumed,
                "batches": self.batches,
                "forecasts": self.forecasts,
                "dead_letters": self.dead_lettered,
            },
        )

    def _close_budget(self) -> float:
        """Seconds the Kafka clients get to close: the rest of the drain budget after a
        stop request (so the whole shutdown stays near ``drain_timeout_s``)."""
        if self._stop_requested_at is None:
            return CLOSE_MAX_S  # the loop failed: no drain budget to keep
        left = self._stop_requested_at + self.settings.drain_timeout_s - time.monotonic()
        return min(CLOSE_MAX_S, max(CLOSE_MIN_S, left))

    def _default_broker_factory(self, core: BatchProcessor) -> BrokerFactory:
        if self.settings.processing_guarantee == "at_least_once":
            return KafkaBroker
        if not isinstance(core, DurableProcessor):
            raise ConfigurationError(
                "processing_guarantee=exactly_once needs a processor with per-partition state"
            )

        def transactional(settings: Settings) -> ManagedBroker:
            return TransactionalBroker(settings, core, self.metrics, self._clock)

        return transactional

    async def _connect(self) -> ManagedBroker | None:
        """Topic check and client start, retried with backoff while the broker is away."""
        attempt = 0
        assert self._broker_factory is not None
        while not self.stopping:
            broker = self._broker_factory(self.settings)
            try:
                connected = await self._interruptible(self._start(broker))
            except (KafkaError, OSError) as exc:
                await broker.close()
                self.metrics.broker_errors.labels(op="connect").inc()
                delay = self._delay(attempt)
                log.warning(
                    "broker unavailable; retrying",
                    extra={
                        "bootstrap": self.settings.bootstrap_servers,
                        "attempt": attempt + 1,
                        "retry_in_s": round(delay, 2),
                        "error": repr(exc),
                    },
                )
                attempt += 1
                await self._sleep_unless_stopping(delay)
                continue
            if not connected:
                # stopped while a broker that does not answer held the attempt
                await _bounded(broker.close(), self._close_budget(), "closing Kafka clients")
                return None
            log.info(
                "connected",
                extra={
                    "bootstrap": self.settings.bootstrap_servers,
                    "group": self.settings.group_id,
                },
            )
            return broker
        return None

    async def _start(self, broker: ManagedBroker) -> None:
        await self._topic_check(self.settings)
        await broker.start()

    async def _interruptible(self, aw: Coroutine[object, object, None]) -> bool:
        """Await ``aw`` unless a stop request comes first: True when it finished (its
        error is raised), False when the stop won and ``aw`` was cancelled.

        A broker that accepts connections but never answers holds a connect attempt for
        aiokafka's request timeout (40 s); a SIGTERM must not wait for that.
        """
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            work.result()
            return True
        # let the attempt unwind (its clients clean up after themselves), within bounds
        await asyncio.wait({work}, timeout=self._close_budget())
        if work.done() and not work.cancelled():
            work.exception()  # retrieved: an error while cancelling is of no interest
        return False

    async def _main_loop(self, broker: ManagedBroker, core: BatchProcessor) -> None:
        s = self.settings
        exactly_once = isinstance(broker, TransactionalBroker)
        self._last_tick = self._clock()
        while not self.stopping:
            if isinstance(broker, TransactionalBroker) and not await self._rewound(broker):
                continue
            try:
                records = await broker.fetch(s.batch_max_records, s.batch_max_wait_ms)
            except KafkaError as exc:
                self.metrics.broker_errors.labels(op="fetch").inc()
                log.warning("fetch failed; retrying", extra={"error": repr(exc)})
                await self._sleep_unless_stopping(self._delay(0))
                continue
            self._last_tick = self._clock()
            if records and exactly_once:
                assert isinstance(broker, TransactionalBroker)
                assert isinstance(core, DurableProcessor)
                await self._handle_exactly_once(broker, core, records)
            elif records:
                await self._handle(broker, core, records)
            self._observe_lag(broker)
            self._last_tick = self._clock()

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

    async def _handle(
        self, broker: ManagedBroker, core: BatchProcessor, records: Sequence[Consumed]
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

    # -- exactly-once ----------------------------------------------------------------------

    async def _rewound(self, broker: TransactionalBroker) -> bool:
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
            await self._sleep_unless_stopping(delay)
            return False
        self.metrics.rewinds.inc()
        return True

    async def _handle_exactly_once(
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

    async def _commit(self, broker: ManagedBroker, offsets: dict[tuple[str, int], int]) -> None:
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

    def _observe_lag(self, broker: ManagedBroker) -> None:
        for partition, lag in broker.lag(self._positions).items():
            self.metrics.consumer_lag.labels(partition=str(partition)).set(lag)

    async def _log_progress(self) -> None:
        """One info line per :data:`PROGRESS_LOG_S` with what happened since the last."""
        last = (0, 0, 0)
        while True:
            await asyncio.sleep(PROGRESS_LOG_S)
            now = (self.consumed, self.forecasts, self.dead_lettered)
            log.info(
                "progress",
                extra={
                    "ticks": now[0] - last[0],
                    "forecasts": now[1] - last[1],
                    "dead_letters": now[2] - last[2],
                    "active_keys": int(self.metrics.active_keys._value.get()),
                    "period_s": PROGRESS_LOG_S,
                },
            )
            last = now

    async def _drain_watchdog(self, loop_task: asyncio.Task[None]) -> None:
        """Cancel the main loop if the drain after a stop request outlasts its bound.

        The loop only ends after a stop request or by failing; a failure makes the task
        group cancel this watchdog, so waiting for the request alone is enough.
        """
        await self._stopping.wait()
        done, _ = await asyncio.wait({loop_task}, timeout=self.settings.drain_timeout_s)
        if not done:
            log.error(
                "drain timed out; cancelling (uncommitted input is re-read on restart)",
                extra={"drain_timeout_s": self.settings.drain_timeout_s},
            )
            loop_task.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


def next_offsets(records: Sequence[Consumed]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): last offset + 1}``: what to commit after ``records``."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


def load_core(settings: Settings) -> BatchProcessor:
    """Load the model named by the settings and build the pure core around it."""
    path = settings.model_path
    if path is None:
        raise ConfigurationError(
            "STREAMCAST_MODEL_PATH (model_path): required: the ONNX file from streamcast-train"
        )
    if not Path(path).is_file():
        raise ConfigurationError(f"STREAMCAST_MODEL_PATH (model_path): file not found: {path}")
    try:
        return build_core(settings)
    except ModelError:
        raise
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from exc


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real exception inside (nested) task-group errors."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _bounded(aw: Awaitable[None], seconds: float, what: str) -> None:
    """Await ``aw`` for at most ``seconds``; a timeout or a stray cancellation raised by
    a client's own close (aiokafka's, with the broker unreachable) is one warning line,
    not a traceback. A cancellation of this task itself still propagates."""
    try:
        await asyncio.wait_for(aw, timeout=seconds)
    except TimeoutError:
        log.warning(f"{what} timed out", extra={"timeout_s": seconds})
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning(f"{what} was interrupted by a client's own cancellation")


async def serve(settings: Settings) -> None:
    """Run a :class:`Service` with SIGTERM/SIGINT wired to its drain."""
    service = Service(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.handle_signal, sig)
    try:
        await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
