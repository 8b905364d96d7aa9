"""The streaming backtest: replay through the exported step, score every model, calibrate.

:func:`backtest` replays a prepared history through the exported model (ONNX Runtime only,
:mod:`training.evaluate`) and scores the LSTM and the baselines on the *same* origins of
the protocol (:func:`origin_rows`): ``rolling``, every emitted test-period origin (the
streaming backtest, MASE over all scored entries); ``last-window``, one origin per key at
the end of its fit part (the M3/Monash standard, MASE and sMAPE per series, averaged over
series). :func:`validation_ranking` does the same on the validation origins for the
guard of ``fit`` (an LSTM that loses to the best baseline); :func:`calibrate` turns
validation-period residuals into the prediction-interval calibration and error-drift
reference stored in the model's metadata; :func:`coverage` measures the calibrated bands on
the test period, as the service publishes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from streamcast.core.artifact import CalibrationMeta, DriftMeta, ModelMeta
from streamcast.core.bands import DEFAULT_RATE
from streamcast.core.bands import Bands as BandCalibration
from training import baselines
from training.config import TrainConfig
from training.evaluate import StreamForecasts, actuals, emitting_rows, stream_forecasts
from training.metrics import error_metrics, seasonal_scale
from training.prep import Role, Split
from training.series import SeriesSet

IntArray = npt.NDArray[np.int64]


def origin_rows(
    series: SeriesSet, parts: Split, *, window: int, horizon: int, protocol: str, role: int
) -> IntArray:
    """The origins the protocol scores for ``role`` rows (test or validation): rolling,
    every emitted origin of the role with an observed target; last-window, per key the
    row just before its first ``role`` row (if the key forecasts there)."""
    emit = emitting_rows(series, window)
    if protocol == "last-window":
        is_role = parts.role == role
        first = np.flatnonzero(is_role & ~np.concatenate([[False], is_role[:-1]]))
        first = first[first > 0]
        rows = first - 1
        rows = rows[(series.key_index()[rows] == series.key_index()[first]) & emit[rows]]
    else:
        rows = np.flatnonzero(emit & (parts.role == role))
    _, mask = actuals(series, rows, horizon)
    target_role = parts.role[
        np.minimum(rows[:, None] + np.arange(1, horizon + 1), series.n_rows - 1)
    ]
    keep = (mask & (target_role == role)).any(axis=1)
    return np.asarray(rows[keep], dtype=np.int64)


def score(
    forecasts: dict[str, npt.NDArray[np.float64]],
    series: SeriesSet,
    parts: Split,
    rows: IntArray,
    *,
    horizon: int,
    season: int,
    protocol: str,
    role: int,
) -> tuple[dict[str, dict[str, Any]], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Metrics of each model's forecasts at ``rows`` on the targets of ``role``; for
    last-window, MASE and sMAPE are per-series means averaged over series."""
    actual, mask = actuals(series, rows, horizon)
    target_role = parts.role[
        np.minimum(rows[:, None] + np.arange(1, horizon + 1), series.n_rows - 1)
    ]
    mask &= target_role == role
    actual = np.where(mask, actual, np.nan)
    # the in-sample scale: the training rows (rolling, as the streaming backtest always
    # had), the whole fit part (last-window: the competitions' in-sample period)
    in_sample = parts.role != Role.TEST if protocol == "last-window" else parts.train
    scale = seasonal_scale(series, in_sample, season)[series.key_index()[rows]]
    metrics = {}
    for name, f in forecasts.items():
        m = error_metrics(f, actual, mask, scale)
        if protocol == "last-window":
            n = np.maximum(mask.sum(axis=1), 1)
            err = np.abs(np.where(mask, f - actual, 0.0))
            denom = np.abs(f) + np.abs(np.nan_to_num(actual))
            with np.errstate(invalid="ignore", divide="ignore"):
                sm = np.where(mask & (denom > 0), 200.0 * err / np.where(denom > 0, denom, 1), 0.0)
            m["mase"] = float(np.mean(err.sum(axis=1) / n / scale))
            m["smape"] = float(np.mean(sm.sum(axis=1) / n))
        metrics[name] = m
    return metrics, actual, mask


@dataclass
class Backtest:
    """The streaming replay and everything scored from it."""

    fc: StreamForecasts
    test: npt.NDArray[np.int64]  # indices into fc of test-period origins
    actual: npt.NDArray[np.float64]
    mask: npt.NDArray[np.bool_]
    forecasts: dict[str, npt.NDArray[np.float64]]
    metrics: dict[str, dict[str, Any]]
    timings: dict[str, float]


def backtest(
    sess: ort.InferenceSession,
    meta: ModelMeta,
    series: SeriesSet,
    parts: Split,
    config: TrainConfig,
    *,
    statistical: dict[str, npt.NDArray[np.float64]] | None = None,
) -> Backtest:
    """Replay through the exported step, then score the LSTM and the baselines on the
    protocol's test origins (``statistical``: the ``"test:<name>"`` forecasts of
    :func:`training.baselines.statistical` at exactly these origins)."""
    timings: dict[str, float] = {}
    start = time.monotonic()
    fc = stream_forecasts(sess, meta, series)
    timings["stream_replay"] = time.monotonic() - start
    rows = test_origins(series, parts, config)
    test = np.searchsorted(fc.row, rows)  # every origin is an emitting row
    forecasts = {"lstm": fc.forecast[test]}
    if "naive" in config.baselines:
        forecasts["naive"] = baselines.naive(series, rows, meta.horizon)
    if "seasonal_naive" in config.baselines:
        forecasts["seasonal_naive"] = baselines.seasonal_naive(
            series, rows, meta.horizon, config.season_
        )
    for key, values in (statistical or {}).items():
        group, name = key.split(":", 1)
        if group == "test":
            forecasts[name] = values
    metrics, actual, mask = score(
        forecasts, series, parts, rows, horizon=meta.horizon, season=config.season_,
        protocol=config.protocol, role=Role.TEST,
    )  # fmt: skip
    return Backtest(fc, test, actual, mask, forecasts, metrics, timings)


def test_origins(series: SeriesSet, parts: Split, config: TrainConfig) -> IntArray:
    """The protocol's test origins (:func:`origin_rows` for the test rows)."""
    return origin_rows(
        series, parts, window=config.window_, horizon=config.horizon,
        protocol=config.protocol, role=Role.TEST,
    )  # fmt: skip


def validation_origins(series: SeriesSet, parts: Split, config: TrainConfig) -> IntArray:
    """The protocol's validation origins (the guard's)."""
    return origin_rows(
        series, parts, window=config.window_, horizon=config.horizon,
        protocol=config.protocol, role=Role.VAL,
    )  # fmt: skip


def validation_ranking(
    fc: StreamForecasts,
    series: SeriesSet,
    parts: Split,
    config: TrainConfig,
    statistical: dict[str, npt.NDArray[np.float64]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Validation metrics of the exported LSTM and every baseline on the validation
    origins (the guard: does the LSTM beat the best baseline where it was selected?)."""
    rows = validation_origins(series, parts, config)
    if len(rows) == 0:
        return {}
    index = np.searchsorted(fc.row, rows)
    forecasts = {
        "lstm": fc.forecast[index],
        "naive": baselines.naive(series, rows, config.horizon),
        "seasonal_naive": baselines.seasonal_naive(series, rows, config.horizon, config.season_),
    }
    for key, values in (statistical or {}).items():
        group, name = key.split(":", 1)
        if group == "val":
            forecasts[name] = values
    metrics, _, _ = score(
        forecasts, series, parts, rows, horizon=config.horizon, season=config.season_,
        protocol=config.protocol, role=Role.VAL,
    )  # fmt: skip
    return metrics


def calibrate(
    fc: StreamForecasts, series: SeriesSet, parts: Split, config: TrainConfig
) -> tuple[CalibrationMeta, DriftMeta]:
    """Per-step quantiles of scaled residuals ``(actual - forecast) / scale`` on validation
    origins, and their mean/std/|p95| as the error-drift detector's reference (the input-drift
    reference is :func:`training.input_drift.input_reference`)."""
    val = np.flatnonzero(parts.role[fc.row] == Role.VAL)
    actual, mask = actuals(series, fc.row[val], config.horizon)
    resid = (actual - fc.forecast[val]) / fc.scale[val][:, None]
    resid = np.where(mask, resid, np.nan)
    if not mask.any(axis=0).all():
        return CalibrationMeta(), DriftMeta()
    lower, upper = [], []
    for level in config.interval_levels:
        lo, hi = np.nanquantile(resid, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
        lower.append(tuple(float(v) for v in lo))
        upper.append(tuple(float(v) for v in hi))
    drift = DriftMeta(
        reference="validation period, scaled residuals (actual - forecast) / scale",
        residual_mean=tuple(float(v) for v in np.nanmean(resid, axis=0)),
        residual_std=tuple(float(v) for v in np.nanstd(resid, axis=0)),
        abs_residual_p95=tuple(float(v) for v in np.nanquantile(np.abs(resid), 0.95, axis=0)),
        n_origins=len(val),
    )
    return (
        CalibrationMeta(levels=config.interval_levels, lower=tuple(lower), upper=tuple(upper)),
        drift,
    )


Bands = dict[float, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


def band_offsets(
    series: SeriesSet, fc: StreamForecasts, bands: BandCalibration
) -> npt.NDArray[np.float32]:
    """``[F, L, 2]`` the band offsets the service applies to each forecast of the replay:
    :mod:`streamcast.core.bands`' recurrence driven, as in
    :class:`streamcast.core.quality.QualityTracker`, by each key's probe -- one forecast
    scored at every observed interval of its horizon, the next forecast taking over when
    its horizon has passed -- and applied to a forecast after its origin's actual was
    scored. One vector step per row position, across all keys."""
    n_keys, n_levels = len(series.keys), len(bands.levels)
    out = np.zeros((len(fc.row), n_levels, 2), dtype=np.float32)
    if n_levels == 0 or len(fc.row) == 0:
        return out
    horizon = fc.forecast.shape[1]
    at_row = np.full(series.n_rows, -1, dtype=np.int64)
    at_row[fc.row] = np.arange(len(fc.row))
    step_of = series.steps()
    # as the service holds them: the probe's values and unit in float32
    held, held_unit = fc.forecast.astype(np.float32), fc.scale.astype(np.float32)
    offsets = np.zeros((n_keys, n_levels, 2), dtype=np.float32)
    probe = np.full(n_keys, -1, dtype=np.int64)
    first, length = series.offsets[:-1], np.diff(series.offsets)
    for j in range(int(length.max(initial=0))):
        keys = np.flatnonzero(length > j)
        rows = first[keys] + j
        real = series.observed[rows]
        keys, rows = keys[real], rows[real]
        p = probe[keys]
        live = p >= 0
        step = np.zeros(len(keys), dtype=np.int64)
        step[live] = step_of[rows[live]] - step_of[fc.row[p[live]]]
        scored = live & (step >= 1) & (step <= horizon)
        if scored.any():
            k, pk = step[scored] - 1, p[scored]
            value = held[pk, k].astype(np.float64)
            err = (series.values[rows[scored], 0] - value) / held_unit[pk].astype(np.float64)
            offsets[keys[scored]] = bands.update(offsets[keys[scored]], err, k)
        probe[keys[live & (step >= horizon)]] = -1
        made = at_row[rows]
        has = made >= 0
        out[made[has]] = offsets[keys[has]]
        free = has & (probe[keys] < 0)
        probe[keys[free]] = made[free]
    return out


def forecast_bands(
    series: SeriesSet, fc: StreamForecasts, calibration: CalibrationMeta, rate: float = DEFAULT_RATE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """``(lower, upper)``, each ``[F, L, H]`` in original units, for every forecast of the
    replay: the bands the service publishes (:mod:`streamcast.core.pipeline`), ``forecast +
    (quantile -/+ offset * width) * scale`` with the key's scale and its adaptive offsets
    (:func:`band_offsets`; ``rate`` 0: the static calibrated bands); None without levels."""
    if not calibration.levels:
        return None
    bands = BandCalibration(
        calibration.levels,
        np.asarray(calibration.lower, dtype=np.float64),
        np.asarray(calibration.upper, dtype=np.float64),
        rate,
    )
    return bands.bounds(fc.forecast, fc.scale, band_offsets(series, fc, bands))


def interval_bands(
    bt: Backtest, calibration: CalibrationMeta, series: SeriesSet, rate: float = DEFAULT_RATE
) -> Bands:
    """``{level: (lower, upper)}``, each ``[F, H]`` in original units on the test origins
    (:func:`forecast_bands`)."""
    both = forecast_bands(series, bt.fc, calibration, rate)
    if both is None:
        return {}
    lower, upper = both[0][bt.test], both[1][bt.test]
    return {level: (lower[:, i], upper[:, i]) for i, level in enumerate(calibration.levels)}


def coverage(
    bt: Backtest, calibration: CalibrationMeta, series: SeriesSet, rate: float = DEFAULT_RATE
) -> dict[str, dict[str, Any]]:
    """Share of observed test targets inside each level's band (bounds included, as the
    service counts them), overall and per horizon step, for the adaptive bands the
    service publishes (``rate``) and the static calibrated ones: ``report.json``'s
    ``coverage``."""
    scored = bt.mask.sum(axis=0)
    out: dict[str, dict[str, Any]] = {}
    static = interval_bands(bt, calibration, series, 0.0)
    for level, (lower, upper) in interval_bands(bt, calibration, series, rate).items():
        inside = (bt.actual >= lower) & (bt.actual <= upper) & bt.mask
        s_lower, s_upper = static[level]
        fixed = (bt.actual >= s_lower) & (bt.actual <= s_upper) & bt.mask
        out[f"{level:g}"] = {
            "overall": float(inside.sum() / max(int(scored.sum()), 1)),
            "per_step": (inside.sum(axis=0) / np.maximum(scored, 1)).tolist(),
            "targets": int(scored.sum()),
            "band_rate": rate,
            "static_overall": float(fixed.sum() / max(int(scored.sum()), 1)),
        }
    return out
