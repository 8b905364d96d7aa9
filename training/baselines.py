"""Baseline forecasts on the same origins as the LSTM: naive, seasonal naive, and
statsforecast's AutoETS, AutoTheta and AutoARIMA.

Every baseline returns ``[F, H]`` forecasts in original units for origin rows ``rows`` of a
:class:`~training.series.SeriesSet`, using only data up to each origin.

The statsforecast models (:func:`statistical`) are fitted **once per key** on the key's
last :data:`FIT_ROWS` observed values up to its *first* origin (for the one-origin
protocol that is the whole fit part, the benchmark's own rule) and then, without
refitting, applied to each later origin's history (``forward``: the fitted model filtered
over the last :data:`CONTEXT_ROWS` values before the origin) -- one fit per key, so they
run by default even on many keys. Imputed rows are interpolations and count as values.
They run on numpy arrays only (statsforecast's model classes), one thread; progress is
printed every :data:`PROGRESS_S` seconds, and a baseline whose projected time exceeds what
is left of ``budget_s`` is skipped with the reason (the report says so).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from training.series import SeriesSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: values a statistical baseline is fitted on (the most recent ones before the first origin)
FIT_ROWS = 1_000
#: values a fitted baseline is filtered over before each later origin
CONTEXT_ROWS = 400
PROGRESS_S = 20.0
STATISTICAL = ("auto_ets", "auto_theta", "auto_arima")


def lookup_rows(series: SeriesSet, key: IntArray, ts: IntArray) -> IntArray:
    """Row index holding ``(key, ts)`` for each pair, or -1 where there is none."""
    if series.n_rows == 0:
        return np.full(key.shape, -1, dtype=np.int64)
    steps = series.steps()
    base, span = int(steps.min()), int(steps.max() - steps.min()) + 1
    codes = series.key_index() * span + (steps - base)
    want_steps = series.grid.index(ts)
    wanted = key * span + (want_steps - base)
    pos = np.clip(np.searchsorted(codes, wanted), 0, max(series.n_rows - 1, 0))
    found = (codes[pos] == wanted) & (series.ts[pos] == ts)
    return np.asarray(np.where(found, pos, -1), dtype=np.int64)


def naive(series: SeriesSet, rows: IntArray, horizon: int) -> FloatArray:
    """The last value at the origin, repeated over the horizon."""
    return np.repeat(series.values[rows, 0][:, None], horizon, axis=1)


def seasonal_naive(series: SeriesSet, rows: IntArray, horizon: int, season: int) -> FloatArray:
    """The value one season before each target (``y[t+k-m*ceil(k/m)]``); naive if missing."""
    steps = np.arange(1, horizon + 1)
    back = steps - season * np.ceil(steps / season).astype(np.int64)  # in (-season, 0]
    key = series.key_index()[rows]
    want = series.grid.shift(series.ts[rows][:, None], back[None, :])
    found = lookup_rows(series, np.repeat(key[:, None], horizon, axis=1), want)
    fallback = naive(series, rows, horizon)
    return np.asarray(
        np.where(found >= 0, series.values[np.maximum(found, 0), 0], fallback), dtype=np.float64
    )


def _model(name: str, season: int) -> Any:
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta  # noqa: PLC0415 - heavy

    # ETS is seasonal up to 24 intervals (as in R's forecast); beyond, non-seasonal
    m = season if season <= 24 else 1
    if name == "auto_ets":
        return AutoETS(season_length=m)
    if name == "auto_theta":
        return AutoTheta(season_length=season)
    return AutoARIMA(season_length=m, approximation=True)


@dataclass
class Run:
    """What :func:`statistical` produced: forecasts per baseline, timings, skips."""

    forecasts: dict[str, FloatArray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def statistical(
    series: SeriesSet,
    groups: dict[str, IntArray],
    horizon: int,
    season: int,
    names: tuple[str, ...],
    *,
    budget_s: float = 300.0,
    log: Callable[[str], None] | None = None,
) -> Run:
    """The statsforecast baselines ``names`` at every origin row of each group (``{"test":
    rows, "val": rows}``, in that order of priority), fitted per key and group at the
    group's first origin of the key (module docstring). Results are keyed
    ``"group:name"``; what the budget did not allow is in ``skipped``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    say = log or (lambda _msg: None)
    out = Run()
    started = time.monotonic()
    key_of = series.key_index()
    y_all = series.values[:, 0]
    for group, rows in groups.items():
        keys = np.unique(key_of[rows])
        for name in names:
            t0 = last_note = first_done = time.monotonic()
            fc = np.full((len(rows), horizon), np.nan)
            for i, k in enumerate(keys.tolist()):
                sl = series.key_slice(k)
                mine = np.flatnonzero(key_of[rows] == k)
                fc[mine] = _key_forecasts(
                    name, season, y_all, sl.start, rows[mine], horizon=horizon
                )
                now = time.monotonic()
                if now - last_note > PROGRESS_S:
                    say(f"baselines: {group} {name} {i + 1:,}/{len(keys):,} keys ({now - t0:.0f}s)")
                    last_note = now
                if i == 0:
                    # the first fit pays the model's warm-up: the rate is the others'
                    first_done = now
                    continue
                projected = (now - first_done) / i * (len(keys) - i - 1)
                # judged once the rate is steady (20 keys, 10 s), not on the first few
                steady = i >= 20 or (i >= 3 and now - first_done > 10.0)
                if steady and now - started + projected > budget_s:
                    out.skipped[f"{group}:{name}"] = (
                        f"projected {now - t0 + projected:.0f}s for {len(keys):,} keys would "
                        f"exceed the baseline budget ({budget_s:.0f}s in all)"
                    )
                    say(f"baselines: {group} {name} skipped: {out.skipped[f'{group}:{name}']}")
                    break
            else:
                out.forecasts[f"{group}:{name}"] = fc
                out.seconds[f"{group}:{name}"] = time.monotonic() - t0
                say(f"baselines: {group} {name} done ({time.monotonic() - t0:.0f}s)")
    return out


def _key_forecasts(
    name: str, season: int, y_all: FloatArray, start: int, origins: IntArray, *, horizon: int
) -> FloatArray:
    """One key's forecasts from each of its ``origins`` (ascending rows): fitted at the
    first, filtered forward to the others; naive where the model cannot fit."""
    first = int(origins.min())
    out = np.empty((len(origins), horizon))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = _model(name, season).fit(y=y_all[max(start, first + 1 - FIT_ROWS) : first + 1])
            for j, row in enumerate(origins.tolist()):
                if row == first:
                    out[j] = model.predict(h=horizon)["mean"]
                else:
                    context = y_all[max(start, row + 1 - CONTEXT_ROWS) : row + 1]
                    out[j] = model.forward(y=context, h=horizon)["mean"]
        except Exception:  # noqa: BLE001 - statsforecast raises assorted errors on odd series
            out[:] = y_all[origins][:, None]
    bad = ~np.isfinite(out).all(axis=1)
    out[bad] = y_all[origins[bad]][:, None]
    return out
