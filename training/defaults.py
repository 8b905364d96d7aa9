"""Defaults chosen from the data, each with the reason ``fit`` prints.

A setting left unset (None) in :class:`~training.config.TrainConfig` is chosen here from
the prepared history: the season from the interval, the window and the seasonal lags from
how long the keys are, the level/scale weight from the season, the origin stride from how
many training origins there are. :func:`choose` returns the config with every choice made
(what the model records) and one line per choice saying why.
"""

from __future__ import annotations

import numpy as np

from streamcast.core.features import SCALE_FLOOR, ExtraScaling, LevelScale
from streamcast.core.grid import Grid
from training.config import TrainConfig
from training.prep import Role, Split
from training.series import SeriesSet

#: above this many candidate training origins, every third one is used
MANY_ORIGINS = 20_000
#: the window when there is no season
PLAIN_WINDOW = 16


def season_of(grid: Grid) -> tuple[int, str]:
    """The natural season of a grid: a day of sub-daily intervals, a week of days, a year
    of months or quarters; 1 for trading days (prices: the naive scale)."""
    if grid.kind == "months":
        m = 12 // grid.months
        return (m, f"{m} = a year of {grid.describe()} intervals") if m > 1 else (1, "yearly")
    if grid.kind == "trading_days":
        return 1, "1 for trading days (prices: MASE scaled by the naive error)"
    s = grid.seconds
    if s < 86_400 and 86_400 % s == 0:
        return 86_400 // s, f"{86_400 // s} = a day of {grid.describe()} intervals"
    if s == 86_400:
        return 7, "7 = a week of days"
    return 1, "1 (no natural season for this interval)"


def choose(config: TrainConfig, series: SeriesSet, parts: Split) -> tuple[TrainConfig, list[str]]:
    """``config`` with every unset choice made from the data, and the reasons."""
    why: list[str] = []
    fit_rows = np.bincount(series.key_index()[parts.role != Role.TEST], minlength=len(series.keys))
    fit_rows = fit_rows[fit_rows > 0] if (fit_rows > 0).any() else np.array([0])
    median = int(np.median(fit_rows))
    h = config.horizon
    why.append(
        f"{len(series.keys)} keys, fit rows per key: min {fit_rows.min()}, median {median}, "
        f"max {fit_rows.max()}; interval {series.grid.describe()}, horizon {h}"
    )
    changes: dict[str, object] = {}
    season = config.season
    if season is None:
        season, reason = season_of(series.grid)
        changes["season"] = season
        why.append(f"season {reason}")
    m = season
    window, lags = config.window, config.lags
    if window is None:
        if m > 1 and median >= 2 * m + 2 * h + 1:
            window = 2 * m
            why.append(
                f"window {window} = 2 x season: the median key has >= 2 seasons + 2 horizons"
            )
        elif m > 1:
            window = m
            why.append(f"window {window} = the season: keys too short for two seasons")
        else:
            window = max(2, min(PLAIN_WINDOW, median // 2))
            why.append(f"window {window}: no season")
        changes["window"] = window
    if lags is None:
        lags = tuple(lag for lag in (m, 2 * m) if m > 1 and lag <= window)
        changes["lags"] = lags
        why.append(
            f"lags {', '.join(map(str, lags))} (seasonal anchors within the window)"
            if lags
            else "no seasonal lags"
        )
    if config.alpha is None:
        alpha = min(0.5, 1.0 / m) if m > 1 else 0.1
        changes["alpha"] = alpha
        why.append(f"level/scale EWMA alpha {alpha:.3g} = 1/season (memory ~ one season)")
    if config.origin_stride is None:
        candidates = int(np.sum(np.maximum(fit_rows - window, 0)))
        stride = 3 if candidates > MANY_ORIGINS else 1
        changes["origin_stride"] = stride
        why.append(f"origin stride {stride} ({candidates:,} candidate training origins)")
    longest = int(fit_rows.max())
    why.append(
        f"sequences: whole series from their first row (all keys <= {config.whole_max} rows)"
        if longest <= config.whole_max
        else f"sequences: burn-in {window} + {config.seq_len} steps at random offsets for "
        f"keys > {config.whole_max} rows, whole series otherwise"
    )
    return config.updated(**changes), why


def fit_kappa(series: SeriesSet, train: np.ndarray, scheme: LevelScale, window: int) -> float:
    """The global unit: mean ``|y - l| / s`` over observed training rows (``l``, ``s`` the
    keys' level and scale there), so the step inputs are O(1)."""
    from training.evaluate import row_inputs  # noqa: PLC0415 - evaluate imports this module's users

    unit_one = LevelScale(alpha=scheme.alpha, lags=scheme.lags, kappa=1.0, clip=scheme.clip)
    rows = row_inputs(series, unit_one, window, _no_extras(series))
    dev = np.abs(series.values[:, 0] - rows.level) / np.maximum(rows.scale, SCALE_FLOOR)
    use = train & series.observed & np.isfinite(dev)
    return max(float(np.mean(dev[use])), 1e-4) if use.any() else 1.0


def _no_extras(series: SeriesSet) -> ExtraScaling:
    n = series.values.shape[1] - 1
    return ExtraScaling(loc=(0.0,) * n, scale=(1.0,) * n)
