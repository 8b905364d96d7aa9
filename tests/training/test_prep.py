"""Preparation without leakage: splits, scaling, warm-up scaling, windows and chunks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.core.features import ExtraScaling
from training.errors import ConfigError
from training.prep import (
    Role,
    contiguous_chunks,
    fit_scaling,
    lay_validation,
    sliding_windows,
    split,
    split_last_window,
)
from training.series import SeriesSet

HOUR = 3600


def make_series(
    lengths: list[int],
    *,
    resets: dict[int, list[int]] | None = None,
    extras: int = 0,
    seed: int = 0,
) -> SeriesSet:
    """Keys ``k0..`` with hourly rows; ``resets[k]`` lists row numbers (within key k) that
    start a new segment after a long gap."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    reset = np.zeros(n, dtype=bool)
    reset[offsets[:-1]] = True
    ts = np.zeros(n, dtype=np.int64)
    for k, length in enumerate(lengths):
        hours = np.arange(length)
        for row in (resets or {}).get(k, []):
            reset[offsets[k] + row] = True
            hours[row:] += 100  # a long gap before this row
        ts[offsets[k] : offsets[k + 1]] = hours * HOUR
    level = np.repeat(rng.uniform(10, 100, len(lengths)), lengths)
    values = np.column_stack(
        [level + rng.normal(size=n) * 5, *(rng.normal(size=n) * 3 + 7 for _ in range(extras))]
    )
    observed = rng.uniform(size=n) > 0.1
    return SeriesSet(
        keys=tuple(f"k{k}" for k in range(len(lengths))),
        offsets=offsets,
        ts=ts,
        values=values,
        observed=observed,
        reset=reset,
        interval_s=HOUR,
        extra_names=tuple(f"x{e}" for e in range(extras)),
    )


def with_values(series: SeriesSet, values: np.ndarray) -> SeriesSet:
    return SeriesSet(
        keys=series.keys,
        offsets=series.offsets,
        ts=series.ts,
        values=values,
        observed=series.observed,
        reset=series.reset,
        interval_s=series.interval_s,
        extra_names=series.extra_names,
    )


def test_split_is_chronological_per_key() -> None:
    series = make_series([100, 41, 7])
    parts = split(series, val_frac=0.2, test_frac=0.1)
    for k in range(3):
        rows = series.key_slice(k)
        role = parts.role[rows]
        n = len(role)
        assert (np.diff(role) >= 0).all()
        assert (role == Role.TEST).sum() == int(np.floor(n * 0.1))
        assert (role == Role.VAL).sum() == int(np.floor(n * 0.2))
        test_rows = np.flatnonzero(role == Role.TEST)
        expected_test = series.ts[rows][test_rows[0]] if len(test_rows) else -1
        assert parts.test_start[k] == expected_test
    assert (parts.train | parts.val | parts.test).all()
    assert not (parts.train & parts.test).any()


def test_split_rejects_fractions_that_leave_no_training() -> None:
    with pytest.raises(ConfigError, match="leave training data"):
        split(make_series([10]), val_frac=0.5, test_frac=0.5)


def test_extra_scaling_never_sees_validation_or_test_rows() -> None:
    series = make_series([200, 150], extras=2)
    parts = split(series)
    extra_scaling = fit_scaling(series, parts.train)
    wild = series.values.copy()
    rng = np.random.default_rng(1)
    held_out = ~parts.train
    wild[held_out] = rng.normal(size=(held_out.sum(), 3)) * 1e6 + 1e7
    assert fit_scaling(with_values(series, wild), parts.train) == extra_scaling
    use = parts.train & series.observed
    assert extra_scaling.loc == pytest.approx(tuple(series.values[use, 1:].mean(axis=0)))
    assert fit_scaling(make_series([50]), np.ones(50, dtype=bool)) == ExtraScaling()


def test_last_window_holds_out_the_last_horizon_rows_of_every_key() -> None:
    series = make_series([60, 25, 18])
    parts = split_last_window(series, horizon=18)
    for k in range(3):
        role = parts.role[series.key_slice(k)]
        assert (role[-18:] == Role.TEST).all() or k == 2
        assert (role[:-18] == Role.TRAIN).all()
    # a key no longer than the horizon keeps one row to forecast from
    assert (parts.role[series.key_slice(2)] == Role.TEST).sum() == 17


def test_validation_is_laid_at_the_end_of_each_keys_fit_part() -> None:
    """The issue's empty validation: on short series validation is never empty, laid at
    the end of each key's fit part, max(horizon, 15 %) rows, and only where the key keeps
    window + 1 rows before it."""
    series = make_series([66, 120, 30])
    test = split_last_window(series, horizon=18)
    parts = lay_validation(series, test, horizon=18, window=24, val_frac=0.15)
    val = parts.role == Role.VAL
    key = series.key_index()
    assert np.bincount(key[val], minlength=3).tolist() == [18, 18, 0]  # 102 * 0.15 < 18
    for k in (0, 1):
        role = parts.role[series.key_slice(k)]
        assert (np.diff(role) >= 0).all()
        assert role[-19] == Role.VAL and role[-18] == Role.TEST
    longer = make_series([400])
    laid = lay_validation(
        longer, split_last_window(longer, 24), horizon=24, window=24, val_frac=0.15
    )
    assert int((laid.role == Role.VAL).sum()) == int(np.floor(0.15 * 376))
    # a split that comes with its validation part (the rolling protocol's) keeps it
    rolling = split(longer)
    assert lay_validation(longer, rolling, horizon=24, window=24, val_frac=0.3) is rolling


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    width=st.integers(min_value=1, max_value=3),
    length=st.integers(min_value=1, max_value=40),
    step=st.integers(min_value=1, max_value=5),
)
def test_sliding_windows_equal_a_naive_construction(
    n: int, width: int, length: int, step: int
) -> None:
    array = np.arange(n * width, dtype=np.float64).reshape(n, width)
    if length > n:
        with pytest.raises(ConfigError, match="longer than"):
            sliding_windows(array, length, step)
        return
    windows = sliding_windows(array, length, step)
    naive = np.stack([array[j : j + length] for j in range(0, n - length + 1, step)])
    np.testing.assert_array_equal(windows, naive)
    assert np.shares_memory(windows, array)  # a view, not a copy


def naive_chunks(series: SeriesSet, mask: np.ndarray, length: int, step: int) -> list[list[int]]:
    """Reference: walk the rows, collect runs, cut chunks."""
    chunks: list[list[int]] = []
    run: list[int] = []
    key = series.key_index()
    for i in range(series.n_rows + 1):
        breaks = (
            i == series.n_rows or not mask[i] or series.reset[i] or (run and key[i] != key[run[-1]])
        )
        if breaks:
            chunks += [run[s : s + length] for s in range(0, len(run) - length + 1, step)]
            run = []
        if i < series.n_rows and mask[i]:
            run.append(i)
    return chunks


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=4),
    length=st.integers(min_value=1, max_value=8),
    step=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_contiguous_chunks_equal_a_naive_construction(
    lengths: list[int], length: int, step: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    resets = {
        k: sorted(set(rng.integers(1, n, size=2).tolist())) for k, n in enumerate(lengths) if n > 1
    }
    series = make_series(lengths, resets=resets, seed=seed)
    mask = rng.uniform(size=series.n_rows) > 0.2
    chunks = contiguous_chunks(series, mask, length, step)
    assert chunks.tolist() == naive_chunks(series, mask, length, step)
    assert chunks.shape[1:] == (length,)


def test_default_chunks_are_back_to_back() -> None:
    series = make_series([25])
    chunks = contiguous_chunks(series, np.ones(series.n_rows, dtype=bool), 10)
    assert chunks.tolist() == [list(range(10)), list(range(10, 20))]
