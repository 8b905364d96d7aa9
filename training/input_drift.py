"""The input-drift reference a model carries, and the offline run of its test.

The service tests each warm key every ``input_every`` closed intervals: the
Kolmogorov-Smirnov distance ``D`` of its last ``window`` values, scaled as the model sees
them, from the training distribution the model carries as quantiles
(:class:`~streamcast.core.drift.InputDrift`). ``D`` above ``input_threshold`` raises one
``input_drift`` alert; the key re-arms at the first test with ``D`` below half of it.

Here, on a prepared history, with the *service's* choice of every row's location and
scale (:func:`training.evaluate.row_scaling`: training statistics for known keys, the
warm-up window otherwise), the detector's float64 arithmetic and its statistic
(:func:`streamcast.core.drift.ks_distance`):

* :func:`input_reference` measures the reference: ``input_quantiles`` of the scaled
  training-period values at :data:`INPUT_PROBS`, then ``D`` of the windows at which the
  service would test each key (:func:`window_distances`). The threshold is calibrated
  on the windows of the **training** period: the validation period is one season (for
  pedestrian the southern winter; for taylor 25 windows of one key), too short to hold
  what an unshifted year does (weekends, holidays, summer), while a window of 48 values
  weighs nothing in a reference of tens of thousands, so in-sample windows are not
  flattered. ``input_threshold`` is their :data:`THRESHOLD_QUANTILE` quantile plus one
  step of the windows' ECDF (``1 / window``, the lattice ``D`` lives on: a test that only
  ties the largest distance seen does not alarm). ``input_false_alarm_rate`` is the
  share of **validation** windows above it: measured out of sample.
* :func:`input_alarms` runs the alarm rule (with its re-arming) over the windows of the
  test period and counts the alarms per 10,000 key-intervals (``report.json``'s
  ``drift`` section).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcast.core.artifact import ModelMeta
from streamcast.core.drift import DriftSettings, ks_distance
from streamcast.core.features import FloatArray, IntArray
from training.evaluate import BoolArray, position_since_reset, row_scaling
from training.prep import Role, Split
from training.series import SeriesSet

#: probabilities of the reference quantiles: 0.02, 0.04, ..., 0.98
INPUT_PROBS: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(1, 50))
#: tests per key between two windows, as the service runs them
INPUT_EVERY = DriftSettings().input_every
#: the issue's bound, 1 false alarm per 10,000 key-intervals, is 0.24 % of tests at one test
#: per 24 intervals; the threshold quantile aims ten times lower (the test period comes
#: later than the calibration data). Below ~4,000 windows it is their largest distance.
THRESHOLD_QUANTILE = 1.0 - 1e-5 * INPUT_EVERY
PER_10K = 10_000
#: fewer training windows than this give no threshold (the model carries no input-drift
#: test): the largest of a handful of distances says little about the next ones
MIN_CALIBRATION_WINDOWS = 20


@dataclass(frozen=True)
class InputWindows:
    """The windows the service would test: where each ends and its distance ``D``."""

    #: the window's last row (the interval at which the test runs)
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
    calibration_windows: int
    validation_windows: int


def scaled_values(series: SeriesSet, meta: ModelMeta) -> FloatArray:
    """``[N]`` every row's value scaled as the service's input-drift test scales it.

    The same float64 expression as :func:`streamcast.core.drift.scaled_windows`, not the
    model's float32 inputs: pedestrian counts repeat (zeros at night), so a reference
    quantile can sit exactly on a repeated value, where a rounding difference would move
    a whole run of values across it.
    """
    loc, scale = row_scaling(series, meta)
    return np.asarray((series.values[:, 0] - loc) / scale, dtype=np.float64)


def window_distances(
    series: SeriesSet,
    scaled: FloatArray,
    quantiles: FloatArray,
    probs: FloatArray,
    *,
    window: int,
    every: int = INPUT_EVERY,
) -> InputWindows:
    """``D`` of the last ``window`` scaled values at the intervals where the service tests
    each key: it counts a key's closed intervals and tests when ``every`` have passed and
    the window is full, so first after ``max(window, every)`` intervals, then every
    ``every`` (imputed rows included: the service's window holds them too). After a reset
    the count starts again here; the service's count runs on, so its tests may come at
    other phases of the segment."""
    pos = position_since_reset(series)
    first = max(window, every) - 1
    ends = np.flatnonzero((pos >= first) & ((pos - first) % every == 0))
    rows = ends[:, None] - np.arange(window - 1, -1, -1)[None, :]
    return InputWindows(
        row=ends,
        key=series.key_index()[ends],
        distance=ks_distance(scaled[rows], quantiles, probs),
    )


def input_reference(
    series: SeriesSet, parts: Split, meta: ModelMeta, *, every: int = INPUT_EVERY
) -> InputReference:
    """The training distribution's quantiles and the calibrated threshold (module
    docstring); no threshold with fewer than :data:`MIN_CALIBRATION_WINDOWS` training
    windows."""
    scaled = scaled_values(series, meta)
    probs = np.asarray(INPUT_PROBS)
    quantiles = np.quantile(scaled[parts.train], probs)
    windows = window_distances(series, scaled, quantiles, probs, window=meta.window, every=every)
    role = parts.role[windows.row]
    calibration = windows.distance[role == Role.TRAIN]
    validation = windows.distance[role == Role.VAL]
    threshold = rate = None
    if len(calibration) >= MIN_CALIBRATION_WINDOWS:
        top = float(np.quantile(calibration, THRESHOLD_QUANTILE, method="higher"))
        threshold = top + 1.0 / meta.window
        if len(validation):
            rate = float(np.mean(validation > threshold))
    return InputReference(
        probs=INPUT_PROBS,
        quantiles=tuple(float(q) for q in quantiles),
        threshold=threshold,
        false_alarm_rate=rate,
        calibration_windows=len(calibration),
        validation_windows=len(validation),
    )


def alarm_starts(windows: InputWindows, threshold: float) -> BoolArray:
    """``[W]`` True where a window raises an alarm under the service's rule: ``D`` above
    the threshold while the key is armed; a key in alarm re-arms at the first window with
    ``D`` below half the threshold. Windows are in row order (each key's in time order).

    An exceedance raises exactly when its key saw no earlier exceedance, or a re-arming
    window after the last one, which vectorises over every key at once.

    >>> w = InputWindows(np.arange(6), np.zeros(6, np.int64), np.array([.9, .9, .3, .9, .2, .9]))
    >>> alarm_starts(w, 0.5).tolist()
    [True, False, False, False, True, False]
    """
    d, key = windows.distance, windows.key
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
    windows = window_distances(
        series,
        scaled_values(series, meta),
        np.asarray(ref.input_quantiles),
        np.asarray(ref.input_probs),
        window=meta.window,
    )
    test = parts.role[windows.row] == Role.TEST
    # the detector runs through the whole history; only the test period's alarms count
    alarms = int((alarm_starts(windows, ref.input_threshold) & test).sum())
    return {
        **summary,
        "test_windows": int(test.sum()),
        "test_windows_above": int((windows.distance[test] > ref.input_threshold).sum()),
        "test_max_distance": float(windows.distance[test].max(initial=0.0)),
        "input_alarms": alarms,
        "input_alarms_per_10k": PER_10K * alarms / max(test_intervals, 1),
    }
