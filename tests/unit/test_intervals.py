"""Event-time admission (late / duplicate / out-of-order) and interval aggregation."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.core.artifact import Aggregation
from streamcast.core.intervals import (
    ACCEPTED,
    DUPLICATE,
    LATE,
    OUT_OF_ORDER,
    TIME_JUMP,
    Aggregator,
    ClosedIntervals,
    JumpRule,
    admit,
    aggregate,
    sums_beyond,
)
from streamcast.core.state import NONE, StateStore

HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR  # an hour boundary


def ms(hours: float) -> int:
    return int((T0 + hours * HOUR) * 1000)


def store(n_inputs: int = 1) -> StateStore:
    return StateStore(window=3, n_inputs=n_inputs, state_size=2, max_keys=16)


def feed(
    st: StateStore, keys: list[str], hours: list[float], values: list[float], kind: Aggregation
) -> tuple[np.ndarray, ClosedIntervals]:
    uniq = sorted(set(keys))
    rows_of, _ = st.rows_for(uniq, 0.0)
    rows = np.array([rows_of[uniq.index(k)] for k in keys], dtype=np.int64)
    ts = np.array([ms(h) for h in hours], dtype=np.int64)
    codes = admit(rows, ts, st.last_ts_ms, HOUR)
    closed = aggregate(
        st, rows=rows, ts_ms=ts, values=np.array(values)[:, None], accepted=codes == ACCEPTED,
        interval_s=HOUR, aggregator=Aggregator(kind),
    )  # fmt: skip
    return codes, closed


def test_rejections_follow_the_running_maximum() -> None:
    st = store()
    hours = [0.0, 0.5, 0.5, 0.25, 1.1, 0.9, 1.1, 1.05, 1.2]
    codes, _ = feed(st, ["a"] * len(hours), hours, list(range(len(hours))), "last")
    assert codes.tolist() == [
        ACCEPTED, ACCEPTED, DUPLICATE, OUT_OF_ORDER, ACCEPTED, LATE, DUPLICATE, OUT_OF_ORDER,
        ACCEPTED,
    ]  # fmt: skip


def test_state_carries_across_batches() -> None:
    st = store()
    feed(st, ["a"], [1.5], [1.0], "last")
    codes, _ = feed(st, ["a", "a", "a", "a"], [1.5, 1.2, 0.9, 1.7], [0, 0, 0, 0], "last")
    assert codes.tolist() == [DUPLICATE, OUT_OF_ORDER, LATE, ACCEPTED]


def test_keys_are_independent_and_input_order_is_kept() -> None:
    st = store()
    codes, _ = feed(st, ["a", "b", "a", "b"], [1.0, 2.0, 0.5, 1.0], [0, 0, 0, 0], "last")
    # b's 1.0 is late only relative to b's own 2.0; a's 0.5 is late relative to a's 1.0
    assert codes.tolist() == [ACCEPTED, ACCEPTED, LATE, LATE]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("last", 4.0), ("mean", 2.5), ("sum", 10.0), ("min", 1.0), ("max", 4.0)],
)
def test_aggregation_kinds_across_batches(kind: Aggregation, expected: float) -> None:
    st = store()
    # hour 0 gets 3, 1 | 2, 4 over two batches; hour 1 opens and closes hour 0
    _, closed1 = feed(st, ["a", "a"], [0.0, 0.3], [3.0, 1.0], kind)
    assert len(closed1) == 0
    _, closed2 = feed(st, ["a", "a", "a"], [0.6, 0.9, 1.0], [2.0, 4.0, 7.0], kind)
    assert closed2.start.tolist() == [T0]
    assert closed2.value[:, 0].tolist() == [expected]
    assert closed2.trigger.tolist() == [2]  # the tick at hour 1.0 closed it
    row = st.rows["a"]
    assert st.open_start[row] == T0 + HOUR
    assert st.last_ts_ms[row] == ms(1.0)


def test_one_batch_can_close_many_intervals_per_key_in_time_order() -> None:
    st = store()
    _, closed = feed(
        st, ["b", "a", "b", "a", "b", "a"], [0, 0, 1, 2, 5, 2.5], [1, 2, 3, 4, 5, 6], "mean"
    )
    rows = [st.row_key[int(r)] for r in closed.row]
    pairs = sorted(zip(rows, closed.start.tolist(), closed.value[:, 0].tolist(), strict=True))
    assert pairs == [("a", T0, 2.0), ("b", T0, 1.0), ("b", T0 + HOUR, 3.0)]
    # each row's intervals are contiguous and in time order
    for key in ("a", "b"):
        starts = closed.start[closed.row == st.rows[key]]
        assert np.all(np.diff(starts) > 0)
    assert st.open_start[st.rows["a"]] == T0 + 2 * HOUR
    assert st.open_start[st.rows["b"]] == T0 + 5 * HOUR


def test_extras_are_aggregated_like_the_value() -> None:
    st = store(n_inputs=2)
    rows, _ = st.rows_for(["k"], 0.0)
    r = np.repeat(rows, 3)
    ts = np.array([ms(0), ms(0.5), ms(1)], dtype=np.int64)
    values = np.array([[1.0, 10.0], [3.0, 30.0], [0.0, 0.0]])
    closed = aggregate(
        st, rows=r, ts_ms=ts, values=values, accepted=np.ones(3, dtype=bool), interval_s=HOUR,
        aggregator=Aggregator("mean"),
    )  # fmt: skip
    assert closed.value.tolist() == [[2.0, 20.0]]


def test_nothing_accepted_leaves_state_alone() -> None:
    st = store()
    rows, _ = st.rows_for(["k"], 0.0)
    closed = aggregate(
        st, rows=rows, ts_ms=np.array([ms(0)]), values=np.ones((1, 1)),
        accepted=np.zeros(1, dtype=bool), interval_s=HOUR, aggregator=Aggregator("last"),
    )  # fmt: skip
    assert len(closed) == 0
    assert st.open_start[rows[0]] == NONE


def test_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregation"):
        Aggregator("median")  # type: ignore[arg-type]


def _sequential(
    keys: list[int], ts: list[int], values: list[float], kind: Aggregation
) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Tick-by-tick reference of admission and aggregation (interval = 1 s of ms here)."""
    last: dict[int, int] = {}
    open_: dict[int, tuple[int, list[float]]] = {}
    codes: list[int] = []
    closed: list[tuple[int, int, float]] = []
    reducers: dict[str, Callable[[list[float]], float]] = {
        "last": lambda v: v[-1],
        "mean": lambda v: float(np.mean(v)),
        "sum": sum,
        "min": min,
        "max": max,
    }
    reduce = reducers[kind]
    for k, t, v in zip(keys, ts, values, strict=True):
        prev = last.get(k)
        if prev is not None and t <= prev:
            codes.append(
                DUPLICATE if t == prev else LATE if t // 1000 < prev // 1000 else OUT_OF_ORDER
            )
            continue
        codes.append(ACCEPTED)
        last[k] = t
        start = t // 1000
        if k in open_ and open_[k][0] != start:
            closed.append((k, open_[k][0], float(reduce(open_[k][1]))))
            del open_[k]
        open_.setdefault(k, (start, []))[1].append(v)
    return codes, sorted(closed)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 6_000), st.integers(-5, 5)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 4),
    st.sampled_from(["last", "mean", "sum", "min", "max"]),
)
def test_vectorised_admission_and_aggregation_equal_a_tick_by_tick_loop(
    ticks: list[tuple[int, int, int]], n_batches: int, kind: Aggregation
) -> None:
    keys = [t[0] for t in ticks]
    ts = [t[1] for t in ticks]
    values = [float(t[2]) for t in ticks]
    want_codes, want_closed = _sequential(keys, ts, values, kind)
    st_ = StateStore(window=2, n_inputs=1, state_size=1, max_keys=8)
    rows_of, _ = st_.rows_for(["k0", "k1", "k2", "k3"], 0.0)
    aggregator = Aggregator(kind)
    got_codes: list[int] = []
    got_closed: list[tuple[int, int, float]] = []
    cuts = np.linspace(0, len(ticks), n_batches + 1).astype(int)
    for lo, hi in itertools.pairwise(cuts.tolist()):
        rows = rows_of[np.asarray(keys[lo:hi], dtype=np.int64)]
        t = np.asarray(ts[lo:hi], dtype=np.int64)
        codes = admit(rows, t, st_.last_ts_ms, 1)
        closed = aggregate(
            st_, rows=rows, ts_ms=t, values=np.asarray(values[lo:hi])[:, None],
            accepted=codes == ACCEPTED, interval_s=1, aggregator=aggregator,
        )  # fmt: skip
        got_codes += codes.tolist()
        key_of_row = {int(r): k for k, r in enumerate(rows_of.tolist())}
        got_closed += [
            (key_of_row[int(r)], int(s), float(v))
            for r, s, v in zip(closed.row, closed.start, closed.value[:, 0], strict=True)
        ]
    assert got_codes == want_codes
    assert sorted(got_closed) == want_closed  # small integers: sums and means are exact


JUMP = JumpRule(max_jump_ms=100 * HOUR * 1000, confirmations=3)


def _admit_jumps(
    st: StateStore,
    key: str,
    hours: list[float],
    *,
    jump: JumpRule = JUMP,
    now_hour: float | None = None,
) -> list[int]:
    rows_of, _ = st.rows_for([key], 0.0)
    rows = np.full(len(hours), rows_of[0], dtype=np.int64)
    ts = np.array([ms(h) for h in hours], dtype=np.int64)
    now_ms = None if now_hour is None else ms(now_hour)
    codes = admit(rows, ts, st.last_ts_ms, HOUR, jump=jump, store=st, now_ms=now_ms)
    accepted = codes == ACCEPTED
    aggregate(
        st, rows=rows, ts_ms=ts, values=np.ones((len(hours), 1)), accepted=accepted,
        interval_s=HOUR, aggregator=Aggregator("last"),
    )  # fmt: skip
    return [int(c) for c in codes]


def test_one_tick_far_ahead_does_not_silence_its_key() -> None:
    """A year-ahead tick made every later real tick 'late'; now it alone is rejected."""
    st = store()
    assert _admit_jumps(st, "a", [0, 1]) == [ACCEPTED, ACCEPTED]
    assert _admit_jumps(st, "a", [2, 24 * 365, 3, 4]) == [ACCEPTED, TIME_JUMP, ACCEPTED, ACCEPTED]
    assert _admit_jumps(st, "a", [5]) == [ACCEPTED]


def test_a_real_jump_is_accepted_once_confirmed_across_batches() -> None:
    """A sensor back after a long outage: the third tick on the new timeline is accepted."""
    st = store()
    _admit_jumps(st, "a", [0, 1])
    assert _admit_jumps(st, "a", [5000]) == [TIME_JUMP]
    assert _admit_jumps(st, "a", [5001, 5002, 5003]) == [TIME_JUMP, ACCEPTED, ACCEPTED]
    row = st.rows["a"]
    assert st.jump_n[row] == 0
    assert st.last_ts_ms[row] == ms(5003)


def test_jumps_far_apart_do_not_confirm_each_other() -> None:
    st = store()
    _admit_jumps(st, "a", [0])
    assert _admit_jumps(st, "a", [1000, 3000, 6000, 9000]) == [TIME_JUMP] * 4
    assert _admit_jumps(st, "a", [1]) == [ACCEPTED], "still on its own timeline"


AHEAD = JumpRule(max_jump_ms=1000 * HOUR * 1000, confirmations=3, ahead_ms=2 * HOUR * 1000)


def test_a_tick_dated_days_ahead_of_the_wall_clock_is_a_jump_however_long_the_rule() -> None:
    """An hourly key allows jumps of 1,000 intervals (41 days), longer than the decoder's
    7 days of future: one tick dated 3 days ahead of now (a typo, a bad clock) was taken as
    a gap, and every real tick of the next 3 days was dead-lettered late. Ahead of the wall
    clock a key may step, not jump: that tick alone is rejected."""
    st = store()
    now = 20.5
    assert _admit_jumps(st, "a", list(range(20)), jump=AHEAD, now_hour=now) == [ACCEPTED] * 20
    real = [20, 21, 22]
    got = _admit_jumps(st, "a", [now + 72, *real], jump=AHEAD, now_hour=now)
    assert got == [TIME_JUMP, ACCEPTED, ACCEPTED, ACCEPTED]
    # the same jump into the past of the wall clock (a key back from an outage, history
    # replayed) is a gap, as before
    st = store()
    _admit_jumps(st, "a", [0, 1], jump=AHEAD, now_hour=now + 1000)
    assert _admit_jumps(st, "a", [73], jump=AHEAD, now_hour=now + 1000) == [ACCEPTED]


def test_a_key_ahead_of_the_wall_clock_steps_on_and_a_clock_that_jumped_is_confirmed() -> None:
    """A producer whose clock runs ahead: its key steps interval by interval ahead of now
    and is accepted; a clock that jumped ahead for good is confirmed by three ticks near
    each other, as any jump; and without a wall clock the rule is the interval bound."""
    st = store()
    now = 0.0
    assert _admit_jumps(st, "a", [10, 11, 12, 13], jump=AHEAD, now_hour=now) == [ACCEPTED] * 4
    got = _admit_jumps(st, "a", [100, 101, 102, 103], jump=AHEAD, now_hour=now)
    assert got == [TIME_JUMP, TIME_JUMP, ACCEPTED, ACCEPTED]
    st = store()
    _admit_jumps(st, "a", [0], jump=AHEAD)
    assert _admit_jumps(st, "a", [900], jump=AHEAD) == [ACCEPTED]


def test_without_a_rule_any_jump_is_accepted() -> None:
    st = store()
    rows_of, _ = st.rows_for(["a"], 0.0)
    rows = np.full(2, rows_of[0], dtype=np.int64)
    ts = np.array([ms(0), ms(24 * 365)], dtype=np.int64)
    assert admit(rows, ts, st.last_ts_ms, HOUR).tolist() == [ACCEPTED, ACCEPTED]


def test_ticks_that_would_carry_an_interval_sum_past_the_range_are_refused() -> None:
    """Each tick within the decoder's range, 400 of 1e37 sum to 4e39, past float32. The
    ticks that would carry the sum past the limit are refused (the open interval's
    accumulator from an earlier batch counts); the others, before and after, are taken,
    and a refused tick does not count in the sum of the ticks after it."""
    st = store()
    rows_of, _ = st.rows_for(["a", "b"], 0.0)
    a, b = (int(x) for x in rows_of)

    def beyond(row: int, hours: list[float], values: list[float]) -> list[bool]:
        rows = np.full(len(hours), row, dtype=np.int64)
        ts = np.array([ms(h) for h in hours], dtype=np.int64)
        vals = np.array(values, dtype=np.float64)[:, None]
        accepted = np.ones(len(hours), dtype=bool)
        out = sums_beyond(st, rows=rows, ts_ms=ts, values=vals, accepted=accepted,
                          interval_s=HOUR, limit=1e37)  # fmt: skip
        aggregate(st, rows=rows, ts_ms=ts, values=vals, accepted=accepted & ~out,
                  interval_s=HOUR, aggregator=Aggregator("sum"))  # fmt: skip
        return [bool(x) for x in out]

    assert beyond(a, [0.1, 0.2, 0.3, 0.4], [6e36, 6e36, -1e36, 3e36]) == [False, True, False, False]
    assert float(st.acc[a, 0]) == pytest.approx(8e36)
    # the open interval carries over batches; a new interval starts from zero
    assert beyond(a, [0.5, 0.6, 1.1], [3e36, 2e36, 9e36]) == [True, False, False]
    assert float(st.acc[a, 0]) == pytest.approx(9e36)
    # hundreds of in-range ticks of one interval, and a key beside it that is fine
    assert beyond(b, [2 + i / 1000 for i in range(400)], [1e37] * 400) == [False] + [True] * 399
