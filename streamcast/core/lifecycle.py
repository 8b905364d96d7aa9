"""The key lifecycle: closed intervals -> the model steps they cause (gaps, resets, warm-up).

Rules (identical to the offline evaluator, see :mod:`streamcast.core.artifact`):

* Each closed interval is appended to the key's window. If the previous closed interval
  lies ``g`` intervals back on the model's grid (:mod:`streamcast.core.grid`) and
  ``1 <= g - 1 <= max_gap``, the ``g - 1`` missing rows are linear interpolations
  (:func:`~streamcast.core.features.interpolate_gap`) appended first. A longer gap (or no
  previous interval) *resets* the key: empty window, zero state, warm-up again.
* **Warm-up forecasts are withheld.** Nothing is stepped until the window holds
  ``window`` rows. Then the key's level and scale are set from the window
  (:meth:`~streamcast.core.features.LevelScale.init`, carried by the first step as
  ``init_level``/``init_scale``), the whole window is queued in order from zero state,
  and its last row, if real, emits the key's first forecast.
* Afterwards every appended row is one step; real rows emit a forecast, imputed ones not.

Each step carries its raw row and the key's last ``M`` values up to it (``lags``, NaN
before the reset), read from the window as it stood at that step; the pipeline's rounds
update level and scale, build the inputs and advance ``h``/``c``. The planner writes the
window and gap columns of the store and returns the pending steps as arrays. Steady keys
(warm, each interval the next one) and keys warming up that close the next interval (or
their first) take vectorised paths; the rest (gaps, resets, several intervals of a
warming key) cost a constant of Python work per closed interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from streamcast.core.features import LevelScale, interpolate_gap
from streamcast.core.grid import Grid, as_grid
from streamcast.core.intervals import ClosedIntervals
from streamcast.core.state import NONE, StateStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
#: no rows (an empty :attr:`Planned.windows`)
_NO_ROWS: IntArray = np.zeros(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False


@dataclass(frozen=True)
class Steps:
    """Pending steps, one entry per step; ``rank`` orders a row's steps (0, 1, ...).

    ``x`` holds the raw rows, ``lags [n, M]`` the key's last ``M`` raw values up to each
    step (NaN before its reset); ``zero`` means "start from zero state, with level and
    scale ``init_level``/``init_scale``" (NaN elsewhere); ``trigger`` is the batch position
    of the tick that closed the interval.
    """

    row: IntArray
    rank: IntArray
    x: FloatArray
    lags: FloatArray
    ts: IntArray
    emit: BoolArray
    zero: BoolArray
    init_level: FloatArray
    init_scale: FloatArray
    trigger: IntArray

    def __len__(self) -> int:
        return len(self.row)

    @staticmethod
    def concat(parts: list[Steps]) -> Steps:
        """All steps of ``parts`` (each row must appear in one part only); a lone non-empty
        part is returned as it is (a warm-up's lags are ~10 MB per 500 keys to copy)."""
        filled = [p for p in parts if len(p)]
        if len(filled) == 1:
            return filled[0]
        return Steps(*(np.concatenate([getattr(p, name) for p in parts]) for name in _STEP_FIELDS))


_STEP_FIELDS = (
    "row", "rank", "x", "lags", "ts", "emit", "zero", "init_level", "init_scale", "trigger",
)  # fmt: skip


@dataclass
class _StepLists:
    row: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    x: list[FloatArray] = field(default_factory=list)
    lags: list[FloatArray] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    emit: list[bool] = field(default_factory=list)
    zero: list[bool] = field(default_factory=list)
    init_level: list[float] = field(default_factory=list)
    init_scale: list[float] = field(default_factory=list)
    trigger: list[int] = field(default_factory=list)

    def to_steps(self, n_inputs: int, n_lags: int) -> Steps:
        n = len(self.row)
        return Steps(
            row=np.asarray(self.row, dtype=np.int64),
            rank=np.asarray(self.rank, dtype=np.int64),
            x=np.asarray(self.x, dtype=np.float64).reshape(n, n_inputs),
            lags=np.asarray(self.lags, dtype=np.float64).reshape(n, n_lags),
            ts=np.asarray(self.ts, dtype=np.int64),
            emit=np.asarray(self.emit, dtype=bool),
            zero=np.asarray(self.zero, dtype=bool),
            init_level=np.asarray(self.init_level, dtype=np.float64),
            init_scale=np.asarray(self.init_scale, dtype=np.float64),
            trigger=np.asarray(self.trigger, dtype=np.int64),
        )


@dataclass
class Planned:
    """The steps of a batch plus what happened on the way.

    ``windows`` are ``(rows, triggers)`` of keys whose window just filled and whose only
    steps in the batch are their whole window from zero state, the last one emitting:
    left for :meth:`LifecyclePlanner.window_steps` to build, so that the runner can take
    them a block of keys at a time (a window's steps are ~26 KB per key with window 48).
    """

    steps: Steps
    imputed: int = 0
    resets: int = 0
    windows: tuple[IntArray, IntArray] = field(default_factory=lambda: (_NO_ROWS, _NO_ROWS))


class LifecyclePlanner:
    """Turns closed intervals into pending steps, updating the store's lifecycle columns."""

    def __init__(
        self,
        store: StateStore,
        *,
        window: int,
        interval_s: int | Grid,
        max_gap: int,
        scheme: LevelScale | None = None,
    ) -> None:
        self.store = store
        self.window = window
        self.grid = as_grid(interval_s)
        self.max_gap = max_gap
        self.scheme = scheme or LevelScale()
        if self.scheme.max_lag > window:
            raise ValueError(f"lag {self.scheme.max_lag} is longer than the window {window}")

    def plan(self, closed: ClosedIntervals) -> Planned:
        """Steps for ``closed`` (sorted by row, then start); see the module docstring.
        Keys that only finish their warm-up come back as :attr:`Planned.windows`."""
        steady, warming = self._fast_paths(closed)
        fast = self._plan_steady(closed, steady)
        filled, triggers = self._plan_warming(closed, warming)
        slow = self._plan_loop(closed, ~(steady | warming))
        slow.steps = Steps.concat([fast, slow.steps])
        rows_w, triggers_w = slow.windows
        slow.windows = (np.concatenate([filled, rows_w]), np.concatenate([triggers, triggers_w]))
        return slow

    def window_steps(self, rows: IntArray, trigger: IntArray) -> Steps:
        """The steps of :attr:`Planned.windows`: each row's whole window from zero state,
        the last step emitting (triggered by ``trigger``)."""
        return self._window_steps(rows, emit_last=True, trigger=trigger)

    def replay_windows(self, rows: IntArray) -> Steps:
        """Steps that rebuild the state of warm ``rows`` from their windows (no forecasts).

        Used after a model swap or a restore under another model: each row's last
        ``window`` intervals are stepped in order from zero state, the level and scale
        set from the window as at warm-up, so the new model starts from history instead of
        warming up again.
        """
        rows = rows[self.store.warm[rows]]
        return self._window_steps(rows, emit_last=False, trigger=np.zeros(len(rows), np.int64))

    def _window_steps(self, rows: IntArray, *, emit_last: bool, trigger: IntArray) -> Steps:
        """Each row's whole window as steps in order from zero state, the level and scale
        set from the window (a warm-up, or a rebuild after a swap); the last step of each
        emits when ``emit_last``. Each row's last closed interval ends its window."""
        st, w = self.store, self.window
        n = len(rows)
        chrono = self._chronological(rows)
        level, scale = self.scheme.init(chrono[:, :, 0])
        rank = np.tile(np.arange(w, dtype=np.int64), n)
        first = rank == 0
        back = np.arange(w - 1, -1, -1, dtype=np.int64)
        return Steps(
            row=np.repeat(rows, w),
            rank=rank,
            x=chrono.reshape(n * w, st.n_inputs),
            lags=self._window_lags(chrono[:, :, 0]).reshape(n * w, self.scheme.max_lag),
            ts=self.grid.shift(st.closed_start[rows, None], -back[None, :]).ravel(),
            emit=(rank == w - 1) & emit_last,
            zero=first,
            init_level=np.where(first, np.repeat(level, w), np.nan),
            init_scale=np.where(first, np.repeat(scale, w), np.nan),
            trigger=np.repeat(trigger, w),
        )

    def _window_lags(self, values: FloatArray) -> FloatArray:
        """``[n, W, M]``: for each row of chronological windows ``values [n, W]`` stepped
        from the window's start, the last ``M`` values up to it (NaN before the start)."""
        m = self.scheme.max_lag
        padded = np.concatenate([np.full((len(values), m - 1), np.nan), values], axis=1)
        # a view: each step's M values are a sliding window over the NaN-padded values
        return np.asarray(sliding_window_view(padded, m, axis=1), dtype=np.float64)

    def _chronological(self, rows: IntArray) -> FloatArray:
        """``[n, window, F]`` the rows' window contents, oldest first."""
        return self._newest(rows, self.window, self.store.n_inputs)

    def _newest(self, rows: IntArray, k: int, columns: int = 1) -> FloatArray:
        """``[n, k, columns]`` the newest ``k`` rows of each row's window (of a full
        window: the oldest is at ``wpos``), oldest first, its first ``columns`` values.

        One ``take`` on the flat ring at computed positions: the ring's 2-d fancy index
        and its ``%`` cost three times as much (10,000 keys: 6 against 2 ms)."""
        st, w, f = self.store, self.window, self.store.n_inputs
        pos = st.wpos[rows, None] + np.arange(w - k, w)[None, :]
        pos -= w * (pos >= w)  # wpos < w, so one wrap at most
        flat = (rows[:, None] * w + pos)[:, :, None] * f + np.arange(columns)
        return np.asarray(st.window.reshape(-1).take(flat), dtype=np.float64)

    def _fast_paths(self, closed: ClosedIntervals) -> tuple[BoolArray, BoolArray]:
        """``(steady, warming)``: the intervals of rows that are warm and only advance
        interval by interval, and of rows warming up that close just the next interval
        (or their first ever); both take vectorised paths."""
        n = len(closed)
        if n == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        st, row = self.store, closed.row
        first = np.ones(n, dtype=bool)
        first[1:] = row[1:] != row[:-1]
        prev = np.empty(n, dtype=np.int64)
        prev[first] = st.closed_start[row[first]]
        prev[~first] = closed.start[:-1][~first[1:]]
        known = prev != NONE
        step = self.grid.index(closed.start) - self.grid.index(np.where(known, prev, 0))
        warm = st.warm[row]
        ok = warm & known & (step == 1)
        starts = np.flatnonzero(first)
        count = np.diff(np.append(starts, n))
        row_ok = np.logical_and.reduceat(ok, starts)
        steady = np.asarray(np.repeat(row_ok, count), dtype=bool)
        single = np.repeat(count == 1, count)
        warming = single & ~warm & (~known | (step == 1))
        return steady, warming

    def _plan_warming(self, closed: ClosedIntervals, mask: BoolArray) -> tuple[IntArray, IntArray]:
        """Rows warming up, one interval each (the next, or a key's first): the row joins
        the window; a window that fills queues its whole window from zero state (the
        rules of :meth:`_plan_loop` for these intervals, vectorised). Returns the rows
        whose window filled and their triggers (:attr:`Planned.windows`)."""
        st, w = self.store, self.window
        sel = np.flatnonzero(mask)
        rows = closed.row[sel]
        new = rows[st.closed_start[rows] == NONE]  # a key's first interval: from empty
        st.wlen[new], st.wpos[new], st.steps[new] = 0, 0, 0
        pos = st.wpos[rows]
        st.window[rows, pos] = closed.value[sel]
        st.wpos[rows] = (pos + 1) % w
        st.wlen[rows] = np.minimum(st.wlen[rows] + 1, w)
        st.closed_start[rows] = closed.start[sel]
        st.closed_value[rows] = closed.value[sel]
        full = st.wlen[rows] == w
        filled = rows[full]
        st.warm[filled] = True
        st.steps[filled] += w
        return filled, closed.trigger[sel][full]

    def _plan_steady(self, closed: ClosedIntervals, mask: BoolArray) -> Steps:
        st, w, m = self.store, self.window, self.scheme.max_lag
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            return _StepLists().to_steps(st.n_inputs, m)
        row = closed.row[sel]
        value = closed.value[sel]
        first = np.ones(len(sel), dtype=bool)
        first[1:] = row[1:] != row[:-1]
        starts = np.flatnonzero(first)
        count = np.diff(np.append(starts, len(sel)))
        rank = np.arange(len(sel)) - np.repeat(starts, count)
        last = np.append(starts[1:], len(sel)) - 1
        rows = row[starts]
        if len(starts) == len(sel):
            # one interval per key (the steady state): its last M values are the window's
            # newest M - 1, then its own
            lags = np.empty((len(sel), m))
            lags[:, : m - 1] = self._newest(rows, m - 1)[:, :, 0]
            lags[:, m - 1] = value[:, 0]
        else:
            # each step's last M values: the batch's rows up to it, then the window's
            old = self._chronological(rows)[:, :, 0]
            back = rank[:, None] - (m - 1 - np.arange(m))[None, :]  # [n, M], < 0: before
            new = np.repeat(starts, count)[:, None] + np.maximum(back, 0)
            owner = np.repeat(np.arange(len(starts)), count)[:, None]
            lags = np.where(back >= 0, value[new, 0], old[owner, w + np.minimum(back, -1)])
        # only a row's last `window` intervals stay in the ring: writing just those keeps
        # the positions distinct (numpy leaves repeated-index assignment order undefined)
        kept = rank >= np.repeat(count, count) - w
        st.window[row[kept], (st.wpos[row[kept]] + rank[kept]) % w] = value[kept]
        st.wpos[rows] = (st.wpos[rows] + count) % w
        st.closed_start[rows] = closed.start[sel][last]
        st.closed_value[rows] = value[last]
        st.steps[rows] += count
        nan = np.full(len(sel), np.nan)
        return Steps(
            row=row,
            rank=rank,
            x=value,
            lags=np.asarray(lags, dtype=np.float64),
            ts=closed.start[sel],
            emit=np.ones(len(sel), dtype=bool),
            zero=np.zeros(len(sel), dtype=bool),
            init_level=nan,
            init_scale=nan,
            trigger=closed.trigger[sel],
        )

    def _plan_loop(self, closed: ClosedIntervals, mask: BoolArray) -> Planned:
        """Gaps, resets and warm-up: constant Python work per closed interval."""
        st, w, grid = self.store, self.window, self.grid
        out = _StepLists()
        planned = Planned(steps=out.to_steps(st.n_inputs, self.scheme.max_lag))
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            return planned
        row_of = closed.row[sel]
        index_of = grid.index(closed.start[sel]).tolist()
        bounds = np.flatnonzero(np.diff(row_of, prepend=-1, append=-1))
        # (row, trigger) of warm-ups that are a row's only steps of the batch: left to the
        # vectorised window_steps (keys that start together finish warming up together:
        # per key, the window's steps cost ~0.2 ms of Python)
        warming: list[tuple[int, int]] = []
        for b in range(len(bounds) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            row = int(row_of[lo])
            rank = 0
            prev = int(st.closed_start[row])
            prev_index = int(grid.index(prev)) if prev != NONE else 0
            for j, i in enumerate(sel[lo:hi].tolist()):
                start = int(closed.start[i])
                index = int(index_of[lo + j])
                value = closed.value[i]
                trigger = int(closed.trigger[i])
                missing = index - prev_index - 1 if prev != NONE else -1
                rows: list[tuple[int, FloatArray, bool]] = []
                if 1 <= missing <= self.max_gap:
                    fill = interpolate_gap(st.closed_value[row], value, missing)
                    filled = grid.shift(prev, np.arange(1, missing + 1)).tolist()
                    rows += [(int(filled[k]), fill[k], False) for k in range(missing)]
                    planned.imputed += missing
                elif missing != 0:
                    planned.resets += prev != NONE
                    self._reset(row)
                rows.append((start, value, True))
                st.closed_start[row] = start
                st.closed_value[row] = value
                prev, prev_index = start, index
                ends = lo + j == hi - 1
                for k, (ts, x, real) in enumerate(rows):
                    self._append(row, x)
                    if st.warm[row]:
                        self._add(out, row, rank, x, self._last_values(row), ts=ts, emit=real,
                                  trigger=trigger)  # fmt: skip
                        rank += 1
                    elif st.wlen[row] == w and rank == 0 and ends and k == len(rows) - 1:
                        st.warm[row] = True
                        warming.append((row, trigger))
                        rank += w
                    elif st.wlen[row] == w:
                        rank = self._warm_up(out, row, rank, ts=ts, real=real, trigger=trigger)
        planned.steps = out.to_steps(st.n_inputs, self.scheme.max_lag)
        if warming:
            rows_w, triggers = np.array(warming, dtype=np.int64).T
            st.steps[rows_w] += w
            planned.windows = (rows_w, triggers)
        return planned

    def _append(self, row: int, x: FloatArray) -> None:
        """Write one interval's row into the key's window ring."""
        st, w = self.store, self.window
        pos = int(st.wpos[row])
        st.window[row, pos] = x
        st.wpos[row] = (pos + 1) % w
        st.wlen[row] = min(int(st.wlen[row]) + 1, w)

    def _last_values(self, row: int) -> FloatArray:
        """The row's last ``M`` values, oldest first (NaN beyond what it holds)."""
        st, w, m = self.store, self.window, self.scheme.max_lag
        chrono = self._chronological(np.array([row]))[0, :, 0]
        held = np.arange(w) >= w - int(st.wlen[row])
        return np.asarray(np.where(held, chrono, np.nan)[w - m :], dtype=np.float64)

    def _reset(self, row: int) -> None:
        st = self.store
        st.wlen[row] = 0
        st.wpos[row] = 0
        st.warm[row] = False
        st.steps[row] = 0

    def _warm_up(
        self, out: _StepLists, row: int, rank: int, *, ts: int, real: bool, trigger: int
    ) -> int:
        """The window just filled: set level and scale, queue the window from zero state."""
        w = self.window
        chrono = self._chronological(np.array([row]))
        level, scale = self.scheme.init(chrono[:, :, 0])
        lags = self._window_lags(chrono[:, :, 0])[0]
        times = self.grid.shift(ts, -np.arange(w - 1, -1, -1)).tolist()
        self.store.warm[row] = True
        for k in range(w):
            self._add(
                out, row, rank + k, chrono[0, k], lags[k], ts=int(times[k]),
                emit=real and k == w - 1, trigger=trigger,
                init=(float(level[0]), float(scale[0])) if k == 0 else None,
            )  # fmt: skip
        return rank + w

    def _add(
        self, out: _StepLists, row: int, rank: int, x: FloatArray, lags: FloatArray, *,
        ts: int, emit: bool, trigger: int, init: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        out.row.append(row)
        out.rank.append(rank)
        out.x.append(x)
        out.lags.append(lags)
        out.ts.append(ts)
        out.emit.append(emit)
        out.zero.append(init is not None)
        out.init_level.append(np.nan if init is None else init[0])
        out.init_scale.append(np.nan if init is None else init[1])
        out.trigger.append(trigger)
        self.store.steps[row] += 1
