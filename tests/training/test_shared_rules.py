"""Training prepares data by the service's own rules, to the bit (DESIGN: one source per rule).

Each test runs the offline preparation and the core function the service uses on the same
input and asks for equal bits, not closeness: the online-equals-offline promise rests on it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.core.features import interpolate_gap
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
    series, report = regularise(_frame(names, ts, values, extra), interval=HOUR, max_gap=5)
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
