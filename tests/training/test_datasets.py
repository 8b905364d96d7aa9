"""The shipped datasets load offline, with the keys, interval and features they promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import load_table, parse_interval, regularise
from training.datasets import DATASETS, export_csv, load_dataset
from training.errors import ConfigError

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


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_loads_with_its_keys_and_interval(name: str) -> None:
    info = DATASETS[name]
    df = load_dataset(name)
    assert set(df["key"]) == EXPECTED_KEYS[name]
    assert list(df.columns) == ["key", "ts_ms", "value", *info.feature_cols]
    series, report = regularise(df, max_gap=info.max_gap)
    assert report.interval_inferred
    assert series.interval_s == parse_interval(info.interval)
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


def test_gafa_weekends_are_imputed_not_observed() -> None:
    series, report = regularise(load_dataset("gafa"), interval="1d", max_gap=3)
    assert not report.long_gaps
    weekday = (series.ts // 86_400 + 3) % 7  # Monday = 0
    assert not series.observed[weekday >= 5].any()
    assert series.observed[weekday < 5].mean() > 0.95  # only holidays are missing


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
