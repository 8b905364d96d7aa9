"""End to end through the real broker: ticks in, forecasts out, offsets committed.

The service runs as a real subprocess (``python -m streamcast serve``) configured by
environment variables only; its forecasts are checked against the same decoder and
pipeline run in-process over the same ticks.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    ServiceProcess,
    consume,
    expected_forecasts,
    forecasts_by_key,
    produce,
    recent_hour,
    run_cli,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

KEYS = 6
INTERVALS = 24
INTERVAL_S = 60


def _ticks(start: int) -> list[Message]:
    """Two ticks per interval per key (aggregation ``last`` keeps the second), time order."""
    rng = np.random.default_rng(7)
    out: list[Message] = []
    for t in range(INTERVALS):
        for k in range(KEYS):
            key = f"sensor-{k}"
            for offset in (5, 40):
                value = float(10 * k + 5 * np.sin(t / 3) + rng.normal())
                out.append((key.encode(), tick(key, start + t * INTERVAL_S + offset, value)))
    return out


def _split_by_key_partition(messages: list[Message], parts: int) -> list[list[Message]]:
    """Group messages by key (each key lives in one partition; per-key order is kept)."""
    by_key: dict[bytes | None, list[Message]] = {}
    for m in messages:
        by_key.setdefault(m[0], []).append(m)
    del parts
    return list(by_key.values())


async def test_ticks_become_forecasts_and_offsets_are_committed(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("e2e")
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S, levels=(0.9,)
    )
    env = service_env(bootstrap, model, prefix)
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=2)
    messages = _ticks(recent_hour())
    await produce(bootstrap, ticks_topic, messages)
    expected = expected_forecasts(model, _split_by_key_partition(messages, 2))
    # each key: INTERVALS closed-or-open intervals, the last stays open, warm-up withholds 3
    assert len(expected) == KEYS * (INTERVALS - 1 - 3)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(expected), idle_s=1.0
        )
        assert service.probe("/healthz")[0] == 200
        assert service.metric("streamcast_forecasts_total") == len(expected)
        assert service.metric("streamcast_ticks_total") == len(messages)
        assert service.metric("streamcast_active_keys") == KEYS
        assert service.metric("streamcast_end_to_end_latency_seconds_count") == len(expected)
        # every processed batch was delivered once, and its delivery timed
        batches = service.metric("streamcast_inference_seconds_count")
        assert batches >= 1
        assert service.metric("streamcast_delivery_seconds_count") == batches
        assert service.metric("streamcast_delivery_seconds_sum") > 0
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()

    got = forecasts_by_key(records)
    assert set(got) == set(expected)
    assert all(len(v) == 1 for v in got.values()), "no duplicates in a clean run"
    for key, values in expected.items():
        np.testing.assert_allclose(got[key][0], values, rtol=1e-6)
    doc = orjson.loads(records[0].value or b"")
    assert doc["model"] == "tiny"
    assert doc["horizon"] == 3
    assert doc["schema"] == 2 and len(doc["values"]) == 3
    assert doc["levels"] == [0.9] and len(doc["lower"]) == 1  # the model is calibrated at 0.9

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(env["STREAMCAST_GROUP_ID"])
    finally:
        await admin.close()
    total = sum(meta.offset for tp, meta in committed.items() if tp.topic == ticks_topic)
    assert total == len(messages), "every consumed offset committed after the drain"
    assert TopicPartition(ticks_topic, 0) in committed
    log = (tmp_path / "service.log").read_text()
    assert '"msg":"stopped"' in log


async def test_missing_ticks_topic_is_a_clear_one_line_error(
    bootstrap: str, tmp_path: Path
) -> None:
    model = make_tiny_model(tmp_path / "tiny.onnx", levels=(0.9,))
    env = service_env(bootstrap, model, unique_topic("nope"))
    service = ServiceProcess(env, tmp_path / "service.log")
    with pytest.raises(RuntimeError, match="exited early"):
        service.start(ready_timeout_s=30)
    assert service.process is not None
    assert service.process.wait(timeout=10) == 2
    out = (tmp_path / "service.log").read_text()
    assert "error: ticks topic" in out
    assert "Traceback" not in out


async def test_replay_sends_a_csv_as_ticks_and_tail_shows_them(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("replay")
    await create_topics(bootstrap, [topic], partitions=2)
    rows = [
        ("b", "2024-05-01T10:30:00Z", 2.5, 7.0),
        ("a", "2024-05-01T10:00:00Z", 1.0, 6.0),
        ("a", "2024-05-01T11:00:00+01:00", 3.0, 5.0),  # = 10:00Z: same time as row 2
        ("c", "2024-05-01T09:00:00Z", 4.0, 4.0),
    ]
    data = tmp_path / "data.csv"
    data.write_text(
        "sensor,time,count,temp\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    )
    sent = run_cli(
        "replay", "--data", str(data), "--key-col", "sensor", "--time-col", "time",
        "--value-col", "count", "--features", "temp", "--topic", topic,
        "--bootstrap-servers", bootstrap, "--rate", "1000", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert f"sent 4 ticks to {topic}" in sent.stderr
    records = await consume(bootstrap, topic, until=4)
    by_key: dict[str, list[dict[str, object]]] = {}
    for record in records:  # per partition in offset order, so per key in send order
        doc = orjson.loads(record.value or b"")
        assert record.key == doc["key"].encode()
        by_key.setdefault(doc["key"], []).append(doc)
    # the original time survives (normalised to UTC); equal times keep the file's order
    assert [(d["ts"], d["value"]) for d in by_key["a"]] == [
        ("2024-05-01T10:00:00Z", 1.0),
        ("2024-05-01T10:00:00Z", 3.0),
    ]
    assert by_key["c"] == [{"key": "c", "ts": "2024-05-01T09:00:00Z", "value": 4.0, "temp": 4.0}]

    shown = run_cli(
        "tail", "--topic", topic, "--from-beginning", "--limit", "4", "--json",
        "--bootstrap-servers", bootstrap, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert sorted(orjson.loads(line)["value"] for line in lines) == [1.0, 2.5, 3.0, 4.0]
    readable = run_cli(
        "tail", "--topic", topic, "--from-beginning", "--limit", "1",
        "--bootstrap-servers", bootstrap, cwd=tmp_path,
    )  # fmt: skip
    assert readable.returncode == 0, readable.stderr
    assert '"key"' in readable.stdout


async def test_tail_of_a_missing_topic_is_a_one_line_error(bootstrap: str, tmp_path: Path) -> None:
    result = run_cli(
        "tail", "--topic", unique_topic("absent"), "--bootstrap-servers", bootstrap, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: topic")
    assert "Traceback" not in result.stderr
