"""Baselines: naive, seasonal naive, and ARIMA matching statsmodels' own forecasts."""

from __future__ import annotations

import warnings

import numpy as np

from training.baselines import (
    arima,
    arima_regressors,
    fourier,
    lookup_rows,
    naive,
    seasonal_naive,
)
from training.series import SeriesSet


def _two_keys() -> SeriesSet:
    # key a: 0..9 hourly; key b: 100..104 then a gap of 5 intervals then 110..112
    ts_a = np.arange(10) * 3600
    ts_b = np.concatenate([np.arange(5), np.arange(10, 13)]) * 3600
    values = np.concatenate([np.arange(10.0), 100 + ts_b / 3600])[:, None]
    reset = np.zeros(18, bool)
    reset[[0, 10, 15]] = True
    return SeriesSet(
        keys=("a", "b"),
        offsets=np.array([0, 10, 18]),
        ts=np.concatenate([ts_a, ts_b]),
        values=values,
        observed=np.ones(18, bool),
        reset=reset,
        interval_s=3600,
    )


def test_lookup_rows_finds_and_misses() -> None:
    s = _two_keys()
    found = lookup_rows(s, np.array([0, 1, 1, 1]), np.array([3, 2, 7, 11]) * 3600)
    assert found.tolist() == [3, 12, -1, 16]


def test_naive_and_seasonal_naive() -> None:
    s = _two_keys()
    rows = np.array([5, 9])  # key a at t=5 and t=9
    assert naive(s, rows, 3).tolist() == [[5.0] * 3, [9.0] * 3]
    # season 4: targets t+1..t+5 look back to t-3, t-2, t-1, t, t-3+4=t+1-4...
    got = seasonal_naive(s, rows, 5, 4)
    assert got[0].tolist() == [2.0, 3.0, 4.0, 5.0, 2.0]
    assert got[1].tolist() == [6.0, 7.0, 8.0, 9.0, 6.0]


def test_seasonal_naive_falls_back_to_naive_across_a_gap() -> None:
    s = _two_keys()
    # key b origin at t=11 (row 16): season 3 looks back to t=9, 10, 11 -> 9 is in the gap
    got = seasonal_naive(s, np.array([16]), 3, 3)
    assert got.tolist() == [[111.0, 110.0, 111.0]]


def test_fourier_terms() -> None:
    ts = np.array([0, 6, 12]) * 3600
    f = fourier(ts, 24 * 3600, 1)
    np.testing.assert_allclose(f, [[1, 0, 1], [1, 1, 0], [1, 0, -1]], atol=1e-12)


def test_arima_equals_statsmodels_forecast_after_apply() -> None:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    rng = np.random.default_rng(0)
    n, season, horizon = 240, 24, 5
    t = np.arange(n)
    y = 10 + 3 * np.sin(2 * np.pi * t / season) + rng.normal(size=n)
    s = SeriesSet(
        keys=("a",),
        offsets=np.array([0, n]),
        ts=t * 3600,
        values=y[:, None],
        observed=np.ones(n, bool),
        reset=t == 0,
        interval_s=3600,
    )
    train = t < 160
    rows = np.array([170, 200])
    got = arima(s, train, rows, horizon, season=season)
    exog = arima_regressors(np.arange(n + horizon + 1) * 3600, 3600, season)
    assert exog.shape[1] == 1 + 2 * 4 + 2 * 3  # constant, daily and weekly Fourier pairs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = SARIMAX(y[:160], exog=exog[:160], order=(2, 0, 1)).fit(disp=False, maxiter=50)
        for row, forecast in zip(rows, got, strict=True):
            applied = fitted.apply(y[: row + 1], exog=exog[: row + 1])
            expected = applied.forecast(horizon, exog=exog[row + 1 : row + 1 + horizon])
            np.testing.assert_allclose(forecast, expected, rtol=1e-9, atol=1e-9)
