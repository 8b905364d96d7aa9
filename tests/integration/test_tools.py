"""The command-line tools against the real broker: ``replay`` keeps its pace message by
message (each tick with its headers), and ``history export`` gives back exactly the rows
that were replayed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.core.schemas import TICK_HEADERS
from tests.support.kafka import create_topics, unique_topic
from tests.support.service import consume

pytestmark = pytest.mark.kafka


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "streamcast", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _table(path: Path, rows: int, keys: int = 3) -> pd.DataFrame:
    start = pd.Timestamp("2026-11-01T00:00:00Z")
    frame = pd.DataFrame(
        {
            "sensor": [f"s{i % keys}" for i in range(rows)],
            "time": [(start + pd.Timedelta(minutes=i // keys)).isoformat() for i in range(rows)],
            "count": np.round(np.random.default_rng(1).normal(50, 5, rows), 3),
        }
    )
    frame.to_csv(path, index=False)
    return frame


async def test_replay_rate_is_kept_message_by_message(bootstrap: str, tmp_path: Path) -> None:
    topic = unique_topic("replay")
    await create_topics(bootstrap, [topic])
    _table(tmp_path / "d.csv", rows=300)
    rate, limit = 60.0, 150
    result = _cli(
        "replay", "--data", "d.csv", "--key-col", "sensor", "--time-col", "time",
        "--value-col", "count", "--topic", topic, "--bootstrap-servers", bootstrap,
        "--rate", str(rate), "--limit", str(limit), "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = await consume(bootstrap, topic, until=limit)
    stamps = np.sort([r.timestamp for r in records]) / 1000.0
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert len(records) == limit
    assert abs(measured - rate) / rate < 0.05, f"{measured:.1f} messages/s for --rate {rate}"
    # every tick says what it is, as the records streamcast writes do
    tick = {"content-type": b"application/json", "streamcast.schema": b"tick/1"}
    assert all(dict(r.headers) == tick for r in records)
    assert dict(TICK_HEADERS) == tick
    # paced one by one, not in bursts: the old replay sent up to 500 messages at once and
    # then paused (a scheduling hiccup on a loaded machine may still delay one message)
    gaps = np.diff(stamps)
    assert abs(float(np.median(gaps)) - 1 / rate) < 0.3 / rate
    assert float(np.percentile(gaps, 90)) < 2 / rate


async def test_history_export_gives_back_the_replayed_rows(bootstrap: str, tmp_path: Path) -> None:
    topic = unique_topic("history")
    await create_topics(bootstrap, [topic], partitions=2)
    frame = _table(tmp_path / "d.csv", rows=240)
    common = ("--bootstrap-servers", bootstrap, "--topic", topic)
    replayed = _cli(
        "replay", "--data", "d.csv", "--key-col", "sensor", "--time-col", "time",
        "--value-col", "count", "--no-progress", *common, cwd=tmp_path,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    exported = _cli("history", "export", "--out", "h.parquet", *common, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 240 ticks of 3 keys" in exported.stderr
    back = pd.read_parquet(tmp_path / "h.parquet")
    want = frame.assign(ts=pd.to_datetime(frame["time"], utc=True)).sort_values(["sensor", "ts"])
    got = back.assign(ts=pd.to_datetime(back["ts"], utc=True)).sort_values(["key", "ts"])
    assert got["key"].tolist() == want["sensor"].tolist()
    assert (got["ts"].to_numpy() == want["ts"].to_numpy()).all()
    np.testing.assert_array_equal(got["value"].to_numpy(), want["count"].to_numpy())
