"""Instants and intervals as people write them: ISO-8601 UTC strings, ``1h`` / ``30min``.

Used wherever a time goes into or out of text: flags and config files (``--interval 1h``),
error messages and the preparation report (``2015-01-01T13:00:00Z``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from training.errors import ConfigError


def iso(ts_s: int | np.integer) -> str:
    """Epoch seconds as an ISO-8601 UTC string, e.g. ``2015-01-01T13:00:00Z``."""
    return f"{np.datetime64(int(ts_s), 's')}Z"


def parse_instant(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (``2026-11-01T00:00:00Z``, ``2026-11-01``,
    ``2026-11-01T10:00+10:00``); a time without a zone is UTC, as in the data files."""
    try:
        when = pd.Timestamp(text)
    except ValueError:
        when = None
    if when is None or pd.isna(when):
        raise ConfigError(f"cannot read time {text!r}; use ISO-8601, e.g. 2026-11-01T00:00:00Z")
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return int(when.value // 1_000_000)  # .value: epoch nanoseconds, whatever the unit


def iso_ms(ts_ms: int | np.integer) -> str:
    """Epoch milliseconds as ISO-8601 UTC, with milliseconds only when there are any."""
    ms = int(ts_ms)
    return iso(ms // 1000) if ms % 1000 == 0 else f"{np.datetime64(ms, 'ms')}Z"


_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3_600, "hr": 3_600, "d": 86_400}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def parse_interval(interval: str | int | pd.Timedelta) -> int:
    """Interval in whole seconds from ``"1h"``, ``"30min"``, ``"1d"``, ``"15s"``, ``"3600"``
    (seconds), an int of seconds, or anything :class:`pandas.Timedelta` reads.
    """
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = float(interval)
    elif isinstance(interval, pd.Timedelta):
        seconds = interval.total_seconds()
    else:
        match = _INTERVAL.match(str(interval).lower())
        if match and match.group(2) in ("", *_UNIT_SECONDS):
            seconds = float(int(match.group(1)) * _UNIT_SECONDS.get(match.group(2), 1))
        else:
            try:
                seconds = pd.Timedelta(str(interval)).total_seconds()
            except (ValueError, TypeError):
                raise ConfigError(
                    f"cannot read interval {interval!r}; use e.g. 1h, 30min, 1d, 15s or seconds"
                ) from None
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"interval {interval!r} must be a positive whole number of seconds")
    return int(seconds)


def format_interval(seconds: int) -> str:
    """The shortest exact spelling of an interval: ``3600 -> "1h"``, ``1800 -> "30min"``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
