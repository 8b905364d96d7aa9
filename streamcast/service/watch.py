"""What the broker says about this instance, asked on a timer: is it answering, how many
records wait per owned partition, and which partitions do not move although records wait.

aiokafka's fetcher retries a dead broker silently (``getmany`` just returns nothing), so
an outage looked like an idle stream: ``/readyz`` stayed 200, no error was counted and
the lag gauges froze at their last value. :class:`BrokerWatch` asks the broker for the
end offset of every owned partition every few seconds (``Sink.probe``): a failure counts
``streamcast_broker_errors_total{op="probe"}``, and once no probe has succeeded for
``ready_stale_s`` the instance is not ready. Each answer sets
``streamcast_consumer_lag{partition}`` from the broker's end offsets (series of partitions
no longer owned are removed, so a revoked partition is not counted twice), and a
partition with records waiting whose delivered position has not moved for
``ready_stale_s`` is *stalled*: ``streamcast_partition_stalled{partition}`` is 1 and
``/readyz`` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from streamcast.errors import TransientError
from streamcast.service.metrics import Metrics

log = logging.getLogger("streamcast.service")

#: the probe period: a third of the readiness staleness, within these bounds
MIN_PERIOD_S = 0.5
MAX_PERIOD_S = 10.0


class BrokerWatch:
    """The broker's view of this instance (see the module docstring)."""

    def __init__(
        self, metrics: Metrics, stale_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._answered_at = clock()
        #: per partition: (delivered position, when it last moved or records last waited 0)
        self._progress: dict[int, tuple[int, float]] = {}
        self._stalled: set[int] = set()
        self._labelled: set[int] = set()

    @property
    def period_s(self) -> float:
        """Seconds between probes."""
        return min(MAX_PERIOD_S, max(MIN_PERIOD_S, self._stale_after_s / 3))

    def answered(self, waiting: Mapping[int, int], positions: Mapping[int, int]) -> None:
        """A probe succeeded: ``waiting`` records per owned partition; ``positions``: the
        next offset delivered per partition so far."""
        now = self._clock()
        self._answered_at = now
        m = self._metrics
        for partition in self._labelled - set(waiting):
            for gauge in (m.consumer_lag, m.partition_stalled):
                with contextlib.suppress(KeyError):  # never labelled: nothing to remove
                    gauge.remove(str(partition))
            self._progress.pop(partition, None)
        self._labelled = set(waiting)
        stalled = set()
        for partition, lag in waiting.items():
            m.consumer_lag.labels(partition=str(partition)).set(lag)
            position = positions.get(partition, -1)
            before = self._progress.get(partition)
            if lag == 0 or before is None or before[0] != position:
                self._progress[partition] = (position, now)
            elif now - before[1] > self._stale_after_s:
                stalled.add(partition)
            m.partition_stalled.labels(partition=str(partition)).set(partition in stalled)
        for partition in sorted(stalled - self._stalled):
            log.error(
                "partition stalled: records wait but none is delivered",
                extra={"partition": partition, "waiting": waiting[partition]},
            )
        self._stalled = stalled

    def failed(self, error: str) -> None:
        """A probe failed (the broker did not answer)."""
        self._metrics.broker_errors.labels(op="probe").inc()
        log.warning("broker did not answer the probe", extra={"error": error})

    def problem(self) -> str | None:
        """Why the instance is not ready as far as the broker is concerned, or None."""
        silent = self._clock() - self._answered_at
        if silent > self._stale_after_s:
            return f"broker has not answered for {silent:.0f}s"
        if self._stalled:
            return f"partitions {sorted(self._stalled)} stalled: records wait, none delivered"
        return None

    async def run(
        self,
        probe: Callable[[], Awaitable[dict[int, int]]],
        positions: Callable[[], Mapping[int, int]],
    ) -> None:
        """Probe forever (until cancelled), one probe per :attr:`period_s`."""
        while True:
            await asyncio.sleep(self.period_s)
            try:
                waiting = await asyncio.wait_for(probe(), timeout=self.period_s * 2)
            except (TransientError, TimeoutError) as exc:
                self.failed(str(exc) or type(exc).__name__)
                continue
            self.answered(waiting, positions())
