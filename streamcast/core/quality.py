"""How good the forecasts turn out: realised errors per key, in the store's columns.

When the actual value of an interval arrives, it is compared with the forecasts that
targeted it, for all keys of a batch at once:

- **one step ahead, every interval**: each key keeps its latest step-1 forecast
  (``p1_value``, the interval it targets, the unit it was made in). The *standardised
  residual* ``z = ((actual - forecast) / unit - mean) / std`` (``mean``/``std`` of the
  step-1 validation residuals the model carries in its metadata) feeds the error-drift
  detector (:mod:`streamcast.core.drift`), and the step-1 interval bands are checked;
- **every step of the horizon, sampled**: a key keeps one whole forecast as its *probe*
  and scores each of its steps as their actuals arrive; once the horizon has passed the
  next forecast becomes the probe. Each key thus scores one forecast in ``H + 1``
  intervals at every step: an unbiased sample of the per-step error and interval
  coverage for a constant ``H + 1`` floats per key, where keeping every forecast that
  targets an interval would cost ``H^2``.

The sums per step accumulate in :class:`QualityTotals` (the service exports them as
metrics; coverage counts against the key's band as it stands when the actual arrives);
each scored probe step also adapts the key's interval band (:mod:`streamcast.core.bands`),
and a forecast's band is set from the offsets after its origin's actual was scored. The
last few residuals of each key stay in its state for alert summaries.
Work per batch is a constant number of vector operations per *round* (a key's r-th closed
interval of the batch), and one round in steady traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamcast.core.bands import Bands
from streamcast.core.grid import Grid, as_grid
from streamcast.core.intervals import ClosedIntervals
from streamcast.core.records import ForecastBatch
from streamcast.core.state import NONE, StateStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class QualityTotals:
    """Per-step error sums since the last :meth:`drain` (probe samples), plus step-1
    coverage over every interval."""

    horizon: int
    levels: tuple[float, ...]
    #: per step: scored forecasts, sum of |error| / unit, sum of (error / unit)^2
    count: IntArray = field(init=False)
    abs_error: FloatArray = field(init=False)
    sq_error: FloatArray = field(init=False)
    #: [L, H] actuals inside the level's band
    covered: IntArray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.horizon, dtype=np.int64)
        self.abs_error = np.zeros(self.horizon)
        self.sq_error = np.zeros(self.horizon)
        self.covered = np.zeros((len(self.levels), self.horizon), dtype=np.int64)

    def drain(self) -> QualityTotals:
        """The sums so far, and start afresh."""
        out = QualityTotals(self.horizon, self.levels)
        out.count, self.count = self.count, out.count
        out.abs_error, self.abs_error = self.abs_error, out.abs_error
        out.sq_error, self.sq_error = self.sq_error, out.sq_error
        out.covered, self.covered = self.covered, out.covered
        return out


@dataclass(frozen=True)
class Residuals:
    """Standardised step-1 residuals of one batch, in rounds (a key at most once per
    round, rounds in time order)."""

    row: IntArray
    start: IntArray
    z: FloatArray
    rank: IntArray
    #: position in the batch of the tick that closed the interval (alerts are its output)
    trigger: IntArray

    def __len__(self) -> int:
        return len(self.row)


class QualityTracker:
    """Scores forecasts against actuals (module docstring); writes the ``p1_*``,
    ``probe*`` and ``resid`` columns of the store."""

    def __init__(
        self,
        store: StateStore,
        *,
        interval_s: int | Grid,
        bands: Bands,
        residual_mean: float,
        residual_std: float,
    ) -> None:
        self.store = store
        self.grid = as_grid(interval_s)
        self.levels = bands.levels
        #: the calibrated band quantiles in units and each key's adaptation of them
        self.bands = bands
        self.mean = residual_mean
        self.std = residual_std if residual_std > 0 else 1.0
        self.totals = QualityTotals(store.horizon, bands.levels)

    def observe(
        self, closed: ClosedIntervals, forecasts: ForecastBatch, forecast_rows: IntArray
    ) -> Residuals:
        """Score the real intervals a batch closed (sorted by row then start) against the
        forecasts held and the batch's own ``forecasts`` (made at ``forecast_rows``), then
        hold the newest ones; returns the residuals."""
        row, start, trigger = closed.row, closed.start, closed.trigger
        actual = closed.value[:, 0]
        n = len(row)
        if n == 0:
            return _no_residuals()
        first = np.ones(n, dtype=bool)
        first[1:] = row[1:] != row[:-1]
        starts = np.flatnonzero(first)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
        made = _codes(forecast_rows, forecasts.origin_ts)
        order = np.argsort(made, kind="stable")
        out: list[Residuals] = []
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            out.append(self._score(row[sel], start[sel], actual[sel], trigger[sel], r))
            self._hold(row[sel], start[sel], made[order], order, forecasts)
        return Residuals(*(np.concatenate([getattr(p, f) for p in out]) for f in _FIELDS))

    def _score(
        self, row: IntArray, start: IntArray, actual: FloatArray, trigger: IntArray, r: int
    ) -> Residuals:
        st = self.store
        due = st.p1_target[row] == start
        rows, unit = row[due], st.p1_unit[row[due]]
        scaled = (actual[due] - st.p1_value[rows]) / unit
        z = (scaled - self.mean) / self.std
        st.resid[rows] = np.roll(st.resid[rows], -1, axis=1)
        st.resid[rows, -1] = z.astype(np.float32)
        st.p1_target[rows] = NONE
        self._score_probe(row, start, actual)
        return Residuals(rows, start[due], z, np.full(len(rows), r), trigger[due])

    def _score_probe(self, row: IntArray, start: IntArray, actual: FloatArray) -> None:
        st = self.store
        origin = st.probe_origin[row]
        live = origin != NONE
        step = np.zeros(len(row), dtype=np.int64)
        if live.any():
            step[live] = self.grid.index(start[live]) - self.grid.index(origin[live])
        scored = live & (step >= 1) & (step <= st.horizon)
        if scored.any():
            rows, k = row[scored], step[scored] - 1
            value = st.probe[rows, k].astype(np.float64)
            unit = st.probe_unit[rows].astype(np.float64)
            err = (actual[scored] - value) / unit
            t = self.totals
            np.add.at(t.count, k, 1)
            np.add.at(t.abs_error, k, np.abs(err))
            np.add.at(t.sq_error, k, err**2)
            if self.levels:
                # the key's band at this step as it stands, then its adaptation to the miss
                offsets = st.band_adj[rows]
                lower, upper = self.bands.step_limits(offsets, k)
                for i in range(len(self.levels)):
                    inside = (err >= lower[:, i]) & (err <= upper[:, i])
                    np.add.at(t.covered[i], k, inside.astype(np.int64))
                st.band_adj[rows] = self.bands.update(offsets, err, k)
        # a probe whose horizon has passed (or that a reset left behind) makes room
        done = live & (step >= st.horizon)
        st.probe_origin[row[done]] = NONE

    def _hold(
        self,
        row: IntArray,
        start: IntArray,
        made_sorted: IntArray,
        order: IntArray,
        fc: ForecastBatch,
    ) -> None:
        """The forecasts made at these intervals become the held step-1 and probe."""
        st = self.store
        if len(made_sorted) == 0:
            return
        wanted = _codes(row, start)
        pos = np.minimum(np.searchsorted(made_sorted, wanted), len(made_sorted) - 1)
        have = made_sorted[pos] == wanted
        if not have.any():
            return
        rows, i = row[have], order[pos[have]]
        assert fc.unit is not None
        if fc.lower is not None and fc.upper is not None:
            # the band of a forecast made at an interval uses the offsets after that
            # interval's actual was scored, however the intervals were batched
            fc.lower[i], fc.upper[i] = self.bands.bounds(
                fc.values[i], fc.unit[i], st.band_adj[rows]
            )
        st.p1_value[rows] = fc.values[i, 0]
        st.p1_target[rows] = self.grid.shift(start[have], 1)
        st.p1_unit[rows] = fc.unit[i]
        free = st.probe_origin[rows] == NONE
        st.probe[rows[free]] = fc.values[i[free]].astype(np.float32)
        st.probe_origin[rows[free]] = start[have][free]
        st.probe_unit[rows[free]] = fc.unit[i[free]]


_FIELDS = ("row", "start", "z", "rank", "trigger")


def _no_residuals() -> Residuals:
    empty = np.zeros(0, dtype=np.int64)
    return Residuals(empty, empty, np.zeros(0), empty, empty)


def _codes(rows: IntArray, origins: IntArray) -> IntArray:
    """One int64 per ``(state row, origin)``: rows below 2^31, origins (epoch seconds)
    below 2^32 (the year 2106)."""
    return np.asarray((rows.astype(np.int64) << 32) | origins.astype(np.int64), dtype=np.int64)
