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

Scaling follows the series (:class:`LevelScale`, schema 2): every key carries an
exponentially weighted level ``l`` and scale ``s`` of its values, set from its warm-up
window and updated in O(1) at every closed interval (imputed ones included), so a series
that trends or shifts level stays in the range the LSTM was trained on. The step input at
``t`` is, in the unit ``K = kappa * max(s, SCALE_FLOOR)``::

    x = [u, extras..., r, lags...]      u    = clip((y_t - l_t) / K_t, +-clip)
                                        r    = l_t / K_t
                                        lags = (y_{t-M+1} .. y_t - l_t) / K_t   (M = max lag)

and the graph's forecast is in the origin's units: ``y_{t+k} = l_t + K_t * forecast[k]``.
Known and unseen keys are treated alike (no training statistics per key). Extra features
use one global location/scale fitted on the training period of all keys.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamcast.core.grid import Grid, as_grid

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


def interval_start(ts_s: IntArray | int, interval: int | Grid) -> IntArray:
    """The start (epoch seconds) of the interval each timestamp falls in (:mod:`grid
    <streamcast.core.grid>`; an int is a fixed, epoch-aligned interval in seconds)."""
    return as_grid(interval).floor(ts_s)


def target_times(origin_s: IntArray, interval: int | Grid, horizon: int) -> IntArray:
    """``[..., H]`` start times of the intervals ``t+1 .. t+H`` after each origin."""
    return as_grid(interval).targets(origin_s, horizon)


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
#: a miss also fills the buckets of this long after the latest one asked for (a week of
#: quarter hours, in the same pandas call): the service's next intervals are those
OFFSET_AHEAD_BUCKETS = 7 * 96
_offset_memo: dict[tuple[str, int], int] = {}


def _local_seconds(ts: IntArray, timezone: str) -> IntArray:
    """Epoch seconds shifted to wall-clock seconds in ``timezone`` (DST aware).

    The service converts the same few hours in every micro-batch: offsets are memoised
    per :data:`OFFSET_BUCKET_S` bucket, so a batch costs one ``np.unique`` instead of a
    pandas conversion (~5 ms whatever the size: a third of a one-key batch). A miss fills
    the week after it too (:data:`OFFSET_AHEAD_BUCKETS`): each new interval's targets
    reach one bucket further, and a pandas call per interval cost ~0.7 ms of a ~20 ms
    500-key batch. Arrays with many distinct buckets (training) take pandas directly;
    the results are the same.
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
        asked = buckets[missing]
        ahead = np.arange(asked[-1] + 1, asked[-1] + 1 + OFFSET_AHEAD_BUCKETS, dtype=np.int64)
        todo = np.concatenate([asked, ahead])
        starts = todo * OFFSET_BUCKET_S
        ends = _utc_offsets(np.concatenate([starts, starts + OFFSET_BUCKET_S - 1]), timezone)
        first, last = ends[: len(todo)], ends[len(todo) :]
        if not np.array_equal(first[: len(asked)], last[: len(asked)]):
            # a transition inside an asked bucket: no memo, the exact path
            return np.asarray(ts + _utc_offsets(ts, timezone), dtype=np.int64)
        if len(memo) + len(todo) > OFFSET_MEMO_MAX:
            memo.clear()
        # the buckets ahead that hold a transition are left out (asked for, they take
        # the exact path above)
        steady = first == last
        memo.update(
            ((timezone, b), o)
            for b, o in zip(todo[steady].tolist(), first[steady].tolist(), strict=True)
        )
        for i, offset in zip(missing, first[: len(asked)].tolist(), strict=True):
            found[i] = offset
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


#: the smallest scale a key's unit is made of (a constant series: all-zero inputs)
SCALE_FLOOR = 1e-8


@dataclass(frozen=True)
class LevelScale:
    """The per-key scaling that follows the series (module docstring).

    ``alpha`` is the EWMA weight of a new value (about ``1 / season``), ``lags`` the
    seasonal anchors (in intervals) the cell sees beside ``u``, ``kappa`` the global unit
    (mean ``|y - l| / s`` over the training rows, so inputs are O(1)), ``clip`` the bound
    of the cell's value inputs.

    >>> ls = LevelScale(alpha=0.5, lags=(2,), kappa=1.0)
    >>> level, scale = ls.init(np.array([[2.0, 4.0]]))
    >>> level.tolist(), scale.tolist()
    ([3.0], [3.0])
    >>> [v.tolist() for v in ls.update(level, scale, np.array([5.0]))]
    [[4.0], [4.0]]
    """

    alpha: float = 0.1
    lags: tuple[int, ...] = ()
    kappa: float = 1.0
    clip: float = 20.0

    @property
    def max_lag(self) -> int:
        """``M``: the ring-buffer values each step reads (1 without lags: the naive anchor)."""
        return max(self.lags, default=1)

    def step_width(self, n_extras: int) -> int:
        """Width of the step input ``x``: ``u``, the extras, ``r``, the ``M`` lags."""
        return 2 + n_extras + self.max_lag

    def init(self, window: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(l, s)`` *before* the first row of warm-up windows ``[..., W]`` (NaN-aware:
        rows a segment does not have are NaN)."""
        with warnings.catch_warnings():
            # an all-NaN window (a segment shorter than the window) is never stepped
            warnings.simplefilter("ignore", RuntimeWarning)
            level = np.nanmean(window, axis=-1)
            scale = np.nanmean(np.abs(window), axis=-1)
        return np.asarray(level, dtype=np.float64), np.asarray(scale, dtype=np.float64)

    def update(
        self, level: FloatArray, scale: FloatArray, y: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """One closed interval ``y``: the O(1) update of ``(l, s)`` (elementwise)."""
        a = self.alpha
        return level + a * (y - level), scale + a * (np.abs(y) - scale)

    def unit(self, scale: FloatArray) -> FloatArray:
        """``K``: the unit of a key's inputs and forecasts."""
        return np.asarray(self.kappa * np.maximum(scale, SCALE_FLOOR), dtype=np.float64)


def step_inputs(
    values: FloatArray,
    level: FloatArray,
    scale: FloatArray,
    lag_values: FloatArray,
    *,
    scheme: LevelScale,
    extra: ExtraScaling,
) -> tuple[Float32Array, FloatArray]:
    """The step input ``x [n, 2 + E + M]`` and the unit ``K [n]`` of ``n`` steps.

    ``values [n, 1 + E]`` are the raw rows just closed, ``level``/``scale`` the key's state
    *after* consuming them, ``lag_values [n, M]`` the last ``M`` values of the key oldest
    first (the last one is ``values[:, 0]``; NaN for rows before the key's reset, which
    enter as the level). One function for the service and the offline evaluator: the same
    float64 operations in the same order, so both feed the graph the same bits.
    """
    k = scheme.unit(scale)
    n_extra = values.shape[-1] - 1
    # each column computed in float64 and rounded to float32 as it is stored
    out = np.empty((*values.shape[:-1], scheme.step_width(n_extra)), dtype=np.float32)
    out[..., 0] = np.clip((values[..., 0] - level) / k, -scheme.clip, scheme.clip)
    if n_extra:
        out[..., 1 : 1 + n_extra] = (values[..., 1:] - np.asarray(extra.loc)) / np.asarray(
            extra.scale
        )
    out[..., 1 + n_extra] = level / k
    # the lags in a contiguous block (a quarter faster than into out's strided columns)
    lags = np.subtract(lag_values, level[..., None])
    lags /= k[..., None]
    np.copyto(lags, 0.0, where=np.isnan(lags))
    out[..., 2 + n_extra :] = lags
    return out, k


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


def unscale_forecast(forecast: Float32Array, loc: FloatArray, scale: FloatArray) -> FloatArray:
    """``[B, H]`` forecasts in units back to original units: ``loc + scale * forecast`` per
    row (with :class:`LevelScale`: the origin's level ``l`` and unit ``K``)."""
    return np.asarray(forecast.astype(np.float64) * scale[:, None] + loc[:, None], dtype=np.float64)


def floor_non_negative(values: FloatArray, non_negative: bool) -> FloatArray:
    """``values`` with everything below 0 raised to 0 if the model is ``non_negative``
    (:attr:`~streamcast.core.artifact.ModelMeta.non_negative`), else ``values`` itself:
    the service's forecasts and bands and training's backtest use this one rule.

    >>> floor_non_negative(np.array([-1.5, 0.0, 2.0]), True).tolist()
    [0.0, 0.0, 2.0]
    """
    return np.maximum(values, 0.0) if non_negative else values


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
