"""The long-running service: lifecycle phases around the pure core.

Phases, as in uvicorn's server:

1. **startup** — load the model (fail fast on a bad artifact), build the processor, open
   the HTTP endpoints, check/create topics and connect the sink to Kafka, retrying with
   exponential backoff (capped, jittered, logged) while the broker is unavailable.
2. **main loop** — let the sink recover if a batch failed, ``fetch`` a micro-batch and
   hand it to the :class:`~streamcast.service.batches.BatchHandler`: process in a worker
   thread -> deliver outputs and offsets through the sink (at-least-once or exactly-once:
   the loop does not know which, :mod:`streamcast.kafka.guarantee` chose) -> account;
   while one batch is delivered the next is fetched and processed (a run of batches
   under one hold of the sink, at most :data:`RUN_MAX_S`).
   Transient broker failures are retried with backoff (:class:`~streamcast.service.waits.Retry`);
   bad input never raises (it becomes dead letters).
3. **shutdown** — a first SIGTERM/SIGINT only sets a flag: no new fetch starts, the
   in-flight batch is finished and delivered, and the clients are closed, all within
   ``drain_timeout_s`` (after which what is left is cancelled: nothing committed that was
   not produced). A stop also ends retry waits and interrupts a connect attempt, so an
   unreachable broker never holds a SIGTERM; closing gets what is left of the budget (at
   least :data:`CLOSE_MIN_S`). A second signal exits at once.

Every background task lives in one ``TaskGroup``; resources are async context managers;
every wait is bounded or interruptible (:mod:`streamcast.service.waits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from streamcast.config import Settings
from streamcast.core.models_dir import Stamp, resolve_model
from streamcast.errors import ModelError, TransientError
from streamcast.kafka.guarantee import make_sink
from streamcast.kafka.sink import Sink
from streamcast.kafka.topics import ensure_topics
from streamcast.kafka.wire import Consumed
from streamcast.service.batches import BatchHandler, More
from streamcast.service.health import HealthServer
from streamcast.service.heap import keep_freed_heap
from streamcast.service.metrics import Metrics
from streamcast.service.models import ModelWatcher, required_model_path, startup_model
from streamcast.service.processor import BatchProcessor, build_processor
from streamcast.service.waits import Retry, backoff_delays, bounded, first_leaf, unless_set
from streamcast.service.watch import BrokerWatch

log = logging.getLogger(__name__)

#: seconds between progress log lines
PROGRESS_LOG_S = 60.0
#: the collector's generation thresholds in the service process. A micro-batch allocates
#: tens of thousands of short-lived containers (records, tuples); at CPython's default
#: (700, 10, 10) the collector runs hundreds of times per batch, ~20 % of the worker
#: thread's CPU with 5,000 keys per batch (``bench/micro.py``, process time); at these
#: thresholds ~0 %, and reference cycles still go within 50,000 allocations.
GC_THRESHOLDS = (50_000, 20, 20)
#: longest run of overlapped batches (one hold of the sink) before the loop goes round
RUN_MAX_S = 1.0
#: longest wait of one fetch while a delivery is under way (records end it at once; a
#: delivery that ends meanwhile is noticed within this)
RUN_POLL_MS = 5
#: exit code of a second signal (128 + SIGINT, the shell convention)
FORCED_EXIT = 130
#: closing the Kafka clients gets what is left of the drain budget, within these bounds
#: (an unreachable broker makes a close wait for nothing)
CLOSE_MIN_S = 1.0
CLOSE_MAX_S = 10.0

#: builds the (not yet started) sink for a processor; the default is the guarantee's
SinkFactory = Callable[[BatchProcessor], Sink]
TopicCheck = Callable[[Settings], Awaitable[int]]


class Service:
    """One streamcast instance. ``await run()``; ``request_stop()`` from a signal handler."""

    def __init__(
        self,
        settings: Settings,
        *,
        sink_factory: SinkFactory | None = None,
        topic_check: TopicCheck = ensure_topics,
        processor: BatchProcessor | None = None,
        clock: Callable[[], float] = time.time,
        freeze_gc: bool = False,
    ) -> None:
        self.settings = settings
        #: move everything alive once connected out of the collector's reach (serve)
        self._freeze_gc = freeze_gc
        self.metrics = Metrics()
        self._sink_factory = sink_factory or self._default_sink
        self._topic_check = topic_check
        self._processor = processor
        self._clock = clock
        self._stopping = asyncio.Event()
        self._signals = 0
        self._stop_requested_at: float | None = None
        self._started = False
        self._sink: Sink | None = None
        self._last_tick = 0.0
        self._retry = Retry(
            backoff_delays(settings.retry_max_backoff_s),
            self._stopping,
            lambda op: self.metrics.broker_errors.labels(op=op).inc(),
        )
        self._handler = BatchHandler(self.metrics, self._retry, clock=clock)
        self._watch = BrokerWatch(self.metrics, settings.ready_stale_s)
        self.http_port: int | None = None
        self._models: ModelWatcher | None = None

    # -- totals since start (tests and the final log line read them) -----------------------

    @property
    def consumed(self) -> int:
        """Input records whose output was delivered."""
        return self._handler.consumed

    @property
    def batches(self) -> int:
        """Micro-batches whose output was delivered."""
        return self._handler.batches

    @property
    def forecasts(self) -> int:
        """Forecasts produced."""
        return self._handler.forecasts

    @property
    def dead_lettered(self) -> int:
        """Dead letters produced."""
        return self._handler.dead_lettered

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
        if self._processor is None:
            return False, "model not loaded"
        if self._sink is None or not self._sink.assigned():
            return False, "no partitions assigned"
        # every reason that holds, the broker's first: when the broker is gone the main
        # loop stalls too, and which of the two crosses ready_stale_s first is chance
        reasons = [self._watch.problem()]
        idle = self._clock() - self._last_tick
        if idle > self.settings.ready_stale_s:
            reasons.append(f"main loop stalled for {idle:.0f}s")
        if any(reasons):
            return False, "; ".join(reason for reason in reasons if reason)
        if self.stopping:
            return False, "stopping"
        return True, "ready"

    # -- phases ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped: startup, main loop, shutdown. A service runs once."""
        if self._started:
            raise RuntimeError("a Service runs once; create a new one to run again")
        self._started = True
        s = self.settings
        if self._processor is None:
            where = required_model_path(s.model_path)
            refused_metric = self.metrics.model_swaps.labels(result="refused")
            serving, refused = startup_model(where, s.intra_op_threads, refused_metric.inc)
            self._processor = load_processor(s, serving)
            if s.model_poll_s > 0:
                self._models = self._model_watcher(self._processor, where, serving, refused)
        processor = self._processor
        self.metrics.set_build_info(processor.model_name, processor.model_version)
        health = HealthServer(s.http_host, s.http_port, self.metrics.exposition, self.readiness)
        try:
            async with health, asyncio.TaskGroup() as tasks:
                self.http_port = health.port
                sink = await self._connect(processor)
                if sink is None:
                    return  # stopped before the broker came up
                self._sink = sink
                if self._freeze_gc:
                    freeze_startup_objects()
                try:
                    loop_task = tasks.create_task(self._main_loop(sink, processor))
                    tasks.create_task(self._drain_watchdog(loop_task))
                    progress = tasks.create_task(self._log_progress())
                    watch = tasks.create_task(
                        self._watch.run(sink.probe, lambda: self._handler.positions)
                    )
                    models = tasks.create_task(self._models.run()) if self._models else None
                    # wait() rather than await: a loop cancelled by the drain watchdog
                    # must not cancel run() itself; a loop that failed is re-raised below.
                    await asyncio.wait({loop_task})
                    progress.cancel()
                    watch.cancel()
                    if models is not None:
                        models.cancel()
                finally:
                    self._sink = None
                    await bounded(sink.close(), self._close_budget(), "closing Kafka clients")
        except BaseExceptionGroup as group:
            raise first_leaf(group) from None
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

    def _default_sink(self, processor: BatchProcessor) -> Sink:
        return make_sink(self.settings, processor, self.metrics, self._clock)

    async def _connect(self, processor: BatchProcessor) -> Sink | None:
        """Topic check and sink start, retried with backoff while the broker is away;
        None when a stop came first."""

        async def attempt() -> Sink | None:
            sink = self._sink_factory(processor)
            try:
                started = await unless_set(self._start(sink), self._stopping, self._close_budget)
            except BaseException:
                await bounded(sink.close(), self._close_budget(), "closing Kafka clients")
                raise
            if not started:
                # stopped while a broker that does not answer held the attempt
                await bounded(sink.close(), self._close_budget(), "closing Kafka clients")
                return None
            return sink

        if self.stopping:
            return None
        try:
            sink = await self._retry.call("connect", attempt)
        except TransientError:
            return None  # Retry gives a transient error up only when a stop was requested
        if sink is not None:
            log.info(
                "connected",
                extra={
                    "bootstrap": self.settings.bootstrap_servers,
                    "group": self.settings.group_id,
                },
            )
        return sink

    async def _start(self, sink: Sink) -> None:
        await self._topic_check(self.settings)
        await sink.start()

    async def _main_loop(self, sink: Sink, processor: BatchProcessor) -> None:
        s = self.settings
        self._last_tick = self._clock()
        while not self.stopping:
            try:
                await self._retry.call("recover", sink.recover)
                records = await self._retry.call(
                    "fetch", lambda: sink.fetch(s.batch_max_records, s.batch_max_wait_ms)
                )
            except TransientError:
                break  # Retry gives a transient error up only when a stop was requested
            self._last_tick = self._clock()
            if records:
                await self._handler.handle(sink, processor, records, self._more(sink))
            await self._swap_model(processor)
            self._last_tick = self._clock()

    def _more(self, sink: Sink) -> More:
        """What a run of batches fetches while the previous batch is delivered: the
        records that come before that delivery is done (those the consumer holds now, or
        the first to arrive while the acknowledgements are in flight: a burst that lands
        mid-delivery is processed beside it, not after it), nothing once a stop was asked
        or the run is :data:`RUN_MAX_S` old (the loop then recovers, swaps models, beats),
        and nothing on a broker error (the loop's own fetch retries it with backoff).

        The wait is a series of short fetches (:data:`RUN_POLL_MS` each, returning at
        once when records arrive), never a fetch cancelled when the delivery ends: a
        cancelled ``getmany`` used to leave aiokafka's fetch count raised for good, which
        turned off the consumer's ``max_poll_interval_ms`` check (fixed for every fetch in
        :mod:`streamcast.kafka.patches`; the run cancels none either way). With
        ``batch_max_wait_ms = 0`` it is one fetch of what is held."""
        s = self.settings
        ends = time.monotonic() + RUN_MAX_S
        poll_ms = min(s.batch_max_wait_ms, RUN_POLL_MS)

        async def more(delivered: asyncio.Future[Any]) -> Sequence[Consumed]:
            while not (self.stopping or time.monotonic() > ends):
                self._last_tick = self._clock()
                try:
                    records = await sink.fetch(s.batch_max_records, poll_ms)
                except TransientError:
                    return ()
                if records or delivered.done() or not poll_ms:
                    return records
            return ()

        return more

    def _model_watcher(
        self, processor: BatchProcessor, path: Path, serving: Path, refused: set[Stamp]
    ) -> ModelWatcher:
        s = self.settings
        return ModelWatcher(
            path,
            serving,
            poll_s=s.model_poll_s,
            intra_op_threads=s.intra_op_threads,
            check=processor.swap_problem,
            on_refused=self.metrics.model_swaps.labels(result="refused").inc,
            refused=refused,
        )

    async def _swap_model(self, processor: BatchProcessor) -> None:
        """Between two batches: serve the model the watcher validated, if any."""
        model = self._models.take() if self._models else None
        if model is None:
            return
        old = processor.model_version
        started = time.perf_counter()
        rebuilt = await asyncio.to_thread(processor.swap_model, model)
        self.metrics.model_swaps.labels(result="swapped").inc()
        self.metrics.set_build_info(processor.model_name, processor.model_version)
        log.info(
            "model swapped: forecasts carry the new version from the next batch on",
            extra={
                "model": processor.model_name,
                "from_version": old,
                "to_version": processor.model_version,
                "keys_rebuilt": rebuilt,
                "pause_s": round(time.perf_counter() - started, 3),
            },
        )

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


def load_processor(settings: Settings, path: Path | None = None) -> BatchProcessor:
    """Load the model named by the settings (or the artifact ``path`` they resolved to)
    and build the batch processor around it."""
    path = path or resolve_model(required_model_path(settings.model_path))
    try:
        return build_processor(settings, path)
    except ModelError:
        raise
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from exc


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive into the collector's permanent
    generation (:func:`gc.freeze`): the modules, the model and the clients of a started
    service are ~100,000 tracked objects, and each full collection walked them all,
    ~70 ms in which no batch moved, every ~10 s at 5,000 ticks/s: the p99 latency's
    spikes. Frozen objects are still freed when their last reference goes (a swapped-out
    model); only reference cycles among them would stay."""
    gc.collect()
    gc.freeze()
    log.debug("collector: startup objects frozen", extra={"frozen": gc.get_freeze_count()})


async def serve(settings: Settings) -> None:
    """Run a :class:`Service` with SIGTERM/SIGINT wired to its drain."""
    gc.set_threshold(*GC_THRESHOLDS)
    if not keep_freed_heap(settings.heap_keep_mb) and settings.heap_keep_mb:
        log.info("STREAMCAST_HEAP_KEEP_MB has no effect: the C library has no mallopt or refused")
    service = Service(settings, freeze_gc=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.handle_signal, sig)
    try:
        await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
