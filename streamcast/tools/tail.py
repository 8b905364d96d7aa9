"""``streamcast tail``: a live, readable view of the forecasts, alerts or dead-letter topic.

One line per message. Forecasts (read with the one forecast reader,
:func:`~streamcast.core.records.decode_forecast`) show key, origin, model and the first few values;
dead letters show the reason and source coordinates from their headers; anything else is
shown as its JSON. Reads ``read_committed`` without joining a consumer group (it never
commits, so it cannot disturb anyone's offsets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.markup import escape

from streamcast.config import ClientSettings
from streamcast.core.records import decode_forecast, iso_utc
from streamcast.errors import RecordError
from streamcast.kafka.topic_io import TopicReader
from streamcast.kafka.topics import require_topic

#: forecast values shown per line
SHOWN_VALUES = 4


@dataclass(frozen=True)
class TailOptions:
    """What to show."""

    topic: str
    from_beginning: bool = False
    limit: int | None = None
    raw_json: bool = False
    idle_timeout_s: float | None = None


def describe(value: bytes | None, headers: dict[str, bytes]) -> str:
    """One readable line (rich markup) for a message."""
    if "streamcast.reason" in headers:
        h = {k: v.decode("utf-8", "replace") for k, v in headers.items()}
        src = (
            f"{h.get('streamcast.source.topic')}[{h.get('streamcast.source.partition')}]"
            f"@{h.get('streamcast.source.offset')}"
        )
        body = (value or b"")[:60].decode("utf-8", "replace")
        return (
            f"[red]{escape(h['streamcast.reason']):<16}[/] {escape(src):<28} "
            f"{escape(h.get('streamcast.detail', ''))[:60]}  [dim]{escape(body)!r}[/]"
        )
    try:
        fc = decode_forecast(value)
    except RecordError:
        pass
    else:
        shown = ", ".join(f"{v:.4g}" for v in fc.values[:SHOWN_VALUES].tolist())
        more = " …" if fc.horizon > SHOWN_VALUES else ""
        origin = str(iso_utc(np.array([fc.origin_ts]))[0])
        return (
            f"[bold]{escape(fc.key):<20}[/] {origin:<21} "
            f"[dim]{escape(fc.model)}@{escape(fc.model_version)} h={fc.horizon}[/]  "
            f"[cyan]{shown}{more}[/]"
        )
    try:
        doc: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return escape(repr(value)[:120])
    return escape(orjson.dumps(doc).decode()[:160])


async def tail(settings: ClientSettings, options: TailOptions) -> int:
    """Print messages until ``limit``, ``idle_timeout_s`` or Ctrl-C; returns how many."""
    await require_topic(settings, options.topic)
    console = Console(highlight=False, soft_wrap=True)
    shown = 0
    last = time.monotonic()
    async with TopicReader(
        settings, options.topic, from_beginning=options.from_beginning
    ) as reader:
        while options.limit is None or shown < options.limit:
            messages = await reader.read(timeout_ms=500)
            if not messages:
                if options.idle_timeout_s and time.monotonic() - last > options.idle_timeout_s:
                    break
                continue
            last = time.monotonic()
            for message in messages:
                if options.limit is not None and shown >= options.limit:
                    break
                if options.raw_json:
                    print((message.value or b"").decode("utf-8", "replace"), flush=True)
                else:
                    console.print(describe(message.value, dict(message.headers or ())))
                shown += 1
    return shown
