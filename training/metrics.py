"""Forecast accuracy over a rolling-origin backtest: overall and per horizon step.

All functions take ``forecast`` and ``actual`` arrays ``[F, H]`` (F origins, H steps) and a
``mask`` of the entries that count (an observed target exists). Zero guards:

- **MAPE** skips entries whose actual value is (near) zero, ``|actual| <= MAPE_EPS``: a
  percentage of zero is undefined, and pedestrian counts at night are often zero. The
  number of skipped entries is reported beside it.
- **sMAPE** (``200 |f - a| / (|f| + |a|)``) counts an entry where both are zero as a
  perfect 0, instead of 0/0.
- **MASE** divides each absolute error by its key's in-sample seasonal-naive MAE on the
  *training* period (season ``m``: 24 hourly, 48 half-hourly, 5 or 1 for trading days),
  then averages; a key whose scale is zero falls back to its non-seasonal naive MAE, and
  failing that to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from training.series import SeriesSet

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
MAPE_EPS = 1e-8
METRIC_NAMES = ("mae", "rmse", "smape", "mape", "mase")


def seasonal_scale(series: SeriesSet, train_mask: BoolArray, season: int) -> FloatArray:
    """``[K]`` per-key mean ``|y_t - y_{t-season}|`` over observed training pairs.

    Pairs must be exactly ``season`` intervals apart within one key (never across a gap).

    >>> from training.series import SeriesSet
    >>> s = SeriesSet(keys=("a",), offsets=np.array([0, 4]), ts=np.arange(4) * 60,
    ...     values=np.array([[1.0], [3.0], [2.0], [6.0]]), observed=np.ones(4, bool),
    ...     reset=np.array([True, False, False, False]), interval_s=60)
    >>> seasonal_scale(s, np.ones(4, bool), 2).tolist()
    [2.0]
    """
    scale = _lagged_mae(series, train_mask, season)
    fallback = _lagged_mae(series, train_mask, 1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, fallback)
    return np.asarray(np.where(np.isfinite(scale) & (scale > 0), scale, 1.0), dtype=np.float64)


def _lagged_mae(series: SeriesSet, train_mask: BoolArray, lag: int) -> FloatArray:
    n_keys = len(series.keys)
    if series.n_rows <= lag:
        return np.full(n_keys, np.nan)
    key = series.key_index()
    use = train_mask & series.observed
    steps = series.steps()
    ok = use[lag:] & use[:-lag] & (key[lag:] == key[:-lag]) & (steps[lag:] - steps[:-lag] == lag)
    diff = np.abs(series.values[lag:, 0] - series.values[:-lag, 0])
    sums = np.bincount(key[lag:][ok], weights=diff[ok], minlength=n_keys)
    counts = np.bincount(key[lag:][ok], minlength=n_keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums / counts, dtype=np.float64)


def _masked_mean(values: FloatArray, mask: BoolArray, axis: int | None) -> FloatArray:
    total = np.where(mask, values, 0.0).sum(axis=axis)
    count = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def error_metrics(
    forecast: FloatArray, actual: FloatArray, mask: BoolArray, mase_scale: FloatArray
) -> dict[str, Any]:
    """Overall metrics plus ``per_step`` arrays (lists, one value per horizon step).

    ``mase_scale`` is ``[F]``: the MASE scale of each origin's key.
    """
    err = np.where(mask, forecast - actual, 0.0)
    abs_err = np.abs(err)
    denom = np.abs(forecast) + np.abs(actual)
    with np.errstate(invalid="ignore", divide="ignore"):
        smape = np.where(denom > 0, 200.0 * abs_err / np.where(denom > 0, denom, 1.0), 0.0)
        ape = 100.0 * abs_err / np.where(np.abs(actual) > MAPE_EPS, np.abs(actual), 1.0)
    mape_mask = mask & (np.abs(np.nan_to_num(actual)) > MAPE_EPS)
    scaled = abs_err / mase_scale[:, None]
    per_step: dict[str, list[float]] = {}
    overall: dict[str, Any] = {}
    for name, values, m in (
        ("mae", abs_err, mask),
        ("rmse", err**2, mask),
        ("smape", smape, mask),
        ("mape", ape, mape_mask),
        ("mase", scaled, mask),
    ):
        step = _masked_mean(values, m, axis=0)
        whole = float(_masked_mean(values, m, axis=None))
        if name == "rmse":
            step, whole = np.sqrt(step), float(np.sqrt(whole))
        per_step[name] = [float(v) for v in step]
        overall[name] = whole
    overall["n_forecasts"] = int(mask.sum())
    overall["n_origins"] = int(mask.any(axis=1).sum())
    overall["mape_skipped_zero_actuals"] = int((mask & ~mape_mask).sum())
    overall["per_step"] = per_step
    return overall
