"""Baselines: naive, seasonal naive, and statsforecast's models exactly as statsforecast
forecasts (one fit per key, forward to later origins), within a budget."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from training.baselines import lookup_rows, naive, seasonal_naive, statistical
from training.series import SeriesSet


def _two_keys() -> SeriesSet:
    # key a: 0..9 hourly; key b: 100..104 then a gap of 5 intervals then 110..112
    ts_a = np.arange(10) * 3600
    ts_b = np.concatenate([np.arange(5), np.arange(10, 13)]) * 3600
    values = np.concatenate([np.arange(10.0), 100 + ts_b / 3600])[:, None]
    reset = np.zeros(18, bool)
    reset[[0, 10, 15]] = True
    return SeriesSet(
        keys=("a", "b"),
        offsets=np.array([0, 10, 18]),
        ts=np.concatenate([ts_a, ts_b]),
        values=values,
        observed=np.ones(18, bool),
        reset=reset,
        interval_s=3600,
    )


def test_lookup_rows_finds_and_misses() -> None:
    s = _two_keys()
    found = lookup_rows(s, np.array([0, 1, 1, 1]), np.array([3, 2, 7, 11]) * 3600)
    assert found.tolist() == [3, 12, -1, 16]


def test_naive_and_seasonal_naive() -> None:
    s = _two_keys()
    rows = np.array([5, 9])  # key a at t=5 and t=9
    assert naive(s, rows, 3).tolist() == [[5.0] * 3, [9.0] * 3]
    # season 4: targets t+1..t+5 look back to t-3, t-2, t-1, t, t-3+4=t+1-4...
    got = seasonal_naive(s, rows, 5, 4)
    assert got[0].tolist() == [2.0, 3.0, 4.0, 5.0, 2.0]
    assert got[1].tolist() == [6.0, 7.0, 8.0, 9.0, 6.0]


def test_seasonal_naive_falls_back_to_naive_across_a_gap() -> None:
    s = _two_keys()
    # key b origin at t=11 (row 16): season 3 looks back to t=9, 10, 11 -> 9 is in the gap
    got = seasonal_naive(s, np.array([16]), 3, 3)
    assert got.tolist() == [[111.0, 110.0, 111.0]]


def _seasonal(n: int = 120, keys: int = 2) -> SeriesSet:
    rng = np.random.default_rng(4)
    t = np.arange(n)
    values = np.concatenate(
        [10 * (k + 1) + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, n) for k in range(keys)]
    )
    reset = np.zeros(n * keys, bool)
    reset[np.arange(keys) * n] = True
    return SeriesSet(
        keys=tuple(f"k{k}" for k in range(keys)),
        offsets=np.arange(keys + 1) * n,
        ts=np.tile(t * 3600, keys),
        values=values[:, None],
        observed=np.ones(n * keys, bool),
        reset=reset,
        interval_s=3600,
    )


def test_statistical_baselines_are_statsforecasts_own_forecasts() -> None:
    from statsforecast.models import AutoETS, AutoTheta

    s = _seasonal()
    rows = np.array([99, 104, 219])  # key 0: two origins, key 1: one
    run = statistical(s, {"test": rows}, 6, 12, ("auto_ets", "auto_theta"))
    assert set(run.forecasts) == {"test:auto_ets", "test:auto_theta"} and not run.skipped
    y = s.values[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ets = AutoETS(season_length=12).fit(y=y[:100])
        theta = AutoTheta(season_length=12).fit(y=y[120:220])
        expected = [
            ets.predict(h=6)["mean"],
            ets.forward(y=y[:105], h=6)["mean"],  # fitted once, filtered to the later origin
            theta.predict(h=6)["mean"],
        ]
    np.testing.assert_allclose(run.forecasts["test:auto_ets"][:2], np.stack(expected[:2]))
    np.testing.assert_allclose(run.forecasts["test:auto_theta"][2], expected[2])


def test_statistical_baselines_respect_their_budget() -> None:
    s = _seasonal(60, keys=30)
    rows = s.offsets[1:] - 7
    run = statistical(s, {"test": rows}, 6, 12, ("auto_theta",), budget_s=0.0)
    assert "test:auto_theta" in run.skipped and "budget" in run.skipped["test:auto_theta"]
    assert not run.forecasts


def test_the_budget_is_projected_from_the_steady_rate_not_the_first_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first fit of a model pays its warm-up (statsforecast's first AutoETS call took
    25 s on a loaded machine, the others ~0.1 s): a projection that counted it skipped
    AutoETS on M3 as '12,628 s' under a 3,000 s budget. A fake clock: the first key's fit
    takes 100 s, every other 1 s; 30 keys fit in 129 s, inside a 200 s budget."""
    from training import baselines

    clock = {"now": 0.0, "calls": 0}
    real = baselines._key_forecasts

    def timed(*args: Any, **kwargs: Any) -> npt.NDArray[np.float64]:
        clock["calls"] += 1
        clock["now"] += 100.0 if clock["calls"] == 1 else 1.0
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "_key_forecasts", timed)
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    s = _seasonal(60, keys=30)
    rows = s.offsets[1:] - 7
    run = statistical(s, {"test": rows}, 6, 12, ("auto_theta",), budget_s=200.0)
    assert run.skipped == {} and run.forecasts["test:auto_theta"].shape == (30, 6)
    assert run.seconds["test:auto_theta"] == 129.0
