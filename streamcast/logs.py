"""Structured logging: JSON lines (orjson) for machines, a rich console view for people.

Context goes in ``extra``: ``log.info("batch produced", extra={"forecasts": 12})``
becomes ``{"ts": ..., "level": "info", "logger": ..., "msg": "batch produced",
"forecasts": 12}`` in JSON mode and ``batch produced forecasts=12`` on the console.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.logging import RichHandler

from streamcast.config import LogFormat, LogLevel

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


def configure_logging(fmt: LogFormat = "json", level: LogLevel = "INFO") -> None:
    """Route the root logger to stderr in ``fmt``; quiets aiokafka's chatty INFO logs."""
    handler: logging.Handler
    if fmt == "console":
        handler = RichHandler(
            console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False
        )
        handler.setFormatter(ConsoleContextFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
