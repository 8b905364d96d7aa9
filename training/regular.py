"""Regularise a canonical long frame onto an interval grid, exactly as the service sees it.

:func:`regularise` (re-exported by ``training.data``) turns the frame :func:`load_table`
returns into a :class:`~training.series.SeriesSet` and a :class:`PrepReport`:

1. rows whose value or an extra is missing are dropped (they become part of a gap);
2. exact duplicate (key, timestamp) rows are an error; with ``duplicates="aggregate"``
   they are aggregated like any other rows of one interval; with ``duplicates="first"``
   the first in file order is kept (what the service does: it dead-letters a tick whose
   timestamp equals the last accepted one);
3. the interval grid (:mod:`streamcast.core.grid`) is inferred by default: the most
   common positive step between consecutive timestamps of a key (ties: the smaller), read
   as calendar months or quarters when it is 28-31 or 89-92 days; trading days when asked
   (``trading_days``: weekdays that are not holidays; without a list, the weekdays on which
   no key has a row). It is reported with the share of steps that match it. A *given*
   interval that matches fewer than :data:`MIN_SUPPORT` of the steps is an error naming
   the inferred one (an interval at least twice the data's step aggregates, and is
   measured on the intervals it makes);
4. each row is labelled with the start of its interval
   (:meth:`streamcast.core.grid.Grid.floor`); several rows in one interval are combined
   with ``aggregation`` (last/mean/sum/min/max, the service's setting), extras alike, by the
   service's own :class:`streamcast.core.intervals.Aggregator`;
5. a gap of up to ``max_gap`` missing intervals is bridged by linear interpolation
   (:func:`streamcast.core.features.interpolate_gaps`, the service's gap policy for many gaps
   at once; such rows have ``observed=False``); a longer gap makes the next row a ``reset``
   (the key warms up again) and is reported;
6. segments (rows from one reset to the next) shorter than ``min_length`` rows are dropped
   and reported; a key left with no rows is reported as dropped.

Everything is vectorised over rows (sort, diff, repeat, ``ufunc.reduceat``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamcast.core.artifact import Aggregation
from streamcast.core.features import interpolate_gaps
from streamcast.core.grid import DAY_S, WEEKDAYS, Grid, local_seconds
from streamcast.core.intervals import AGGREGATIONS, Aggregator
from training.errors import ConfigError, DataError
from training.series import SeriesSet
from training.timetext import iso, iso_ms, parse_grid

Duplicates = Literal["error", "aggregate", "first"]
Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_KEY, _TS, _VALUE = "key", "ts_ms", "value"
#: the share of steps a given interval must match
MIN_SUPPORT = 0.9


@dataclass(frozen=True)
class LongGap:
    """A gap longer than ``max_gap``: the key resets to warm-up at ``first_after``."""

    key: str
    last_before: str
    first_after: str
    missing: int


@dataclass(frozen=True)
class DroppedSegment:
    """A run of rows between resets that was too short to keep."""

    key: str
    start: str
    end: str
    length: int


@dataclass
class PrepReport:
    """What :func:`regularise` did, for the console and ``report.json``."""

    rows_in: int = 0
    rows_missing_value: int = 0
    duplicate_rows: int = 0
    merged_rows: int = 0
    interval_s: int = 0
    #: the grid as people write it (``1h``, ``1M``, ``1d trading days (9 holidays)``)
    interval: str = ""
    interval_inferred: bool = False
    #: share of consecutive steps (within keys) equal to the interval
    interval_support: float = 1.0
    aggregation: str = "last"
    max_gap: int = 0
    bridged_gaps: int = 0
    imputed_rows: int = 0
    long_gaps: list[LongGap] = field(default_factory=list)
    dropped_segments: list[DroppedSegment] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    keys_out: int = 0
    rows_out: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dictionary (timestamps are ISO-8601 strings)."""
        return asdict(self)

    def summary(self, max_details: int = 10) -> str:
        """A human-readable table of what was done, with the first few long gaps."""
        how = "inferred" if self.interval_inferred else "given"
        rows = [
            ("rows read", f"{self.rows_in:,}"),
            ("rows without a value (dropped)", f"{self.rows_missing_value:,}"),
            ("duplicate timestamp rows", f"{self.duplicate_rows:,}"),
            (f"rows merged into an interval ({self.aggregation})", f"{self.merged_rows:,}"),
            (
                "interval",
                f"{self.interval} ({how}; {self.interval_support:.0%} of steps match it)",
            ),
            (
                f"short gaps bridged (<= {self.max_gap} missing, linear)",
                f"{self.bridged_gaps:,} ({self.imputed_rows:,} imputed rows)",
            ),
            ("long gaps (key resets to warm-up)", f"{len(self.long_gaps):,}"),
            ("segments dropped (too short)", f"{len(self.dropped_segments):,}"),
            ("keys dropped", f"{len(self.dropped_keys):,}"),
            ("keys / rows out", f"{self.keys_out:,} / {self.rows_out:,}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        for gap in self.long_gaps[:max_details]:
            lines.append(
                f"  long gap  {gap.key}: {gap.last_before} -> {gap.first_after} "
                f"({gap.missing:,} missing intervals)"
            )
        lines += [
            f"  dropped   {seg.key}: {seg.start} .. {seg.end} ({seg.length} rows)"
            for seg in self.dropped_segments[:max_details]
        ]
        if self.dropped_keys:
            lines.append("  keys dropped: " + ", ".join(self.dropped_keys[:max_details]))
        hidden = max(len(self.long_gaps), len(self.dropped_segments)) - max_details
        if hidden > 0:
            lines.append(f"  ... more in report.json ({hidden:,} not shown)")
        return "\n".join(lines)


def regularise(
    df: pd.DataFrame,
    *,
    interval: str | int | None = None,
    max_gap: int = 3,
    min_length: int = 2,
    aggregation: Aggregation = "last",
    duplicates: Duplicates = "error",
    timezone: str = "UTC",
    trading_days: bool = False,
    holidays: tuple[str, ...] = (),
    min_support: float = MIN_SUPPORT,
) -> tuple[SeriesSet, PrepReport]:
    """Put a canonical long frame on a regular grid (steps in the module docstring).

    Raises :class:`ConfigError` for impossible settings and :class:`DataError` for
    duplicate timestamps (``duplicates="error"``) or when no series is long enough.
    """
    _check_settings(df, aggregation, duplicates, max_gap=max_gap, min_length=min_length)
    source = str(df.attrs.get("source", "data"))
    extra_names = tuple(str(c) for c in df.columns if c not in (_KEY, _TS, _VALUE))
    report = PrepReport(rows_in=len(df), aggregation=aggregation, max_gap=max_gap)
    key_names, codes, ts_ms, values = _sorted_rows(df, extra_names)
    codes, ts_ms, values = _clean_rows(
        codes, ts_ms, values, duplicates, key_names=key_names, source=source, report=report
    )
    time_grid = _grid(
        codes, ts_ms, interval, source, report, timezone=timezone,
        trading_days=trading_days, holidays=holidays, min_support=min_support,
    )  # fmt: skip

    # the service labels a tick with the interval of its whole second, so do we
    starts = time_grid.floor(ts_ms // 1000)
    g_code, g_ts, g_values = _aggregate(codes, starts, values, Aggregator(aggregation))
    report.merged_rows = len(ts_ms) - len(g_ts)

    grid = _bridge(g_code, g_ts, g_values, time_grid, max_gap, key_names=key_names, report=report)
    kept = _drop_short(grid, min_length, key_names, report)
    if kept is None:
        raise DataError(
            f"{source}: no series left: every segment of all {len(key_names)} key(s) is "
            f"shorter than min_length={min_length} rows; use more data or a smaller "
            "window/horizon"
        )
    keys, offsets, rows = kept
    series = SeriesSet(
        keys=keys,
        offsets=offsets,
        ts=rows.ts,
        values=rows.values,
        observed=rows.observed,
        reset=rows.reset,
        interval_s=time_grid.seconds,
        value_name=str(df.attrs.get("value_name", _VALUE)),
        extra_names=extra_names,
        calendar_grid=None if time_grid.is_fixed else time_grid,
    )
    return series, report


def _check_settings(
    df: pd.DataFrame, aggregation: str, duplicates: str, *, max_gap: int, min_length: int
) -> None:
    """ConfigError for settings regularise cannot follow, or a frame it cannot read."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(
            f"unknown aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}"
        )
    if duplicates not in get_args(Duplicates):
        raise ConfigError(f"duplicates must be 'error', 'aggregate' or 'first', not {duplicates!r}")
    if max_gap < 0 or min_length < 1:
        raise ConfigError(f"need max_gap >= 0 and min_length >= 1 (got {max_gap}, {min_length})")
    missing_cols = [c for c in (_KEY, _TS, _VALUE) if c not in df.columns]
    if missing_cols:
        raise ConfigError(f"regularise needs the canonical frame of load_table; no {missing_cols}")


def _sorted_rows(
    df: pd.DataFrame, extra_names: tuple[str, ...]
) -> tuple[list[str], Ints, Ints, Floats]:
    """``(key names, key codes, ts_ms, values)``, rows sorted by key then time; rows with
    equal timestamps keep their file order (so ``last`` is the last in the file)."""
    codes, uniques = pd.factorize(df[_KEY].astype(str), sort=True)
    ts_ms = df[_TS].to_numpy(np.int64)
    values = df[[_VALUE, *extra_names]].to_numpy(np.float64)
    order = np.lexsort((ts_ms, codes))  # stable
    return [str(k) for k in uniques], codes[order].astype(np.int64), ts_ms[order], values[order]


def _clean_rows(
    codes: Ints,
    ts_ms: Ints,
    values: Floats,
    duplicates: str,
    *,
    key_names: list[str],
    source: str,
    report: PrepReport,
) -> tuple[Ints, Ints, Floats]:
    """Apply the duplicates policy and drop rows without a value or an extra."""
    dup = np.zeros(len(ts_ms), dtype=bool)
    dup[1:] = (np.diff(codes) == 0) & (np.diff(ts_ms) == 0)
    report.duplicate_rows = int(dup.sum())
    if report.duplicate_rows and duplicates == "error":
        i = int(np.argmax(dup))
        same = int(np.sum((codes == codes[i]) & (ts_ms == ts_ms[i])))
        raise DataError(
            f"{source}: duplicate timestamps: key '{key_names[codes[i]]}' has {same} rows at "
            f"{iso_ms(ts_ms[i])} ({report.duplicate_rows} duplicate rows in all); remove "
            "them, or set duplicates to 'first' (keep the first, as the service does) or "
            "'aggregate'"
        )
    keep = np.isfinite(values).all(axis=1)
    report.rows_missing_value = int((~keep).sum())
    codes, ts_ms, values = codes[keep], ts_ms[keep], values[keep]
    if duplicates == "first":
        # among rows with values: a duplicate tick with a value replaces an empty one
        later = np.zeros(len(ts_ms), dtype=bool)
        later[1:] = (np.diff(codes) == 0) & (np.diff(ts_ms) == 0)
        codes, ts_ms, values = codes[~later], ts_ms[~later], values[~later]
    return codes, ts_ms, values


def _grid(
    codes: Ints,
    ts_ms: Ints,
    interval: str | int | Grid | None,
    source: str,
    report: PrepReport,
    *,
    timezone: str,
    trading_days: bool,
    holidays: tuple[str, ...],
    min_support: float,
) -> Grid:
    """The grid: the one given (checked against the data) or inferred (step 3 of the
    module docstring); records it and its support in ``report``."""
    steps = np.diff(ts_ms)[np.diff(codes) == 0]
    steps = steps[steps > 0]
    inferred: Grid | None = None
    try:
        inferred = _infer_grid(steps, source, timezone)
    except ConfigError:
        if interval is None and not trading_days:
            raise
    if trading_days:
        days = holidays or _closed_weekdays(ts_ms, timezone)
        given: Grid = Grid.trading_days(timezone, days)
        if interval is not None and not isinstance(interval, Grid):
            given = parse_grid(interval, timezone=timezone, trading_days=True, holidays=days)
    elif interval is None:
        assert inferred is not None
        given = inferred
        report.interval_inferred = True
    elif isinstance(interval, Grid):
        given = interval
    else:
        given = parse_grid(interval, timezone=timezone)
    report.interval_s = given.seconds
    report.interval = given.describe()
    coarser = inferred is None or given.seconds >= 2 * inferred.seconds
    report.interval_support = _support(codes, ts_ms, given, coarser=coarser)
    if interval is not None and report.interval_support < min_support:
        own = "" if inferred is None else f"; the data's own interval is {inferred.describe()}"
        hint = (
            f"use --interval {inferred.describe()} (or omit --interval to infer it)"
            if inferred is not None and inferred != given
            else "the data is irregular: clean it or give the interval it was sampled at"
        )
        if given.is_fixed and given.seconds == DAY_S:
            hint += "; prices with closed weekends and holidays: --trading-days"
        raise ConfigError(
            f"{source}: --interval {given.describe()} matches only "
            f"{report.interval_support:.0%} of the steps between a key's timestamps (at "
            f"least {min_support:.0%} must be one interval apart){own}: {hint}"
        )
    return given


def _infer_grid(steps: Ints, source: str, timezone: str) -> Grid:
    """The most common step as a grid (calendar months and quarters by their lengths)."""
    if len(steps) == 0:
        raise ConfigError(
            f"{source}: cannot infer the interval (no key has two distinct timestamps); "
            "give the interval, e.g. 1h"
        )
    candidates, counts = np.unique(steps, return_counts=True)
    step_ms = int(candidates[np.argmax(counts)])  # argmax takes the first: the smaller step
    days = step_ms / 1000 / DAY_S
    for low, high, months in ((28, 31, 1), (89, 92, 3), (365, 366, 12)):
        if low <= days <= high:
            return Grid.calendar_months(months, timezone)
    if step_ms % 1000:
        raise ConfigError(
            f"{source}: the most common step between timestamps is {step_ms} ms, not whole "
            "seconds; give the interval, e.g. 1min"
        )
    return Grid.fixed(step_ms // 1000)


def _support(codes: Ints, ts_ms: Ints, grid: Grid, *, coarser: bool) -> float:
    """Share of consecutive timestamps of a key exactly one interval apart (for a grid that
    aggregates the data, ``coarser``: of consecutive distinct intervals)."""
    same = np.diff(codes) == 0
    index = grid.index(ts_ms // 1000)
    diff = np.diff(index)[same]
    diff = diff[diff != 0] if coarser else diff[np.diff(ts_ms)[same] > 0]
    return float(np.mean(diff == 1)) if len(diff) else 1.0


def _closed_weekdays(ts_ms: Ints, timezone: str) -> tuple[str, ...]:
    """Weekdays within the data's span on which no key has a row: the holidays of a
    trading-day calendar that was given none."""
    days = np.unique(np.floor_divide(local_seconds(ts_ms // 1000, timezone), DAY_S))
    if len(days) == 0:
        return ()
    span = np.arange(days[0], days[-1] + 1).astype("datetime64[D]")
    weekdays = span[np.is_busday(span, weekmask=WEEKDAYS)]
    present = days.astype("datetime64[D]")
    closed = weekdays[~np.isin(weekdays, present)]
    return tuple(str(d) for d in closed)


def _aggregate(
    codes: Ints, starts: Ints, values: Floats, aggregator: Aggregator
) -> tuple[Ints, Ints, Floats]:
    """Combine rows sharing (key, interval start) with the service's :class:`Aggregator`
    (rows arrive sorted by key then time, so each interval's rows are contiguous)."""
    new = np.ones(len(codes), dtype=bool)
    new[1:] = (np.diff(codes) != 0) | (np.diff(starts) != 0)
    first = np.flatnonzero(new)
    if len(first) == len(codes):
        return codes, starts, values
    return codes[first], starts[first], aggregator.interval_values(values, first)


@dataclass(frozen=True)
class _Grid:
    """Rows on the interval grid, sorted by key then time (SeriesSet arrays before packing)."""

    codes: Ints
    ts: Ints
    values: Floats
    observed: Bools
    reset: Bools

    def take(self, mask: Bools) -> _Grid:
        return _Grid(
            self.codes[mask],
            self.ts[mask],
            self.values[mask],
            self.observed[mask],
            self.reset[mask],
        )


def _bridge(
    codes: Ints,
    ts: Ints,
    values: Floats,
    grid: Grid,
    max_gap: int,
    *,
    key_names: list[str],
    report: PrepReport,
) -> _Grid:
    """Insert linearly interpolated rows into short gaps; flag resets after long ones."""
    n = len(ts)
    same_key = np.zeros(n, dtype=bool)
    same_key[1:] = np.diff(codes) == 0
    missing = np.zeros(n, dtype=np.int64)
    missing[1:] = np.diff(grid.index(ts)) - 1
    missing[~same_key] = 0
    short = (missing >= 1) & (missing <= max_gap)
    long = missing > max_gap
    report.bridged_gaps = int(short.sum())
    report.long_gaps = [
        LongGap(key_names[codes[i]], iso(ts[i - 1]), iso(ts[i]), int(missing[i]))
        for i in np.flatnonzero(long)
    ]

    n_insert = np.where(short, missing, 0)
    position = np.arange(n) + np.cumsum(n_insert)  # where each aggregated row lands
    total = n + int(n_insert.sum())
    report.imputed_rows = total - n
    out_code = np.empty(total, dtype=np.int64)
    out_ts = np.empty(total, dtype=np.int64)
    out_values = np.empty((total, values.shape[1]), dtype=np.float64)
    observed = np.zeros(total, dtype=bool)
    reset = np.zeros(total, dtype=bool)
    out_code[position], out_ts[position], out_values[position] = codes, ts, values
    observed[position] = True
    reset[position] = ~same_key | long

    gaps = np.flatnonzero(short)  # the observed row that closes each bridged gap
    filled = np.flatnonzero(~observed)  # the imputed rows: gap by gap, in time order
    closing = np.repeat(gaps, missing[gaps])
    out_code[filled] = codes[closing]
    out_ts[filled] = grid.shift(ts[closing], -(position[closing] - filled))
    out_values[filled] = interpolate_gaps(values[gaps - 1], values[gaps], missing[gaps])
    return _Grid(out_code, out_ts, out_values, observed, reset)


def _drop_short(
    grid: _Grid, min_length: int, key_names: list[str], report: PrepReport
) -> tuple[tuple[str, ...], Ints, _Grid] | None:
    """Drop segments shorter than ``min_length``: ``(keys, offsets, rows)`` of what is left."""
    starts = np.flatnonzero(grid.reset)
    lengths = np.diff(np.append(starts, len(grid.ts)))
    too_short = lengths < min_length
    report.dropped_segments = [
        DroppedSegment(key_names[grid.codes[s]], iso(grid.ts[s]), iso(grid.ts[s + n - 1]), int(n))
        for s, n in zip(starts[too_short], lengths[too_short], strict=True)
    ]
    kept = grid.take(np.repeat(~too_short, lengths))
    counts = np.bincount(kept.codes, minlength=len(key_names))
    report.dropped_keys = [key_names[k] for k in np.flatnonzero(counts == 0)]
    present = np.flatnonzero(counts > 0)
    report.keys_out = len(present)
    report.rows_out = len(kept.ts)
    if len(present) == 0:
        return None
    offsets = np.concatenate([[0], np.cumsum(counts[present])]).astype(np.int64)
    return tuple(key_names[k] for k in present), offsets, kept
