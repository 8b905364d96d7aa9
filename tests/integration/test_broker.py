"""The genuine broker works with aiokafka: produce, consume, group commits, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import streamcast.kafka.clients  # noqa: F401  (importing the edge applies its aiokafka fixes)
from tests.support.kafka import create_topics, kafka_local, unique_topic

pytestmark = pytest.mark.kafka


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=f"k{i % 3}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, group: str, n: int, *, commit: bool = True
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        for _ in range(60):
            batches = await consumer.getmany(timeout_ms=500, max_records=n - len(got))
            got += [m.value for msgs in batches.values() for m in msgs if m.value is not None]
            if len(got) >= n:
                break
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def test_produce_and_consume_in_order(bootstrap: str) -> None:
    topic = unique_topic()
    await create_topics(bootstrap, [topic])
    values = [f"v{i}".encode() for i in range(100)]
    await _produce(bootstrap, topic, values)
    assert await _consume(bootstrap, topic, unique_topic("g"), 100) == values


async def test_group_commit_resumes_where_it_stopped(bootstrap: str) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await create_topics(bootstrap, [topic])
    await _produce(bootstrap, topic, [f"a{i}".encode() for i in range(10)])
    first = await _consume(bootstrap, topic, group, 10)
    await _produce(bootstrap, topic, [f"b{i}".encode() for i in range(5)])
    second = await _consume(bootstrap, topic, group, 5)
    assert len(first) == 10
    assert second == [f"b{i}".encode() for i in range(5)]


async def test_a_consumer_that_stops_polling_after_a_cancelled_fetch_leaves_its_group(
    bootstrap: str,
) -> None:
    """``max_poll_interval_ms`` still hands a silent consumer's partitions to the rest of
    its group after one of its fetches was cancelled (aiokafka counted such a fetch as
    under way for good; ``streamcast.kafka.patches`` fixes it)."""
    topic, group = unique_topic(), unique_topic("g")
    await create_topics(bootstrap, [topic], partitions=2)
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap, "group_id": group, "max_poll_interval_ms": 2_000,
        "heartbeat_interval_ms": 200, "auto_offset_reset": "earliest",
    }  # fmt: skip
    silent, healthy = AIOKafkaConsumer(topic, **options), AIOKafkaConsumer(topic, **options)
    await silent.start()
    try:
        while not silent.assignment():
            await silent.getmany(timeout_ms=100)
        with contextlib.suppress(TimeoutError):  # a fetch cancelled, as a stop cancels one
            await asyncio.wait_for(silent.getmany(timeout_ms=5_000), 0.1)
        await healthy.start()  # the silent consumer polls no more
        deadline = time.monotonic() + 30
        while len(healthy.assignment()) < 2 and time.monotonic() < deadline:
            await healthy.getmany(timeout_ms=200)
        assert {tp.partition for tp in healthy.assignment()} == {0, 1}
    finally:
        await healthy.stop()
        await silent.stop()


async def test_broker_restart_keeps_data_and_offsets(tmp_path: Path) -> None:
    broker = kafka_local.LocalBroker(
        kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=tmp_path / "kafka")
    )
    bootstrap = broker.start(timeout=90)
    try:
        topic, group = unique_topic(), unique_topic("g")
        await create_topics(bootstrap, [topic])
        await _produce(bootstrap, topic, [f"x{i}".encode() for i in range(20)])
        assert len(await _consume(bootstrap, topic, group, 12)) == 12
        assert broker.stop()
        assert broker.running_pid() is None
        bootstrap = broker.start(timeout=90)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            committed = await consumer.committed(TopicPartition(topic, 0))
        finally:
            await consumer.stop()
        assert committed == 12
        rest = await _consume(bootstrap, topic, group, 8)
        assert rest == [f"x{i}".encode() for i in range(12, 20)]
    finally:
        broker.stop()
    assert broker.running_pid() is None


def test_start_twice_reports_already_running(
    kafka_broker: object, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = kafka_local.LocalBroker(kafka_broker.config)  # type: ignore[attr-defined]
    assert broker.start() == broker.config.bootstrap
    assert "already running" in capsys.readouterr().err


def test_busy_port_is_a_clear_error(tmp_path: Path, bootstrap: str) -> None:
    port = int(bootstrap.rsplit(":", 1)[1])
    broker = kafka_local.LocalBroker(kafka_local.BrokerConfig(port=port, data_dir=tmp_path))
    with pytest.raises(kafka_local.KafkaLocalError, match=f"port {port}.*already in use"):
        broker.start()
