"""The report's forecast figures: every key (up to the cap, and the report says which and
why), the time axis in the model's zone."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from streamcast.core.artifact import CalibrationMeta
from streamcast.core.grid import Grid
from tests.support.tiny import TINY_COLUMNS
from training import plots
from training.backtest import Backtest, Bands, backtest, interval_bands
from training.evaluate import load_session
from training.figures import figure_keys, forecast_figures
from training.history import DataSource, load_and_prepare
from training.series import SeriesSet
from training.workflow import config_from_model

ZONE = "Australia/Melbourne"
Replayed = tuple[SeriesSet, Backtest, int, CalibrationMeta]


@pytest.fixture(scope="module")
def replayed(tiny_model: Path) -> Replayed:
    """The tiny model's streaming backtest on its own data (3 sensors)."""
    sess, meta = load_session(tiny_model)
    config = config_from_model(meta)
    source = DataSource(spec=str(tiny_model.parent / "data.csv"), **TINY_COLUMNS)
    history = load_and_prepare(source, config)
    bt = backtest(sess, meta, history.series, history.parts, config)
    return history.series, bt, config.season_, meta.calibration


def _bands(replayed: Replayed) -> Bands:
    series, bt, _, calibration = replayed
    return interval_bands(bt, calibration, series)


def test_every_key_gets_a_figure(replayed: Replayed, tmp_path: Path) -> None:
    series, bt, season, _ = replayed
    figures = forecast_figures(series, bt, tmp_path, season, _bands(replayed), timezone=ZONE)
    assert sorted(figures.keys) == sorted(series.keys)
    assert figures.note == "every key with a test origin (3)"
    for name in figures.files:
        assert (tmp_path / name).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figures.files)


def test_the_cap_keeps_the_keys_with_most_test_origins(replayed: Replayed, tmp_path: Path) -> None:
    series, bt, season, _ = replayed
    figures = forecast_figures(series, bt, tmp_path, season, _bands(replayed), cap=2)
    counts = np.bincount(series.key_index()[bt.fc.row[bt.test]], minlength=len(series.keys))
    fewest = series.keys[int(np.argmin(counts))]
    assert len(figures.files) == 2 and fewest not in figures.keys
    assert figures.note.startswith("2 of the 3 keys with a test origin, those with most")


def test_which_keys_and_why() -> None:
    keys = ["b", "a", "c", "d", "e"]
    origins = np.array([5, 5, 0, 9, 1], dtype=np.int64)
    chosen, note = figure_keys(keys, origins, cap=3)
    assert [keys[k] for k in chosen] == ["d", "a", "b"]  # most origins first, then by name
    assert note == (
        "3 of the 4 keys with a test origin, those with most test origins (the figure cap 3; "
        "the forecasts file holds every key); 1 key(s) have no test origin (nothing to plot)"
    )
    chosen, note = figure_keys(keys, origins)
    assert [keys[k] for k in chosen] == ["d", "a", "b", "e"]
    assert note.startswith("every key with a test origin (4); 1 key(s)")


def test_the_time_axis_is_the_models_zone() -> None:
    # a daily peak at 08:00 in Melbourne (21:00 or 22:00 UTC): the axis must show 08:00
    ts = pd.date_range("2015-01-05", periods=24 * 6, freq="h", tz=ZONE)
    values = np.where(ts.hour == 8, 100.0, 10.0)
    epoch = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    horizon = 24
    origin = int(epoch[-horizon - 1])
    band = (values[-horizon:] - 5.0, values[-horizon:] + 5.0)
    origins = [(origin, values[-horizon:], {"lstm": values[-horizon:]}, {0.8: band})]
    grid = Grid.fixed(3600)
    fig = plots.forecast_figure("k", epoch, values, origins, grid=grid, timezone=ZONE)
    try:
        ax = fig.axes[0]
        assert ZONE in ax.get_xlabel()
        actual = next(line for line in ax.get_lines() if line.get_label() == "actual")
        x = pd.DatetimeIndex(list(np.asarray(actual.get_xdata())))  # Timestamps, as plotted
        assert str(x.tz) == ZONE
        peaks = x[np.asarray(actual.get_ydata()) == 100.0]
        assert len(peaks) == 6 and set(peaks.hour) == {8}
        # the ticks fall on round local times (in UTC they would be 11:00 and 23:00 here);
        # matplotlib's dates are days since 1970-01-01 UTC
        ticks = pd.to_datetime(ax.get_xticks(), unit="D", utc=True).tz_convert(ZONE)
        assert len(ticks) >= 3 and set(ticks.hour % 6) == {0} and set(ticks.minute) == {0}
    finally:
        plt.close(fig)
