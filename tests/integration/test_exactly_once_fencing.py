"""A fenced instance stops instead of writing as a zombie.

Another producer starts with the transactional id of partition 0 (what a new owner of
the partition does). The running service's next transaction on that partition is
rejected by the broker; the service must end with :class:`FencedError`, and nothing of
the rejected transaction may become visible to read_committed consumers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamcast.config import Settings
from streamcast.errors import FencedError
from streamcast.kafka.exactly_once import transactional_id
from streamcast.service.app import Service
from tests.support import chaos
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import produce, recent_hour, tick

pytestmark = pytest.mark.kafka


async def test_fenced_instance_exits_and_its_transaction_is_invisible(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("fence")
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=chaos.INTERVAL_S
    )
    settings = Settings(
        _env_file=None,
        bootstrap_servers=bootstrap,
        model_path=model,
        processing_guarantee="exactly_once",
        group_id=f"{prefix}-group",
        batch_max_wait_ms=50,
        http_host="127.0.0.1",
        http_port=0,
        topics={
            "ticks": f"{prefix}-ticks",
            "forecasts": f"{prefix}-forecasts",
            "alerts": f"{prefix}-alerts",
            "dead_letter": f"{prefix}-dlq",
            "state_changelog": f"{prefix}-state",
        },
    )
    ticks = settings.topics.ticks
    await create_topics(bootstrap, [ticks], partitions=2)
    start = recent_hour(days_back=3)
    keys = [f"m{k}" for k in range(6)]

    def interval(t: int) -> list[tuple[bytes, bytes]]:
        return [(k.encode(), tick(k, start + t * chaos.INTERVAL_S + 1, 10.0 + t)) for k in keys]

    acks = await produce(bootstrap, ticks, [m for t in range(8) for m in interval(t)])
    on_zero = {keys[i % len(keys)] for i, (p, _) in enumerate(acks) if p == 0}
    assert on_zero, "some keys hash to partition 0"

    service = Service(settings)
    async with chaos.OutputWatch(bootstrap, settings.topics.forecasts) as watch:
        running = asyncio.create_task(service.run())
        assert await watch.wait_for(4 * len(keys), 60.0), "warm keys forecast"
        before = len(watch.records)

        usurper = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=transactional_id(settings, 0)
        )
        await usurper.start()  # bumps the epoch: the service's producer for 0 is fenced
        try:
            later = [m for t in range(8, 12) for m in interval(t) if m[0].decode() in on_zero]
            await produce(bootstrap, ticks, later)
            with pytest.raises(FencedError, match=r"producer of partition 0 .* was fenced"):
                await asyncio.wait_for(running, 60)
        finally:
            await usurper.stop()
        await asyncio.sleep(2.0)
        after = len(watch.records)
    assert after == before, "nothing of the fenced transaction became visible"
