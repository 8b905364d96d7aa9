"""What the report's forecast figures cost: one ``forecast_<key>.png`` as ``fit`` and
``evaluate`` write it (:func:`training.plots.forecast_figure`: the pedestrian shape,
hourly, season 24, horizon 24, three back-to-back origins, three models, 80 % and 95 %
bands, the axis in Australia/Melbourne), timed over ``--figures`` figures; prints the
seconds per figure and for the pedestrian's 4 keys and the cap
(:data:`training.figures.FIGURE_CAP`).

    .venv/bin/python bench/figures.py --figures 12
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO  # noqa: F401  (puts the repository on sys.path)

from streamcast.core.grid import Grid
from training import plots
from training.figures import FIGURE_CAP

SEASON, HORIZON, ORIGINS = 24, 24, 3


def main() -> None:
    """Time ``--figures`` forecast figures and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=12)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grid = Grid.fixed(3600)
    start = 1_451_606_400  # 2016-01-01T00:00:00Z
    n = 2 * SEASON + ORIGINS * HORIZON + 2
    ts = start + 3600 * np.arange(n, dtype=np.int64)
    history = 500 + 400 * np.sin(np.arange(n) * 2 * np.pi / SEASON) + rng.normal(0, 30, n)
    origins: list[plots.Origin] = []
    for i in range(ORIGINS):
        at = 2 * SEASON + i * HORIZON
        actual = history[at + 1 : at + 1 + HORIZON]
        forecasts = {
            m: actual + rng.normal(0, 40, HORIZON) for m in ("lstm", "naive", "seasonal_naive")
        }
        bands = {
            lv: (forecasts["lstm"] - w, forecasts["lstm"] + w)
            for lv, w in ((0.8, 60.0), (0.95, 120.0))
        }
        origins.append((int(ts[at]), actual, forecasts, bands))
    with tempfile.TemporaryDirectory() as tmp:
        took = []
        for i in range(args.figures):
            began = time.perf_counter()
            figure = plots.forecast_figure(
                f"key{i}", ts, history, origins, grid=grid, timezone="Australia/Melbourne"
            )
            plots.save(figure, Path(tmp) / f"forecast_{i}.png")
            took.append(time.perf_counter() - began)
    per = float(np.median(took[1:] if len(took) > 1 else took))
    load = os.getloadavg()[0]
    head = f"| figures | s per figure (median) | 4 keys (pedestrian) | {FIGURE_CAP} keys (cap) |"
    print(head + " load |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {args.figures} | {per:.3f} | {4 * per:.2f} | {FIGURE_CAP * per:.2f} | {load:.1f} |")


if __name__ == "__main__":
    main()
