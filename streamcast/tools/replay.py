"""``streamcast replay``: produce a CSV/Parquet dataset as ticks through a real producer.

Rows are sent in event-time order (stable within equal timestamps), one JSON tick each in
the service's input format — ``{"key": ..., "ts": ..., "value": ..., extras...}`` with the
configured field names — and the series key as the Kafka message key, with the headers
of every record streamcast writes (``content-type: application/json``,
``streamcast.schema: tick/1``: :data:`~streamcast.core.schemas.TICK_HEADERS`). Timestamps keep
their original form: datetimes become ISO-8601 UTC strings, epoch numbers stay numbers.

Pacing: ``speed`` replays event time ``speed`` times faster than real time; ``rate`` sends
a fixed number of messages per second; neither sends as fast as the broker accepts. Both,
and ``limit``, must be positive (and finite): 0, negative or NaN mean nothing sensible.

A file that cannot be read (empty, not UTF-8 CSV, no data rows, a timestamp that does not
parse) is a :class:`~streamcast.errors.ConfigurationError` naming the file, the column
and the row: one line, never pandas' traceback.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
from rich.progress import Progress

from streamcast.config import ClientSettings
from streamcast.core.schemas import TICK_HEADERS
from streamcast.errors import ConfigurationError
from streamcast.kafka.topic_io import TopicWriter
from streamcast.kafka.topics import require_topic
from streamcast.tools.formats import PARQUET_SUFFIXES, require_parquet

#: the most messages sent (and acknowledged) at once when several are due
CHUNK = 500


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how fast."""

    data: Path
    key_col: str
    time_col: str
    value_col: str
    topic: str
    features: tuple[str, ...] = ()
    speed: float | None = None
    rate: float | None = None
    limit: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name, pace in (("speed", self.speed), ("rate", self.rate)):
            if pace is not None and not (math.isfinite(pace) and pace > 0):
                raise ValueError(f"{name} must be a positive, finite number (got {pace})")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (got {self.limit})")


def read_table(path: Path) -> pd.DataFrame:
    """Load a CSV or Parquet file (chosen by suffix); every way reading it can fail is a
    one-line :class:`ConfigurationError` naming the file."""
    if not path.is_file():
        raise ConfigurationError(f"--data: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        require_parquet("--data", path)
        kind = "Parquet"
    elif suffix in (".csv", ".gz", ".txt"):
        kind = "CSV"
    else:
        raise ConfigurationError(f"--data: {path.name} is neither .csv nor .parquet")
    try:
        frame = pd.read_parquet(path) if kind == "Parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigurationError(
            f"--data {path}: the file is empty; it needs a header line and data rows"
        ) from None
    except (OSError, ValueError) as exc:  # pandas' and pyarrow's parse errors are ValueErrors
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigurationError(
            f"--data {path}: cannot read the file as {kind} ({reason}); check that it is a "
            f"valid {'UTF-8 ' if kind == 'CSV' else ''}{kind} file"
        ) from None
    if frame.empty:
        raise ConfigurationError(
            f"--data {path}: no data rows (columns {list(frame.columns)}); nothing to replay"
        )
    return frame


@dataclass(frozen=True)
class TickRows:
    """Encoded ticks in send order with their event times (epoch seconds, for pacing)."""

    keys: list[bytes]
    values: list[bytes]
    event_s: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def encode_ticks(frame: pd.DataFrame, options: ReplayOptions, settings: ClientSettings) -> TickRows:
    """Sort by event time and encode each row as a tick (names from ``settings.fields``)."""
    columns = [options.key_col, options.time_col, options.value_col, *options.features]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"--data: columns {missing} not found; the file has {list(frame.columns)}"
        )
    table = frame[columns].dropna(subset=[options.key_col, options.time_col])
    if table.empty and not frame.empty:
        raise ConfigurationError(
            f"--data {options.data}: no row has both a key ({options.key_col!r}) and a time "
            f"({options.time_col!r}); nothing to replay"
        )
    raw_time = table[options.time_col]
    if pd.api.types.is_numeric_dtype(raw_time):
        epoch = raw_time.astype("float64").to_numpy()
        infinite = ~np.isfinite(epoch)
        if infinite.any():
            i = int(np.argmax(infinite))
            raise _bad_time(
                options, raw_time, i, f"timestamp {raw_time.iloc[i]} in", "is not finite"
            )
        # Epoch numbers in ms/us are common; pacing only needs relative seconds.
        scale = 1.0 if np.nanmax(np.abs(epoch), initial=0) < 1e11 else 1e-3
        event_s = epoch * scale
        shown: list[object] = raw_time.tolist()
    else:
        parsed = pd.to_datetime(raw_time, utc=True, format="mixed", errors="coerce")
        unparsed = parsed.isna().to_numpy()
        if unparsed.any():
            i = int(np.argmax(unparsed))
            raise _bad_time(options, raw_time, i, f"cannot parse timestamp {raw_time.iloc[i]!r} in")
        # in seconds whatever the resolution pandas parsed at (pandas 3: microseconds)
        event_s = ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()
        shown = list(parsed.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(".000000Z", "Z"))
    order = np.argsort(event_s, kind="stable")
    if options.limit is not None:
        order = order[: options.limit]
    fields = settings.fields
    extra_names = [fields.extras.get(name, name) for name in options.features]
    keys = table[options.key_col].astype(str).tolist()
    values = table[options.value_col].tolist()
    extras = [table[c].tolist() for c in options.features]
    out_keys: list[bytes] = []
    out_values: list[bytes] = []
    for i in order.tolist():
        doc: dict[str, object] = {fields.key: keys[i], fields.ts: shown[i], fields.value: values[i]}
        for name, column in zip(extra_names, extras, strict=True):
            doc[name] = column[i]
        out_keys.append(keys[i].encode())
        out_values.append(orjson.dumps(doc))
    return TickRows(out_keys, out_values, np.asarray(event_s)[order])


def _bad_time(
    options: ReplayOptions, raw_time: pd.Series, i: int, what: str, why: str = ""
) -> ConfigurationError:
    """The error for the ``i``-th timestamp: the file, the column and the row (and the
    CSV line: the header is line 1)."""
    label = raw_time.index[i]
    where = f"row {label!r}"
    if isinstance(label, int | np.integer):
        where = f"row {label + 1}"
        if options.data.suffix.lower() not in PARQUET_SUFFIXES:
            where += f" (line {label + 2})"
    return ConfigurationError(
        f"--data {options.data}: {what} column {options.time_col!r} at {where}"
        f"{' ' + why if why else ''}; use ISO-8601 times (e.g. 2026-01-01T00:00:00Z) or "
        "finite epoch seconds/milliseconds"
    )


def due_times(rows: TickRows, options: ReplayOptions) -> npt.NDArray[np.float64]:
    """When (seconds after the start) each message may be sent: ``i / rate``, or its event
    time's offset from the first divided by ``speed``, or at once (flat out)."""
    n = len(rows)
    if options.rate:
        return np.arange(n, dtype=np.float64) / options.rate
    if options.speed:
        return np.asarray((rows.event_s - rows.event_s[0]) / options.speed, dtype=np.float64)
    return np.zeros(n, dtype=np.float64)


def next_chunk(due: npt.NDArray[np.float64], first: int, elapsed_s: float) -> int:
    """The end of the next chunk to send from ``first``: every message due by
    ``elapsed_s``, at most :data:`CHUNK`; ``first`` itself when none is due yet."""
    ready = int(np.searchsorted(due, elapsed_s, side="right"))
    return min(max(ready, first), first + CHUNK)


async def replay(settings: ClientSettings, options: ReplayOptions) -> int:
    """Produce the dataset; returns the number of ticks acknowledged by the broker.

    Every message is paced on its own due time (``due_times``): a slow rate sends them
    one by one, a fast one in chunks of what is due, never more than :data:`CHUNK`.
    """
    rows = encode_ticks(read_table(options.data), options, settings)
    await require_topic(settings, options.topic)
    due = due_times(rows, options)
    sent = 0
    async with TopicWriter(settings) as writer:
        with Progress(disable=not options.progress, transient=True) as progress:
            task = progress.add_task(f"replay -> {options.topic}", total=len(rows))
            began = time.monotonic()
            while sent < len(rows):
                stop = next_chunk(due, sent, time.monotonic() - began)
                if stop == sent:
                    await asyncio.sleep(max(0.0, began + due[sent] - time.monotonic()))
                    continue
                await writer.send(
                    options.topic, rows.keys[sent:stop], rows.values[sent:stop], TICK_HEADERS
                )
                sent = stop
                progress.update(task, completed=sent)
        await writer.flush()
    return sent
