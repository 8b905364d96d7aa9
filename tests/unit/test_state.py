"""The array state store: allocation, LRU cap, TTL expiry, bounded size, export/import."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.core.grid import Grid
from streamcast.core.state import NONE, PREVIOUS_MAGIC, RECORD_MAGIC, StateStore


def make(max_keys: int = 4, ttl: float | None = None, initial: int = 2) -> StateStore:
    return StateStore(
        window=3, n_inputs=2, state_size=4, max_keys=max_keys, key_ttl_s=ttl,
        initial_capacity=initial,
    )  # fmt: skip


def test_new_keys_get_fresh_rows_and_no_level_yet() -> None:
    st = make()
    rows, new = st.rows_for(["known", "fresh"], now_s=1.0)
    assert sorted(new.tolist()) == sorted(rows.tolist())
    assert st.value_level[rows].tolist() == [0.0, 0.0]
    assert st.value_scale[rows].tolist() == [1.0, 1.0]
    again, new_again = st.rows_for(["fresh", "known"], now_s=2.0)
    assert again.tolist() == rows[::-1].tolist()
    assert len(new_again) == 0
    assert st.last_ts_ms[rows].tolist() == [NONE, NONE]


def test_capacity_grows_geometrically_up_to_the_cap() -> None:
    st = make(max_keys=5, initial=2)
    assert st.capacity == 2
    st.rows_for(["a", "b", "c"], 0.0)
    assert st.capacity == 4
    st.rows_for(["d", "e"], 0.0)
    assert st.capacity == 5
    st.rows_for(["f"], 1.0)
    assert st.capacity == 5
    assert len(st) == 5


def test_lru_evicts_least_recently_used_and_never_the_batch_keys() -> None:
    st = make(max_keys=3)
    st.rows_for(["a"], 1.0)
    st.rows_for(["b"], 2.0)
    st.rows_for(["c"], 3.0)
    st.rows_for(["a"], 4.0)  # a is now the most recent
    rows, _ = st.rows_for(["b", "d"], 5.0)  # b is in the batch: c must go
    assert "c" not in st
    assert {"a", "b", "d"} == set(st.rows)
    assert st.evicted_lru == 1
    assert len(set(rows.tolist())) == 2


def test_evicted_row_is_reused_clean() -> None:
    st = make(max_keys=1)
    (row,), _ = st.rows_for(["a"], 1.0)
    st.h[row] = 5.0
    st.last_ts_ms[row] = 123
    st.warm[row] = True
    (row2,), _ = st.rows_for(["b"], 2.0)
    assert row2 == row
    assert st.h[row2].tolist() == [0.0] * 4
    assert st.last_ts_ms[row2] == NONE
    assert not st.warm[row2]


def test_ttl_expires_idle_keys() -> None:
    st = make(ttl=10.0)
    st.rows_for(["old"], 0.0)
    st.rows_for(["new"], 8.0)
    assert st.expire(now_s=9.0) == 0
    assert st.expire(now_s=12.0) == 1
    assert set(st.rows) == {"new"}
    assert st.expired_ttl == 1


def test_memory_is_bounded_whatever_arrives() -> None:
    st = make(max_keys=64, initial=8)
    for i in range(20):
        st.rows_for([f"k{i}-{j}" for j in range(40)], float(i))
    assert len(st) == 64
    assert st.capacity == 64
    assert st.window.shape[0] == 64
    assert st.evicted_lru == 20 * 40 - 64
    assert st.nbytes() == make(max_keys=64, initial=64).nbytes()


def test_more_distinct_keys_than_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        make(max_keys=2).rows_for(["a", "b", "c"], 0.0)


def test_export_import_round_trip() -> None:
    st = make()
    rows, _ = st.rows_for(["a", "b"], 0.0)
    rng = np.random.default_rng(1)
    st.h[rows] = rng.standard_normal((2, 4)).astype(np.float32)
    st.window[rows] = rng.standard_normal((2, 3, 2))
    st.wlen[rows] = [3, 1]
    st.warm[rows] = [True, False]
    st.last_ts_ms[rows] = [10, 20]
    record = st.export_rows(rows)
    other = make()
    other.rows_for(["zzz"], 0.0)
    restored = other.import_rows(["a", "b"], record, now_s=5.0)
    for name in StateStore.COLUMNS:
        if name != "last_seen":
            np.testing.assert_array_equal(getattr(other, name)[restored], record[name])
    assert set(other.rows) == {"a", "b", "zzz"}
    with pytest.raises(ValueError, match="lacks columns"):
        other.import_rows(["c"], {"h": record["h"]}, now_s=5.0)


def test_records_of_a_swapped_out_layout_restore_as_the_swap_converts_rows() -> None:
    """A hot-swap may change the state size, horizon and drift quantiles; a key with no
    tick since keeps the old model's record. Restored, it is converted like a swapped row:
    its window and history kept, zero h/c, an empty probe, a fresh input ECDF, and the old
    model's identity (so the pipeline rebuilds it). Another window is still refused."""

    def store(state_size: int, horizon: int, quantiles: int, window: int = 3) -> StateStore:
        return StateStore(
            window=window, n_inputs=2, state_size=state_size, max_keys=8, horizon=horizon,
            quantiles=quantiles,
        )  # fmt: skip

    rng = np.random.default_rng(2)
    old = store(4, 2, 3)
    rows, _ = old.rows_for(["a", "b"], 0.0)
    old.window[rows] = rng.standard_normal((2, 3, 2))
    old.wlen[rows], old.warm[rows], old.model_id[rows] = 3, True, 11
    old.h[rows] = rng.standard_normal((2, 4)).astype(np.float32)
    old.probe[rows], old.probe_origin[rows] = 1.5, 7
    old.in_cdf[rows] = 0.5
    new = store(6, 3, 5)
    mine, _ = new.rows_for(["c"], 0.0)
    new.model_id[mine], new.h[mine] = 12, 0.25
    records = [*old.snapshot(["a"]), *new.snapshot(["c"]), *old.snapshot(["b"])]

    restored = store(6, 3, 5)
    assert restored.restore(records, 1.0, partition=2) == 3
    got = restored.lookup(["a", "b", "c"])
    np.testing.assert_array_equal(restored.window[got[:2]], old.window[rows])
    np.testing.assert_array_equal(restored.model_id[got], [11, 11, 12])
    np.testing.assert_array_equal(restored.h[got], [[0.0] * 6, [0.0] * 6, [0.25] * 6])
    assert (restored.probe_origin[got[:2]] == NONE).all()
    assert np.isnan(restored.in_cdf[got[:2]]).all() and restored.in_cdf.shape[1] == 5
    assert (restored.partition[got] == 2).all()
    with pytest.raises(ValueError, match="does not match this model's layout"):
        store(6, 3, 5, window=4).restore(old.snapshot(["a"]), 1.0)


def _levelled(levels: int = 2) -> StateStore:
    return StateStore(
        window=3, n_inputs=2, state_size=4, max_keys=8, horizon=2, quantiles=3, levels=levels
    )


def _previous_format(record: bytes) -> bytes:
    """The format-5 record of the same state: the same columns, no grid in the header."""
    return PREVIOUS_MAGIC + record[4:28] + record[32:]


def test_state_survives_a_snapshot_and_the_previous_format_restores() -> None:
    st = _levelled()
    rows, _ = st.rows_for(["a", "b"], 0.0)
    rng = np.random.default_rng(4)
    st.band_adj[rows] = rng.standard_normal((2, 2, 2)).astype(np.float32)
    st.window[rows] = rng.standard_normal((2, 3, 2))
    st.h[rows] = rng.standard_normal((2, 4)).astype(np.float32)
    st.resid[rows] = rng.standard_normal((2, st.resid.shape[1])).astype(np.float32)
    st.base_m[rows] = [0.5, -0.5]
    records = st.snapshot(["a", "b"])
    assert all(r.startswith(RECORD_MAGIC) for _, r in records)

    again = _levelled()
    again.restore(records, 1.0)
    got = again.lookup(["a", "b"])
    np.testing.assert_array_equal(again.band_adj[got], st.band_adj[rows])

    # an upgrade: the previous format's records (no grid to check) restore whole
    old = [(k, _previous_format(r)) for k, r in records]
    upgraded = _levelled()
    upgraded.restore(old, 1.0)
    got = upgraded.lookup(["a", "b"])
    for name in ("window", "h", "resid", "base_m", "band_adj"):
        np.testing.assert_array_equal(getattr(upgraded, name)[got], getattr(st, name)[rows])
    with pytest.raises(ValueError, match="format 4"):
        upgraded.decode_records([b"SCS4" + old[0][1][4:24] + old[0][1][28:]])


@pytest.mark.parametrize(
    "other",
    [Grid(seconds=900), Grid.calendar_months(1), Grid(seconds=3600, timezone="Europe/Paris")],
)
def test_state_of_keys_on_another_interval_grid_is_refused(other: Grid) -> None:
    """A restart with a model of another interval must not adopt the keys' windows (an
    hourly window read as quarter hours): the restore fails with a clear reason, as the
    swap refuses such a model, even where the swap's conversions would apply."""
    hourly = StateStore(window=3, n_inputs=1, state_size=4, max_keys=4, grid=Grid(seconds=3600))
    hourly.rows_for(["a"], 0.0)
    records = hourly.snapshot(["a"])
    for state_size in (4, 8):  # the same layout, and one a swap converts
        store = StateStore(window=3, n_inputs=1, state_size=state_size, max_keys=4, grid=other)
        with pytest.raises(ValueError, match=r"another interval grid than this model's \("):
            store.restore(records, 1.0)
        assert len(store) == 0
    same = StateStore(window=3, n_inputs=1, state_size=4, max_keys=4, grid=Grid(seconds=3600))
    assert same.restore(records, 1.0) == 1


def test_records_of_other_interval_levels_restore_with_fresh_band_offsets() -> None:
    st = _levelled(levels=3)
    rows, _ = st.rows_for(["a"], 0.0)
    st.band_adj[rows] = 0.75
    st.window[rows] = 2.0
    restored = _levelled(levels=2)
    restored.restore(st.snapshot(["a"]), 1.0)
    got = restored.lookup(["a"])
    assert restored.band_adj.shape[1:] == (2, 2) and (restored.band_adj[got] == 0).all()
    assert (restored.window[got] == 2.0).all()
