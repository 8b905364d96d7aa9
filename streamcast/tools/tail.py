"""``streamcast tail``: the forecasts (and alerts) topics as a live view, or as lines.

- **Live view** (the forecasts topic on a terminal): the latest forecast of each key with
  its next values, target times and interval band, the horizon as a sparkline and its
  end, the newest alerts from the alerts topic and the throughput, redrawn a few times a
  second to fit the terminal (:mod:`streamcast.tools.tail_view`).
- **Lines** (``--plain``, or whenever stdout is not a terminal, and for any other topic):
  one plain line per message, no colour: forecasts as key, origin, steps with their
  targets and bands; alerts; dead letters with the reason and source coordinates from
  their headers; anything else as its JSON. ``--json`` prints the raw values.

Forecasts are read with the one forecast reader
(:func:`~streamcast.core.records.decode_forecast`), alerts with
:func:`~streamcast.core.alerts.decode_alert`. Topics are read ``read_committed`` without
joining a consumer group (nothing is committed, so nobody's offsets are disturbed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any, TypeVar

import orjson
from rich.console import Console
from rich.live import Live

from streamcast.config import ClientSettings
from streamcast.core.alerts import Alert, decode_alert
from streamcast.core.records import Forecast, decode_forecast
from streamcast.errors import RecordError, TopicError
from streamcast.kafka.topic_io import TopicReader
from streamcast.kafka.topics import require_topic
from streamcast.kafka.wire import Consumed
from streamcast.tools.tail_view import Board, Frame, plain_alert, plain_forecast, render

#: redraws of the live view per second
REFRESH_PER_S = 4
#: how long one read waits for messages
READ_TIMEOUT_MS = 250


@dataclass(frozen=True)
class TailOptions:
    """What to show and for how long."""

    topic: str
    from_beginning: bool = False
    limit: int | None = None
    raw_json: bool = False
    idle_timeout_s: float | None = None
    #: the live view (None: when stdout is a terminal and ``topic`` is the forecasts topic)
    live: bool | None = None
    #: the alerts topic the live view shows beside the forecasts (None: no alerts)
    alerts_topic: str | None = None
    zone: tzinfo = UTC
    #: the band level shown (None: the widest the model publishes)
    level: float | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (got {self.limit})")
        idle = self.idle_timeout_s
        if idle is not None and not (math.isfinite(idle) and idle > 0):
            raise ValueError(f"idle_timeout_s must be a positive, finite number (got {idle})")


def describe(
    value: bytes | None, headers: dict[str, bytes], zone: tzinfo = UTC, level: float | None = None
) -> str:
    """One plain line for a message of any of streamcast's topics."""
    if "streamcast.reason" in headers:
        h = {k: v.decode("utf-8", "replace") for k, v in headers.items()}
        src = (
            f"{h.get('streamcast.source.topic')}[{h.get('streamcast.source.partition')}]"
            f"@{h.get('streamcast.source.offset')}"
        )
        body = (value or b"")[:60].decode("utf-8", "replace")
        detail = h.get("streamcast.detail", "")[:60]
        return f"{h['streamcast.reason']:<16} {src:<28} {detail}  {body!r}"
    with contextlib.suppress(RecordError):
        return plain_forecast(decode_forecast(value), zone, level)
    with contextlib.suppress(RecordError):
        return plain_alert(decode_alert(value))
    try:
        doc: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return repr(value)[:120]
    return orjson.dumps(doc).decode()[:160]


async def tail(settings: ClientSettings, options: TailOptions) -> int:
    """Show messages until ``limit``, ``idle_timeout_s`` or Ctrl-C; returns how many."""
    await require_topic(settings, options.topic)
    live = options.live
    if live is None:
        live = sys.stdout.isatty() and not options.raw_json
    if live and not options.raw_json:
        return await _live(settings, options)
    return await _lines(settings, options)


class _Stop:
    """When to stop: after ``limit`` messages or ``idle_timeout_s`` without any."""

    def __init__(self, options: TailOptions, clock: Callable[[], float] = time.monotonic):
        self.limit, self.idle_s, self._clock = options.limit, options.idle_timeout_s, clock
        self.seen = 0
        self._last = clock()

    def room(self) -> int | None:
        """Messages still to show (None: no limit)."""
        return None if self.limit is None else max(0, self.limit - self.seen)

    def saw(self, n: int) -> None:
        self.seen += n
        if n:
            self._last = self._clock()

    def done(self) -> bool:
        if self.limit is not None and self.seen >= self.limit:
            return True
        return self.idle_s is not None and self._clock() - self._last > self.idle_s


async def _lines(settings: ClientSettings, options: TailOptions) -> int:
    stop = _Stop(options)
    async with TopicReader(
        settings, options.topic, from_beginning=options.from_beginning
    ) as reader:
        while not stop.done():
            messages = (await reader.read(timeout_ms=500))[: stop.room()]
            for message in messages:
                if options.raw_json:
                    print((message.value or b"").decode("utf-8", "replace"), flush=True)
                else:
                    headers = dict(message.headers or ())
                    print(describe(message.value, headers, options.zone, options.level), flush=True)
            stop.saw(len(messages))
    return stop.seen


async def _live(settings: ClientSettings, options: TailOptions) -> int:
    """The live view: one task per topic feeds the board, the loop here redraws it."""
    alerts_topic = options.alerts_topic
    if alerts_topic is not None:
        try:
            await require_topic(settings, alerts_topic)
        except TopicError:
            alerts_topic = None  # no alerts topic yet: the forecasts alone
    board = Board()
    stop = _Stop(options)
    console = Console(highlight=False)

    def frame() -> Frame:
        return Frame(
            width=console.width,
            height=console.height,
            forecasts_topic=options.topic,
            alerts_topic=alerts_topic,
            bootstrap=settings.bootstrap_servers,
            zone=options.zone,
            level=options.level,
        )

    async def follow_forecasts() -> None:
        async with TopicReader(
            settings, options.topic, from_beginning=options.from_beginning
        ) as reader:
            while not stop.done():
                messages = (await reader.read(timeout_ms=READ_TIMEOUT_MS))[: stop.room()]
                forecasts = _decoded(messages, decode_forecast)
                board.add_forecasts(forecasts)
                board.unreadable += len(messages) - len(forecasts)
                stop.saw(len(messages))

    async def follow_alerts(topic: str) -> None:
        async with TopicReader(settings, topic, from_beginning=options.from_beginning) as reader:
            while True:
                messages = await reader.read(timeout_ms=READ_TIMEOUT_MS)
                board.add_alerts(_decoded(messages, decode_alert))

    with Live(render(board, frame()), console=console, auto_refresh=False) as view:
        async with asyncio.TaskGroup() as tasks:
            forecasts = tasks.create_task(follow_forecasts())
            alerts = tasks.create_task(follow_alerts(alerts_topic)) if alerts_topic else None
            while not forecasts.done():
                view.update(render(board, frame()), refresh=True)
                await asyncio.wait({forecasts}, timeout=1 / REFRESH_PER_S)
            if alerts is not None:
                alerts.cancel()
        view.update(render(board, frame()), refresh=True)
    return stop.seen


Decoded = TypeVar("Decoded", Forecast, Alert)


def _decoded(
    messages: list[Consumed], decode: Callable[[bytes | None, bytes | None], Decoded]
) -> list[Decoded]:
    """The messages ``decode`` reads; others (another schema, garbage) are skipped."""
    out: list[Decoded] = []
    for message in messages:
        with contextlib.suppress(RecordError):
            out.append(decode(message.value, message.key))
    return out
