"""Streaming evaluation of an exported model with ONNX Runtime only (no TensorFlow here).

This replays a :class:`~training.series.SeriesSet` through the exported step exactly as the
service runs it (the key lifecycle in :mod:`streamcast.core.artifact`):

- each key's state is zero at its first row and after every reset (a long gap);
- each key's level and scale are set from the first ``window`` intervals after each reset
  and updated at every row (:func:`row_inputs`, the service's
  :class:`~streamcast.core.features.LevelScale` recurrence run over all keys at once);
- every row is stepped in time order, one ONNX Runtime call per time index over all keys
  that have a row at that index (never one call per key);
- a forecast is emitted for an *observed* row whose position since the reset is at least
  ``window - 1``, and only when the interval is closed, i.e. a later row of the same key
  exists: a key's final row never gets a forecast.

The forecasts file (CSV or Parquet, by extension) is the offline reference that the
service's Kafka output must equal: columns ``key, origin_ts, step, target_ts, forecast``
(timestamps ISO-8601 UTC, forecast in original units).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from streamcast.core.artifact import ModelMeta
from streamcast.core.features import (
    ExtraScaling,
    Float32Array,
    FloatArray,
    IntArray,
    LevelScale,
    calendar_features,
    floor_non_negative,
    step_inputs,
    unscale_forecast,
)
from streamcast.core.model import open_session
from training.errors import ConfigError
from training.series import SeriesSet

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class StreamForecasts:
    """Forecasts emitted by a streaming replay, one row per origin (a closed interval)."""

    #: row of the origin in the SeriesSet
    row: IntArray
    key: IntArray
    origin_ts: IntArray
    #: ``[F, H]`` original units and the values in units the graph produced
    forecast: FloatArray
    scaled: npt.NDArray[np.float32]
    #: the origin's level ``l`` and unit ``K``: ``forecast = loc + scale * scaled``
    #: (floored at 0 for a non-negative model: :func:`floor_non_negative`)
    loc: FloatArray
    scale: FloatArray
    #: ONNX Runtime calls made (one per time index)
    calls: int


def load_session(path: Path) -> tuple[ort.InferenceSession, ModelMeta]:
    """Open an exported model as the service does (single-threaded) and parse its metadata."""
    sess = open_session(path)
    meta = ModelMeta.from_metadata_map(sess.get_modelmeta().custom_metadata_map)
    return sess, meta


def segment_ids(series: SeriesSet) -> IntArray:
    """``[N]`` number of the reset segment each row belongs to."""
    return np.asarray(np.cumsum(series.reset) - 1, dtype=np.int64)


def position_since_reset(series: SeriesSet) -> IntArray:
    """``[N]`` 0 at each reset row, counting up within its segment."""
    starts = np.flatnonzero(series.reset)
    seg = segment_ids(series)
    return np.asarray(np.arange(series.n_rows) - starts[seg], dtype=np.int64)


@dataclass(frozen=True)
class RowInputs:
    """Per row of a :class:`SeriesSet`: the step input the service feeds the graph there,
    and the key's level and unit after the row."""

    x: Float32Array
    level: FloatArray
    unit: FloatArray
    #: the key's scale ``s`` after the row (``unit = kappa * max(s, floor)``)
    scale: FloatArray


def row_inputs(
    series: SeriesSet, scheme: LevelScale, window: int, extra: ExtraScaling
) -> RowInputs:
    """Replay every key's level and scale over its rows, as the service does (one vector
    operation per position since the reset, all segments at once), and build each row's
    step input with :func:`~streamcast.core.features.step_inputs`.

    A segment (reset to reset) sets them from its first ``window`` rows
    (:meth:`LevelScale.init`), as the service does when its window fills, and updates them
    at every row from the first on.
    """
    n = series.n_rows
    y = series.values[:, 0]
    starts = np.flatnonzero(series.reset)
    lengths = np.diff(np.append(starts, n))
    take = np.arange(window)
    inside = take[None, :] < lengths[:, None]
    first = np.where(inside, y[np.minimum(starts[:, None] + take[None, :], max(n - 1, 0))], np.nan)
    level, scale = scheme.init(first)
    m = scheme.max_lag
    out_level = np.empty(n)
    out_scale = np.empty(n)
    lags = np.empty((n, m))
    ring = np.full((len(starts), m), np.nan)
    for pos in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > pos)
        rows = starts[live] + pos
        level[live], scale[live] = scheme.update(level[live], scale[live], y[rows])
        ring[live, :-1] = ring[live, 1:]
        ring[live, -1] = y[rows]
        out_level[rows], out_scale[rows], lags[rows] = level[live], scale[live], ring[live]
    x, unit = step_inputs(series.values, out_level, out_scale, lags, scheme=scheme, extra=extra)
    return RowInputs(x, out_level, unit, out_scale)


def emitting_rows(series: SeriesSet, window: int) -> BoolArray:
    """Rows that get a forecast: observed, warmed up, and closed by a later row of the key."""
    last_of_key = np.zeros(series.n_rows, dtype=bool)
    last_of_key[series.offsets[1:][np.diff(series.offsets) > 0] - 1] = True
    return np.asarray(
        series.observed & (position_since_reset(series) >= window - 1) & ~last_of_key, dtype=bool
    )


def check_compatible(series: SeriesSet, meta: ModelMeta) -> None:
    """ConfigError unless ``series`` has the model's interval grid and extra features."""
    if series.grid != meta.time_grid():
        raise ConfigError(
            f"data interval {series.grid.describe()} differs from the model's "
            f"{meta.time_grid().describe()}"
        )
    if tuple(series.extra_names) != tuple(meta.features.extra_names):
        raise ConfigError(
            f"data features {list(series.extra_names)} differ from the model's "
            f"{list(meta.features.extra_names)}"
        )


def stream_forecasts(
    sess: ort.InferenceSession, meta: ModelMeta, series: SeriesSet
) -> StreamForecasts:
    """Replay ``series`` through the step, batched across keys per time index."""
    check_compatible(series, meta)
    spec = meta.feature_spec()
    names = meta.graph
    inputs = row_inputs(series, meta.level_scale(), meta.window, meta.extra_scaling())
    x_all, loc, scale = inputs.x, inputs.level, inputs.unit
    key_of = series.key_index()
    emit = emitting_rows(series, meta.window)
    n_keys = len(series.keys)
    h = np.zeros((n_keys, meta.state_size), dtype=np.float32)
    c = np.zeros((n_keys, meta.state_size), dtype=np.float32)
    scaled = np.zeros((series.n_rows, meta.horizon), dtype=np.float32)
    calendar = None
    if names.calendar is not None and spec.n_calendar:
        # one vectorised pass (time-zone conversion included) instead of one per call
        calendar = calendar_features(meta.time_grid().targets(series.ts, meta.horizon), spec)
    order = np.lexsort((key_of, series.ts))
    ts_sorted = series.ts[order]
    bounds = np.flatnonzero(np.diff(ts_sorted)) + 1
    groups = np.split(order, bounds)
    outputs = [names.h_out, names.c_out, names.forecast]
    for rows in groups:
        keys = key_of[rows]
        fresh = keys[series.reset[rows]]
        h[fresh] = 0.0
        c[fresh] = 0.0
        feeds = {names.x: x_all[rows], names.h: h[keys], names.c: c[keys]}
        if calendar is not None and names.calendar is not None:
            feeds[names.calendar] = calendar[rows]
        h_out, c_out, forecast = sess.run(outputs, feeds)
        h[keys] = h_out
        c[keys] = c_out
        scaled[rows] = forecast
    rows_out = np.flatnonzero(emit)
    out_scaled = scaled[rows_out]
    return StreamForecasts(
        row=rows_out,
        key=key_of[rows_out],
        origin_ts=series.ts[rows_out],
        forecast=floor_non_negative(
            unscale_forecast(out_scaled, loc[rows_out], scale[rows_out]), meta.non_negative
        ),
        scaled=out_scaled,
        loc=loc[rows_out],
        scale=scale[rows_out],
        calls=len(groups),
    )


def actuals(series: SeriesSet, rows: IntArray, horizon: int) -> tuple[FloatArray, BoolArray]:
    """``[F, H]`` observed values at ``t+1..t+H`` after each origin row, and where they exist.

    A target counts only if it is an observed (not interpolated) interval of the same key
    exactly ``k`` intervals after the origin (no target across a reset gap).
    """
    idx = rows[:, None] + np.arange(1, horizon + 1)[None, :]
    inside = idx < series.n_rows
    safe = np.minimum(idx, series.n_rows - 1)
    key_of = series.key_index()
    want_ts = series.grid.targets(series.ts[rows], horizon)
    valid = (
        inside
        & (key_of[safe] == key_of[rows][:, None])
        & (series.ts[safe] == want_ts)
        & series.observed[safe]
    )
    values = np.where(valid, series.values[safe, 0], np.nan)
    return np.asarray(values, dtype=np.float64), np.asarray(valid, dtype=bool)


def forecasts_frame(
    series: SeriesSet,
    fc: StreamForecasts,
    horizon: int,
    bands: dict[float, tuple[FloatArray, FloatArray]] | None = None,
) -> pd.DataFrame:
    """The long per-interval forecasts table (one row per origin and step), with the
    ``lower_<level>``/``upper_<level>`` columns of ``bands`` (``[F, H]`` each per level)."""
    steps = np.tile(np.arange(1, horizon + 1), len(fc.row))
    origin = np.repeat(fc.origin_ts, horizon)
    target = series.grid.targets(fc.origin_ts, horizon).ravel()

    def iso(seconds: IntArray) -> pd.Series:
        return pd.Series(pd.to_datetime(seconds, unit="s", utc=True)).dt.strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )

    return pd.DataFrame(
        {
            "key": np.asarray(series.keys, dtype=object)[np.repeat(fc.key, horizon)],
            "origin_ts": iso(origin),
            "step": steps,
            "target_ts": iso(target),
            "forecast": fc.forecast.ravel(),
            **{
                f"{side}_{level:g}": band.ravel()
                for level, pair in (bands or {}).items()
                for side, band in zip(("lower", "upper"), pair, strict=True)
            },
        }
    )


def write_forecasts(
    path: Path,
    series: SeriesSet,
    fc: StreamForecasts,
    horizon: int,
    bands: dict[float, tuple[FloatArray, FloatArray]] | None = None,
) -> None:
    """Write the forecasts table (:func:`forecasts_frame`) as Parquet (``.parquet``) or
    CSV (anything else)."""
    frame = forecasts_frame(series, fc, horizon, bands)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.9g")
