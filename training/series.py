"""The prepared, regular form of a multi-series history: long arrays, one segment per key.

``training/data.py`` builds a :class:`SeriesSet` from a CSV/Parquet file; everything after
(preparation, fitting, evaluation, baselines) consumes it. Rows are sorted by key then
time; each key's rows are contiguous, on a regular grid (interval start times, epoch
seconds UTC: fixed ``interval_s`` intervals, or the calendar months or trading days of
``grid``, :mod:`streamcast.core.grid`), except across a *reset*: a gap longer than the
bridging limit, after which the key starts warm-up again (exactly what the service does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.grid import Grid


@dataclass(frozen=True)
class SeriesSet:
    """Regular per-key series, concatenated.

    ``values[:, 0]`` is the target; ``values[:, 1:]`` are extra observed features.
    ``observed`` is False where a short gap was bridged by interpolation.
    ``reset`` is True on each key's first row and on the first row after a long gap.
    """

    keys: tuple[str, ...]
    #: key i owns rows offsets[i]:offsets[i+1]
    offsets: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    observed: npt.NDArray[np.bool_]
    reset: npt.NDArray[np.bool_]
    interval_s: int
    value_name: str = "value"
    extra_names: tuple[str, ...] = ()
    #: a calendar grid (months, trading days); None: fixed ``interval_s`` intervals
    calendar_grid: Grid | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        if len(self.offsets) != len(self.keys) + 1 or self.offsets[-1] != n:
            raise ValueError("offsets do not match keys and rows")
        if self.values.shape != (n, 1 + len(self.extra_names)):
            raise ValueError(f"values shape {self.values.shape} does not match {n} rows")
        if self.observed.shape != (n,) or self.reset.shape != (n,):
            raise ValueError("observed/reset must have one flag per row")

    @property
    def n_rows(self) -> int:
        return len(self.ts)

    @property
    def grid(self) -> Grid:
        """The interval grid the rows lie on."""
        return self.calendar_grid or Grid.fixed(self.interval_s)

    def steps(self) -> npt.NDArray[np.int64]:
        """``[N]`` the grid's interval number of every row (consecutive rows of a segment
        differ by one)."""
        return self.grid.index(self.ts)

    def key_slice(self, i: int) -> slice:
        """Rows of key ``i``."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def key_index(self) -> npt.NDArray[np.int64]:
        """``[N]`` the key number of every row."""
        return np.repeat(np.arange(len(self.keys), dtype=np.int64), np.diff(self.offsets))

    def select(self, mask: npt.NDArray[np.bool_]) -> SeriesSet:
        """Rows where ``mask`` holds (keys with no rows left are dropped).

        A row whose predecessor within its key was removed becomes a reset row unless the
        two are adjacent on the grid.
        """
        key_of = self.key_index()[mask]
        ts = self.ts[mask]
        kept_keys = np.unique(key_of)
        remap = np.full(len(self.keys), -1, dtype=np.int64)
        remap[kept_keys] = np.arange(len(kept_keys))
        new_key = remap[key_of]
        counts = np.bincount(new_key, minlength=len(kept_keys))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        reset = self.reset[mask].copy()
        first = np.zeros(len(ts), dtype=bool)
        first[offsets[:-1][counts > 0]] = True
        jump = np.ones(len(ts), dtype=bool)
        jump[1:] = (np.diff(self.grid.index(ts)) != 1) | (np.diff(new_key) != 0)
        reset |= first | jump
        return SeriesSet(
            keys=tuple(self.keys[k] for k in kept_keys),
            offsets=offsets,
            ts=ts,
            values=self.values[mask],
            observed=self.observed[mask],
            reset=reset,
            interval_s=self.interval_s,
            value_name=self.value_name,
            extra_names=self.extra_names,
            calendar_grid=self.calendar_grid,
        )
