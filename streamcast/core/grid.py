"""The interval grid: which interval a timestamp falls in, and where an interval starts.

Training's regularisation, the offline evaluator and the service's event-time aggregation
all ask the same two questions, and this module is the one answer, vectorised:

* :meth:`Grid.index` -- the number of the interval each epoch-second timestamp falls in
  (consecutive intervals have consecutive numbers: gaps are differences of numbers);
* :meth:`Grid.start` -- the epoch second an interval begins at.

Three kinds of grid:

``fixed``        ``seconds``-long intervals aligned to the epoch (``start = ts - ts mod s``):
                 1 min, 5 min, 1 h, 1 d (UTC days), ...
``months``       calendar months (``months=1``) or quarters (``months=3``) in ``timezone``:
                 an interval starts at local midnight on the 1st of its month; months of
                 28 to 31 days are one interval each
``trading days`` one interval per day of ``weekmask`` (Monday to Friday) in ``timezone``
                 that is not a listed holiday: weekends and holidays are not intervals, so
                 they are neither gaps nor imputed rows. A timestamp on a closed day
                 belongs to the last trading day before it (a price published on a
                 Saturday is Friday's session's)

>>> Grid.fixed(3600).start(Grid.fixed(3600).index(np.array([7199, 7200]))).tolist()
[3600, 7200]
>>> month = Grid.calendar_months(1)
>>> month.start(month.index(np.array([951782400]))).tolist()  # 2000-02-29 -> 2000-02-01
[949363200]
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

IntArray = npt.NDArray[np.int64]
GridKind = Literal["fixed", "months", "trading_days"]

DAY_S = 86_400
#: a mean Gregorian month and a quarter of a year (nominal lengths, for display only)
MONTH_S = 2_629_746
#: the business-day week: Monday to Friday
WEEKDAYS = "1111100"


@dataclass(frozen=True)
class Grid:
    """An interval grid (module docstring). Build with :meth:`fixed`,
    :meth:`calendar_months` or :meth:`trading_days`."""

    kind: GridKind = "fixed"
    #: fixed: the interval; months / trading days: the nominal length (display only)
    seconds: int = 3600
    #: months: months per interval (1 month, 3 quarter)
    months: int = 0
    #: where months and trading days begin (fixed grids are epoch aligned, zone-free)
    timezone: str = "UTC"
    #: trading days: ISO dates (``2024-12-25``) that are not trading days
    holidays: tuple[str, ...] = ()

    @classmethod
    def fixed(cls, seconds: int) -> Grid:
        """Intervals of ``seconds`` aligned to the epoch."""
        if seconds <= 0:
            raise ValueError(f"an interval must be a positive number of seconds, got {seconds}")
        return cls("fixed", int(seconds))

    @classmethod
    def calendar_months(cls, months: int, timezone: str = "UTC") -> Grid:
        """Calendar months (``months=1``) or quarters (``3``) starting in ``timezone``."""
        if months <= 0 or 12 % months:
            raise ValueError(
                f"months per interval must divide 12 (1, 2, 3, 4, 6, 12), got {months}"
            )
        return cls("months", MONTH_S * months, months, timezone)

    @classmethod
    def trading_days(cls, timezone: str = "UTC", holidays: tuple[str, ...] = ()) -> Grid:
        """Weekdays that are not ``holidays``, days starting at midnight in ``timezone``."""
        days = tuple(sorted({str(np.datetime64(h, "D")) for h in holidays}))
        return cls("trading_days", DAY_S, 0, timezone, days)

    @property
    def is_fixed(self) -> bool:
        """Intervals of one length aligned to the epoch (the arithmetic fast path)."""
        return self.kind == "fixed"

    # -- the two questions -----------------------------------------------------------

    def index(self, ts_s: IntArray | int) -> IntArray:
        """The number of the interval each timestamp (epoch seconds) falls in."""
        ts = np.asarray(ts_s, dtype=np.int64)
        if self.kind == "fixed":
            return np.asarray(np.floor_divide(ts, self.seconds), dtype=np.int64)
        days = np.floor_divide(local_seconds(ts, self.timezone), DAY_S)
        if self.kind == "months":
            month = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            return np.asarray(np.floor_divide(month, self.months), dtype=np.int64)
        # the last trading day on or before each day: trading days before the next one
        after = (days + 1).astype("datetime64[D]")
        count = np.busday_count(self._anchor(), after, weekmask=WEEKDAYS, holidays=self._holidays())
        return np.asarray(count, dtype=np.int64) - 1

    def start(self, index: IntArray | int) -> IntArray:
        """The epoch second interval ``index`` begins at."""
        idx = np.asarray(index, dtype=np.int64)
        if self.kind == "fixed":
            return np.asarray(idx * self.seconds, dtype=np.int64)
        if self.kind == "months":
            day = (idx * self.months).astype("datetime64[M]").astype("datetime64[D]")
        else:
            day = np.busday_offset(
                self._anchor(), idx, roll="forward", weekmask=WEEKDAYS, holidays=self._holidays()
            )
        local = day.astype(np.int64) * DAY_S
        return _from_local(np.asarray(local, dtype=np.int64), self.timezone)

    # -- derived ---------------------------------------------------------------------

    def floor(self, ts_s: IntArray | int) -> IntArray:
        """The start of the interval each timestamp falls in."""
        if self.kind == "fixed":
            ts = np.asarray(ts_s, dtype=np.int64)
            return np.asarray(ts - np.mod(ts, self.seconds), dtype=np.int64)
        return self.start(self.index(ts_s))

    def shift(self, start_s: IntArray | int, steps: IntArray | int) -> IntArray:
        """The start of the interval ``steps`` after the one starting at ``start_s``."""
        if self.kind == "fixed":
            return np.asarray(
                np.asarray(start_s, dtype=np.int64)
                + np.asarray(steps, dtype=np.int64) * self.seconds,
                dtype=np.int64,
            )
        return self.start(self.index(start_s) + np.asarray(steps, dtype=np.int64))

    def targets(self, origin_s: IntArray | int, horizon: int) -> IntArray:
        """``[..., H]`` starts of the intervals ``t+1 .. t+H`` after each origin."""
        origin = np.asarray(origin_s, dtype=np.int64)[..., None]
        return self.shift(origin, np.arange(1, horizon + 1, dtype=np.int64))

    def fingerprint(self) -> int:
        """A 32-bit identity of the grid (what state records carry: a key's intervals mean
        nothing on another grid)."""
        fields = (self.kind, self.seconds, self.months, self.timezone, self.holidays)
        return zlib.crc32(repr(fields).encode())

    def describe(self) -> str:
        """How people write it: ``1h``, ``1M``, ``3M``, ``1d trading days``."""
        if self.kind == "months":
            return f"{self.months}M" + ("" if self.timezone == "UTC" else f" ({self.timezone})")
        if self.kind == "trading_days":
            zone = "" if self.timezone == "UTC" else f", {self.timezone}"
            return f"1d trading days ({len(self.holidays)} holidays{zone})"
        for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
            if self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return f"{self.seconds}s"

    def iso(self) -> str:
        """ISO-8601 duration of one interval (``PT1H``, ``P1M``, ``P3M``, ``P1D``)."""
        if self.kind == "months":
            return f"P{self.months}M"
        if self.kind == "trading_days":
            return "P1D"
        days, rest = divmod(self.seconds, 86_400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        date = f"{days}D" if days else ""
        time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
        return "P" + date + ("T" + time if time else "") if (date or time) else "PT0S"

    def _holidays(self) -> npt.NDArray[np.datetime64]:
        return np.array(self.holidays, dtype="datetime64[D]")

    def _anchor(self) -> np.datetime64:
        """The trading day numbered 0: the first one on or after 1970-01-01."""
        return np.busday_offset(
            np.datetime64("1970-01-01", "D"), 0, roll="forward", weekmask=WEEKDAYS,
            holidays=self._holidays(),
        )  # fmt: skip


def as_grid(interval: int | Grid) -> Grid:
    """A grid from a grid or a fixed interval in seconds."""
    return interval if isinstance(interval, Grid) else Grid.fixed(int(interval))


def local_seconds(ts: IntArray, timezone: str) -> IntArray:
    """Epoch seconds shifted to wall-clock seconds in ``timezone`` (DST aware)."""
    if timezone in ("UTC", "Etc/UTC"):
        return ts
    flat = ts.ravel()
    utc = pd.DatetimeIndex(pd.to_datetime(flat, unit="s", utc=True))
    offsets = utc.tz_convert(timezone).tz_localize(None) - utc.tz_localize(None)
    local = flat + offsets.total_seconds().to_numpy().astype(np.int64)
    return np.asarray(local.reshape(ts.shape), dtype=np.int64)


def _from_local(local: IntArray, timezone: str) -> IntArray:
    """Wall-clock seconds in ``timezone`` back to epoch seconds (a midnight that does not
    exist moves forward to the first instant that does; an ambiguous one takes DST)."""
    if timezone in ("UTC", "Etc/UTC"):
        return local
    flat = local.ravel()
    naive = pd.DatetimeIndex(pd.to_datetime(flat, unit="s"))
    zoned = naive.tz_localize(
        timezone, ambiguous=np.ones(len(flat), dtype=bool), nonexistent="shift_forward"
    )
    seconds = zoned.tz_convert("UTC").tz_localize(None).as_unit("s").asi8
    return np.asarray(np.asarray(seconds, dtype=np.int64).reshape(local.shape), dtype=np.int64)
