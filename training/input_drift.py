"""The input-drift reference a model carries, and the offline run of its test.

The service keeps, for each key, an exponentially weighted ECDF (weight ``2 / (window +
1)``: an effective sample of one window) of the scaled values the model stepped on for
its forecasts, taken at the reference quantiles the model carries, and tests its
Kolmogorov-Smirnov distance ``D`` from the reference every ``input_every`` such values
(:class:`streamcast.core.drift.InputDrift`). ``D`` above ``input_threshold`` raises one
``input_drift`` alert; the key re-arms at the first test with ``D`` below half of it.

Here, on a prepared history, with the values the service feeds the detector (the model's
input ``u``: :func:`streamcast.core.features.step_inputs` with each key's level and scale
followed as the service follows them, :func:`training.evaluate.row_inputs`; at the
intervals that get a forecast: observed, warm, closed —
:func:`training.evaluate.emitting_rows`) and the detector's own recurrence
(:func:`streamcast.core.drift.input_distances`):

* :func:`input_reference` measures the reference: ``input_quantiles`` of those values in
  the training period at :data:`INPUT_PROBS`, then ``D`` at every test the service would
  run (:func:`input_tests`). The threshold is calibrated on the tests in the **training**
  period: the validation period is one season (for pedestrian the southern winter; for
  taylor 25 tests of one key), too short to hold what an unshifted year does (weekends,
  holidays, summer), while the ~48 values a test weighs are nothing in a reference of
  tens of thousands, so in-sample tests are not flattered. ``input_threshold`` is their
  :data:`THRESHOLD_QUANTILE` quantile plus the weight of one value (``2 / (window + 1)``,
  the most one new value moves the ECDF): a test that only comes close to the largest
  distance seen does not alarm. ``input_false_alarm_rate`` is the share of **validation**
  tests above it: measured out of sample.
* :func:`input_alarms` runs the alarm rule (with its re-arming) over the tests of the test
  period and counts the alarms per 10,000 key-intervals (``report.json``'s ``drift``
  section).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcast.core.artifact import ModelMeta
from streamcast.core.drift import DriftSettings, ecdf_weight, input_distances
from streamcast.core.features import FloatArray, IntArray
from training.evaluate import BoolArray, emitting_rows, row_inputs
from training.prep import Role, Split
from training.series import SeriesSet

#: probabilities of the reference quantiles: 0.02, 0.04, ..., 0.98
INPUT_PROBS: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(1, 50))
#: values per key between two tests, as the service runs them
INPUT_EVERY = DriftSettings().input_every
#: the issue's bound, 1 false alarm per 10,000 key-intervals, is 0.24 % of tests at one test
#: per 24 intervals; the threshold quantile aims ten times lower (the test period comes
#: later than the calibration data). Below ~4,000 tests it is their largest distance.
THRESHOLD_QUANTILE = 1.0 - 1e-5 * INPUT_EVERY
PER_10K = 10_000
#: fewer training-period tests than this give no threshold (the model carries no
#: input-drift test): the largest of a handful of distances says little about the next
MIN_CALIBRATION_TESTS = 20
#: keys whose values are run through the recurrence at once (bounds the memory)
KEYS_PER_CHUNK = 256


@dataclass(frozen=True)
class InputTests:
    """The tests the service would run: the row whose value completes each test, its key
    and the distance ``D``; in row order (each key's in time order)."""

    row: IntArray
    key: IntArray
    distance: FloatArray


@dataclass(frozen=True)
class InputReference:
    """What :func:`input_reference` measured (the model's ``DriftMeta.input_*``)."""

    probs: tuple[float, ...]
    quantiles: tuple[float, ...]
    threshold: float | None
    false_alarm_rate: float | None
    calibration_tests: int
    validation_tests: int


def stepped_values(series: SeriesSet, meta: ModelMeta) -> tuple[FloatArray, BoolArray]:
    """``[N]`` every row's value as the model's input ``u`` (the value relative to the
    key's level in its unit, float32, as float64, as the service feeds the detector), and
    ``[N]`` whether the service feeds it: the row gets a forecast."""
    inputs = row_inputs(series, meta.level_scale(), meta.window, meta.extra_scaling())
    return np.asarray(inputs.x[:, 0], dtype=np.float64), emitting_rows(series, meta.window)


def input_tests(
    series: SeriesSet,
    values: FloatArray,
    fed: BoolArray,
    quantiles: FloatArray,
    probs: FloatArray,
    *,
    window: int,
    every: int = INPUT_EVERY,
) -> InputTests:
    """``D`` at every ``every``-th value ``fed`` to each key's detector, by the online
    recurrence (the detector runs through the key's whole history, gaps included)."""
    rows = np.flatnonzero(fed)
    key = series.key_index()[rows]
    counts = np.bincount(key, minlength=len(series.keys))
    first = np.cumsum(counts) - counts
    position = np.arange(len(rows)) - first[key]
    found: list[InputTests] = []
    for lo in range(0, len(series.keys), KEYS_PER_CHUNK):
        keys = np.arange(lo, min(lo + KEYS_PER_CHUNK, len(series.keys)))
        mine = (key >= keys[0]) & (key <= keys[-1])
        # each key's fed values left-aligned in a row: the recurrence only sees their order
        block = np.full((len(keys), max(int(counts[keys].max(initial=0)), 1)), np.nan)
        block[key[mine] - lo, position[mine]] = values[rows[mine]]
        distance = input_distances(block, quantiles, probs, window=window, every=every)
        tested = (position[mine] + 1) % every == 0
        at = rows[mine][tested]
        k, j = key[mine][tested], (position[mine][tested] + 1) // every - 1
        found.append(InputTests(at, k, distance[k - lo, j]))
    if not found:
        none = np.zeros(0, dtype=np.int64)
        return InputTests(none, none, np.zeros(0))
    return InputTests(
        np.concatenate([t.row for t in found]),
        np.concatenate([t.key for t in found]),
        np.concatenate([t.distance for t in found]),
    )


def input_reference(
    series: SeriesSet, parts: Split, meta: ModelMeta, *, every: int = INPUT_EVERY
) -> InputReference:
    """The training distribution's quantiles and the calibrated threshold (module
    docstring); no threshold with fewer than :data:`MIN_CALIBRATION_TESTS` training-period
    tests."""
    values, fed = stepped_values(series, meta)
    probs = np.asarray(INPUT_PROBS)
    reference = values[fed & parts.train]
    if len(reference) == 0:
        return InputReference(INPUT_PROBS, (), None, None, 0, 0)
    quantiles = np.quantile(reference, probs)
    tests = input_tests(series, values, fed, quantiles, probs, window=meta.window, every=every)
    role = parts.role[tests.row]
    calibration = tests.distance[role == Role.TRAIN]
    validation = tests.distance[role == Role.VAL]
    threshold = rate = None
    if len(calibration) >= MIN_CALIBRATION_TESTS:
        top = float(np.quantile(calibration, THRESHOLD_QUANTILE, method="higher"))
        threshold = top + ecdf_weight(meta.window)
        if len(validation):
            rate = float(np.mean(validation > threshold))
    return InputReference(
        probs=INPUT_PROBS,
        quantiles=tuple(float(q) for q in quantiles),
        threshold=threshold,
        false_alarm_rate=rate,
        calibration_tests=len(calibration),
        validation_tests=len(validation),
    )


def alarm_starts(tests: InputTests, threshold: float) -> BoolArray:
    """``[T]`` True where a test raises an alarm under the service's rule: ``D`` above
    the threshold while the key is armed; a key in alarm re-arms at the first test with
    ``D`` below half the threshold.

    An exceedance raises exactly when its key saw no earlier exceedance, or a re-arming
    test after the last one, which vectorises over every key at once.

    >>> t = InputTests(np.arange(6), np.zeros(6, np.int64), np.array([.9, .9, .3, .9, .2, .9]))
    >>> alarm_starts(t, 0.5).tolist()
    [True, False, False, False, False, True]
    """
    d, key = tests.distance, tests.key
    n = len(d)
    index = np.arange(n)
    first = np.ones(n, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    start = np.maximum.accumulate(np.where(first, index, 0))
    exceed = d > threshold
    rearm = d < threshold / 2

    def last_before(flag: BoolArray) -> IntArray:
        seen = np.maximum.accumulate(np.where(flag, index, -1))
        before = np.concatenate([[-1], seen[:-1]])
        return np.asarray(np.where(before >= start, before, -1), dtype=np.int64)

    return np.asarray(exceed & (last_before(rearm) >= last_before(exceed)), dtype=bool)


def input_alarms(series: SeriesSet, parts: Split, meta: ModelMeta) -> dict[str, Any]:
    """The input-drift test run over the test period with the model's reference: the
    ``drift`` section of ``report.json`` (alarms per 10,000 key-intervals)."""
    ref = meta.drift
    test_intervals = int(parts.test.sum())
    summary: dict[str, Any] = {
        "input_threshold": ref.input_threshold,
        "input_false_alarm_rate": ref.input_false_alarm_rate,
        "test_every": INPUT_EVERY,
        "test_key_intervals": test_intervals,
    }
    if ref.input_threshold is None or not ref.input_quantiles:
        return {**summary, "input_alarms": None, "input_alarms_per_10k": None}
    values, fed = stepped_values(series, meta)
    tests = input_tests(
        series,
        values,
        fed,
        np.asarray(ref.input_quantiles),
        np.asarray(ref.input_probs),
        window=meta.window,
    )
    test = parts.role[tests.row] == Role.TEST
    # the detector runs through the whole history; only the test period's alarms count
    alarms = int((alarm_starts(tests, ref.input_threshold) & test).sum())
    return {
        **summary,
        # the tests that ran in the test period: how many, above the threshold, the largest
        "tests": int(test.sum()),
        "tests_above": int((tests.distance[test] > ref.input_threshold).sum()),
        "max_distance": float(tests.distance[test].max(initial=0.0)),
        "input_alarms": alarms,
        "input_alarms_per_10k": PER_10K * alarms / max(test_intervals, 1),
    }
