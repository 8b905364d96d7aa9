"""Online equals offline (DESIGN invariant 1), through the real broker.

A tiny LSTM is trained for real on a pedestrian slice (``tests/training/tiny.py``: three
sensors, a bridged gap and a long gap that resets a key). ``streamcast replay`` sends data
to Kafka; ``streamcast serve`` (a subprocess) forecasts it; every forecast consumed from
the forecasts topic must equal the one the offline evaluator wrote to its forecasts file
to 1e-5 relative, and the counts must match exactly. Two replays: the training slice
itself, and the pedestrian *test period* (the chronological split the trainer uses, all
four sensors, so one of them is a key the model never saw).
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

from tests.support.kafka import REPO, create_topics, load_script, unique_topic
from tests.support.service import ServiceProcess, consume, service_env
from tests.support.tiny import TINY_COLUMNS, TINY_CONFIG
from training.data import load_table, regularise
from training.datasets import export_csv
from training.prep import split

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


#: the same loader the demo's online-vs-offline check uses (scripts/compare_forecasts.py)
_offline = load_script(REPO / "scripts" / "compare_forecasts.py").load_offline


async def _replay_through_service(
    bootstrap: str, model: Path, data: Path, workdir: Path, expected: int
) -> dict[tuple[str, str], list[np.ndarray]]:
    """Serve ``model``, replay ``data`` through Kafka, return ``(key, origin) -> [values]``."""
    env = service_env(bootstrap, model, unique_topic("onoff"))
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=2)
    service = ServiceProcess(env, workdir / "service.log")
    try:
        service.start()
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
        replay = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable, "-m", "streamcast", "replay",
                "--data", str(data),
                "--key-col", TINY_COLUMNS["key_col"],
                "--time-col", TINY_COLUMNS["time_col"],
                "--value-col", TINY_COLUMNS["value_col"],
                "--topic", ticks_topic, "--bootstrap-servers", bootstrap, "--no-progress",
            ],
            env=cli_env, cwd=workdir, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=expected, idle_s=2.0
        )
        assert service.metric("streamcast_ticks_total") > 0
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()
    online: dict[tuple[str, str], list[np.ndarray]] = {}
    for record in records:
        doc = orjson.loads(record.value or b"")
        online.setdefault((doc["key"], doc["ts"]), []).append(np.asarray(doc["values"]))
    return online


def _assert_equal(
    online: dict[tuple[str, str], list[np.ndarray]], offline: dict[tuple[str, str], np.ndarray]
) -> float:
    """Exactly one online forecast per offline one, equal to 1e-5 relative; worst diff."""
    assert sum(len(v) for v in online.values()) == len(offline), "the counts match exactly"
    assert set(online) == set(offline), "the same (key, origin) pairs"
    worst = 0.0
    for pair, expected in offline.items():
        (got,) = online[pair]
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=str(pair))
        worst = max(worst, float(np.max(np.abs(got - expected) / np.abs(expected).clip(1e-9))))
    return worst


async def test_replayed_forecasts_equal_the_offline_evaluator(
    bootstrap: str, tmp_path: Path, tiny_model: Path
) -> None:
    offline = _offline(tiny_model.parent / "forecasts.csv")
    assert len(offline) > 100
    online = await _replay_through_service(
        bootstrap, tiny_model, tiny_model.parent / "data.csv", tmp_path, len(offline)
    )
    worst = _assert_equal(online, offline)
    print(f"online vs offline: {len(offline)} forecasts, worst relative difference {worst:.2e}")


def _pedestrian_test_period(out: Path) -> Path:
    """The pedestrian test period (default 15 % chronological split per sensor) as a CSV,
    starting ``window`` hours early so warm-up ends where the test period begins."""
    full = export_csv("pedestrian", out.with_name("pedestrian.csv"))
    cols = TINY_COLUMNS
    frame = load_table(full, **cols)
    series, _ = regularise(frame, interval="1h")
    test_start = split(series).test_start
    raw = pd.read_csv(full)
    epoch = pd.Timestamp(0, tz="UTC")
    ts = (pd.to_datetime(raw[cols["time_col"]], utc=True) - epoch) // pd.Timedelta(seconds=1)
    begin = dict(zip(series.keys, test_start - TINY_CONFIG.window_ * 3600, strict=True))
    keep = ts.to_numpy() >= raw[cols["key_col"]].map(begin).to_numpy()
    raw[keep].to_csv(out, index=False)
    return out


async def test_pedestrian_test_period_replay_equals_evaluate(
    bootstrap: str, tmp_path: Path, tiny_model: Path
) -> None:
    data = await asyncio.to_thread(_pedestrian_test_period, tmp_path / "test-period.csv")
    cols = TINY_COLUMNS
    evaluate = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "training.cli", "evaluate", "--model", str(tiny_model),
            "--data", str(data), "--key-col", cols["key_col"], "--time-col", cols["time_col"],
            "--value-col", cols["value_col"], "--out", str(tmp_path / "offline"),
            "--forecasts", "forecasts.csv", "--quiet",
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    offline = _offline(tmp_path / "offline" / "forecasts.csv")
    assert len({key for key, _ in offline}) == 4, "all four sensors, one unseen in training"
    assert len(offline) > 8000
    online = await _replay_through_service(bootstrap, tiny_model, data, tmp_path, len(offline))
    worst = _assert_equal(online, offline)
    print(f"test period: {len(offline)} forecasts online = offline, worst rel diff {worst:.2e}")
