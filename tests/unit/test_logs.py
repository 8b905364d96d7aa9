"""Structured logs: JSON lines with context fields; repeated client errors rate-limited."""

from __future__ import annotations

import logging

import orjson

from streamcast.service.logs import JsonFormatter, RepeatFilter, TransientClientNoise


def _record(msg: str, name: str = "aiokafka", **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": name, "msg": msg, "levelname": "ERROR"})
    record.__dict__.update(extra)
    return record


def test_json_line_carries_message_level_and_context() -> None:
    line = JsonFormatter().format(_record("batch produced", name="streamcast", forecasts=12))
    doc = orjson.loads(line)
    assert doc["msg"] == "batch produced"
    assert doc["level"] == "error"
    assert doc["logger"] == "streamcast"
    assert doc["forecasts"] == 12
    assert doc["ts"].endswith("+00:00")


def test_repeats_are_dropped_then_counted() -> None:
    now = [0.0]
    flt = RepeatFilter(interval_s=10, clock=lambda: now[0])
    assert flt.filter(_record("Unable connect to node %s"))
    passed = [flt.filter(_record("Unable connect to node %s")) for _ in range(50)]
    assert not any(passed)
    assert flt.filter(_record("another message"))
    now[0] = 11.0
    again = _record("Unable connect to node %s")
    assert flt.filter(again)
    assert again.__dict__["repeated"] == 50


def test_transient_client_errors_are_warnings_not_pages() -> None:
    """A fresh cluster makes aiokafka log 'GroupCoordinatorNotAvailableError' at ERROR on
    every start although it retries by itself."""
    noise = TransientClientNoise()
    fresh = logging.makeLogRecord(
        {
            "name": "aiokafka.consumer.group_coordinator",
            "msg": "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
        }
    )
    assert noise.filter(fresh) and fresh.levelname == "WARNING"
    real = logging.makeLogRecord(
        {"name": "aiokafka", "msg": "Unexpected error", "levelno": logging.ERROR}
    )
    ours = logging.makeLogRecord(
        {"name": "streamcast", "msg": "NotLeaderForPartitionError", "levelno": logging.ERROR}
    )
    assert noise.filter(real) and real.levelno == logging.ERROR
    assert noise.filter(ours) and ours.levelno == logging.ERROR
