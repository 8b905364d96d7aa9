"""Training prepares data by the service's own rules, to the bit (DESIGN: one source per rule).

Each test runs the offline preparation and the core function the service uses on the same
input and asks for equal bits, not closeness: the online-equals-offline promise rests on it.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamcast.core.artifact import Aggregation
from streamcast.core.codec import epoch_to_ms
from streamcast.core.features import interpolate_gap
from streamcast.core.intervals import ACCEPTED, AGGREGATIONS, Aggregator, admit, aggregate
from streamcast.core.state import StateStore
from training.data import normalise_frame, regularise

HOUR = 3600
T0 = 1_420_070_400  # 2015-01-01T00:00:00Z

_values = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


def _frame(
    keys: list[str], ts_s: list[int], values: list[float], extra: list[float]
) -> pd.DataFrame:
    raw = pd.DataFrame({"k": keys, "t": [t * 1000 for t in ts_s], "v": values, "e": extra})
    return normalise_frame(raw, key_col="k", time_col="t", value_col="v", feature_cols=("e",))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 8), _values, _values), min_size=2, max_size=12),
        min_size=1,
        max_size=3,
    )
)
def test_bridged_rows_are_the_services_gap_interpolation(
    keys: list[list[tuple[int, float, float]]],
) -> None:
    names, ts, values, extra = [], [], [], []
    for k, rows in enumerate(keys):
        t = T0
        for step, value, other in rows:
            t += step * HOUR
            names.append(f"k{k}")
            ts.append(t)
            values.append(value)
            extra.append(other)
    series, report = regularise(
        _frame(names, ts, values, extra), interval=HOUR, max_gap=5, min_length=1, min_support=0
    )
    observed = np.flatnonzero(series.observed)
    checked = 0
    for before, after in itertools.pairwise(observed.tolist()):
        missing = int(after - before - 1)
        if missing == 0 or series.reset[after]:
            continue
        want = interpolate_gap(series.values[before], series.values[after], missing)
        assert series.values[before + 1 : after].tobytes() == want.tobytes()
        checked += missing
    assert checked == report.imputed_rows


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 12 * HOUR), _values, _values),
        min_size=1,
        max_size=60,
    )
)
def test_intervals_are_what_the_service_closes(ticks: list[tuple[int, int, float, float]]) -> None:
    # ticks in time order, as a replay sends them; ties keep the first (duplicates="first")
    ticks = sorted(ticks, key=lambda tick: tick[1])
    keys = [f"k{tick[0]}" for tick in ticks]
    ts_s = [T0 + tick[1] for tick in ticks]
    rows = np.array([[tick[2], tick[3]] for tick in ticks])
    frame = _frame(keys, ts_s, rows[:, 0].tolist(), rows[:, 1].tolist())
    for kind in AGGREGATIONS:
        series, _ = regularise(
            frame, interval=HOUR, max_gap=0, min_length=1, aggregation=kind,
            duplicates="first", min_support=0,
        )  # fmt: skip
        # the service keeps each key's latest interval open; it has closed all the others
        last_of_key = np.zeros(series.n_rows, dtype=bool)
        last_of_key[series.offsets[1:] - 1] = True
        offline = sorted(
            (series.keys[k], int(t), v.tobytes())
            for k, t, v, last in zip(
                series.key_index(), series.ts, series.values, last_of_key, strict=True
            )
            if not last
        )
        assert _closed_by_the_service(keys, ts_s, rows, kind) == offline


def _closed_by_the_service(
    keys: list[str], ts_s: list[int], values: npt.NDArray[np.float64], kind: Aggregation
) -> list[tuple[str, int, bytes]]:
    """``(key, interval start, value bytes)`` of the intervals the service closes when the
    ticks arrive in one batch, sorted."""
    store = StateStore(window=2, n_inputs=values.shape[1], state_size=1, max_keys=4)
    names = sorted(set(keys))
    state_rows, _ = store.rows_for(names, 0.0)
    rows = state_rows[[names.index(k) for k in keys]].astype(np.int64)
    ts_ms = np.array(ts_s, dtype=np.int64) * 1000
    codes = admit(rows, ts_ms, store.last_ts_ms, HOUR)
    closed = aggregate(
        store,
        rows=rows,
        ts_ms=ts_ms,
        values=values,
        accepted=codes == ACCEPTED,
        interval_s=HOUR,
        aggregator=Aggregator(kind),
    )
    key_of = {int(r): names[i] for i, r in enumerate(state_rows)}
    return sorted(
        (key_of[int(r)], int(t), v.tobytes())
        for r, t, v in zip(closed.row, closed.start, closed.value, strict=True)
    )


@settings(max_examples=200, deadline=None)
# found by hypothesis: float64 rounds this integer up to 1e17, the µs/ns boundary
@example(stamp=99_999_999_999_999_992)
@given(
    st.one_of(
        st.integers(0, 2**62),
        st.floats(0.0, 9e18, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )
)
def test_an_epoch_number_means_what_it_means_to_the_service(stamp: float) -> None:
    # a one-row column: its largest magnitude is the tick's own, so the units must agree
    raw = pd.DataFrame({"t": [stamp], "v": [1.0]})
    frame = normalise_frame(raw, key_col=None, time_col="t", value_col="v")
    assert int(frame["ts_ms"].iloc[0]) == epoch_to_ms(stamp)
