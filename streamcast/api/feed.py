"""The view's feed: the forecasts and alerts topics, read from the beginning and followed.

:class:`ViewFeed` reads both topics through a :class:`Follower` (the Kafka edge's
:class:`~streamcast.kafka.follow.TopicFollower`; tests may pass another), decodes every
record with the core's one reader of each format (:func:`~streamcast.core.records.decode_forecast`,
:func:`~streamcast.core.alerts.decode_alert`; forecasts in the row layout are put back
together by :class:`~streamcast.core.forecast_rows.ForecastAssembler`), applies it to the
view or the alert log, and, once caught up, publishes it to the event streams of its
key. A record that does not decode, or holds a forecast the view cannot store (an
interval, horizon or level count beyond :func:`~streamcast.api.view.check_storable`'s
bounds), is skipped and counted (``streamcast_api_records_total{result="rejected"}``),
never fatal: the API must not stop because one producer wrote garbage. Nor does a record
whose applying fails unexpectedly (a bug): it is logged with its traceback, counted
rejected and skipped, since every restart would read it again.

Readiness (``/readyz``) is the first catch-up: every topic exists and was read up to the
end offsets it had when reading began. Transient broker failures are retried with
backoff, keeping what was read; a permanent one (authorization, settings) ends the feed,
and the server with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import orjson

from streamcast.api.alerts import AlertLog
from streamcast.api.documents import alert_document, forecast_document
from streamcast.api.events import EventHub, sse_frame
from streamcast.api.metrics import ApiMetrics
from streamcast.api.view import ForecastView, check_storable
from streamcast.core.alerts import decode_alert
from streamcast.core.forecast_rows import ForecastAssembler, decode_forecast_row
from streamcast.core.records import Forecast, decode_forecast
from streamcast.errors import RecordError, TransientError
from streamcast.kafka.wire import Consumed

log = logging.getLogger(__name__)

#: how long one read waits for records
READ_TIMEOUT_MS = 200
#: how often topics, partitions and end offsets are looked at again (more often while
#: the view is not ready: a topic that appears is picked up quickly)
REFRESH_S = 5.0
REFRESH_UNREADY_S = 0.5
#: retry delays of a failing broker: exponential up to this, with jitter
MAX_BACKOFF_S = 10.0
#: records that do not decode are logged at most this often per topic (and counted)
REJECT_LOG_S = 10.0


class Follower(Protocol):
    """What the feed needs of a topic reader (the Kafka edge's ``TopicFollower``)."""

    @property
    def missing_topics(self) -> list[str]:
        """Topics not found on the broker yet."""
        ...

    @property
    def caught_up(self) -> bool:
        """Every partition read up to its end offset at start."""
        ...

    def behind(self) -> int:
        """Records still to read before catching up."""
        ...

    def lag(self) -> dict[str, int]:
        """Records behind the end offsets, per topic."""
        ...

    async def refresh(self) -> None:
        """Look for topics and partitions, measure end offsets."""
        ...

    async def read(self, timeout_ms: int) -> Sequence[Consumed]:
        """Records that arrived."""
        ...


FollowerFactory = Callable[[], AbstractAsyncContextManager[Follower]]


class ViewFeed:
    """Feeds the view, the alert log and the event streams (module docstring)."""

    def __init__(
        self,
        follower: FollowerFactory,
        *,
        forecasts_topic: str,
        alerts_topic: str,
        view: ForecastView,
        alerts: AlertLog,
        hub: EventHub,
        metrics: ApiMetrics,
    ) -> None:
        self._follower = follower
        self.forecasts_topic = forecasts_topic
        self.alerts_topic = alerts_topic
        self.view = view
        self.alerts = alerts
        self.hub = hub
        self.metrics = metrics
        self.ready = False
        self._reason = "starting: not connected to Kafka yet"
        self._warned: dict[str, tuple[float, int]] = {}
        self._rows = ForecastAssembler(view.max_keys)

    def _forecast(self, record: Consumed) -> Forecast | None:
        """The record's forecast; in the row layout (its schema header says
        ``forecast_row``) the whole forecast once its last row arrived, else None."""
        for name, value in record.headers or ():
            if name == "streamcast.schema" and value.startswith(b"forecast_row/"):
                whole = self._rows.add(decode_forecast_row(record.value, record.key))
                if whole is not None:
                    check_storable(whole)
                return whole
        fc = decode_forecast(record.value, record.key)
        check_storable(fc)
        return fc

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)`` for ``/readyz``."""
        return self.ready, self._reason

    async def run(self, stopping: asyncio.Event) -> None:
        """Read and apply until ``stopping`` is set (permanent errors propagate)."""
        attempt = 0
        while not stopping.is_set():
            try:
                async with self._follower() as follower:
                    attempt = 0
                    await self._follow(follower, stopping)
            except TransientError as err:
                delay = min(MAX_BACKOFF_S, 0.5 * 2.0**attempt) * (0.75 + 0.5 * random.random())
                attempt += 1
                if not self.ready:
                    self._reason = f"waiting for Kafka: {err}"
                log.warning(
                    "Kafka unavailable; retrying",
                    extra={"error": str(err), "retry_in_s": round(delay, 2)},
                )
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except TimeoutError:
                    continue

    async def _follow(self, follower: Follower, stopping: asyncio.Event) -> None:
        refreshed = -REFRESH_S
        while not stopping.is_set():
            if time.monotonic() - refreshed >= (REFRESH_S if self.ready else REFRESH_UNREADY_S):
                await follower.refresh()
                refreshed = time.monotonic()
                for topic, lag in follower.lag().items():
                    self.metrics.view_lag.labels(topic=topic).set(lag)
            try:
                records = await follower.read(READ_TIMEOUT_MS)
            except TransientError as err:  # keep the position: the client reconnects
                log.warning("Kafka read failed; retrying", extra={"error": str(err)})
                await asyncio.sleep(1.0)
                continue
            self.apply(records, live=self.ready)
            self._update_readiness(follower)
            # a long restore yields between batches so requests are answered meanwhile
            await asyncio.sleep(0)

    def _update_readiness(self, follower: Follower) -> None:
        if self.ready:
            return
        if follower.caught_up:
            self.ready = True
            self._reason = "ready: the view holds every topic up to its end offset at start"
            log.info("view caught up", extra={"keys": len(self.view), "alerts": len(self.alerts)})
        elif follower.missing_topics:
            self._reason = f"waiting for topics {follower.missing_topics} to exist"
        else:
            self._reason = f"restoring the view: {follower.behind()} records to read"

    def _warn(self, record: Consumed, err: Exception) -> None:
        """Log a record that does not decode (or failed to apply: with its traceback), at
        most every :data:`REJECT_LOG_S` per topic (a producer writing garbage must not
        flood the log; the metric counts them all)."""
        now = time.monotonic()
        last, quiet = self._warned.get(record.topic, (-REJECT_LOG_S, 0))
        if now - last < REJECT_LOG_S:
            self._warned[record.topic] = (last, quiet + 1)
            return
        self._warned[record.topic] = (now, 0)
        extra = {
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "error": str(err), "skipped_unlogged": quiet,
        }  # fmt: skip
        if isinstance(err, RecordError):
            log.warning("skipped a record that does not decode", extra=extra)
        else:
            log.error("skipped a record that failed to apply", extra=extra, exc_info=err)

    def apply(self, records: Sequence[Consumed], *, live: bool) -> None:
        """Apply records to the view and the alert log; publish them to the event streams
        of their keys when ``live`` (not while restoring history)."""
        view, metrics = self.view, self.metrics
        applied: dict[str, int] = {}
        rejected: dict[str, int] = {}
        evicted = view.evicted
        for record in records:
            topic = record.topic
            try:
                if topic == self.forecasts_topic and record.value is None and record.key:
                    # a tombstone (compacted forecasts topic): the key is gone
                    view.remove(record.key.decode("utf-8", "replace"))
                elif topic == self.forecasts_topic:
                    fc = self._forecast(record)
                    if fc is None:  # a row of a forecast whose other rows are to come
                        applied[topic] = applied.get(topic, 0) + 1
                        continue
                    view.put(
                        fc,
                        published_ms=record.timestamp,
                        partition=record.partition,
                        offset=record.offset,
                    )
                    if live and self.hub.wants(fc.key):
                        doc = forecast_document(fc, published_ms=record.timestamp)
                        event_id = f"{record.partition}-{record.offset}"
                        self.hub.publish(fc.key, sse_frame("forecast", orjson.dumps(doc), event_id))
                elif topic == self.alerts_topic:
                    alert = decode_alert(record.value, record.key)
                    self.alerts.add(alert)
                    if live and self.hub.wants(alert.key):
                        data = orjson.dumps(alert_document(alert))
                        self.hub.publish(alert.key, sse_frame("alert", data))
                else:
                    continue
            # RecordError, or a bug: never fatal (module docstring)
            except Exception as err:  # noqa: BLE001
                rejected[topic] = rejected.get(topic, 0) + 1
                self._warn(record, err)
                continue
            applied[topic] = applied.get(topic, 0) + 1
        for topic, n in applied.items():
            metrics.records.labels(topic=topic, result="applied").inc(n)
        for topic, n in rejected.items():
            metrics.records.labels(topic=topic, result="rejected").inc(n)
        metrics.evictions.inc(view.evicted - evicted)
        metrics.view_keys.set(len(view))
        metrics.view_bytes.set(view.payload_bytes)
        metrics.alerts.set(len(self.alerts))
