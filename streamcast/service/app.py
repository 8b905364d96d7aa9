"""The long-running service: lifecycle phases around the pure core.

Phases, as in uvicorn's server:

1. **startup** — load the model (fail fast on a bad artifact), build the pipeline, open
   the HTTP endpoints, check/create topics and connect to Kafka, retrying with
   exponential backoff (capped, jittered, logged) while the broker is unavailable.
2. **main loop** — ``fetch`` a micro-batch, then hand it to the
   :class:`~streamcast.service.batches.BatchHandler`: decode -> ``Pipeline.process`` in a
   worker thread -> produce forecasts and dead letters -> await *every* acknowledgement
   -> only then commit the consumed offsets. Broker failures mid-run are retried with backoff;
   the in-memory state is kept; bad input never raises (it becomes dead letters).
   With ``processing_guarantee=exactly_once`` the broker is a
   :class:`~streamcast.kafka.transactional.TransactionalBroker`: each batch is processed under
   its batch lock and committed as one transaction per input partition (outputs, state
   changelog, offset); a failed batch is followed by a rewind to the committed offsets
   and the changelog's state, retried with backoff while the broker is away.
3. **shutdown** — a first SIGTERM/SIGINT only sets a flag: no new fetch starts, the
   in-flight batch is finished, produced and committed, and the clients are closed, all
   within ``drain_timeout_s`` (after which what is left is cancelled: nothing committed
   that was not produced, so at-least-once holds). Closing gets what is left of that
   budget (at least :data:`CLOSE_MIN_S`), and a stop also interrupts a connect attempt:
   an unreachable broker never holds a SIGTERM. A second signal exits at once.

Every background task lives in one ``TaskGroup``; resources are async context managers;
every wait is bounded or interruptible (:mod:`streamcast.service.waits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from aiokafka.errors import KafkaError

from streamcast.config import Settings
from streamcast.errors import ConfigurationError, ModelError
from streamcast.kafka.broker import KafkaBroker
from streamcast.kafka.topics import ensure_topics
from streamcast.kafka.transactional import TransactionalBroker
from streamcast.kafka.wire import Broker
from streamcast.service.batches import BatchHandler
from streamcast.service.health import HealthServer
from streamcast.service.metrics import Metrics
from streamcast.service.processor import BatchProcessor, DurableProcessor, build_core
from streamcast.service.waits import (
    backoff_delays,
    bounded,
    first_leaf,
    sleep_unless_set,
    unless_set,
)

log = logging.getLogger(__name__)

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
        self._delay = backoff_delays(settings.retry_max_backoff_s)
        self._handler = BatchHandler(
            settings, self.metrics, clock=clock, delay=self._delay, pause=self._pause
        )
        self.http_port: int | None = None

    # -- totals since start (tests and the final log line read them) -----------------------

    @property
    def consumed(self) -> int:
        """Input records whose output was acknowledged."""
        return self._handler.consumed

    @property
    def batches(self) -> int:
        """Micro-batches whose output was acknowledged."""
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
                    await bounded(broker.close(), self._close_budget(), "closing Kafka clients")
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
                connected = await unless_set(
                    self._start(broker), self._stopping, self._close_budget
                )
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
                await self._pause(delay)
                continue
            if not connected:
                # stopped while a broker that does not answer held the attempt
                await bounded(broker.close(), self._close_budget(), "closing Kafka clients")
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

    async def _main_loop(self, broker: ManagedBroker, core: BatchProcessor) -> None:
        s = self.settings
        exactly_once = isinstance(broker, TransactionalBroker)
        self._last_tick = self._clock()
        while not self.stopping:
            if isinstance(broker, TransactionalBroker) and not await self._handler.rewound(broker):
                continue
            try:
                records = await broker.fetch(s.batch_max_records, s.batch_max_wait_ms)
            except KafkaError as exc:
                self.metrics.broker_errors.labels(op="fetch").inc()
                log.warning("fetch failed; retrying", extra={"error": repr(exc)})
                await self._pause(self._delay(0))
                continue
            self._last_tick = self._clock()
            if records and exactly_once:
                assert isinstance(broker, TransactionalBroker)
                assert isinstance(core, DurableProcessor)
                await self._handler.handle_exactly_once(broker, core, records)
            elif records:
                await self._handler.handle(broker, core, records)
            self._handler.observe_lag(broker)
            self._last_tick = self._clock()

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

    async def _pause(self, seconds: float) -> None:
        """Sleep between retries; returns early once a stop is requested."""
        await sleep_unless_set(self._stopping, seconds)


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
