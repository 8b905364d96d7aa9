"""A transaction that fails half-way is aborted and rewound: the output stays exactly once.

The service runs in-process with the real :class:`ExactlyOnceSink`, except that two
transactions fail after their records were sent (as a broker error would). The service
must abort them, drop its state, restore it from the changelog, seek back to the
committed offsets and go on, so a read_committed consumer sees what an uninterrupted
in-process run produces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from streamcast.config import Settings
from streamcast.kafka.exactly_once import ExactlyOnceSink
from streamcast.kafka.sink import Sink
from streamcast.kafka.wire import OutRecord
from streamcast.service.app import Service
from streamcast.service.processor import BatchProcessor, build_processor
from tests.support import chaos
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import produce, recent_hour

pytestmark = pytest.mark.kafka


class FlakySink(ExactlyOnceSink):
    """Fails the transactions numbered in ``fail_at`` after sending their records."""

    fail_at: frozenset[int] = frozenset({3, 8})
    calls = 0

    async def _transaction(
        self, partition: int, records: Sequence[OutRecord], offset: int | None
    ) -> None:
        FlakySink.calls += 1
        if FlakySink.calls not in self.fail_at:
            await super()._transaction(partition, records, offset)
            return
        producer = self._producers[partition]
        await producer.begin_transaction()
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
        await asyncio.gather(*futures)
        raise KafkaConnectionError("injected: the broker went away mid-transaction")


async def test_failed_transactions_are_aborted_and_rewound(bootstrap: str, tmp_path: Path) -> None:
    sc = chaos.Scenario(ticks=3_000, keys=20, partitions=4, batch_max_records=200)
    prefix = unique_topic("rewind")
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=chaos.INTERVAL_S, levels=(0.9,)
    )
    settings = Settings(
        _env_file=None,
        bootstrap_servers=bootstrap,
        model_path=model,
        processing_guarantee="exactly_once",
        group_id=f"{prefix}-group",
        batch_max_records=sc.batch_max_records,
        batch_max_wait_ms=50,
        http_host="127.0.0.1",
        http_port=0,
        retry_max_backoff_s=1.0,
        topics={
            "ticks": f"{prefix}-ticks",
            "forecasts": f"{prefix}-forecasts",
            "alerts": f"{prefix}-alerts",
            "dead_letter": f"{prefix}-dlq",
            "state_changelog": f"{prefix}-state",
        },
    )
    await create_topics(bootstrap, [settings.topics.ticks], partitions=sc.partitions)
    messages = chaos.make_messages(sc, recent_hour(days_back=3))
    sent = list(
        zip(messages, await produce(bootstrap, settings.topics.ticks, messages), strict=True)
    )
    expected, letters = chaos.reference(model, sent, sc.partitions)

    processor = build_processor(settings)
    service: Service | None = None

    def flaky(state: BatchProcessor) -> Sink:
        assert service is not None
        return FlakySink(settings, state, service.metrics)

    FlakySink.calls = 0
    service = Service(settings, sink_factory=flaky, processor=processor)
    async with chaos.OutputWatch(bootstrap, settings.topics.forecasts) as watch:
        running = asyncio.create_task(service.run())
        assert await watch.wait_for(len(expected), 90.0), "the service caught up"
        await asyncio.sleep(1.5)
        seen = list(watch.records)
        service.request_stop()
        await asyncio.wait_for(running, 30)
    dead = await chaos.read_dead_letters(bootstrap, settings.topics.dead_letter)

    verdict = chaos.judge(
        "rewind", (expected, letters), (seen, dead), disruptions=2, seconds=0.0, logs=[]
    )
    assert verdict.ok, verdict.report()
    assert service.metrics.rewinds._value.get() == 2
    assert service.metrics.transactions_total.labels(result="failed")._value.get() == 2
    assert service.metrics.restored_keys._value.get() > 0, "state came back from the changelog"
