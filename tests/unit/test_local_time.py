"""Wall-clock seconds for calendar features: the memoised per-bucket offsets equal the
exact (pandas) conversion, across DST transitions and odd historic offsets."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.core import features
from streamcast.core.features import _local_seconds, _utc_offsets


@pytest.mark.parametrize(
    "zone", ["Australia/Melbourne", "Europe/London", "America/St_Johns", "Africa/Monrovia"]
)
def test_memoised_offsets_equal_the_exact_conversion(zone: str) -> None:
    features._offset_memo.clear()
    rng = np.random.default_rng(0)
    # every second around 1970-2030, plus dense samples next to each DST change of 2026
    spread = rng.integers(0, 1_900_000_000, 3_000)
    near = (np.arange(1_767_225_600, 1_798_761_600, 3600)[:, None] + [-1, 0, 1]).ravel()
    samples = (spread, near, [1_780_000_000], [1_780_000_000] * 5)
    for ts in (np.asarray(t, dtype=np.int64) for t in samples):
        exact = ts + _utc_offsets(ts, zone)
        np.testing.assert_array_equal(_local_seconds(ts, zone), exact)
        np.testing.assert_array_equal(_local_seconds(ts, zone), exact)  # from the memo


def test_monrovia_1972_transition_off_the_quarter_hour_is_exact() -> None:
    # Liberia moved from -0:44:30 to UTC at 1972-01-07 00:44:30 local (epoch 63,593,070):
    # 30 s into a quarter-hour bucket
    features._offset_memo.clear()
    ts = np.array([63_593_070 - 1, 63_593_070, 63_593_070 + 1], dtype=np.int64)
    exact = ts + _utc_offsets(ts, "Africa/Monrovia")
    assert len(set((exact - ts).tolist())) == 2, "the transition is in the sample"
    np.testing.assert_array_equal(_local_seconds(ts, "Africa/Monrovia"), exact)


def test_the_memo_stays_bounded() -> None:
    features._offset_memo.clear()
    for start in range(0, 20 * features.OFFSET_MEMO_MAX * 900, 8_000 * 900):
        ts = np.arange(start, start + 8_000 * 900, 900, dtype=np.int64)
        _local_seconds(ts, "Europe/London")
    assert len(features._offset_memo) <= features.OFFSET_MEMO_MAX


def test_a_miss_fills_the_week_ahead_so_the_next_intervals_skip_pandas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features._offset_memo.clear()
    calls: list[int] = []

    def counted(ts: np.ndarray, zone: str) -> np.ndarray:
        calls.append(len(ts))
        return _utc_offsets(ts, zone)

    monkeypatch.setattr(features, "_utc_offsets", counted)
    # 2026-04-05 is Melbourne's change from +11 to +10: two days before it, then each
    # following hour's 24 targets, as the service asks hour after hour, across the change
    origin = 1_775_174_400 - 2 * 86_400
    zone = "Australia/Melbourne"
    for hour in range(5 * 24):
        ts = origin + 3600 * (hour + np.arange(1, 25, dtype=np.int64))
        got = _local_seconds(ts, zone)
        np.testing.assert_array_equal(got, ts + _utc_offsets(ts, zone))
    assert len(calls) == 1, "the first hour filled the memo for the week after it"


def test_the_week_ahead_leaves_out_a_bucket_with_a_transition_inside() -> None:
    # Monrovia's 1972 change falls 30 s into a quarter hour: asked for a day before it,
    # that bucket is not memoised, and asking for it later takes the exact path
    features._offset_memo.clear()
    change = 63_593_070
    _local_seconds(np.array([change - 86_400], dtype=np.int64), "Africa/Monrovia")
    assert ("Africa/Monrovia", change // 900) not in features._offset_memo
    assert ("Africa/Monrovia", change // 900 + 1) in features._offset_memo
    ts = np.array([change - 1, change, change + 1], dtype=np.int64)
    exact = ts + _utc_offsets(ts, "Africa/Monrovia")
    np.testing.assert_array_equal(_local_seconds(ts, "Africa/Monrovia"), exact)
