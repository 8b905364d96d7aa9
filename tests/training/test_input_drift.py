"""The input-drift reference and its offline test: the training distribution as quantiles,
the threshold calibrated on training-period tests and measured on validation ones, and the
alarm rule run over the test period exactly as the service's detector runs it."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.core.artifact import DriftMeta, ModelMeta, ScalingMeta
from streamcast.core.drift import INPUT_DRIFT, InputDrift, InputSteps, ecdf_weight
from streamcast.core.state import StateStore
from training.evaluate import emitting_rows
from training.input_drift import (
    INPUT_EVERY,
    INPUT_PROBS,
    MIN_CALIBRATION_TESTS,
    InputTests,
    alarm_starts,
    input_alarms,
    input_reference,
    input_tests,
    stepped_values,
)
from training.prep import Role, split
from training.series import SeriesSet

WINDOW = 24
#: the model's level/scale (alpha 1/24) in a unit about the series' noise
SCALING = ScalingMeta(alpha=1 / 24, lags=(24,), kappa=0.1)


def _series(rows: int = 24 * 60, keys: int = 3, shift: dict[int, tuple[int, int]] | None = None,
            seed: int = 0) -> SeriesSet:  # fmt: skip
    """Hourly daily-cycle series per key (each its own level and size); ``shift`` makes key
    ``k``'s swings around its level 4 times as large in rows ``[a, b)``: another shape of
    the model's input ``u``. (A level shift is not input drift here: the key's level
    follows it within a season, and the error-drift chart sees it.)"""
    rng = np.random.default_rng(seed)
    hours = np.arange(rows)
    blocks = []
    for k in range(keys):
        level, size = 100.0 * (k + 1), 10.0 * (k + 1)
        values = level + size * np.sin(2 * np.pi * hours / 24) + rng.normal(0, size / 4, rows)
        if shift and k in shift:
            a, b = shift[k]
            values[a:b] = level + 4 * (values[a:b] - level)
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
    del series  # the scaling follows each key: nothing is fitted per key
    return ModelMeta(
        name="m", version="1", created_at="2026-11-24T00:00:00Z", state_size=1, units=1,
        window=WINDOW, horizon=6, interval_s=3600, scaling=SCALING,
        drift=drift or DriftMeta(),
    )  # fmt: skip


def _with_reference(series: SeriesSet) -> ModelMeta:
    ref = input_reference(series, split(series), _meta(series))
    return _meta(
        series,
        DriftMeta(
            input_probs=ref.probs, input_quantiles=ref.quantiles,
            input_threshold=ref.threshold, input_false_alarm_rate=ref.false_alarm_rate,
        ),
    )  # fmt: skip


def _tests(series: SeriesSet, meta: ModelMeta) -> InputTests:
    values, fed = stepped_values(series, meta)
    ref = meta.drift
    q, p = np.asarray(ref.input_quantiles), np.asarray(ref.input_probs)
    return input_tests(series, values, fed, q, p, window=WINDOW)


def test_the_detector_sees_the_models_inputs_at_the_forecast_intervals() -> None:
    series = _series()
    meta = _meta(series)
    """The values are the model's input ``u``: each key's value against its level in its
    unit, the level and scale set from its first window and followed row by row."""
    values, fed = stepped_values(series, meta)
    scheme = meta.level_scale()
    for k in range(len(series.keys)):
        y = series.values[series.key_slice(k), 0]
        level, scale = scheme.init(y[None, :WINDOW])
        want = np.empty(len(y))
        for i, v in enumerate(y):
            level, scale = scheme.update(level, scale, np.array([v]))
            want[i] = np.clip((v - level[0]) / (0.1 * scale[0]), -20, 20)
        np.testing.assert_allclose(values[series.key_slice(k)], want, rtol=1e-6, atol=1e-6)
        assert values.dtype == np.float64 and (values == values.astype(np.float32)).all()
    np.testing.assert_array_equal(fed, emitting_rows(series, WINDOW))


def test_reference_quantiles_threshold_and_measured_rate() -> None:
    series = _series()
    parts, meta = split(series), _meta(series)
    ref = input_reference(series, parts, meta)
    values, fed = stepped_values(series, meta)
    assert ref.probs == INPUT_PROBS and len(INPUT_PROBS) == 49
    assert INPUT_PROBS[0] == 0.02 and INPUT_PROBS[-1] == 0.98
    np.testing.assert_allclose(ref.quantiles, np.quantile(values[fed & parts.train], INPUT_PROBS))
    tests = _tests(series, _with_reference(series))
    role = parts.role[tests.row]
    train, val = tests.distance[role == Role.TRAIN], tests.distance[role == Role.VAL]
    assert ref.calibration_tests == len(train) > 100 and ref.validation_tests == len(val)
    # fewer than ~4,000 tests: the largest training-period distance, plus one value's weight
    assert ref.threshold == pytest.approx(train.max() + ecdf_weight(WINDOW))
    assert ref.false_alarm_rate == np.mean(val > ref.threshold)


def test_tests_come_every_input_every_fed_values_of_a_key() -> None:
    series = _series(rows=200, keys=2)
    tests = _tests(series, _with_reference(_series(rows=24 * 60, keys=2)))
    fed = np.flatnonzero(emitting_rows(series, WINDOW) & (series.key_index() == 0))
    assert tests.row[tests.key == 0].tolist() == fed[INPUT_EVERY - 1 :: INPUT_EVERY].tolist()


def test_offline_alarms_are_the_service_detectors() -> None:
    """The same history fed interval by interval to the service's :class:`InputDrift` (as
    the pipeline feeds it: the model's inputs at the intervals with a forecast) raises
    exactly the alarms the vectorised rule finds, at the same intervals."""
    meta = _with_reference(_series(rows=24 * 40))
    ref = meta.drift
    assert ref.input_threshold is not None
    # a shift in key 0's validation period that ends, one in key 2's test period that lasts
    series = _series(rows=24 * 40, shift={0: (24 * 29, 24 * 32), 2: (24 * 36, 24 * 40)})
    tests = _tests(series, meta)
    starts = alarm_starts(tests, ref.input_threshold)
    offline = sorted(
        (int(k), int(series.ts[r] // 3600))
        for k, r, start in zip(tests.key, tests.row, starts, strict=True)
        if start
    )
    store = StateStore(window=WINDOW, n_inputs=1, state_size=1, max_keys=8,
                       quantiles=len(ref.input_probs))  # fmt: skip
    rows, _ = store.rows_for(list(series.keys), now_s=0.0)
    detector = InputDrift(
        store, probs=ref.input_probs, quantiles=ref.input_quantiles,
        threshold=ref.input_threshold, every=INPUT_EVERY, window=WINDOW,
    )  # fmt: skip
    values, fed = stepped_values(series, meta)
    online: list[tuple[int, int]] = []
    length = int(series.offsets[1])
    for t in range(length):
        at = series.offsets[:-1] + t
        live = fed[at]
        steps = InputSteps(rows[live], np.zeros(int(live.sum()), dtype=np.int64), values[at[live]],
                           series.ts[at[live]], np.arange(int(live.sum())))  # fmt: skip
        alarms = detector.update(steps)
        key_of = {int(r): k for k, r in enumerate(rows)}
        online += [(key_of[int(r)], t) for r, kind in zip(alarms.row, alarms.kind, strict=True)
                   if kind == INPUT_DRIFT]  # fmt: skip
    assert sorted(online) == offline
    assert [k for k, _ in offline] == [0, 2]  # the two shifts, once each


def test_alarm_rule_rearms_only_below_half_the_threshold() -> None:
    d = np.array([0.9, 0.6, 0.3, 0.9, 0.1, 0.9, 0.9, 0.2, 0.1, 0.7])
    key = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    tests = InputTests(np.arange(len(d)), key, d)
    # key 0: 0.3 is not below 0.25, 0.1 is; key 1 starts armed
    assert np.flatnonzero(alarm_starts(tests, 0.5)).tolist() == [0, 5, 6, 9]


def test_the_report_counts_alarms_of_the_test_period_per_10k_key_intervals() -> None:
    quiet = _series()
    meta = _with_reference(quiet)
    parts = split(quiet)
    report = input_alarms(quiet, parts, meta)
    assert report["input_alarms"] == 0 and report["input_alarms_per_10k"] == 0.0
    assert report["test_key_intervals"] == int(parts.test.sum())
    assert report["tests"] == int((parts.role[_tests(quiet, meta).row] == Role.TEST).sum()) > 0
    start = int(24 * 60 * 0.85) + 24  # inside the test period (the last 15 %)
    shifted = _series(shift={1: (start, 24 * 60)})
    report = input_alarms(shifted, split(shifted), meta)
    assert report["input_alarms"] == 1
    assert report["input_alarms_per_10k"] == pytest.approx(1e4 / report["test_key_intervals"])
    assert report["tests_above"] >= 1
    assert report["max_distance"] > report["input_threshold"] == meta.drift.input_threshold


def test_too_few_training_tests_mean_no_threshold() -> None:
    series = _series(rows=24 * 25, keys=1)  # 16 tests in the training period
    ref = input_reference(series, split(series), _meta(series))
    assert ref.calibration_tests == MIN_CALIBRATION_TESTS - 4
    assert ref.threshold is None and ref.false_alarm_rate is None
    report = input_alarms(series, split(series), _meta(series))
    assert report["input_alarms"] is None
