"""Preparation without leakage: chronological splits, training-only scaling, windows.

* :func:`split` cuts every key chronologically into train / validation / test rows; rows
  are never shuffled across time.
* :func:`fit_scaling` fits the per-key value scaling and the global extra scaling on the
  *observed training rows only* — validation and test rows cannot influence it.
* :func:`scale_series` scales every row the way the service will (``artifact.py``'s key
  lifecycle): keys seen in training use their training statistics; other keys use the
  statistics of the first ``window`` rows after each reset (the warm-up window, imputed
  rows included, as the service buffers them).
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

from streamcast.core.features import (
    ExtraScaling,
    FloatArray,
    ValueScaling,
    fit_location_scale,
    scale_inputs,
)
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


def fit_scaling(series: SeriesSet, train_mask: BoolArray) -> tuple[ValueScaling, ExtraScaling]:
    """Per-key value location/scale and global extra location/scale from training rows.

    Only rows that are in ``train_mask`` *and* observed count (imputed rows are the
    interpolation's, not the data's). A key without such rows is left out of
    ``ValueScaling.known``, so it is scaled from its warm-up window like an unseen key.
    """
    if train_mask.shape != (series.n_rows,):
        raise ValueError(f"train_mask has shape {train_mask.shape}, expected ({series.n_rows},)")
    use = train_mask & series.observed
    key = series.key_index()
    counts = np.bincount(key[use], minlength=len(series.keys))
    # pad each trained key's values into one [K', max_count] NaN-filled block so the
    # shared NaN-aware fit_location_scale does the statistics
    present = np.flatnonzero(counts > 0)
    row_of_key = np.cumsum(counts > 0) - 1
    slot = np.arange(int(use.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    block = np.full((len(present), max(int(counts.max(initial=0)), 1)), np.nan)
    block[row_of_key[key[use]], slot] = series.values[use, 0]
    loc, scale = fit_location_scale(block, axis=1)
    known = {series.keys[k]: (float(loc[i]), float(scale[i])) for i, k in enumerate(present)}
    if series.values.shape[1] > 1:
        extra_loc, extra_scale = fit_location_scale(series.values[use, 1:], axis=0)
        extras = ExtraScaling(
            loc=tuple(float(v) for v in extra_loc), scale=tuple(float(v) for v in extra_scale)
        )
    else:
        extras = ExtraScaling()
    return ValueScaling(known=known), extras


def warmup_scaling(series: SeriesSet, window: int) -> tuple[FloatArray, FloatArray]:
    """``[N]`` location/scale each row gets if its key is unseen: the statistics of the
    first ``window`` rows of the row's segment (fewer if the segment is shorter).
    """
    if window < 1:
        raise ConfigError(f"window must be at least 1, not {window}")
    starts = np.flatnonzero(series.reset)
    lengths = np.diff(np.append(starts, series.n_rows))
    take = np.arange(window)
    rows = starts[:, None] + take[None, :]
    inside = take[None, :] < lengths[:, None]
    block = np.where(inside, series.values[np.minimum(rows, series.n_rows - 1), 0], np.nan)
    seg_loc, seg_scale = fit_location_scale(block, axis=1)
    segment = np.cumsum(series.reset) - 1
    return seg_loc[segment], seg_scale[segment]


def scale_series(
    series: SeriesSet,
    value_scaling: ValueScaling,
    extra_scaling: ExtraScaling,
    *,
    window: int,
) -> tuple[npt.NDArray[np.float32], FloatArray, FloatArray]:
    """Scale every row as the service does: ``(scaled [N, 1+E] float32, loc [N], scale [N])``.

    Known keys use their training statistics everywhere (also after a reset); other keys
    use :func:`warmup_scaling` per segment.
    """
    n_extra = series.values.shape[1] - 1
    if n_extra and (len(extra_scaling.loc) != n_extra or len(extra_scaling.scale) != n_extra):
        raise ConfigError(
            f"extra scaling has {len(extra_scaling.loc)} features but the series has {n_extra} "
            f"({', '.join(series.extra_names)}); fit the scaling on the same features"
        )
    key_loc, key_scale, found = value_scaling.lookup(list(series.keys))
    key = series.key_index()
    loc, scale = key_loc[key], key_scale[key]
    unseen = ~found[key]
    if unseen.any():
        warm_loc, warm_scale = warmup_scaling(series, window)
        loc = np.where(unseen, warm_loc, loc)
        scale = np.where(unseen, warm_scale, scale)
    return scale_inputs(series.values, loc, scale, extra_scaling), loc, scale


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
