"""Preparation without leakage: chronological splits, training-only scaling, windows.

* :func:`split` cuts every key chronologically into train / validation / test rows; rows
  are never shuffled across time.
* :func:`split_last_window` holds out the last ``horizon`` rows of every key (the standard
  one-origin protocol); :func:`lay_validation` then lays each key's validation rows at the
  end of its fit part (the last ``max(H, val_frac * n)`` rows), so validation is never
  empty while a key has ``window + H + 1`` rows.
* :func:`fit_scaling` fits the global extra scaling on the *observed training rows only*
  (values follow their key's own level and scale, :mod:`streamcast.core.features`).
* :func:`sliding_windows` and :func:`contiguous_chunks` build windows and training
  sequences without Python loops over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from streamcast.core.features import ExtraScaling, fit_location_scale
from training.errors import ConfigError
from training.series import SeriesSet

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.int64]
_G = TypeVar("_G", bound=np.generic)


class Role(IntEnum):
    """What a row is used for."""

    TRAIN = 0
    VAL = 1
    TEST = 2


@dataclass(frozen=True)
class Split:
    """A chronological split of a :class:`SeriesSet`'s rows.

    ``role[i]`` is the :class:`Role` of row ``i``. Per key ``k``, validation starts at
    ``val_start[k]`` and test at ``test_start[k]`` (epoch seconds; ``-1`` when that part
    is empty for the key). Within a key, roles never decrease with time.
    """

    role: npt.NDArray[np.int8]
    val_start: IndexArray
    test_start: IndexArray

    @property
    def train(self) -> BoolArray:
        """Rows used to fit the model and the scaling."""
        return np.asarray(self.role == Role.TRAIN)

    @property
    def val(self) -> BoolArray:
        """Rows used for early stopping and model selection."""
        return np.asarray(self.role == Role.VAL)

    @property
    def test(self) -> BoolArray:
        """Rows held out for the final backtest."""
        return np.asarray(self.role == Role.TEST)


def split(series: SeriesSet, val_frac: float = 0.15, test_frac: float = 0.15) -> Split:
    """Split every key chronologically: the last ``test_frac`` of its rows are test, the
    ``val_frac`` before them validation, the rest training (row counts rounded down,
    imputed rows counted like observed ones).
    """
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ConfigError(
            f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) and leave "
            "training data (their sum below 1)"
        )
    lengths = np.diff(series.offsets)
    n_test = np.floor(lengths * test_frac).astype(np.int64)
    n_val = np.floor(lengths * val_frac).astype(np.int64)
    key = series.key_index()
    position = np.arange(series.n_rows) - series.offsets[:-1][key]  # row number within key
    val_from = (lengths - n_test - n_val)[key]
    test_from = (lengths - n_test)[key]
    role = np.where(position >= test_from, Role.TEST, np.where(position >= val_from, Role.VAL, 0))
    val_first = series.offsets[:-1] + lengths - n_test - n_val
    test_first = series.offsets[:-1] + lengths - n_test
    return Split(
        role=role.astype(np.int8),
        val_start=_first_ts(series, val_first, n_val),
        test_start=_first_ts(series, test_first, n_test),
    )


def _first_ts(series: SeriesSet, first_row: IndexArray, count: IndexArray) -> IndexArray:
    clipped = np.minimum(first_row, max(series.n_rows - 1, 0))
    return np.where(count > 0, series.ts[clipped], -1).astype(np.int64)


def split_last_window(series: SeriesSet, horizon: int) -> Split:
    """The standard one-origin protocol: the last ``horizon`` rows of every key are test,
    the rest training (see :func:`lay_validation` for the validation rows)."""
    lengths = np.diff(series.offsets)
    n_test = np.minimum(horizon, np.maximum(lengths - 1, 0)).astype(np.int64)
    key = series.key_index()
    position = np.arange(series.n_rows) - series.offsets[:-1][key]
    role = np.where(position >= (lengths - n_test)[key], Role.TEST, Role.TRAIN)
    test_first = series.offsets[:-1] + lengths - n_test
    return Split(
        role=role.astype(np.int8),
        val_start=np.full(len(series.keys), -1, dtype=np.int64),
        test_start=_first_ts(series, test_first, n_test),
    )


def lay_validation(
    series: SeriesSet, parts: Split, *, horizon: int, window: int, val_frac: float
) -> Split:
    """Validation rows at the end of each key's fit part, when the data has none: the last
    ``max(horizon, floor(val_frac * n_fit))`` fit rows of a key that keeps at least
    ``window + 1`` rows before them (others train on all their rows). A split that has
    validation rows already (the rolling protocol's) is returned as it is."""
    if parts.val.any():
        return parts
    fit = parts.role != Role.TEST
    key = series.key_index()
    n_fit = np.bincount(key[fit], minlength=len(series.keys))
    n_val = np.maximum(horizon, np.floor(val_frac * n_fit).astype(np.int64))
    ok = n_fit - n_val >= window + 1
    n_val = np.where(ok, n_val, 0)
    position = np.arange(series.n_rows) - series.offsets[:-1][key]
    val = fit & (position >= (n_fit - n_val)[key]) & (position < n_fit[key])
    role = np.where(val, Role.VAL, parts.role).astype(np.int8)
    val_first = series.offsets[:-1] + n_fit - n_val
    return Split(
        role=role, val_start=_first_ts(series, val_first, n_val), test_start=parts.test_start
    )


def fit_scaling(series: SeriesSet, train_mask: BoolArray) -> ExtraScaling:
    """The global location/scale of the extra features, from observed training rows (only
    rows in ``train_mask`` *and* observed count: imputed rows are the interpolation's)."""
    if train_mask.shape != (series.n_rows,):
        raise ValueError(f"train_mask has shape {train_mask.shape}, expected ({series.n_rows},)")
    use = train_mask & series.observed
    if series.values.shape[1] == 1:
        return ExtraScaling()
    extra_loc, extra_scale = fit_location_scale(series.values[use, 1:], axis=0)
    return ExtraScaling(
        loc=tuple(float(v) for v in extra_loc), scale=tuple(float(v) for v in extra_scale)
    )


def sliding_windows(array: npt.NDArray[_G], length: int, step: int = 1) -> npt.NDArray[_G]:
    """``[n, length, ...]`` windows over axis 0 as a read-only view (no copy).

    Window ``j`` is ``array[j * step : j * step + length]``.
    """
    if length < 1 or step < 1:
        raise ConfigError(f"window length and step must be at least 1 (got {length}, {step})")
    if length > len(array):
        raise ConfigError(f"window length {length} is longer than the {len(array)} rows given")
    view = sliding_window_view(array, length, axis=0)[::step]
    return np.moveaxis(view, -1, 1)  # sliding_window_view puts the window axis last


def contiguous_chunks(
    series: SeriesSet, mask: BoolArray, length: int, step: int | None = None
) -> IndexArray:
    """``[n_chunks, length]`` row indices of runs that stay inside one segment and ``mask``.

    A run is a maximal stretch of rows of one key with no reset inside and ``mask`` true
    throughout; each run of ``L >= length`` rows yields chunks starting at its first row
    and every ``step`` rows after (default ``step = length``: back-to-back chunks, so
    chunk ``j + 1`` continues chunk ``j`` and a stateful model can carry its state across).
    Chunks of one run are consecutive in the output; runs are in row order.
    """
    step = length if step is None else step
    if length < 1 or step < 1:
        raise ConfigError(f"chunk length and step must be at least 1 (got {length}, {step})")
    if mask.shape != (series.n_rows,):
        raise ValueError(f"mask has shape {mask.shape}, expected ({series.n_rows},)")
    run_start = mask.copy()
    run_start[1:] &= series.reset[1:] | ~mask[:-1]
    starts = np.flatnonzero(run_start)
    # a run ends where the mask ends or a new run starts
    ends = np.flatnonzero(mask & np.append(run_start[1:] | ~mask[1:], True)) + 1
    lengths = ends - starts
    n_chunks = np.where(lengths >= length, (lengths - length) // step + 1, 0)
    owner = np.repeat(np.arange(len(starts)), n_chunks)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    first = starts[owner] + within * step
    return np.asarray(first[:, None] + np.arange(length)[None, :], dtype=np.int64)
