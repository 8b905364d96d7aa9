"""Metrics on inputs small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np

from training.metrics import error_metrics, seasonal_scale
from training.series import SeriesSet


def _series(
    values: list[float], ts_step: int = 60, observed: list[bool] | None = None
) -> SeriesSet:
    n = len(values)
    return SeriesSet(
        keys=("a",),
        offsets=np.array([0, n]),
        ts=np.arange(n, dtype=np.int64) * ts_step,
        values=np.asarray(values, dtype=np.float64)[:, None],
        observed=np.ones(n, bool) if observed is None else np.asarray(observed),
        reset=np.eye(1, n, dtype=bool)[0],
        interval_s=ts_step,
    )


def test_basic_metrics_by_hand() -> None:
    forecast = np.array([[2.0, 4.0], [1.0, 1.0]])
    actual = np.array([[1.0, 4.0], [3.0, 1.0]])
    mask = np.ones((2, 2), bool)
    out = error_metrics(forecast, actual, mask, mase_scale=np.array([2.0, 2.0]))
    # errors 1, 0, 2, 0
    assert out["mae"] == 0.75
    assert math.isclose(float(out["rmse"]), math.sqrt((1 + 4) / 4))
    assert math.isclose(float(out["mase"]), 0.75 / 2)
    # APEs: 100, 0, 66.67, 0
    assert math.isclose(float(out["mape"]), (100 + 0 + 200 / 3 + 0) / 4)
    # sMAPE: 200*1/3, 0, 200*2/4, 0
    assert math.isclose(float(out["smape"]), (200 / 3 + 100) / 4)
    per_step = out["per_step"]
    assert isinstance(per_step, dict)
    assert per_step["mae"] == [1.5, 0.0]


def test_zero_guards_and_mask() -> None:
    forecast = np.array([[0.0, 2.0, 5.0]])
    actual = np.array([[0.0, 0.0, np.nan]])
    mask = np.array([[True, True, False]])
    out = error_metrics(forecast, actual, mask, mase_scale=np.array([1.0]))
    # both zero: a perfect 0 for sMAPE; actual 0 vs 2: 200; masked entry ignored
    assert out["smape"] == 100.0
    # MAPE has no usable entry: every actual is zero
    assert math.isnan(float(out["mape"]))
    assert out["mape_skipped_zero_actuals"] == 2
    assert out["mae"] == 1.0
    assert out["n_forecasts"] == 2


def test_seasonal_scale_uses_training_pairs_only() -> None:
    s = _series([1.0, 3.0, 2.0, 6.0, 100.0, 0.0])
    train = np.array([True, True, True, True, False, False])
    # season 2 pairs inside training: |2-1|, |6-3| -> 2
    assert seasonal_scale(s, train, 2).tolist() == [2.0]


def test_seasonal_scale_skips_imputed_and_falls_back() -> None:
    s = _series([5.0, 5.0, 5.0, 7.0], observed=[True, True, True, False])
    # seasonal pairs give 0 (flat) -> lag-1 fallback is also 0 once the imputed row is out
    assert seasonal_scale(s, np.ones(4, bool), 2).tolist() == [1.0]
    s2 = _series([5.0, 5.0, 6.0, 6.0])
    # season-2 differences are 1, 1 -> 1; nothing to fall back on
    assert seasonal_scale(s2, np.ones(4, bool), 2).tolist() == [1.0]
    s3 = _series([5.0, 6.0, 5.0, 6.0])
    # seasonal MAE 0 -> falls back to the lag-1 MAE, 1
    assert seasonal_scale(s3, np.ones(4, bool), 2).tolist() == [1.0]
