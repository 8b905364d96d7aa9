"""Instants and intervals as people write them: ISO-8601 UTC strings, ``1h`` / ``30min``.

Used wherever a time goes into or out of text: flags and config files (``--interval 1h``),
error messages and the preparation report (``2015-01-01T13:00:00Z``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from streamcast.core.grid import Grid
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


_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes", "T"), 60),
    **dict.fromkeys(("h", "H", "hr", "hour", "hours"), 3_600),
    **dict.fromkeys(("d", "D", "day", "days"), 86_400),
    **dict.fromkeys(("w", "W", "week", "weeks"), 604_800),
}
#: calendar units, in months; ``M`` (capital) is a month, ``m`` a minute, as in pandas
_UNIT_MONTHS = {
    **dict.fromkeys(("M", "MS", "mo", "mon", "month", "months"), 1),
    **dict.fromkeys(("Q", "QS", "q", "quarter", "quarters"), 3),
    **dict.fromkeys(("Y", "YS", "y", "year", "years"), 12),
}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
INTERVAL_HELP = (
    "e.g. 5min, 1h, 1d, 15s or seconds; calendar months 1M (also 1mo, 1month) and quarters "
    "1Q (3M); minutes are m or min"
)


def parse_months(interval: str | int | pd.Timedelta) -> int | None:
    """Months per interval when ``interval`` names calendar months (``1M``, ``1mo``,
    ``3M``, ``1Q``, ``1quarter``), else None."""
    if not isinstance(interval, str):
        return None
    match = _INTERVAL.match(interval)
    if match is None or match.group(2) not in _UNIT_MONTHS:
        return None
    months = int(match.group(1)) * _UNIT_MONTHS[match.group(2)]
    if months <= 0 or 12 % months:
        raise ConfigError(f"interval {interval!r}: months per interval must divide 12")
    return months


def parse_interval(interval: str | int | pd.Timedelta) -> int:
    """Interval in whole seconds from ``"1h"``, ``"30min"``, ``"5m"``, ``"1d"``, ``"15s"``,
    ``"3600"`` (seconds), an int of seconds, or anything :class:`pandas.Timedelta` reads.

    Calendar months are not a number of seconds: ``1M`` raises (use :func:`parse_grid`).
    """
    if parse_months(interval) is not None:
        raise ConfigError(f"interval {interval!r} is calendar months, not a fixed length")
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = float(interval)
    elif isinstance(interval, pd.Timedelta):
        seconds = interval.total_seconds()
    else:
        match = _INTERVAL.match(str(interval))
        unit = match.group(2) if match else None
        if match and (unit == "" or unit in _UNIT_SECONDS or str(unit).lower() in _UNIT_SECONDS):
            size = _UNIT_SECONDS.get(str(unit), _UNIT_SECONDS.get(str(unit).lower(), 1))
            seconds = float(int(match.group(1)) * size) if unit else float(match.group(1))
        else:
            try:
                seconds = pd.Timedelta(str(interval)).total_seconds()
            except (ValueError, TypeError):
                raise ConfigError(f"cannot read interval {interval!r}; {INTERVAL_HELP}") from None
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"interval {interval!r} must be a positive whole number of seconds")
    return int(seconds)


def parse_grid(
    interval: str | int,
    *,
    timezone: str = "UTC",
    trading_days: bool = False,
    holidays: tuple[str, ...] = (),
) -> Grid:
    """The grid an interval names: calendar months (``1M``, ``3M``, ``1Q``) in
    ``timezone``, trading days (``trading_days``: ``1d`` only), or a fixed interval."""
    months = parse_months(interval)
    if months is not None:
        if trading_days:
            raise ConfigError("trading days are daily intervals: use --interval 1d with them")
        return Grid.calendar_months(months, timezone)
    seconds = parse_interval(interval)
    if trading_days:
        if seconds != 86_400:
            raise ConfigError(f"trading days are daily intervals, not {format_interval(seconds)}")
        return Grid.trading_days(timezone, holidays)
    return Grid.fixed(seconds)


def format_interval(seconds: int) -> str:
    """The shortest exact spelling of an interval: ``3600 -> "1h"``, ``1800 -> "30min"``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
