"""Baseline forecasts on the same origins as the LSTM: naive, seasonal naive and ARIMA.

Every baseline returns ``[F, H]`` forecasts in original units for origin rows ``rows`` of a
:class:`~training.series.SeriesSet`, using only data up to each origin.

ARIMA is kept affordable on two cores: one SARIMAX(2,0,1) per key with a constant and
``FOURIER_TERMS`` sin/cos pairs of the season as regressors (plus ``WEEKLY_TERMS`` pairs of
the week when the season is a day, as for hourly counts), fitted once on the last
``ARIMA_FIT_ROWS`` intervals of the key's *training* period. For the backtest the fitted
model is never refitted: its Kalman filter runs once over the key's whole regular grid
(gaps and imputed intervals are missing observations), and the H-step forecasts from every
origin are propagated from the filter's one-step-ahead state ``a[t+1|t]`` with the
transition matrix, all origins at once. This equals statsmodels' own ``forecast`` after
``apply`` on the data up to the origin (checked in the tests).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

from training.series import SeriesSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FOURIER_TERMS = 4
WEEKLY_TERMS = 3
DAY_S = 86_400
ARIMA_ORDER = (2, 0, 1)
ARIMA_FIT_ROWS = 1500


def lookup_rows(series: SeriesSet, key: IntArray, ts: IntArray) -> IntArray:
    """Row index holding ``(key, ts)`` for each pair, or -1 where there is none."""
    base = int(series.ts.min()) if series.n_rows else 0
    span = (int(series.ts.max()) - base) // series.interval_s + 1 if series.n_rows else 1
    codes = series.key_index() * span + (series.ts - base) // series.interval_s
    wanted = key * span + (ts - base) // series.interval_s
    pos = np.clip(np.searchsorted(codes, wanted), 0, max(series.n_rows - 1, 0))
    found = (codes[pos] == wanted) & ((ts - base) % series.interval_s == 0)
    return np.asarray(np.where(found, pos, -1), dtype=np.int64)


def naive(series: SeriesSet, rows: IntArray, horizon: int) -> FloatArray:
    """The last value at the origin, repeated over the horizon."""
    return np.repeat(series.values[rows, 0][:, None], horizon, axis=1)


def seasonal_naive(series: SeriesSet, rows: IntArray, horizon: int, season: int) -> FloatArray:
    """The value one season before each target (``y[t+k-m*ceil(k/m)]``); naive if missing."""
    steps = np.arange(1, horizon + 1)
    back = steps - season * np.ceil(steps / season).astype(np.int64)  # in (-season, 0]
    key = series.key_index()[rows]
    want = series.ts[rows][:, None] + back[None, :] * series.interval_s
    found = lookup_rows(series, np.repeat(key[:, None], horizon, axis=1), want)
    fallback = naive(series, rows, horizon)
    return np.asarray(
        np.where(found >= 0, series.values[np.maximum(found, 0), 0], fallback), dtype=np.float64
    )


def fourier(ts: IntArray, period_s: int, terms: int) -> FloatArray:
    """``[N, 1 + 2*terms]``: a constant and sin/cos pairs of the seasonal phase."""
    phase = 2.0 * np.pi * np.mod(ts, period_s) / period_s
    cols = [np.ones(len(ts))]
    for j in range(1, terms + 1):
        cols += [np.sin(j * phase), np.cos(j * phase)]
    return np.stack(cols, axis=1)


def arima_regressors(ts: IntArray, interval_s: int, season: int) -> FloatArray:
    """The ARIMA baseline's regressors at ``ts``: constant, seasonal (and weekly) Fourier."""
    terms = min(FOURIER_TERMS, season // 2)
    exog = fourier(ts, season * interval_s, terms)
    if season * interval_s == DAY_S:
        exog = np.concatenate([exog, fourier(ts, 7 * DAY_S, WEEKLY_TERMS)[:, 1:]], axis=1)
    return exog


def arima(
    series: SeriesSet,
    train_mask: npt.NDArray[np.bool_],
    rows: IntArray,
    horizon: int,
    *,
    season: int,
    fit_rows: int = ARIMA_FIT_ROWS,
) -> FloatArray:
    """SARIMAX forecasts from every origin in ``rows`` (see the module docstring)."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # noqa: PLC0415 - heavy, only here

    out = np.full((len(rows), horizon), np.nan)
    key_of_row = series.key_index()
    for k in np.unique(key_of_row[rows]):
        sl = series.key_slice(int(k))
        ts = series.ts[sl]
        grid = np.arange(ts[0], ts[-1] + (horizon + 1) * series.interval_s, series.interval_s)
        pos = (ts - ts[0]) // series.interval_s
        y = np.full(len(grid), np.nan)
        y[pos] = np.where(series.observed[sl], series.values[sl, 0], np.nan)
        exog = arima_regressors(grid, series.interval_s, season)
        train_pos = pos[train_mask[sl]]
        if len(train_pos) == 0:
            continue
        end = int(train_pos[-1]) + 1
        start = max(0, end - fit_rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on short fits
            model = SARIMAX(y[start:end], exog=exog[start:end], order=ARIMA_ORDER)
            fitted = model.fit(disp=False, maxiter=50)
            n_obs = len(grid) - horizon
            applied = fitted.apply(y[:n_obs], exog=exog[:n_obs])
        beta = np.asarray(fitted.params[: exog.shape[1]])
        mean_obs = exog @ beta
        design = applied.filter_results.design[:, :, 0]
        transition = applied.filter_results.transition[:, :, 0]
        mine = np.flatnonzero(key_of_row[rows] == k)
        origin = pos[rows[mine] - sl.start]
        state = applied.filter_results.predicted_state[:, origin + 1]  # a[t+1|t]
        for step in range(horizon):
            out[mine, step] = (design @ state)[0] + mean_obs[origin + step + 1]
            state = transition @ state
    return out
