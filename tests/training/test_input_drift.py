"""The input-drift reference and its offline test: the training distribution as quantiles,
the threshold calibrated on training windows and measured on validation ones, and the
alarm rule run over the test period exactly as the service's detector runs it."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.core.artifact import DriftMeta, ModelMeta, ScalingMeta
from streamcast.core.drift import InputDrift, ks_distance
from streamcast.core.features import ValueScaling
from streamcast.core.state import StateStore
from training.input_drift import (
    INPUT_EVERY,
    INPUT_PROBS,
    MIN_CALIBRATION_WINDOWS,
    InputWindows,
    alarm_starts,
    input_alarms,
    input_reference,
    scaled_values,
    window_distances,
)
from training.prep import Role, fit_scaling, split
from training.series import SeriesSet

WINDOW = 24


def _series(rows: int = 24 * 60, keys: int = 3, shift: dict[int, tuple[int, int]] | None = None,
            seed: int = 0) -> SeriesSet:  # fmt: skip
    """Hourly daily-cycle series per key (each its own level and size); ``shift`` moves key
    ``k``'s values in rows ``[a, b)`` up by 3 of its training standard deviations."""
    rng = np.random.default_rng(seed)
    hours = np.arange(rows)
    blocks = []
    for k in range(keys):
        level, size = 100.0 * (k + 1), 10.0 * (k + 1)
        values = level + size * np.sin(2 * np.pi * hours / 24) + rng.normal(0, size / 4, rows)
        if shift and k in shift:
            a, b = shift[k]
            values[a:b] += 3 * np.std(values[: int(rows * 0.7)])
        blocks.append(values)
    n = rows * keys
    reset = np.zeros(n, dtype=bool)
    reset[::rows] = True
    return SeriesSet(
        keys=tuple(f"k{k}" for k in range(keys)),
        offsets=np.arange(keys + 1, dtype=np.int64) * rows,
        ts=np.tile(hours * 3600, keys).astype(np.int64),
        values=np.concatenate(blocks)[:, None],
        observed=np.ones(n, dtype=bool),
        reset=reset,
        interval_s=3600,
    )


def _meta(series: SeriesSet, drift: DriftMeta | None = None) -> ModelMeta:
    scaling, _ = fit_scaling(series, split(series).train)
    return ModelMeta(
        name="m", version="1", created_at="2026-11-24T00:00:00Z", state_size=1, units=1,
        window=WINDOW, horizon=6, interval_s=3600, scaling=ScalingMeta(known=scaling.known),
        drift=drift or DriftMeta(),
    )  # fmt: skip


def _with_reference(series: SeriesSet) -> ModelMeta:
    meta = _meta(series)
    ref = input_reference(series, split(series), meta)
    return _meta(
        series,
        DriftMeta(
            input_probs=ref.probs, input_quantiles=ref.quantiles,
            input_threshold=ref.threshold, input_false_alarm_rate=ref.false_alarm_rate,
        ),
    )  # fmt: skip


def test_reference_quantiles_threshold_and_measured_rate() -> None:
    series = _series()
    parts, meta = split(series), _meta(series)
    ref = input_reference(series, parts, meta)
    scaled = scaled_values(series, meta)
    # each key in its own training units, as the service scales known keys
    for k, key in enumerate(series.keys):
        loc, scale = meta.scaling.known[key]
        rows = series.key_slice(k)
        np.testing.assert_array_equal(scaled[rows], (series.values[rows, 0] - loc) / scale)
    assert ref.probs == INPUT_PROBS and len(INPUT_PROBS) == 49
    assert INPUT_PROBS[0] == 0.02 and INPUT_PROBS[-1] == 0.98
    np.testing.assert_allclose(ref.quantiles, np.quantile(scaled[parts.train], INPUT_PROBS))
    windows = window_distances(
        series, scaled, np.asarray(ref.quantiles), np.asarray(ref.probs), window=WINDOW
    )
    role = parts.role[windows.row]
    train, val = windows.distance[role == Role.TRAIN], windows.distance[role == Role.VAL]
    assert ref.calibration_windows == len(train) > 100 and ref.validation_windows == len(val)
    # fewer than ~4,000 windows: the largest training distance, plus one ECDF step
    assert ref.threshold == pytest.approx(train.max() + 1 / WINDOW)
    assert ref.false_alarm_rate == np.mean(val > ref.threshold)


def test_windows_are_where_the_service_tests_each_key() -> None:
    series = _series(rows=200, keys=2)
    for window, first in ((WINDOW, 23), (48, 47), (12, 23)):
        w = window_distances(
            series, scaled_values(series, _meta(series)), np.zeros(1), np.full(1, 0.5),
            window=window,
        )  # fmt: skip
        assert series.ts[w.row[w.key == 0]].tolist() == [
            3600 * p for p in range(first, 200, INPUT_EVERY)
        ]


def test_alarm_rule_is_the_service_detector() -> None:
    """The vectorised rule counts exactly the alarms :class:`InputDrift` raises when the
    same history is fed to it interval by interval."""
    meta = _with_reference(_series(rows=24 * 40))
    # a shift in key 0's validation period that ends, one in key 2's test period that lasts
    series = _series(rows=24 * 40, shift={0: (24 * 29, 24 * 32), 2: (24 * 36, 24 * 40)})
    ref = meta.drift
    assert ref.input_threshold is not None
    scaled = scaled_values(series, meta)
    windows = window_distances(
        series, scaled, np.asarray(ref.input_quantiles), np.asarray(ref.input_probs),
        window=WINDOW,
    )  # fmt: skip
    offline = alarm_starts(windows, ref.input_threshold)
    store = StateStore(window=WINDOW, n_inputs=1, state_size=1, max_keys=8,
                       scaling=ValueScaling(known=dict(meta.scaling.known)))  # fmt: skip
    rows, _ = store.rows_for(list(series.keys), now_s=0.0)
    for k, key in enumerate(series.keys):
        store.loc[rows[k]], store.scale[rows[k]] = meta.scaling.known[key]
    detector = InputDrift(
        store, probs=ref.input_probs, quantiles=ref.input_quantiles,
        threshold=ref.input_threshold, every=INPUT_EVERY,
    )  # fmt: skip
    raised: list[tuple[int, int]] = []
    length = int(series.offsets[1])
    for t in range(length):
        at = series.offsets[:-1] + t
        lo = np.maximum(at - WINDOW + 1, series.offsets[:-1])
        for k in range(len(series.keys)):
            recent = series.values[lo[k] : at[k] + 1, 0]
            store.window[rows[k], : len(recent), 0] = recent
            store.wlen[rows[k]] = len(recent)
        store.warm[rows] = t >= WINDOW - 1
        order = np.argsort(rows)
        alarms = detector.update(rows[order], at[order], np.arange(len(rows)))
        raised += [
            (int(r), t) for r, kind in zip(alarms.row, alarms.kind, strict=True)
            if kind == "input_drift"
        ]  # fmt: skip
    key_of_row = {int(r): k for k, r in enumerate(rows)}
    online = sorted((key_of_row[r], t) for r, t in raised)
    found = sorted(
        (int(k), int(series.ts[r] // 3600))
        for k, r in zip(windows.key[offline], windows.row[offline], strict=True)
    )
    assert online == found
    assert {k for k, _ in found} == {0, 2}  # the two shifts, once each
    assert len(found) == 2


def test_alarm_rule_rearms_only_below_half_the_threshold() -> None:
    d = np.array([0.9, 0.6, 0.3, 0.9, 0.1, 0.9, 0.9, 0.2, 0.1, 0.7])
    key = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    w = InputWindows(np.arange(len(d)), key, d)
    # key 0: 0.3 is not below 0.25, 0.1 is; key 1 starts armed
    assert np.flatnonzero(alarm_starts(w, 0.5)).tolist() == [0, 5, 6, 9]


def test_the_report_counts_alarms_of_the_test_period_per_10k_key_intervals() -> None:
    quiet = _series()
    meta = _with_reference(quiet)
    parts = split(quiet)
    report = input_alarms(quiet, parts, meta)
    assert report["input_alarms"] == 0 and report["input_alarms_per_10k"] == 0.0
    assert report["test_key_intervals"] == int(parts.test.sum())
    assert report["test_windows"] == int(
        (parts.role[window_distances(quiet, scaled_values(quiet, meta), np.zeros(1),
                                     np.full(1, 0.5), window=WINDOW).row] == Role.TEST).sum()
    )  # fmt: skip
    start = int(24 * 60 * 0.85) + 24  # inside the test period (the last 15 %)
    shifted = _series(shift={1: (start, 24 * 60)})
    report = input_alarms(shifted, split(shifted), meta)
    assert report["input_alarms"] == 1
    assert report["input_alarms_per_10k"] == pytest.approx(1e4 / report["test_key_intervals"])
    assert report["test_max_distance"] > 0.9


def test_ks_distance_is_the_statistic_of_the_windows() -> None:
    series = _series(rows=24 * 10, keys=1)
    scaled = scaled_values(series, _meta(series))
    q, p = np.array([-1.0, 0.0, 1.0]), np.array([0.25, 0.5, 0.75])
    w = window_distances(series, scaled, q, p, window=WINDOW)
    assert (
        w.distance.tolist()
        == ks_distance(np.stack([scaled[r - WINDOW + 1 : r + 1] for r in w.row]), q, p).tolist()
    )


def test_too_few_training_windows_mean_no_threshold() -> None:
    series = _series(rows=24 * 25, keys=1)  # 17 test windows in the training period
    ref = input_reference(series, split(series), _meta(series))
    assert ref.calibration_windows == MIN_CALIBRATION_WINDOWS - 3
    assert ref.threshold is None and ref.false_alarm_rate is None
    report = input_alarms(series, split(series), _meta(series))
    assert report["input_alarms"] is None
