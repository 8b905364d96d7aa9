"""Which forecast figures the report gets, and the data each one shows.

:func:`forecast_figures` writes one forecast-vs-actual PNG (:func:`training.plots.
forecast_figure`) per key that has test origins, the keys with most test origins
first, up to :data:`FIGURE_CAP` keys: every key of a data set of a few dozen series, and
a readable, bounded set (a figure costs ~0.2-0.3 s: ``bench/figures.py``) for one of thousands. The
time axis is in the model's zone (``features.timezone``), so a series' daily peak sits at
its local hour. What was plotted and why is the :class:`Figures` note, which the report
repeats (``report.json`` ``files.figures_note``, ``report.md`` *Figures*).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training import plots
from training.backtest import Backtest, Bands
from training.series import SeriesSet

#: at most this many keys get a figure (those with most test origins)
FIGURE_CAP = 24
#: back-to-back horizons shown per figure, from the middle of the test period
ORIGINS_PER_FIGURE = 3


@dataclass(frozen=True)
class Figures:
    """The forecast figures written: file names, their keys, and which keys and why."""

    files: list[str]
    keys: list[str]
    note: str


def figure_keys(
    keys: Sequence[str], origins: npt.NDArray[np.int64], cap: int = FIGURE_CAP
) -> tuple[list[int], str]:
    """Indices of the keys to plot, given each key's number of test ``origins`` (most
    first, ties by key name, none without an origin, at most ``cap``), and the note that
    says which were plotted and why."""
    with_origins = np.flatnonzero(origins > 0)
    names = np.asarray(keys, dtype=object)[with_origins]
    order = with_origins[np.lexsort((names, -origins[with_origins]))]
    chosen = [int(k) for k in order[:cap]]
    if len(order) <= cap:
        note = f"every key with a test origin ({len(order)})"
    else:
        note = (
            f"{cap} of the {len(order)} keys with a test origin, those with most test "
            f"origins (the figure cap {cap}; the forecasts file holds every key)"
        )
    without = len(keys) - len(order)
    if without:
        note += f"; {without} key(s) have no test origin (nothing to plot)"
    return chosen, note


def forecast_figures(
    series: SeriesSet,
    bt: Backtest,
    out_dir: Path,
    season: int,
    bands: Bands,
    *,
    timezone: str = "UTC",
    cap: int = FIGURE_CAP,
) -> Figures:
    """Forecast-vs-actual PNGs of the keys :func:`figure_keys` picks, the LSTM's interval
    ``bands`` on the test origins shaded (``{level: (lower, upper)}``, ``[F, H]`` each:
    those the service publishes, :func:`training.backtest.interval_bands`), the time axis
    in ``timezone`` (the model's zone)."""
    keys = series.key_index()[bt.fc.row[bt.test]]
    horizon = bt.actual.shape[1]
    origins_per_key = np.bincount(keys, minlength=len(series.keys))
    chosen, note = figure_keys(series.keys, origins_per_key, cap)
    files: list[str] = []
    for k in chosen:
        mine = np.flatnonzero(keys == k)
        # back-to-back horizons from the middle of the test period: close enough to see
        steps = len(mine) // 2 + np.arange(ORIGINS_PER_FIGURE) * horizon
        picks = mine[np.unique(np.minimum(steps, len(mine) - 1))]
        origins = [
            (
                int(series.ts[bt.fc.row[bt.test[i]]]),
                bt.actual[i],
                {m: f[i] for m, f in bt.forecasts.items()},
                {level: (lower[i], upper[i]) for level, (lower, upper) in bands.items()},
            )
            for i in picks
        ]
        first = int(series.grid.shift(origins[0][0], -2 * max(season, 4)))
        last = int(series.grid.shift(origins[-1][0], horizon + 1))
        sl = series.key_slice(k)
        sel = (series.ts[sl] >= first) & (series.ts[sl] <= last)
        safe = "".join(ch if ch.isalnum() else "_" for ch in series.keys[k])
        name = f"forecast_{safe}.png"
        if name in files:  # keys that differ only in characters a file name cannot hold
            name = f"forecast_{safe}_{k}.png"
        figure = plots.forecast_figure(
            series.keys[k],
            series.ts[sl][sel],
            series.values[sl, 0][sel],
            origins,
            grid=series.grid,
            timezone=timezone,
        )
        plots.save(figure, out_dir / name)
        files.append(name)
    return Figures(files, [series.keys[k] for k in chosen], note)
