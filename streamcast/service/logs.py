"""Structured logging: JSON lines (orjson) for machines, readable text lines for people.

Context goes in ``extra``: ``log.info("batch produced", extra={"forecasts": 12})``
becomes ``{"ts": ..., "level": "info", "logger": ..., "msg": "batch produced",
"forecasts": 12}`` in JSON mode and ``batch produced  forecasts=12`` (after the time and
level) in text mode. ``auto``, the default, is text when stderr is a terminal and JSON
otherwise (a container, a pipe, a file): people at a terminal read sentences, log
collectors parse objects.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson
from rich.console import Console
from rich.logging import RichHandler

from streamcast.config import LogFormat, LogLevel
from streamcast.core.artifact import ModelMeta
from streamcast.core.records import iso_duration

# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def record_context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields attached to a log record."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, UTC timestamps, context fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record`` with orjson (non-JSON values fall back to ``str``)."""
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(record_context(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class ConsoleContextFormatter(logging.Formatter):
    """Message followed by ``key=value`` context pairs (the rich handler adds time/level)."""

    def format(self, record: logging.LogRecord) -> str:
        """The message and its context on one line."""
        pairs = " ".join(f"{k}={v}" for k, v in record_context(record).items())
        text = record.getMessage() + (f"  {pairs}" if pairs else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class RepeatFilter(logging.Filter):
    """Let the same message template through at most once per ``interval_s``.

    aiokafka logs every reconnect attempt while a broker is away (several a second); an
    operator needs the first line and a count, not a flood. The next line that gets
    through carries ``repeated``: how many identical lines were dropped in between.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True when the record should be emitted."""
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.repeated = last[1]
        if len(self._seen) > 1000:  # bounded whatever the messages
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """The format ``fmt`` means on ``stream``: ``auto`` is text on a terminal, else JSON.

    >>> import io
    >>> resolve_format("auto", io.StringIO()), resolve_format("console", io.StringIO())
    ('json', 'text')
    """
    if fmt == "auto":
        return "text" if stream.isatty() else "json"
    return "json" if fmt == "json" else "text"


def configure_logging(
    fmt: LogFormat = "auto", level: LogLevel = "INFO", stream: TextIO | None = None
) -> None:
    """Route the root logger to ``stream`` (stderr) in ``fmt``; quiets aiokafka's chatty
    INFO logs."""
    stream = stream or sys.stderr
    handler: logging.Handler
    if resolve_format(fmt, stream) == "text":
        handler = RichHandler(
            console=Console(file=stream), show_path=False, rich_tracebacks=False, markup=False
        )
        handler.setFormatter(ConsoleContextFormatter())
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Filters on a logger do not apply to its children: put them on the handler, scoped.
    handler.addFilter(TransientClientNoise())
    handler.addFilter(_ScopedRepeatFilter("aiokafka"))


def log_model(logger: logging.Logger, meta: ModelMeta, event: str = "loaded") -> None:
    """The one line that says which model serves: ``model loaded: name, version, window,
    horizon, interval`` (at start; ``model swapped in`` after a hot swap)."""
    interval = iso_duration(meta.interval_s)
    logger.info(
        f"model {event}: {meta.name}, version {meta.version}, window {meta.window}, "
        f"horizon {meta.horizon}, interval {interval}",
        extra={
            "model": meta.name,
            "model_version": meta.version,
            "window": meta.window,
            "horizon": meta.horizon,
            "interval": interval,
            "levels": list(meta.calibration.levels),
        },
    )


class TransientClientNoise(logging.Filter):
    """aiokafka logs conditions it retries by itself at ERROR level: the group coordinator
    not being available on a fresh cluster, a topic not in the metadata yet, a leader
    moving. An operator must not be paged for them; they become WARNING lines (the
    service's own metrics and readiness say when they persist)."""

    #: substrings of aiokafka messages that describe a condition aiokafka retries
    TRANSIENT = (
        "GroupCoordinatorNotAvailableError",
        "NotCoordinatorForGroupError",
        "not found in cluster metadata",
        "NotLeaderForPartitionError",
        "LeaderNotAvailableError",
        "UnknownTopicOrPartitionError",
        "CoordinatorLoadInProgress",
        "GroupLoadInProgressError",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        """Downgrade a known-transient aiokafka ERROR to WARNING; never drops a record."""
        if record.levelno >= logging.ERROR and record.name.startswith("aiokafka"):
            text = record.getMessage()
            if any(marker in text for marker in self.TRANSIENT):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _ScopedRepeatFilter(RepeatFilter):
    """A :class:`RepeatFilter` for one logger tree; other records pass untouched."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        """Rate-limit records of the ``prefix`` logger tree only."""
        if record.name != self._prefix and not record.name.startswith(self._prefix + "."):
            return True
        return super().filter(record)
