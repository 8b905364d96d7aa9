"""Retraining from the stream: rows replayed into a ticks topic, exported with
``streamcast history export`` and trained with ``streamcast-train fit`` give the very model
that training on the same rows from a CSV gives (same seed, deterministic training)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from tests.support.kafka import create_topics, unique_topic
from tests.support.service import run_cli
from tests.support.tiny import TINY_COLUMNS, tiny_data
from training.cli import main as train_main

pytestmark = pytest.mark.kafka

#: a model that trains in seconds; the time budget is far away, so epochs decide and two
#: runs do the same work. ARIMA (seconds per key) is not what this test is about.
FIT_FLAGS = (
    "--interval", "1h", "--window", "24", "--horizon", "4", "--units", "4", "--epochs", "2",
    "--seq-len", "24", "--calendar", "time_of_day", "--timezone", "Australia/Melbourne",
    "--baselines", "naive,seasonal_naive", "--time-budget", "600", "--duplicates", "first",
    "--quiet",
)  # fmt: skip


def _weights(model: Path) -> list[bytes]:
    """The graph's float constants (the weights among them), independent of the names
    tf2onnx gives them (they count up within a process)."""
    graph = onnx.load(str(model)).graph
    arrays = [numpy_helper.to_array(init) for init in graph.initializer]
    return sorted(f"{a.shape}".encode() + a.tobytes() for a in arrays if a.dtype == np.float32)


async def _fit(data: Path, out: Path, *columns: str) -> dict[str, Any]:
    argv = ["fit", "--data", str(data), *columns, *FIT_FLAGS, "--out", str(out)]
    assert await asyncio.to_thread(train_main, argv) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


async def test_a_retrain_from_the_ticks_topic_equals_one_from_the_csv(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("retrain")
    await create_topics(bootstrap, [topic], partitions=2)
    rows = tiny_data(tmp_path / "rows.csv", hours=24 * 14)  # 3 sensors, a short and a long gap
    csv_columns = [f"--{k.replace('_', '-')}" for k in TINY_COLUMNS]
    csv_flags = [part for pair in zip(csv_columns, TINY_COLUMNS.values(), strict=True)
                 for part in pair]  # fmt: skip
    common = ("--bootstrap-servers", bootstrap, "--topic", topic)
    replayed = run_cli("replay", "--data", str(rows), *csv_flags, "--no-progress", *common,
                       cwd=tmp_path)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    exported = run_cli("history", "export", "--out", "history.parquet", *common, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    n_rows = len(pd.read_csv(rows))
    assert f"wrote {n_rows} ticks of 3 keys" in exported.stderr

    # exactly the flags the export documents, and the CronJob passes
    from_topic = await _fit(
        tmp_path / "history.parquet", tmp_path / "from_topic",
        "--key-col", "key", "--time-col", "ts", "--value-col", "value",
    )  # fmt: skip
    from_csv = await _fit(rows, tmp_path / "from_csv", *csv_flags)

    # the same rows reached preparation (the fingerprint is of key, time and value)
    assert from_topic["data"]["fingerprint"] == from_csv["data"]["fingerprint"]
    assert from_topic["data"]["n_rows"] == from_csv["data"]["n_rows"]
    # ... and the same model came out: equal weights, forecasts and quality, bit for bit
    topic_model, csv_model = (tmp_path / d / "model.onnx" for d in ("from_topic", "from_csv"))
    assert _weights(topic_model) == _weights(csv_model)
    topic_forecasts, csv_forecasts = (
        pd.read_parquet(tmp_path / d / "forecasts.parquet") for d in ("from_topic", "from_csv")
    )
    pd.testing.assert_frame_equal(topic_forecasts, csv_forecasts, check_exact=True)
    assert from_topic["metrics"] == from_csv["metrics"]
    assert from_topic["metrics"]["lstm"]["n_forecasts"] > 0
    assert from_topic["coverage"] == from_csv["coverage"]
    assert from_topic["drift"] == from_csv["drift"]
