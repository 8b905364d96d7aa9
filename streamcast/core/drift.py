"""Drift detection per key, vectorised across keys: when to distrust a key's forecasts.

**Error drift** is a two-sided CUSUM on the standardised one-step residuals ``z`` of
:mod:`streamcast.core.quality`, updated for every key of a round in one numpy pass::

    hi <- min(cap, max(0, hi + z - k))        lo <- min(cap, max(0, lo - z - k))

A key that has seen ``min_residuals`` residuals and whose ``hi`` (forecasts too low) or
``lo`` (too high) exceeds ``h`` enters the *alarm* state and one ``error_drift`` alert
goes out. One shift gives one alert (hysteresis): while in alarm no other ``error_drift``
alert is raised; the key *recovers* — one ``recovered`` alert — when the residuals turn
the other way by as much (``lo > h`` after an upward alarm: the shift ended, the data
returned) or when both sums stay below ``h / 4`` for ``quiet`` intervals in a row (the
forecasts are good again: the model caught up with the new level). The sums are capped
at ``cap = 2 h`` so a long shift does not take forever to leave. Everything a key's
detector knows is in its state (``cusum_hi``, ``cusum_lo``, ``alarm``, ``quiet_n``,
``n_resid``), so a restart neither loses nor repeats an alert.

**Input drift** compares a key's recent window of scaled values (``(value - loc) /
scale``, as the model sees them) with the training distribution the model carries as
quantiles (:class:`~streamcast.core.artifact.DriftMeta`): the Kolmogorov-Smirnov distance
``D = max_j |F_window(q_j) - p_j|`` at the reference quantiles ``q_j``. A key is tested
every ``input_every`` closed intervals (not per tick), all keys due in a batch in one
pass; ``D`` above the model's calibrated ``input_threshold`` raises one ``input_drift``
alert, and the key recovers (one ``recovered``) at the first test with ``D`` below half
the threshold.

``k = 0.5`` is tuned to shifts of one residual standard deviation and more; the default
``h`` was chosen from the false-alarm rates measured on the unshifted pedestrian and
taylor test periods (``docs/training.md``, *Drift detection*).
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
    """Thresholds of the error-drift CUSUM (module docstring)."""

    allowance: float = 0.5
    threshold: float = 12.0
    min_residuals: int = 24
    quiet: int = 96
    #: closed intervals between two input-drift tests of a key (0: no input drift)
    input_every: int = 24

    @property
    def cap(self) -> float:
        """Upper bound of either sum."""
        return 2.0 * self.threshold


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
    """The per-key two-sided CUSUM with hysteresis; writes the detector columns."""

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
        rows, z = res.row[sel], res.z[sel]
        hi = np.clip(st.cusum_hi[rows] + z - s.allowance, 0.0, s.cap)
        lo = np.clip(st.cusum_lo[rows] - z - s.allowance, 0.0, s.cap)
        st.cusum_hi[rows], st.cusum_lo[rows] = hi, lo
        st.n_resid[rows] += 1
        alarm = st.alarm[rows].astype(np.int64)
        quiet = (hi < s.threshold / 4) & (lo < s.threshold / 4)
        st.quiet_n[rows] = np.where(quiet, st.quiet_n[rows] + 1, 0)
        armed = (alarm == NORMAL) & (st.n_resid[rows] >= s.min_residuals)
        rise = armed & (hi > s.threshold) & (hi >= lo)
        fall = armed & (lo > s.threshold) & ~rise
        back = (alarm != NORMAL) & (
            ((alarm == HIGH) & (lo > s.threshold))
            | ((alarm == LOW) & (hi > s.threshold))
            | (st.quiet_n[rows] >= s.quiet)
        )
        new = np.where(rise, HIGH, np.where(fall, LOW, np.where(back, NORMAL, alarm)))
        st.alarm[rows] = new.astype(np.int8)
        # a recovered key starts afresh, so its next alarm needs a new shift
        st.cusum_hi[rows[back]] = 0.0
        st.cusum_lo[rows[back]] = 0.0
        st.quiet_n[rows[back]] = 0
        changed = np.flatnonzero(rise | fall | back)
        stat = np.where(rise | (back & (alarm == LOW)), hi, lo)[changed]
        kinds = [ERROR_DRIFT if (rise | fall)[i] else RECOVERED for i in changed.tolist()]
        direction = [
            "up" if rise[i] else "down" if fall[i] else ("up" if alarm[i] == HIGH else "down")
            for i in changed.tolist()
        ]
        recent = np.abs(st.resid[rows[changed]].mean(axis=1))
        severity = [
            "info" if k == RECOVERED else "critical" if m >= 3.0 else "warning"
            for k, m in zip(kinds, recent.tolist(), strict=True)
        ]
        return Alarms(
            rows[changed], res.start[sel][changed], res.trigger[sel][changed], kinds,
            ["cusum"] * len(changed), stat.astype(np.float64),
            np.full(len(changed), s.threshold), direction, severity,
        )  # fmt: skip


class InputDrift:
    """Periodic KS test of each key's window against the training distribution; writes
    the ``in_n`` and ``in_alarm`` columns."""

    def __init__(
        self,
        store: StateStore,
        *,
        probs: tuple[float, ...],
        quantiles: tuple[float, ...],
        threshold: float | None,
        every: int,
    ) -> None:
        self.store = store
        self.probs = np.asarray(probs, dtype=np.float64)
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.threshold = threshold
        self.every = every

    @property
    def enabled(self) -> bool:
        """The model carries a reference and the operator did not turn the test off."""
        return self.every > 0 and self.threshold is not None and len(self.quantiles) > 0

    def update(self, row: IntArray, start: IntArray, trigger: IntArray) -> Alarms:
        """Count the intervals the batch closed (``row`` sorted, one entry each) and test
        the warm keys that became due, at their last closed interval."""
        if not self.enabled or len(row) == 0:
            return _concat([])
        assert self.threshold is not None
        st = self.store
        last = np.flatnonzero(np.append(row[1:] != row[:-1], True))
        rows, counts = np.unique(row, return_counts=True)
        st.in_n[rows] += counts.astype(np.int32)
        due = (st.in_n[rows] >= self.every) & st.warm[rows] & (st.wlen[rows] > 0)
        rows, last = rows[due], last[due]
        if len(rows) == 0:
            return _concat([])
        st.in_n[rows] = 0
        d = ks_distance(scaled_windows(st, rows), self.quantiles, self.probs)
        alarm = st.in_alarm[rows]
        rise = (alarm == 0) & (d > self.threshold)
        back = (alarm != 0) & (d < self.threshold / 2)
        st.in_alarm[rows[rise]] = 1
        st.in_alarm[rows[back]] = 0
        changed = np.flatnonzero(rise | back)
        mean = np.nanmean(scaled_windows(st, rows[changed]), axis=1) if len(changed) else []
        n = len(changed)
        return Alarms(
            rows[changed], start[last][changed], trigger[last][changed],
            [INPUT_DRIFT if rise[i] else RECOVERED for i in changed.tolist()], ["ks"] * n,
            d[changed], np.full(n, self.threshold),
            ["up" if m >= 0 else "down" for m in np.asarray(mean).tolist()],
            ["warning" if rise[i] else "info" for i in changed.tolist()],
        )  # fmt: skip


def scaled_windows(store: StateStore, rows: IntArray) -> FloatArray:
    """``[K, W]`` the keys' window values as the model sees them, NaN where not filled."""
    values = (store.window[rows, :, 0] - store.loc[rows, None]) / store.scale[rows, None]
    filled = np.arange(store.window_size)[None, :] < store.wlen[rows, None]
    return np.where(filled, values, np.nan)


def ks_distance(scaled: FloatArray, quantiles: FloatArray, probs: FloatArray) -> FloatArray:
    """``[K]`` Kolmogorov-Smirnov distance of each row of ``scaled`` (NaN: no value) from
    the distribution whose quantiles at ``probs`` are ``quantiles``, taken at those
    quantiles: ``max_j |F_row(q_j) - p_j|``.

    >>> q = np.array([-1.0, 0.0, 1.0]); p = np.array([0.25, 0.5, 0.75])
    >>> ks_distance(np.array([[-2.0, -0.5, 0.5, 2.0], [5.0, 6.0, 7.0, np.nan]]), q, p).tolist()
    [0.0, 0.75]
    """
    filled = ~np.isnan(scaled)
    n = np.maximum(filled.sum(axis=1), 1)
    below = (scaled[:, :, None] <= quantiles[None, None, :]) & filled[:, :, None]
    ecdf = below.sum(axis=1) / n[:, None]
    return np.asarray(np.abs(ecdf - probs[None, :]).max(axis=1, initial=0.0), dtype=np.float64)


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
