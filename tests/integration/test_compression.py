"""Compressed batches, in and out, through the real broker.

Producers may compress their ticks with any codec Kafka has; the service must read all
of them (aiokafka needs ``cramjam`` for snappy, lz4 and zstd: without it every fetch of
such a batch raised ``UnsupportedCodecError`` and the partition stalled for ever). Every
producer the service creates compresses with ``compression_type``; what reached the broker
is read back from its log segments on disk, so no client decides what "compressed" means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.kafka import create_topics, segment_codecs, unique_topic
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

INPUT_CODECS = ("gzip", "lz4", "zstd", "snappy")
INTERVALS = 12
INTERVAL_S = 60


def _ticks(key: str, start: int) -> list[Message]:
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    return [
        (key.encode(), tick(key, start + t * INTERVAL_S + 5, float(20 + rng.normal())))
        for t in range(INTERVALS)
    ]


async def test_ticks_in_every_codec_become_forecasts_compressed_as_configured(
    bootstrap: str, broker_data_dir: Path, tmp_path: Path
) -> None:
    prefix = unique_topic("codec")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S)
    env = service_env(bootstrap, model, prefix, compression_type="gzip")
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=1)
    start = recent_hour()
    by_codec = {codec: _ticks(f"{codec}-sensor", start) for codec in INPUT_CODECS}
    for codec, messages in by_codec.items():
        await produce(bootstrap, ticks_topic, messages, compression_type=codec)
    assert set(segment_codecs(broker_data_dir, ticks_topic)) == set(INPUT_CODECS)
    expected = expected_forecasts(model, list(by_codec.values()))
    assert len(expected) == len(INPUT_CODECS) * (INTERVALS - 1 - 3)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(expected), idle_s=0.5
        )
        assert service.stop() == 0
    finally:
        service.kill()
    got = forecasts_by_key(records)
    assert set(got) == set(expected), "a forecast per closed interval of every codec's key"
    for key, values in expected.items():
        np.testing.assert_allclose(got[key][0], values, rtol=1e-6)
    assert "UnsupportedCodecError" not in (tmp_path / "service.log").read_text()
    assert set(segment_codecs(broker_data_dir, env["STREAMCAST_TOPICS__FORECASTS"])) == {"gzip"}


async def test_exactly_once_producers_compress_outputs_and_changelog(
    bootstrap: str, broker_data_dir: Path, tmp_path: Path
) -> None:
    prefix = unique_topic("codec-eos")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S)
    env = service_env(
        bootstrap,
        model,
        prefix,
        compression_type="lz4",
        processing_guarantee="exactly_once",
        topics__state_changelog=f"{prefix}-state",
    )
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=1)
    messages = _ticks("eos-sensor", recent_hour())
    await produce(bootstrap, ticks_topic, messages, compression_type="zstd")
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=INTERVALS - 1 - 3
        )
        assert service.stop() == 0
    finally:
        service.kill()
    assert len(records) == INTERVALS - 1 - 3
    assert set(segment_codecs(broker_data_dir, env["STREAMCAST_TOPICS__FORECASTS"])) == {"lz4"}
    assert set(segment_codecs(broker_data_dir, f"{prefix}-state")) == {"lz4"}


async def test_replay_compresses_as_configured(
    bootstrap: str, broker_data_dir: Path, tmp_path: Path
) -> None:
    topic = unique_topic("codec-replay")
    await create_topics(bootstrap, [topic])
    data = tmp_path / "data.csv"
    data.write_text("k,t,v\n" + "".join(f"s{i % 3},{1_700_000_000 + i},{i}\n" for i in range(60)))
    sent = run_cli(
        "replay", "--data", str(data), "--key-col", "k", "--time-col", "t", "--value-col", "v",
        "--topic", topic, "--no-progress", "--bootstrap-servers", bootstrap,
        "--compression-type", "snappy", cwd=tmp_path,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert len(await consume(bootstrap, topic, until=60)) == 60
    assert set(segment_codecs(broker_data_dir, topic)) == {"snappy"}
