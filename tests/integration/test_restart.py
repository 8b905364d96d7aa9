"""Lifecycle through real signals and a real broker: clean restart, broker unavailable.

Clean restart: SIGTERM mid-stream drains (finish the batch, produce, commit, close), and
a restarted service continues from the committed offsets. With durable state (the
default, also in at-least-once mode) every key's state is restored from the changelog:
the output equals one uninterrupted run, with no new warm-up. With ``durable_state``
off, state is memory only and the restarted service warms its keys up again: a first
lifetime over what was committed and a fresh one over the rest, per partition.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.kafka import create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    ServiceProcess,
    consume,
    expected_forecasts,
    forecasts_by_key,
    produce,
    recent_hour,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

KEYS = 8
INTERVALS = 40
INTERVAL_S = 60


def _interval_messages(start: int, t: int) -> list[Message]:
    out: list[Message] = []
    for k in range(KEYS):
        key = f"meter-{k}"
        value = float(100 + 10 * k + 20 * np.cos(t / 5 + k))
        out.append((key.encode(), tick(key, start + t * INTERVAL_S + 7, value)))
    return out


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


@pytest.mark.parametrize("durable", [True, False], ids=["durable-state", "memory-state"])
async def test_sigterm_mid_stream_then_restart_loses_nothing(
    bootstrap: str, tmp_path: Path, durable: bool
) -> None:
    prefix = unique_topic("restart")
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S, levels=(0.9,)
    )
    env = service_env(bootstrap, model, prefix, batch_max_records=16, durable_state=durable)
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=2)
    start = recent_hour()
    sent: list[tuple[Message, tuple[int, int]]] = []

    async def stream(first: int, last: int) -> None:
        for t in range(first, last):
            batch = _interval_messages(start, t)
            sent.extend(zip(batch, await produce(bootstrap, ticks_topic, batch), strict=True))
            await asyncio.sleep(0.03)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        await stream(0, INTERVALS // 2)
        # Stop while ticks are still arriving: the drain must be quick and clean.
        producer = asyncio.create_task(stream(INTERVALS // 2, INTERVALS))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        assert await asyncio.to_thread(service.stop, signal.SIGTERM) == 0
        drain_s = time.monotonic() - began
        await producer
        committed = await _committed(bootstrap, env["STREAMCAST_GROUP_ID"], ticks_topic)
        service.start()
        first_life = [[m for m, (p, o) in sent if p == part and o < committed.get(part, 0)]
                      for part in (0, 1)]  # fmt: skip
        second_life = [[m for m, (p, o) in sent if p == part and o >= committed.get(part, 0)]
                       for part in (0, 1)]  # fmt: skip
        if durable:  # restored state: one uninterrupted lifetime
            whole = [a + b for a, b in zip(first_life, second_life, strict=True)]
            expected = expected_forecasts(model, whole)
        else:  # memory only: the second lifetime warms up again
            expected = expected_forecasts(model, first_life)
            expected.update(expected_forecasts(model, second_life))
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(expected), idle_s=1.0
        )
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()

    assert drain_s < 10, f"drain took {drain_s:.1f}s"
    assert 0 < sum(committed.values()) < len(sent), "the stop really happened mid-stream"
    got = forecasts_by_key(records)
    duplicates = sum(len(v) - 1 for v in got.values())
    assert set(got) == set(expected), "every expected forecast present, none unexpected"
    assert duplicates == 0, f"{duplicates} duplicates after a clean SIGTERM drain"
    for key, values in expected.items():
        np.testing.assert_allclose(got[key][0], values, rtol=1e-6)
    log = (tmp_path / "service.log").read_text()
    assert log.count('"msg":"stopped"') == 2


async def test_broker_unavailable_at_start_is_retried_with_backoff_not_spun(
    tmp_path: Path,
) -> None:
    model = make_tiny_model(tmp_path / "tiny.onnx", levels=(0.9,))
    dead = f"127.0.0.1:{kafka_local.free_port()}"
    env = service_env(dead, model, unique_topic("down"), retry_max_backoff_s=2)
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.launch()
        began = time.monotonic()
        service.wait_for_log('"retry_in_s"', count=3)
        waited = time.monotonic() - began
        assert service.probe("/healthz")[0] == 200
        status, reason = service.probe("/readyz")
        assert status == 503
        assert b"no partitions assigned" in reason
        began = time.monotonic()
        assert await asyncio.to_thread(service.stop, signal.SIGTERM) == 0
        assert time.monotonic() - began < 5
    finally:
        service.kill()
    log = (tmp_path / "service.log").read_text()
    delays = [float(d) for d in re.findall(r'"retry_in_s":([0-9.]+)', log)]
    assert delays[1] > delays[0] * 1.2  # exponential growth (jitter is +-25%)
    assert delays[2] > delays[1] * 1.2
    # three attempts need at least the first two pauses: no spinning
    assert waited >= 0.75 * (delays[0] + delays[1])


async def test_broker_lost_mid_run_is_survived_with_state_kept(tmp_path: Path) -> None:
    """Stop the (dedicated) broker mid-stream and start it again with its data: the
    service keeps running and its state, and every expected forecast arrives."""
    local = kafka_local.LocalBroker(
        kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=tmp_path / "kafka")
    )
    bootstrap = await asyncio.to_thread(local.start, timeout=90)
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S, levels=(0.9,)
    )
    env = service_env(bootstrap, model, unique_topic("outage"), retry_max_backoff_s=2)
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    service = ServiceProcess(env, tmp_path / "service.log")
    start = recent_hour()
    half = INTERVALS // 2
    first = [m for t in range(half) for m in _interval_messages(start, t)]
    second = [m for t in range(half, INTERVALS) for m in _interval_messages(start, t)]
    by_key: dict[bytes | None, list[Message]] = {}
    for message in first + second:
        by_key.setdefault(message[0], []).append(message)
    expected = expected_forecasts(model, list(by_key.values()))
    try:
        await create_topics(bootstrap, [ticks_topic], partitions=2)
        service.start()
        await produce(bootstrap, ticks_topic, first)
        before = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=KEYS * (half - 4)
        )
        assert len(before) >= KEYS * (half - 4)
        assert await asyncio.to_thread(local.stop)
        await asyncio.sleep(4)  # the service meets a dead broker for a while
        assert service.process is not None
        assert service.process.poll() is None, "the service must survive the outage"
        await asyncio.to_thread(local.start, timeout=90)
        await produce(bootstrap, ticks_topic, second)
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(expected), timeout_s=120
        )
        assert service.process.poll() is None
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()
        await asyncio.to_thread(local.stop)

    got = forecasts_by_key(records)
    assert set(got) == set(expected), "state kept: no extra warm-up, nothing missing"
    for key, values in expected.items():
        for copy in got[key]:  # at-least-once: a repeat must carry the same values
            np.testing.assert_allclose(copy, values, rtol=1e-6)
    duplicates = sum(len(v) - 1 for v in got.values())
    print(f"broker outage: {len(expected)} forecasts, {duplicates} duplicates")
