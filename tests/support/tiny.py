"""A tiny model trained for real on a slice of the pedestrian data, for tests that need one.

``train_tiny_model(out_dir)`` writes into ``out_dir``: ``data.csv`` (the slice, columns
``Sensor, Date_Time, Count``; 3 sensors, hourly, with a bridged gap and a long gap),
``model.onnx`` (window 24, horizon 6, calendar time_of_day + day_of_week in
Australia/Melbourne), ``report.json``/``report.md`` and ``forecasts.csv`` — the offline
reference a replay of ``data.csv`` through the service must reproduce. It takes ~10-20 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import TrainConfig
from training.datasets import DATASETS
from training.history import DataSource
from training.workflow import fit_pipeline

TINY_CONFIG = TrainConfig(
    units=8,
    layers=1,
    window=24,
    horizon=6,
    calendar=("time_of_day", "day_of_week"),
    timezone="Australia/Melbourne",
    interval="1h",
    season=24,
    seq_len=48,
    origin_stride=4,
    epochs=2,
    batch_size=16,
    time_budget_s=60.0,
    val_frac=0.2,
    test_frac=0.2,
    baselines=("naive", "seasonal_naive"),
)
TINY_COLUMNS: dict[str, Any] = {"key_col": "Sensor", "time_col": "Date_Time", "value_col": "Count"}


def tiny_data(path: Path, hours: int = 24 * 21) -> Path:
    """Write the pedestrian slice: 3 sensors x ``hours``, 2 rows removed from one sensor
    (a bridged gap) and 30 hours removed from another (a long gap, so a reset)."""
    raw = DATASETS["pedestrian"].loader()
    sensors = sorted(raw["Sensor"].unique())[1:4]
    parts = []
    for i, sensor in enumerate(sensors):
        rows = raw[raw["Sensor"] == sensor].iloc[:hours]
        if i == 0:
            rows = rows.drop(rows.index[[100, 101]])
        if i == 1:
            rows = rows.drop(rows.index[200:230])
        parts.append(rows)
    frame = pd.concat(parts, ignore_index=True)
    frame["Count"] = frame["Count"].astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def train_tiny_model(out_dir: Path) -> Path:
    """Train and export the tiny model into ``out_dir``; returns the ``model.onnx`` path."""
    data = tiny_data(out_dir / "data.csv")
    source = DataSource(spec=str(data), **TINY_COLUMNS)
    fit_pipeline(
        source, TINY_CONFIG, out_dir, "tiny", verbose=False, forecasts_file="forecasts.csv"
    )
    return out_dir / "model.onnx"
