"""Features and scaling shared by training and serving, so the two cannot drift apart.

Everything here is pure numpy (pandas only for time-zone conversion of calendar
features) and works on arrays of any leading shape.

The model's step input at a closed interval ``t`` is built from three parts:

``x``         ``[B, 1 + E]``  scaled value then scaled extra features observed at ``t``
``calendar``  ``[B, H, C]``   calendar features of the *target* intervals ``t+1 .. t+H``
state         ``h, c``        ``[B, S]`` carried from the key's previous step

The LSTM cell at ``t`` sees ``concat(x_t, calendar[:, 0])`` and predicts the scaled value
at ``t+1``; the recursive rollout feeds each prediction back with the extras held at
their last observed value (the documented rollout policy for exogenous features) and
the next calendar row.

Scaling: a key's value uses its own location/scale. Keys seen in training use the
statistics of their *training* period (stored in the model's metadata); keys the model
never saw use the statistics of their own warm-up window, so the scheme works for any key
and never looks at data after the point where it is applied. Extra features use one
global location/scale fitted on the training period of all keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

CalendarName = Literal["time_of_day", "day_of_week", "day_of_year"]
#: every calendar feature a model may use, in the order of :data:`CalendarName`
CALENDAR_NAMES: tuple[CalendarName, ...] = get_args(CalendarName)
CALENDAR_PERIODS: dict[str, float] = {"time_of_day": 1.0, "day_of_week": 7.0, "day_of_year": 365.25}
SECONDS_PER_DAY = 86_400

#: a scale below this (relative to 1.0 units) is treated as "no variation"
MIN_SCALE = 1e-6


@dataclass(frozen=True)
class FeatureSpec:
    """What the model consumes at each step, and how to compute it from timestamps."""

    interval_s: int
    value_name: str = "value"
    extra_names: tuple[str, ...] = ()
    calendar: tuple[CalendarName, ...] = ()
    #: IANA zone the calendar features are computed in ("UTC" for none)
    timezone: str = "UTC"

    @property
    def n_inputs(self) -> int:
        """Width of ``x``: the value plus the extra observed features."""
        return 1 + len(self.extra_names)

    @property
    def n_calendar(self) -> int:
        """Width of one calendar row (a sin and a cos per calendar feature)."""
        return 2 * len(self.calendar)


def interval_start(ts_s: IntArray | int, interval_s: int) -> IntArray:
    """The start (epoch seconds) of the interval each timestamp falls in (epoch aligned)."""
    ts = np.asarray(ts_s, dtype=np.int64)
    return np.asarray(ts - np.mod(ts, interval_s), dtype=np.int64)


def target_times(origin_s: IntArray, interval_s: int, horizon: int) -> IntArray:
    """``[..., H]`` start times of the intervals ``t+1 .. t+H`` after each origin."""
    steps = np.arange(1, horizon + 1, dtype=np.int64) * interval_s
    return np.asarray(np.asarray(origin_s, dtype=np.int64)[..., None] + steps, dtype=np.int64)


def calendar_features(ts_s: IntArray, spec: FeatureSpec) -> Float32Array:
    """``[..., C]`` sin/cos calendar features of epoch-second timestamps in ``spec.timezone``."""
    ts = np.asarray(ts_s, dtype=np.int64)
    if not spec.calendar:
        return np.zeros((*ts.shape, 0), dtype=np.float32)
    local = _local_seconds(ts.ravel(), spec.timezone)
    days = np.floor_divide(local, SECONDS_PER_DAY)
    time_of_day = np.mod(local, SECONDS_PER_DAY) / SECONDS_PER_DAY
    columns: list[FloatArray] = []
    for name in spec.calendar:
        if name == "time_of_day":
            phase = time_of_day
        elif name == "day_of_week":
            phase = np.mod(days + 3, 7) / 7.0  # 1970-01-01 was a Thursday: Monday = 0
        else:
            phase = np.mod(days, CALENDAR_PERIODS["day_of_year"]) / CALENDAR_PERIODS["day_of_year"]
        angle = 2.0 * np.pi * phase
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=-1).astype(np.float32).reshape(*ts.shape, spec.n_calendar)


#: UTC offsets are looked up per bucket of this many seconds: every transition of the
#: time zone database since 1970 falls on a quarter hour, and a bucket whose two ends
#: disagree is never memoised (the whole array then takes the exact path)
OFFSET_BUCKET_S = 900
#: memoised ``(zone, bucket) -> UTC offset``; cleared when full
OFFSET_MEMO_MAX = 65_536
_offset_memo: dict[tuple[str, int], int] = {}


def _local_seconds(ts: IntArray, timezone: str) -> IntArray:
    """Epoch seconds shifted to wall-clock seconds in ``timezone`` (DST aware).

    The service converts the same few hours in every micro-batch: offsets are memoised
    per :data:`OFFSET_BUCKET_S` bucket, so a batch costs one ``np.unique`` instead of a
    pandas conversion (~5 ms whatever the size: a third of a one-key batch). Arrays with
    many distinct buckets (training) take pandas directly; the results are the same.
    """
    if timezone in ("UTC", "Etc/UTC"):
        return ts
    buckets, inverse = np.unique(np.floor_divide(ts, OFFSET_BUCKET_S), return_inverse=True)
    if len(buckets) > OFFSET_MEMO_MAX // 4:
        return np.asarray(ts + _utc_offsets(ts, timezone), dtype=np.int64)
    memo = _offset_memo
    found = [memo.get((timezone, b)) for b in buckets.tolist()]
    missing = [i for i, o in enumerate(found) if o is None]
    if missing:
        starts = buckets[missing] * OFFSET_BUCKET_S
        ends = _utc_offsets(np.concatenate([starts, starts + OFFSET_BUCKET_S - 1]), timezone)
        first, last = ends[: len(missing)].tolist(), ends[len(missing) :].tolist()
        if first != last:  # a transition inside a bucket: no memo, the exact path
            return np.asarray(ts + _utc_offsets(ts, timezone), dtype=np.int64)
        if len(memo) + len(missing) > OFFSET_MEMO_MAX:
            memo.clear()
        for i, offset in zip(missing, first, strict=True):
            memo[(timezone, int(buckets[i]))] = found[i] = offset
    offsets = np.asarray(found, dtype=np.int64)
    return np.asarray(ts + offsets[inverse.ravel()], dtype=np.int64)


def _utc_offsets(ts: IntArray, timezone: str) -> IntArray:
    """UTC offset (seconds) of ``timezone`` at each epoch second (pandas, exact)."""
    utc = pd.DatetimeIndex(pd.to_datetime(ts, unit="s", utc=True))
    offsets = utc.tz_convert(timezone).tz_localize(None) - utc.tz_localize(None)
    return offsets.total_seconds().to_numpy().astype(np.int64)


@dataclass(frozen=True)
class ExtraScaling:
    """Global location/scale of the extra observed features (fitted on training data)."""

    loc: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()


@dataclass(frozen=True)
class ValueScaling:
    """Per-key value scaling: training statistics for known keys, warm-up window otherwise."""

    known: dict[str, tuple[float, float]] = field(default_factory=dict)
    scheme: Literal["standard"] = "standard"

    def lookup(self, keys: list[str]) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
        """``(loc, scale, found)`` for each key; ``found`` is False for keys never trained on."""
        loc = np.zeros(len(keys))
        scale = np.ones(len(keys))
        found = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            stats = self.known.get(key)
            if stats is not None:
                loc[i], scale[i] = stats
                found[i] = True
        return loc, scale, found


def fit_location_scale(values: FloatArray, axis: int = -1) -> tuple[FloatArray, FloatArray]:
    """NaN-aware mean and standard deviation along ``axis``; flat inputs get scale 1.

    >>> loc, scale = fit_location_scale(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    >>> loc.tolist(), [round(s, 4) for s in scale.tolist()]
    ([2.0, 5.0], [0.8165, 1.0])
    """
    with np.errstate(invalid="ignore"):
        loc = np.nanmean(values, axis=axis)
        scale = np.nanstd(values, axis=axis)
    loc = np.where(np.isfinite(loc), loc, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > MIN_SCALE), scale, 1.0)
    return np.asarray(loc, dtype=np.float64), np.asarray(scale, dtype=np.float64)


def scale_inputs(
    values: FloatArray, loc: FloatArray, scale: FloatArray, extra: ExtraScaling
) -> Float32Array:
    """Scale ``[..., 1 + E]`` raw inputs: column 0 with per-row ``loc/scale``, extras globally.

    ``loc`` and ``scale`` broadcast against ``values[..., 0]``.
    """
    out = np.empty(values.shape, dtype=np.float64)
    out[..., 0] = (values[..., 0] - loc) / scale
    if values.shape[-1] > 1:
        out[..., 1:] = (values[..., 1:] - np.asarray(extra.loc)) / np.asarray(extra.scale)
    return out.astype(np.float32)


def unscale_forecast(forecast: Float32Array, loc: FloatArray, scale: FloatArray) -> FloatArray:
    """``[B, H]`` scaled forecasts back to original units with per-row ``loc/scale``."""
    return np.asarray(forecast.astype(np.float64) * scale[:, None] + loc[:, None], dtype=np.float64)


def interpolate_gap(before: FloatArray, after: FloatArray, missing: int) -> FloatArray:
    """The documented gap policy: ``missing`` rows linearly between two observed rows.

    ``before`` and ``after`` are ``[F]``; the result is ``[missing, F]``. One gap of
    :func:`interpolate_gaps`, so a single gap and many at once give the same bits.

    >>> interpolate_gap(np.array([0.0]), np.array([3.0]), 2).ravel().tolist()
    [1.0, 2.0]
    """
    return interpolate_gaps(before[None, :], after[None, :], np.array([missing], dtype=np.int64))


def interpolate_gaps(before: FloatArray, after: FloatArray, missing: IntArray) -> FloatArray:
    """The gap policy for many gaps at once: ``missing[g]`` rows linearly between rows
    ``before[g]`` and ``after[g]``; row ``k = 1 .. missing[g]`` of a gap is
    ``before + k / (missing + 1) * (after - before)``.

    ``before`` and ``after`` are ``[G, F]``, ``missing`` is ``[G]`` (each ``>= 0``); the
    result is ``[sum(missing), F]``: the rows of gap 0, then those of gap 1, and so on.

    >>> interpolate_gaps(np.array([[0.0], [10.0]]), np.array([[3.0], [12.0]]), np.array([2, 1]))
    array([[ 1.],
           [ 2.],
           [11.]])
    """
    counts = np.asarray(missing, dtype=np.int64)
    gap = np.repeat(np.arange(len(counts)), counts)
    step = np.arange(len(gap), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    weights = (step.astype(np.float64) / (counts[gap] + 1))[:, None]
    start = np.asarray(before, dtype=np.float64)[gap]
    end = np.asarray(after, dtype=np.float64)[gap]
    return np.asarray(start + weights * (end - start), dtype=np.float64)
