"""Drift detection per key, vectorised across keys: when to distrust a key's forecasts.

**Error drift** watches each key's standardised one-step residuals ``z``
(:mod:`streamcast.core.quality`) for a lasting change of level. Real residuals are
neither centred nor independent nor well behaved: a key's errors have their own spread
(the pedestrian sensors' differ threefold), wander with the seasons, are autocorrelated
(lag-1 correlation 0.35-0.9 on the pedestrian and taylor test periods), and come in
bursts — a market night, an event, a holiday: hours of errors of 4-5 standard
deviations that recur or never return. A CUSUM (also tried: plain, prewhitened, with
per-phase baselines) alarms on every such burst: 20-70 false alarms per 10,000
key-intervals on the pedestrian test period. So each key keeps a *baseline* of its own
residuals — the exponentially weighted mean ``m`` and variance ``v`` over about
``baseline_intervals`` residuals (a plain average until it has that many), updated
only while the key is normal (at a quarter of the rate while its level is above half the
threshold), from residuals clipped to 3 standard deviations — and the detector is an
EWMA chart of the *winsorised* deviations::

    d = (z - m) / sqrt(v)
    level <- level + a (clip(d, -clip, clip) - level)      a = 2 / (span + 1)

A key that has seen ``min_residuals`` residuals and whose ``|level|`` exceeds
``threshold`` enters the *alarm* state and one ``error_drift`` alert goes out (``up``:
actuals above the forecasts). Clipping bounds what a burst can add: ``span`` intervals
of average error beyond ``threshold`` standard deviations are needed, which a level
shift of 3 standard deviations gives within 10-20 intervals and a few hours of
extreme errors do not. One shift gives one alert (hysteresis): while in alarm the
baseline is frozen and no other ``error_drift`` alert is raised; the key *recovers* —
one ``recovered`` alert — once ``|level|`` has stayed below ``threshold / 2`` for
``quiet`` intervals in a row (the data returned, or the model caught up with the new
level), and is then armed again. The alert is ``critical`` when the last three residuals
average at least 3 standard deviations from the baseline, else ``warning``. Everything a
key's detector knows is in its state (``base_m``, ``base_v``, ``level``, ``alarm``,
``quiet_n``, ``n_resid``), so a restart neither loses nor repeats an alert.

**Input drift** compares the distribution of a key's recent scaled values (``u = (value
- level) / unit``, exactly as the model saw them) with the training distribution, which the
model carries as quantiles ``q_j`` at probabilities ``p_j``
(:class:`~streamcast.core.artifact.DriftMeta`). Each key keeps an exponentially weighted
ECDF at those quantiles, ``F_j <- F_j + a (1[x <= q_j] - F_j)`` with ``a = 2 / (window +
1)`` (an effective sample of one window; ``Q`` floats per key, where a window of values
would have to be re-read), and every ``input_every`` real intervals its
Kolmogorov-Smirnov distance ``D = max_j |F_j - p_j|`` is tested, all keys due in a round
in one pass. ``D`` above the model's calibrated ``input_threshold`` raises one
``input_drift`` alert; the key recovers (one ``recovered``) at the first test with ``D``
below half the threshold. Training calibrates the threshold with the same recurrence
(:func:`input_distances`).

The defaults were chosen from the false alarms and delays measured on the pedestrian
and taylor test periods (``bench/drift.py``; figures in ``docs/training.md``). With the
level-following models (a key's level absorbs a level shift within about a day) they
meet the false-alarm bound on both and alert on most 3-sigma shifts of taylor within 24
intervals, but on few of pedestrian's: there the unshifted test period holds 10-15
hours of errors of 3 to 15 standard deviations (days with far fewer people than
forecast), as large over 24 intervals as the shift, so no chart of these errors, faster
(shorter span, CUSUM) or on the probe's multi-step errors, alerts on the shift within 24
intervals without alerting on those first (the bound measured per chart is in
``docs/training.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.quality import Residuals
from streamcast.core.state import StateStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

NORMAL, HIGH, LOW = 0, 1, -1
#: alert kinds, the strings of the alerts topic's ``kind`` field
ERROR_DRIFT, INPUT_DRIFT, RECOVERED = "error_drift", "input_drift", "recovered"


@dataclass(frozen=True)
class DriftSettings:
    """Tuning of the detectors (module docstring)."""

    #: residuals the error level averages over (its exponential weighting span)
    span: int = 24
    #: |level| in residual standard deviations at which a key alarms
    threshold: float = 1.75
    #: deviations are clipped to this many standard deviations before averaging
    clip: float = 2.5
    #: residuals a key must have (its baseline) before it can alarm
    min_residuals: int = 48
    #: residuals the baseline averages over (its exponential weighting span)
    baseline_intervals: int = 500
    #: intervals in a row with |level| below threshold / 2 after which a key recovers
    quiet: int = 48
    #: closed intervals between two input-drift tests of a key (0: no input drift)
    input_every: int = 24


#: residuals beyond this many standard deviations are clipped in the baseline update
BASELINE_CLIP = 3.0
#: an alarm is critical when the last residuals average this many standard deviations
CRITICAL_SD = 3.0
#: share of the baseline's learning rate while a normal key's level is above threshold / 2
SUSPECT_WEIGHT = 0.25


@dataclass(frozen=True)
class Alarms:
    """The state changes of one batch: ``kind`` per row, the statistic that decided it,
    the direction of the shift (``up``: actuals above forecasts) and the severity."""

    row: IntArray
    start: IntArray
    trigger: IntArray
    kind: list[str]
    detector: list[str]
    statistic: FloatArray
    threshold: FloatArray
    direction: list[str]
    severity: list[str]

    def __len__(self) -> int:
        return len(self.row)


class ErrorDrift:
    """The per-key EWMA chart of winsorised residual deviations with hysteresis; writes
    the detector columns (module docstring)."""

    def __init__(self, store: StateStore, settings: DriftSettings) -> None:
        self.store = store
        self.settings = settings

    def update(self, residuals: Residuals) -> Alarms:
        """Feed a batch's residuals round by round; the alarms they raise or clear."""
        found: list[Alarms] = []
        for r in range(int(residuals.rank.max(initial=-1)) + 1):
            sel = np.flatnonzero(residuals.rank == r)
            found.append(self._round(residuals, sel))
        return _concat(found)

    def _round(self, res: Residuals, sel: IntArray) -> Alarms:
        st, s = self.store, self.settings
        rows, z = res.row[sel], res.z[sel].astype(np.float64)
        n = st.n_resid[rows].astype(np.float64)
        m, v = st.base_m[rows].astype(np.float64), st.base_v[rows].astype(np.float64)
        sd = np.sqrt(np.maximum(v, 1e-12))
        d = np.where(n > 0, (z - m) / sd, 0.0)
        weight = 2.0 / (s.span + 1.0)
        old = st.level[rows].astype(np.float64)
        level = old + weight * (np.clip(d, -s.clip, s.clip) - old)
        alarm = st.alarm[rows].astype(np.int64)
        armed = (alarm == NORMAL) & (n >= s.min_residuals)
        rise = armed & (level > s.threshold)
        fall = armed & (level < -s.threshold)
        calm = np.abs(level) < s.threshold / 2
        quiet_n = np.where((alarm != NORMAL) & calm, st.quiet_n[rows] + 1, 0)
        back = (alarm != NORMAL) & (quiet_n >= s.quiet)
        new = np.where(rise, HIGH, np.where(fall, LOW, np.where(back, NORMAL, alarm)))
        st.level[rows] = level
        st.quiet_n[rows] = np.where(back, 0, quiet_n)
        st.alarm[rows] = new.astype(np.int8)
        st.n_resid[rows] += 1
        # the baseline learns from keys that are and stay normal (a shift is not normal)
        learn = (new == NORMAL) & ~back
        lr, first = rows[learn], n[learn] == 0
        # a plain average over the first residuals, then exponential weighting; a quarter
        # of the weight while the level is raised, so a shift building up is not learnt
        a = np.maximum(1.0 / (n + 1.0), 1.0 / s.baseline_intervals)
        a = (a * np.where(calm, 1.0, SUSPECT_WEIGHT))[learn]
        dev = np.clip(d, -BASELINE_CLIP, BASELINE_CLIP)[learn] * sd[learn]
        st.base_m[lr] = np.where(first, z[learn], m[learn] + a * dev)
        st.base_v[lr] = np.where(first, 1.0, v[learn] + a * (dev**2 - v[learn]))
        changed = np.flatnonzero(rise | fall | back)
        kinds = [ERROR_DRIFT if (rise | fall)[i] else RECOVERED for i in changed.tolist()]
        direction = [
            "up" if rise[i] else "down" if fall[i] else ("up" if alarm[i] == HIGH else "down")
            for i in changed.tolist()
        ]
        recent = np.nanmean(st.resid[rows[changed], -3:], axis=1) if len(changed) else m[:0]
        size = np.abs((recent - m[changed]) / sd[changed]).tolist()
        severity = [
            "info" if kind == RECOVERED else "critical" if r >= CRITICAL_SD else "warning"
            for kind, r in zip(kinds, size, strict=True)
        ]
        bound = np.where(back, s.threshold / 2, s.threshold)[changed]
        return Alarms(
            rows[changed], res.start[sel][changed], res.trigger[sel][changed], kinds,
            ["ewma"] * len(changed), np.abs(level[changed]), bound, direction, severity,
        )  # fmt: skip


@dataclass(frozen=True)
class InputSteps:
    """The real closed intervals a batch stepped (a key at most once per rank, ranks in
    time order): the scaled value the model saw, its interval and triggering tick."""

    row: IntArray
    rank: IntArray
    x: FloatArray
    start: IntArray
    trigger: IntArray

    @classmethod
    def empty(cls) -> InputSteps:
        """None."""
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, np.zeros(0), none, none)


def ecdf_weight(window: int) -> float:
    """Weight of a new value in the exponentially weighted ECDF: an effective sample of
    about one window (the ``2 / (n + 1)`` of an exponential moving average)."""
    return 2.0 / (window + 1.0)


def ecdf_update(
    cdf: FloatArray, x: FloatArray, quantiles: FloatArray, probs: FloatArray, weight: float
) -> FloatArray:
    """One step of the exponentially weighted ECDF at the reference quantiles: ``[K, Q]``
    (a row of NaN starts at the reference itself, ``probs``) and ``[K]`` new values."""
    start = np.where(np.isnan(cdf), probs[None, :], cdf)
    below = (x[:, None] <= quantiles[None, :]).astype(np.float64)
    return np.asarray(start + weight * (below - start), dtype=np.float64)


def ks_distance(cdf: FloatArray, probs: FloatArray) -> FloatArray:
    """``[K]`` Kolmogorov-Smirnov distance of the ECDFs ``cdf`` (``[K, Q]``, taken at the
    reference quantiles) from the reference: ``max_j |F(q_j) - p_j|``.

    >>> ks_distance(np.array([[0.25, 0.5, 0.75], [0.0, 0.0, 0.25]]), np.array([0.25, 0.5, 0.75]))
    array([0. , 0.5])
    """
    return np.asarray(np.abs(cdf - probs[None, :]).max(axis=1, initial=0.0), dtype=np.float64)


def input_distances(
    scaled: FloatArray,
    quantiles: FloatArray,
    probs: FloatArray,
    *,
    window: int,
    every: int,
) -> FloatArray:
    """``[K, T // every]`` the distance the online test computes for each key (a row of
    ``scaled``, ``[K, T]``, NaN where the key has no real interval) at its every
    ``every``-th value: the same recurrence as :class:`InputDrift`, for training to
    calibrate ``input_threshold`` on."""
    k, t = scaled.shape
    cdf = np.full((k, len(probs)), np.nan)
    seen = np.zeros(k, dtype=np.int64)
    out = np.full((k, t // max(every, 1)), np.nan)
    weight = ecdf_weight(window)
    for i in range(t):
        live = ~np.isnan(scaled[:, i])
        cdf[live] = ecdf_update(cdf[live], scaled[live, i], quantiles, probs, weight)
        seen[live] += 1
        due = live & (seen % every == 0)
        out[due, seen[due] // every - 1] = ks_distance(cdf[due], probs)
    return out


class InputDrift:
    """Each key's exponentially weighted ECDF of the scaled values its model saw, tested
    against the training distribution every ``every`` real intervals; writes the
    ``in_cdf``, ``in_n`` and ``in_alarm`` columns. Fed with the steps themselves, so its
    alerts do not depend on how the stream was cut into batches."""

    def __init__(
        self,
        store: StateStore,
        *,
        probs: tuple[float, ...],
        quantiles: tuple[float, ...],
        threshold: float | None,
        every: int,
        window: int,
    ) -> None:
        self.store = store
        self.probs = np.asarray(probs, dtype=np.float64)
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.threshold = threshold
        self.every = every
        self.weight = ecdf_weight(window)

    @property
    def enabled(self) -> bool:
        """The model carries a reference and the operator did not turn the test off."""
        return (
            self.every > 0
            and self.threshold is not None
            and len(self.quantiles) > 0
            and self.store.in_cdf.shape[1] == len(self.quantiles)
        )

    def update(self, steps: InputSteps) -> Alarms:
        """Add the batch's values rank by rank; the alarms the due tests raise or clear."""
        if not self.enabled or len(steps.row) == 0:
            return _concat([])
        found = []
        for r in range(int(steps.rank.max()) + 1):
            sel = np.flatnonzero(steps.rank == r)
            if len(sel):
                found.append(self._round(steps, sel))
        return _concat(found)

    def _round(self, steps: InputSteps, sel: IntArray) -> Alarms:
        assert self.threshold is not None
        st = self.store
        rows = steps.row[sel]
        cdf = ecdf_update(
            st.in_cdf[rows].astype(np.float64), steps.x[sel], self.quantiles, self.probs,
            self.weight,
        )  # fmt: skip
        st.in_cdf[rows] = cdf
        st.in_n[rows] += 1
        due = st.in_n[rows] >= self.every
        st.in_n[rows[due]] = 0
        d = ks_distance(cdf, self.probs)
        alarm = st.in_alarm[rows]
        rise = due & (alarm == 0) & (d > self.threshold)
        back = due & (alarm != 0) & (d < self.threshold / 2)
        st.in_alarm[rows[rise]] = 1
        st.in_alarm[rows[back]] = 0
        changed = np.flatnonzero(rise | back)
        # the direction: more mass below the median than the reference has is "down"
        median = int(np.argmin(np.abs(self.probs - 0.5)))
        below = (cdf[changed, median] - self.probs[median]).tolist()
        n = len(changed)
        return Alarms(
            rows[changed], steps.start[sel][changed], steps.trigger[sel][changed],
            [INPUT_DRIFT if rise[i] else RECOVERED for i in changed.tolist()], ["ks"] * n,
            d[changed], np.full(n, self.threshold) / np.where(back[changed], 2.0, 1.0),
            ["down" if b > 0 else "up" for b in below],
            ["warning" if rise[i] else "info" for i in changed.tolist()],
        )  # fmt: skip


def _concat(parts: list[Alarms]) -> Alarms:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Alarms(empty, empty, empty, [], [], np.zeros(0), np.zeros(0), [], [])
    return Alarms(
        np.concatenate([p.row for p in parts]),
        np.concatenate([p.start for p in parts]),
        np.concatenate([p.trigger for p in parts]),
        [k for p in parts for k in p.kind],
        [k for p in parts for k in p.detector],
        np.concatenate([p.statistic for p in parts]),
        np.concatenate([p.threshold for p in parts]),
        [d for p in parts for d in p.direction],
        [s for p in parts for s in p.severity],
    )


def merge_alarms(parts: list[Alarms]) -> Alarms:
    """The alarms of ``parts``, in order."""
    return _concat(parts)
