"""Event-time admission of ticks and their aggregation into closed intervals (vectorised).

Rules, per key, applied to ticks in input order (they match ``training/data.py``'s
regularisation and the offline evaluator):

* A tick is *accepted* iff its timestamp is later than every tick accepted before it for
  the key. Otherwise it is rejected: ``duplicate`` if it equals the last accepted
  timestamp, ``late`` if it falls in an interval before the open one (that interval is
  closed already), else ``out_of_order`` (earlier, but inside the open interval).
* The open interval is the one holding the last accepted tick, with
  ``start = grid.floor(ts_s)`` on the model's grid (:mod:`streamcast.core.grid`: fixed
  intervals, calendar months or trading days). A tick in a later
  interval *closes* the open interval (its value = the aggregate of its ticks) and opens
  the new one. An interval therefore closes only when the key's next tick arrives.
* Aggregation is ``last``, ``mean``, ``sum``, ``min`` or ``max`` over the interval's
  ticks, applied to every column (value and extras).

Because accepted timestamps strictly increase, "accepted" is "greater than the running
maximum of the earlier timestamps", a segmented cumulative maximum: no Python loop over
ticks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.artifact import Aggregation
from streamcast.core.grid import Grid, as_grid
from streamcast.core.state import NONE, StateStore
from streamcast.errors import RejectReason

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

AGGREGATIONS: tuple[Aggregation, ...] = ("last", "mean", "sum", "min", "max")

#: reason codes of :func:`admit` (0 = accepted) and of :func:`sums_beyond`
ACCEPTED, DUPLICATE, LATE, OUT_OF_ORDER, TIME_JUMP, SUM_OUT_OF_RANGE = 0, 1, 2, 3, 4, 5
REASONS = {
    DUPLICATE: RejectReason.DUPLICATE,
    LATE: RejectReason.LATE,
    OUT_OF_ORDER: RejectReason.OUT_OF_ORDER,
    TIME_JUMP: RejectReason.TIME_JUMP,
    SUM_OUT_OF_RANGE: RejectReason.OUT_OF_RANGE,
}


@dataclass(frozen=True)
class JumpRule:
    """How far ahead of its key's last accepted tick a tick may jump (``max_jump_ms``), and
    how many consecutive ticks on a new timeline confirm a real jump (``confirmations``).

    One tick a year ahead of a key that streams history (a bad clock, a typo) would
    otherwise make every later real tick ``late``: it is rejected ``time_jump`` instead.
    A key that really moved on (a sensor back after a long outage, a replay that skips
    ahead) sends several ticks near each other on the new timeline: the
    ``confirmations``-th is accepted (the long gap then resets the key to warm-up), the
    ones before it stay dead-lettered. ``max_jump_ms=None`` accepts any jump.
    """

    max_jump_ms: int | None = None
    confirmations: int = 3
    #: a tick more than this ahead of the wall clock may jump at most this far past its
    #: key's last tick, whatever ``max_jump_ms`` (a key cannot really be ahead of now: a
    #: bad clock or a typo dated days ahead, still inside ``max_future_s``, would
    #: otherwise be taken as a gap and make the key's real ticks ``late`` until the wall
    #: clock caught up with it). None: no such bound.
    ahead_ms: int | None = None

    def limits(self, ts_ms: IntArray, now_ms: int | None) -> IntArray | None:
        """How far each tick may jump past its key's last tick (None: any jump)."""
        if self.max_jump_ms is None:
            return None
        limit = np.full(len(ts_ms), self.max_jump_ms, dtype=np.int64)
        if self.ahead_ms is not None and now_ms is not None:
            ahead = ts_ms > now_ms + self.ahead_ms
            limit[ahead] = min(self.max_jump_ms, self.ahead_ms)
        return limit


def admit(
    rows: IntArray,
    ts_ms: IntArray,
    last_ts_ms: IntArray,
    interval_s: int | Grid,
    *,
    jump: JumpRule | None = None,
    store: StateStore | None = None,
    now_ms: int | None = None,
) -> IntArray:
    """Reason code per tick (``ACCEPTED`` or a rejection), ticks given in input order.

    ``rows`` is each tick's state row, ``last_ts_ms`` the full state column (``NONE`` for
    keys without an accepted tick). With a :class:`JumpRule` (and the ``store`` whose
    ``jump_ts``/``jump_n`` columns keep each key's unconfirmed jump), ticks too far ahead
    are held to it (``now_ms``, the wall clock, bounds the jumps that land ahead of it);
    the keys that have such ticks are decided tick by tick.
    """
    grid = as_grid(interval_s)
    codes, prev = _admit_in_order(rows, ts_ms, last_ts_ms, grid)
    limits = None if jump is None else jump.limits(ts_ms, now_ms)
    if jump is None or limits is None or store is None or len(rows) == 0:
        return codes
    jumps = (codes == ACCEPTED) & (prev != NONE) & (ts_ms - prev > limits)
    pending = store.jump_n[rows] > 0
    suspects = np.unique(rows[jumps | ((codes == ACCEPTED) & pending)])
    if len(suspects) == 0:
        return codes
    for row in suspects.tolist():
        mine = np.flatnonzero(rows == row)
        last = int(last_ts_ms[row])
        codes[mine] = _admit_key(
            ts_ms[mine], limits[mine], last, grid, jump=jump, store=store, row=row
        )
    return codes


def _admit_key(
    ts_ms: IntArray,
    limits: IntArray,
    last: int,
    grid: Grid,
    *,
    jump: JumpRule,
    store: StateStore,
    row: int,
) -> IntArray:
    """The admission rules applied tick by tick to one key, the jump rule included
    (``limits[i]``: how far tick ``i`` may jump)."""
    assert jump.max_jump_ms is not None
    jump_ts, jump_n = int(store.jump_ts[row]), int(store.jump_n[row])
    codes = np.zeros(len(ts_ms), dtype=np.int64)
    for i, (t, limit) in enumerate(zip(ts_ms.tolist(), limits.tolist(), strict=True)):
        if last != NONE and t > last + limit:
            near = jump_n > 0 and t > jump_ts and t - jump_ts <= jump.max_jump_ms
            jump_n, jump_ts = (jump_n + 1 if near else 1), t
            if jump_n < jump.confirmations:
                codes[i] = TIME_JUMP
                continue
            jump_n = 0  # confirmed: the key moves to the new timeline
        elif t > last:
            jump_n = 0  # back on its timeline: the jump was an outlier
        elif t == last:
            codes[i] = DUPLICATE
            continue
        else:
            earlier = int(grid.index(t // 1000)) < int(grid.index(last // 1000))
            codes[i] = LATE if earlier else OUT_OF_ORDER
            continue
        last = t
    store.jump_ts[row], store.jump_n[row] = jump_ts, jump_n
    return codes


def _admit_in_order(
    rows: IntArray, ts_ms: IntArray, last_ts_ms: IntArray, grid: Grid
) -> tuple[IntArray, IntArray]:
    """The admission rules without the jump rule, vectorised (module docstring): the codes,
    and for each tick its key's previous accepted timestamp (``NONE`` if none)."""
    n = len(rows)
    codes = np.zeros(n, dtype=np.int64)
    if n == 0:
        return codes, np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), rows))
    r, t = rows[order], ts_ms[order]
    base = last_ts_ms[r]
    first = np.ones(n, dtype=bool)
    first[1:] = r[1:] != r[:-1]
    segment = np.cumsum(first) - 1
    # Dense ranks keep the segment offsets small: seg * m + rank never overflows.
    uniq, inv = np.unique(np.concatenate([t, base]), return_inverse=True)
    m = len(uniq) + 1
    own = segment * m + inv[:n]
    floor = segment * m + inv[n:]
    running = np.maximum.accumulate(np.maximum(own, floor))
    prev = floor.copy()
    prev[~first] = np.maximum(floor[~first], running[:-1][~first[1:]])
    prev_ts = uniq[prev - segment * m]
    earlier = t < prev_ts
    late = np.zeros(n, dtype=bool)
    if earlier.any():  # only these need their interval (calendar grids cost more than a //)
        late[earlier] = grid.index(t[earlier] // 1000) < grid.index(prev_ts[earlier] // 1000)
    sorted_codes = np.where(
        t > prev_ts,
        ACCEPTED,
        np.where(t == prev_ts, DUPLICATE, np.where(late, LATE, OUT_OF_ORDER)),
    )
    codes[order] = sorted_codes
    previous = np.empty(n, dtype=np.int64)
    previous[order] = prev_ts
    return codes, previous


@dataclass(frozen=True)
class ClosedIntervals:
    """Intervals closed by a batch, sorted by row then start.

    ``trigger[i]`` is the batch position of the tick that closed interval ``i``.
    """

    row: IntArray
    start: IntArray
    value: FloatArray
    trigger: IntArray

    def __len__(self) -> int:
        return len(self.row)


class Aggregator:
    """Combines ticks into an interval value for one aggregation kind."""

    def __init__(self, kind: Aggregation) -> None:
        if kind not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {kind!r}")
        self.kind = kind

    def reduce(self, values: FloatArray, starts: IntArray) -> FloatArray:
        """Per-group accumulators of contiguous groups beginning at ``starts``."""
        if self.kind == "last":
            ends = np.append(starts[1:], len(values)) - 1
            return np.asarray(values[ends], dtype=np.float64)
        if self.kind in ("sum", "mean"):
            return np.add.reduceat(values, starts, axis=0)
        ufunc = np.minimum if self.kind == "min" else np.maximum
        return np.asarray(ufunc.reduceat(values, starts, axis=0), dtype=np.float64)

    def combine(self, earlier: FloatArray, later: FloatArray) -> FloatArray:
        """Accumulator of two consecutive runs of ticks of the same interval."""
        if self.kind == "last":
            return later
        if self.kind in ("sum", "mean"):
            return earlier + later
        ufunc = np.minimum if self.kind == "min" else np.maximum
        return np.asarray(ufunc(earlier, later), dtype=np.float64)

    def finalise(self, acc: FloatArray, count: IntArray) -> FloatArray:
        """The interval value from its accumulator and tick count."""
        if self.kind == "mean":
            return acc / count[:, None]
        return acc

    def interval_values(self, values: FloatArray, starts: IntArray) -> FloatArray:
        """Values of whole intervals: contiguous groups of rows of ``values`` beginning at
        ``starts``, each reduced and finalised at once (a batch seen from the start).

        >>> Aggregator("mean").interval_values(np.array([[1.0], [3.0], [5.0]]), np.array([0, 2]))
        array([[2.],
               [5.]])
        """
        counts = np.diff(np.append(starts, len(values)))
        return self.finalise(self.reduce(values, starts), counts)


def _interval_groups(
    rows: IntArray, ts_ms: IntArray, accepted: BoolArray, interval_s: int | Grid
) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """The accepted ticks sorted by key then time, as ``(order, row, interval start,
    first of its group)``: a group is one key's ticks of one interval."""
    pos = np.flatnonzero(accepted)
    order = pos[np.lexsort((ts_ms[pos], rows[pos]))]
    r = rows[order]
    s = as_grid(interval_s).floor(ts_ms[order] // 1000)
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (r[1:] != r[:-1]) | (s[1:] != s[:-1])
    return order, r, s, new_group


def sums_beyond(
    store: StateStore,
    *,
    rows: IntArray,
    ts_ms: IntArray,
    values: FloatArray,
    accepted: BoolArray,
    interval_s: int | Grid,
    limit: float,
) -> BoolArray:
    """The accepted ticks that would carry their interval's sum past ``±limit`` (sum
    aggregation): the running sum of the key's interval up to each tick, the open
    interval's accumulator included. Every tick is within the limit on its own (the
    decoder's range), but 400 ticks of 1e37 sum to 4e39, past float32, and the key's
    every later forecast would fail to encode. A refused tick does not count in the sum
    of the ticks after it (the intervals that pass the limit, rare, are summed again
    tick by tick). It runs after :func:`admit`, so within the batch a refused tick was
    still the "last tick" the ticks after it were admitted against: one at the same
    timestamp is a ``duplicate`` (dead-lettered with that reason, not lost).
    """
    beyond = np.zeros(len(rows), dtype=bool)
    if not accepted.any():
        return beyond
    order, r, s, new_group = _interval_groups(rows, ts_ms, accepted, interval_s)
    v = values[order]
    group = np.cumsum(new_group) - 1
    total = np.cumsum(v, axis=0)
    starts = np.flatnonzero(new_group)
    running = total - (total[starts] - v[starts])[group]
    continues = store.open_start[r] == s  # only a key's first group can continue it
    running[continues] += store.acc[r[continues]]
    over = ~(np.abs(running) <= limit).all(axis=1)
    for g in np.unique(group[over]).tolist():
        mine = np.flatnonzero(group == g)
        acc = store.acc[r[mine[0]]].copy() if continues[mine[0]] else np.zeros(v.shape[1])
        for i in mine.tolist():
            with_it = acc + v[i]
            over[i] = not (np.abs(with_it) <= limit).all()
            if not over[i]:
                acc = with_it
    beyond[order] = over
    return beyond


def aggregate(
    store: StateStore,
    *,
    rows: IntArray,
    ts_ms: IntArray,
    values: FloatArray,
    accepted: BoolArray,
    interval_s: int | Grid,
    aggregator: Aggregator,
) -> ClosedIntervals:
    """Fold accepted ticks into the open intervals; return the intervals they close.

    Updates the store's ``open_start``, ``acc``, ``acc_n`` and ``last_ts_ms`` columns.
    """
    f = values.shape[1]
    if not accepted.any():
        empty = np.zeros(0, dtype=np.int64)
        return ClosedIntervals(empty, empty, np.zeros((0, f)), empty)
    order, r, s, new_group = _interval_groups(rows, ts_ms, accepted, interval_s)
    t, v = ts_ms[order], values[order]
    starts = np.flatnonzero(new_group)
    g_row, g_start = r[starts], s[starts]
    g_acc = aggregator.reduce(v, starts)
    g_n = np.diff(np.append(starts, len(order)))
    g_first = np.ones(len(starts), dtype=bool)
    g_first[1:] = g_row[1:] != g_row[:-1]
    g_last = np.ones(len(starts), dtype=bool)
    g_last[:-1] = g_row[1:] != g_row[:-1]

    # A row's first group either continues the open interval or closes it.
    first_rows = g_row[g_first]
    open_start = store.open_start[first_rows]
    continues = open_start == g_start[g_first]
    cont = np.flatnonzero(g_first)[continues]
    g_acc[cont] = aggregator.combine(store.acc[g_row[cont]], g_acc[cont])
    g_n[cont] += store.acc_n[g_row[cont]]
    closes_state = (~continues) & (open_start != NONE)
    state_rows = first_rows[closes_state]
    state_value = aggregator.finalise(store.acc[state_rows], store.acc_n[state_rows])
    state_trigger = order[starts[np.flatnonzero(g_first)[closes_state]]]

    done = np.flatnonzero(~g_last)
    done_value = aggregator.finalise(g_acc[done], g_n[done])
    done_trigger = order[starts[done + 1]]

    row = np.concatenate([state_rows, g_row[done]])
    start = np.concatenate([store.open_start[state_rows], g_start[done]])
    value = np.concatenate([state_value, done_value])
    trigger = np.concatenate([state_trigger, done_trigger])
    by_time = np.lexsort((start, row))

    last = np.flatnonzero(g_last)
    last_rows = g_row[last]
    store.open_start[last_rows] = g_start[last]
    store.acc[last_rows] = g_acc[last]
    store.acc_n[last_rows] = g_n[last]
    group_end = np.append(starts[1:], len(order)) - 1
    store.last_ts_ms[last_rows] = t[group_end[last]]
    return ClosedIntervals(row[by_time], start[by_time], value[by_time], trigger[by_time])
