"""Online equals offline (DESIGN invariant 1), through the real broker.

A tiny LSTM is trained for real on a pedestrian slice (``tests/training/tiny.py``: three
sensors, a bridged gap and a long gap that resets a key). ``streamcast replay`` sends the
slice to Kafka; ``streamcast serve`` (a subprocess) forecasts it; every forecast consumed
from the forecasts topic must equal the one the offline evaluator wrote to
``forecasts.csv`` to 1e-5 relative, and the counts must match exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from tests.integration.service_harness import ServiceProcess, consume, service_env
from tests.kafka_harness import create_topics, unique_topic
from tests.training.tiny import TINY_COLUMNS, train_tiny_model

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _offline(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """``(key, origin) -> [H]`` forecasts from the evaluator's per-interval file."""
    frame = pd.read_csv(path).sort_values(["key", "origin_ts", "step"])
    out: dict[tuple[str, str], np.ndarray] = {}
    for (key, origin), group in frame.groupby(["key", "origin_ts"], sort=False):
        out[(str(key), str(origin))] = group["forecast"].to_numpy(dtype=np.float64)
    return out


async def test_replayed_forecasts_equal_the_offline_evaluator(
    bootstrap: str, tmp_path: Path
) -> None:
    model = await asyncio.to_thread(train_tiny_model, tmp_path / "tiny")
    offline = _offline(tmp_path / "tiny" / "forecasts.csv")
    assert len(offline) > 100

    env = service_env(bootstrap, model, unique_topic("onoff"))
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=2)
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
        replay = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable, "-m", "streamcast", "replay",
                "--data", str(tmp_path / "tiny" / "data.csv"),
                "--key-col", TINY_COLUMNS["key_col"],
                "--time-col", TINY_COLUMNS["time_col"],
                "--value-col", TINY_COLUMNS["value_col"],
                "--topic", ticks_topic, "--bootstrap-servers", bootstrap, "--no-progress",
            ],
            env=cli_env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(offline), idle_s=2.0
        )
        assert service.metric("streamcast_ticks_total") > 0
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()

    online: dict[tuple[str, str], list[np.ndarray]] = {}
    for record in records:
        doc = orjson.loads(record.value or b"")
        online.setdefault((doc["key"], doc["ts"]), []).append(np.asarray(doc["values"]))
    assert len(records) == len(offline), "the counts match exactly"
    assert set(online) == set(offline), "the same (key, origin) pairs"
    worst = 0.0
    for pair, expected in offline.items():
        (got,) = online[pair]
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=str(pair))
        worst = max(worst, float(np.max(np.abs(got - expected) / np.abs(expected).clip(1e-9))))
    print(f"online vs offline: {len(offline)} forecasts, worst relative difference {worst:.2e}")
