"""The shipped datasets load offline, with the keys, interval and features they promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import load_table, regularise
from training.datasets import DATASETS, export_csv, load_dataset
from training.errors import ConfigError
from training.timetext import parse_grid

EXPECTED_KEYS = {
    "pedestrian": {
        "Birrarung Marr",
        "Bourke Street Mall (North)",
        "QV Market-Elizabeth St (West)",
        "Southern Cross Station",
    },
    "taylor": {"taylor"},
    "gafa": {"AAPL", "AMZN", "FB", "GOOG"},
    "vic_elec": {"vic_elec"},
}
#: the competitions' series counts (their names are N1402.., T1..)
EXPECTED_COUNTS = {"m3_monthly": 1428, "tourism_monthly": 366}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_loads_with_its_keys_and_interval(name: str) -> None:
    info = DATASETS[name]
    df = load_dataset(name)
    if name in EXPECTED_COUNTS:
        assert df["key"].nunique() == EXPECTED_COUNTS[name]
    else:
        assert set(df["key"]) == EXPECTED_KEYS[name]
    assert list(df.columns) == ["key", "ts_ms", "value", *info.feature_cols]
    series, report = regularise(df, max_gap=info.max_gap, trading_days=info.trading_days)
    assert report.interval_inferred or info.trading_days
    assert series.grid == parse_grid(
        info.interval, trading_days=info.trading_days, holidays=series.grid.holidays
    )
    assert series.value_name == info.value_col
    assert np.isfinite(series.values).all()


def test_pedestrian_has_real_gaps_that_reset() -> None:
    series, report = regularise(load_dataset("pedestrian"))
    assert report.long_gaps  # the sensors really were offline for days
    assert series.reset.sum() == len(series.keys) + len(report.long_gaps)
    first = pd.Timestamp(int(series.ts[0]), unit="s", tz="UTC").tz_convert("Australia/Melbourne")
    assert (first.year, first.month, first.day, first.hour) == (2015, 1, 1, 0)


def test_taylor_is_twelve_weeks_from_monday_5_june_2000() -> None:
    df = load_dataset("taylor")
    assert len(df) == 12 * 7 * 48
    assert df["ts_ms"].iloc[0] == pd.Timestamp("2000-06-05T00:00:00Z").timestamp() * 1000
    assert (np.diff(df["ts_ms"].to_numpy()) == 1_800_000).all()


def test_gafa_on_trading_days_has_no_weekends_and_no_gaps() -> None:
    """Weekends and exchange holidays are not intervals on the trading-day grid (nor
    imputed rows); on calendar days (1d) they would be 20 % of the rows, and a 1d interval
    matches too few of gafa's steps to be accepted."""
    df = load_dataset("gafa")
    series, report = regularise(df, max_gap=3, trading_days=True)
    assert not report.long_gaps and report.imputed_rows == 0
    assert series.observed.all()
    assert 30 <= len(series.grid.holidays) <= 50  # ~9 NYSE holidays a year, 2014-2018
    days = pd.to_datetime(series.ts, unit="s", utc=True)
    assert (days.day_of_week < 5).all() and (days.hour == 0).all()
    assert "2014-12-25" in series.grid.holidays and "2014-12-24" not in series.grid.holidays
    with pytest.raises(ConfigError, match=r"1d matches only 7.% of the steps.*--trading-days"):
        regularise(df, interval="1d", max_gap=3)
    m3 = regularise(load_dataset("m3_monthly"))[0]
    first = pd.Timestamp(int(m3.ts[0]), unit="s", tz="UTC")
    assert (first.year, first.month, first.day) == (1990, 1, 1)
    assert m3.grid.kind == "months" and m3.interval_s == 2_629_746


def test_export_round_trips_through_load_table(tmp_path: Path) -> None:
    info = DATASETS["vic_elec"]
    path = export_csv("vic_elec", tmp_path / "out" / "vic.csv")
    assert path.read_text().splitlines()[0] == "key,Time,Demand,Temperature"
    back = load_table(
        path,
        key_col=info.key_col,
        time_col=info.time_col,
        value_col=info.value_col,
        feature_cols=info.feature_cols,
    )
    pd.testing.assert_frame_equal(back, load_dataset("vic_elec"))
    assert "--features Temperature" in info.fit_flags()


def test_unknown_dataset_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'weather'; available: pedestrian"):
        load_dataset("weather")
