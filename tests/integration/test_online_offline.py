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

from streamcast.core.forecast_reader import decode_forecast
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
    bootstrap: str,
    model: Path,
    data: Path,
    workdir: Path,
    expected: int,
    *,
    bands: dict[tuple[str, int], tuple[tuple[float, ...], np.ndarray, np.ndarray]] | None = None,
) -> dict[tuple[str, str], list[np.ndarray]]:
    """Serve ``model``, replay ``data`` through Kafka, return ``(key, origin) -> [values]``
    (and fill ``bands``: ``(key, origin epoch s) -> (levels, lower, upper)``)."""
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
    if bands is not None:
        for record in records:
            fc = decode_forecast(record.value, record.key)
            assert fc.lower is not None and fc.upper is not None
            origin = fc.origin_ts
            bands[(fc.key, origin)] = (fc.levels, fc.lower, fc.upper)
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
    bands: dict[tuple[str, int], tuple[tuple[float, ...], np.ndarray, np.ndarray]] = {}
    online = await _replay_through_service(
        bootstrap, tiny_model, data, tmp_path, len(offline), bands=bands
    )
    worst = _assert_equal(online, offline)
    print(f"test period: {len(offline)} forecasts online = offline, worst rel diff {worst:.2e}")
    inside = _check_bands(bands, tmp_path / "offline" / "forecasts.csv", data)
    print("online coverage from the forecasts topic: " + ", ".join(
        f"{level:g}: {share:.1%}" for level, share in inside.items()
    ))  # fmt: skip


def _check_bands(
    online: dict[tuple[str, int], tuple[tuple[float, ...], np.ndarray, np.ndarray]],
    offline_file: Path,
    data: Path,
) -> dict[float, float]:
    """The bands published online equal the evaluator's (its forecasts file carries the
    adaptive bands, as the report's coverage counts them), and their coverage of the
    replayed actuals, computed from the forecasts topic, is within 5 points of nominal.
    Returns the coverage per level."""
    frame = pd.read_csv(offline_file)
    epoch = pd.Timestamp(0, tz="UTC")
    second = pd.Timedelta(seconds=1)
    frame["origin"] = (pd.to_datetime(frame["origin_ts"], utc=True) - epoch) // second
    frame["target"] = (pd.to_datetime(frame["target_ts"], utc=True) - epoch) // second
    cols = TINY_COLUMNS
    raw = pd.read_csv(data)
    raw["hour"] = (pd.to_datetime(raw[cols["time_col"]], utc=True) - epoch) // second // 3600
    actual = raw.groupby([cols["key_col"], "hour"])[cols["value_col"]].mean().to_dict()
    levels = next(iter(online.values()))[0]
    inside = dict.fromkeys(levels, 0)
    total = 0
    for (key, origin), rows in frame.groupby(["key", "origin"]):
        got_levels, lower, upper = online[(str(key), int(str(origin)))]
        assert got_levels == levels
        for i, level in enumerate(levels):
            for side, band in (("lower", lower[i]), ("upper", upper[i])):
                np.testing.assert_allclose(
                    band, rows[f"{side}_{level:g}"].to_numpy(), rtol=1e-5, atol=1e-6,
                    err_msg=f"{side} {level} {key} {origin}",
                )  # fmt: skip
        for k, target in enumerate(rows["target"].tolist()):
            value = actual.get((key, target // 3600))
            if value is None:
                continue
            total += 1
            for i, level in enumerate(levels):
                inside[level] += bool(lower[i, k] <= value <= upper[i, k])
    assert total > 50_000
    share = {level: inside[level] / total for level in levels}
    for level in levels:
        assert abs(share[level] - level) <= 0.05, (share, total)
    return share
