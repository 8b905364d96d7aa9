"""The key lifecycle: closed intervals -> the model steps they cause (gaps, resets, warm-up).

Rules (identical to the offline evaluator, see :mod:`streamcast.core.artifact`):

* Each closed interval is appended to the key's window. If the previous closed interval
  lies ``g`` intervals back and ``1 <= g - 1 <= max_gap``, the ``g - 1`` missing rows are
  linear interpolations (:func:`~streamcast.core.features.interpolate_gap`) appended first.
  A longer gap (or no previous interval) *resets* the key: empty window, zero state,
  warm-up again; keys known from training keep their training scale, others forget it.
* **Warm-up forecasts are withheld.** Nothing is stepped until the window holds
  ``window`` rows. Then keys the model never saw take loc/scale from the window
  (:func:`~streamcast.core.features.fit_location_scale`), the whole window is queued in order
  from zero state, and its last row, if real, emits the key's first forecast.
* Afterwards every appended row is one step; real rows emit a forecast, imputed ones not.

The planner writes the window, gap and scale columns of the store and returns the
pending steps as arrays; ``h``/``c`` are advanced later by the pipeline's rounds.
Steady keys (warm, each interval the next one) take a fully vectorised path; the rest
(gaps, resets, warm-up) cost a constant of Python work per closed interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamcast.core.features import fit_location_scale, interpolate_gap
from streamcast.core.intervals import ClosedIntervals
from streamcast.core.state import NONE, SCALE_NONE, SCALE_WINDOW, StateStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Steps:
    """Pending steps, one entry per step; ``rank`` orders a row's steps (0, 1, ...).

    ``x`` holds raw (unscaled) inputs; ``zero`` means "start from zero state";
    ``trigger`` is the batch position of the tick that closed the interval.
    """

    row: IntArray
    rank: IntArray
    x: FloatArray
    ts: IntArray
    emit: BoolArray
    zero: BoolArray
    loc: FloatArray
    scale: FloatArray
    trigger: IntArray

    def __len__(self) -> int:
        return len(self.row)

    @staticmethod
    def concat(parts: list[Steps]) -> Steps:
        """All steps of ``parts`` (each row must appear in one part only)."""
        return Steps(*(np.concatenate([getattr(p, name) for p in parts]) for name in _STEP_FIELDS))


_STEP_FIELDS = ("row", "rank", "x", "ts", "emit", "zero", "loc", "scale", "trigger")


@dataclass
class _StepLists:
    row: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    x: list[FloatArray] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    emit: list[bool] = field(default_factory=list)
    zero: list[bool] = field(default_factory=list)
    loc: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    trigger: list[int] = field(default_factory=list)

    def to_steps(self, n_inputs: int) -> Steps:
        n = len(self.row)
        return Steps(
            row=np.asarray(self.row, dtype=np.int64),
            rank=np.asarray(self.rank, dtype=np.int64),
            x=np.asarray(self.x, dtype=np.float64).reshape(n, n_inputs),
            ts=np.asarray(self.ts, dtype=np.int64),
            emit=np.asarray(self.emit, dtype=bool),
            zero=np.asarray(self.zero, dtype=bool),
            loc=np.asarray(self.loc, dtype=np.float64),
            scale=np.asarray(self.scale, dtype=np.float64),
            trigger=np.asarray(self.trigger, dtype=np.int64),
        )


@dataclass
class Planned:
    """The steps of a batch plus what happened on the way."""

    steps: Steps
    imputed: int = 0
    resets: int = 0


class LifecyclePlanner:
    """Turns closed intervals into pending steps, updating the store's lifecycle columns."""

    def __init__(self, store: StateStore, *, window: int, interval_s: int, max_gap: int) -> None:
        self.store = store
        self.window = window
        self.interval_s = interval_s
        self.max_gap = max_gap

    def plan(self, closed: ClosedIntervals) -> Planned:
        """Steps for ``closed`` (sorted by row, then start); see the module docstring."""
        steady = self._steady(closed)
        fast = self._plan_steady(closed, steady)
        slow = self._plan_loop(closed, ~steady)
        slow.steps = Steps.concat([fast, slow.steps])
        return slow

    def replay_windows(self, rows: IntArray) -> Steps:
        """Steps that rebuild the state of warm ``rows`` from their windows (no forecasts).

        Used after a model swap: each row's last ``window`` intervals are stepped in order
        from zero state, so the new model starts from history instead of warming up again.
        """
        st, w = self.store, self.window
        rows = rows[st.warm[rows]]
        n = len(rows)
        ago = np.arange(w - 1, -1, -1, dtype=np.int64) * self.interval_s
        rank = np.tile(np.arange(w, dtype=np.int64), n)
        return Steps(
            row=np.repeat(rows, w),
            rank=rank,
            x=self._chronological(rows).reshape(n * w, st.n_inputs),
            ts=(st.closed_start[rows, None] - ago[None, :]).ravel(),
            emit=np.zeros(n * w, dtype=bool),
            zero=rank == 0,
            loc=np.repeat(st.loc[rows], w),
            scale=np.repeat(st.scale[rows], w),
            trigger=np.zeros(n * w, dtype=np.int64),
        )

    def rescale_from_windows(self, rows: IntArray) -> None:
        """``rows`` lose their training scale: warm ones take their current window's."""
        st = self.store
        st.scale_src[rows] = SCALE_NONE
        warm = rows[st.warm[rows]]
        if len(warm):
            loc, scale = fit_location_scale(self._chronological(warm)[:, :, 0], axis=-1)
            st.loc[warm], st.scale[warm] = loc, scale
            st.scale_src[warm] = SCALE_WINDOW

    def _chronological(self, rows: IntArray) -> FloatArray:
        """``[n, window, F]`` the rows' window contents, oldest first."""
        st, w = self.store, self.window
        order = (st.wpos[rows, None] + np.arange(w)[None, :]) % w
        return np.asarray(st.window[rows[:, None], order], dtype=np.float64)

    def _steady(self, closed: ClosedIntervals) -> BoolArray:
        """Intervals of rows that are warm and only advance interval by interval."""
        n = len(closed)
        if n == 0:
            return np.zeros(0, dtype=bool)
        st, row = self.store, closed.row
        first = np.ones(n, dtype=bool)
        first[1:] = row[1:] != row[:-1]
        prev = np.empty(n, dtype=np.int64)
        prev[first] = st.closed_start[row[first]]
        prev[~first] = closed.start[:-1][~first[1:]]
        ok = st.warm[row] & (prev != NONE) & (closed.start - prev == self.interval_s)
        starts = np.flatnonzero(first)
        count = np.diff(np.append(starts, n))
        row_ok = np.logical_and.reduceat(ok, starts)
        return np.asarray(np.repeat(row_ok, count), dtype=bool)

    def _plan_steady(self, closed: ClosedIntervals, mask: BoolArray) -> Steps:
        st, w = self.store, self.window
        sel = np.flatnonzero(mask)
        row = closed.row[sel]
        value = closed.value[sel]
        first = np.ones(len(sel), dtype=bool)
        first[1:] = row[1:] != row[:-1]
        starts = np.flatnonzero(first)
        count = np.diff(np.append(starts, len(sel)))
        rank = np.arange(len(sel)) - np.repeat(starts, count)
        last = np.append(starts[1:], len(sel)) - 1 if len(sel) else starts
        # only a row's last `window` intervals stay in the ring: writing just those keeps
        # the positions distinct (numpy leaves repeated-index assignment order undefined)
        kept = rank >= np.repeat(count, count) - w
        st.window[row[kept], (st.wpos[row[kept]] + rank[kept]) % w] = value[kept]
        rows = row[starts]
        st.wpos[rows] = (st.wpos[rows] + count) % w
        st.closed_start[rows] = closed.start[sel][last]
        st.closed_value[rows] = value[last]
        st.steps[rows] += count
        return Steps(
            row=row,
            rank=rank,
            x=value,
            ts=closed.start[sel],
            emit=np.ones(len(sel), dtype=bool),
            zero=np.zeros(len(sel), dtype=bool),
            loc=st.loc[row],
            scale=st.scale[row],
            trigger=closed.trigger[sel],
        )

    def _plan_loop(self, closed: ClosedIntervals, mask: BoolArray) -> Planned:
        """Gaps, resets and warm-up: constant Python work per closed interval."""
        st, w, interval = self.store, self.window, self.interval_s
        out = _StepLists()
        planned = Planned(steps=out.to_steps(st.n_inputs))
        sel = np.flatnonzero(mask)
        row_of = closed.row[sel]
        bounds = np.flatnonzero(np.diff(row_of, prepend=-1, append=-1))
        for b in range(len(bounds) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            row = int(row_of[lo])
            rank = 0
            for i in sel[lo:hi].tolist():
                start = int(closed.start[i])
                value = closed.value[i]
                trigger = int(closed.trigger[i])
                prev = int(st.closed_start[row])
                missing = (start - prev) // interval - 1 if prev != NONE else -1
                rows: list[tuple[int, FloatArray, bool]] = []
                if 1 <= missing <= self.max_gap:
                    fill = interpolate_gap(st.closed_value[row], value, missing)
                    rows += [(prev + (k + 1) * interval, fill[k], False) for k in range(missing)]
                    planned.imputed += missing
                elif missing != 0:
                    planned.resets += prev != NONE
                    self._reset(row)
                rows.append((start, value, True))
                st.closed_start[row] = start
                st.closed_value[row] = value
                for ts, x, real in rows:
                    pos = int(st.wpos[row])
                    st.window[row, pos] = x
                    st.wpos[row] = (pos + 1) % w
                    st.wlen[row] = min(int(st.wlen[row]) + 1, w)
                    if st.warm[row]:
                        self._add(out, row, rank, x, ts=ts, emit=real, zero=False, trigger=trigger)
                        rank += 1
                    elif st.wlen[row] == w:
                        rank = self._warm_up(out, row, rank, ts=ts, real=real, trigger=trigger)
        planned.steps = out.to_steps(st.n_inputs)
        return planned

    def _reset(self, row: int) -> None:
        st = self.store
        st.wlen[row] = 0
        st.wpos[row] = 0
        st.warm[row] = False
        st.steps[row] = 0
        if st.scale_src[row] == SCALE_WINDOW:
            st.scale_src[row] = SCALE_NONE

    def _warm_up(
        self, out: _StepLists, row: int, rank: int, *, ts: int, real: bool, trigger: int
    ) -> int:
        """The window just filled: fix the scale, queue the whole window from zero state."""
        st, w = self.store, self.window
        chronological = self._chronological(np.array([row]))[0]
        if st.scale_src[row] == SCALE_NONE:
            loc, scale = fit_location_scale(chronological[:, 0])
            st.loc[row], st.scale[row] = float(loc), float(scale)
            st.scale_src[row] = SCALE_WINDOW
        st.warm[row] = True
        for k in range(w):
            self._add(
                out, row, rank + k, chronological[k], ts=ts - (w - 1 - k) * self.interval_s,
                emit=real and k == w - 1, zero=k == 0, trigger=trigger,
            )  # fmt: skip
        return rank + w

    def _add(
        self, out: _StepLists, row: int, rank: int, x: FloatArray, *, ts: int, emit: bool,
        zero: bool, trigger: int,
    ) -> None:  # fmt: skip
        st = self.store
        out.row.append(row)
        out.rank.append(rank)
        out.x.append(x)
        out.ts.append(ts)
        out.emit.append(emit)
        out.zero.append(zero)
        out.loc.append(float(st.loc[row]))
        out.scale.append(float(st.scale[row]))
        out.trigger.append(trigger)
        st.steps[row] += 1
