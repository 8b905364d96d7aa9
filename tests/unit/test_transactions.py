"""The exactly-once sink's rebalance bookkeeping, without Kafka: the batch lock holds
off revocation, records fetched across a rebalance are stale, failed assignments make
the next batch rewind (or end the service when no retry can help)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence, Set
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from streamcast.config import Settings
from streamcast.errors import BatchRolledBackError, ModelError
from streamcast.kafka.exactly_once import ExactlyOnceSink
from streamcast.kafka.wire import InRecord
from streamcast.service.metrics import Metrics


class FakeConsumer:
    """``getmany`` returns one record per call, after ``during`` ran (a rebalance)."""

    def __init__(self) -> None:
        self.during: Any = None
        self.offset = 0
        self.seeks: list[tuple[int, int | None]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, None))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[InRecord]]:
        if self.during is not None:
            await self.during()
        self.offset += 1
        return {"tp": [InRecord("ticks", 0, self.offset, 0, b"k", b"{}")]}


class NoState:
    """A :class:`~streamcast.kafka.sink.PartitionedState` that holds nothing."""

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        return 0

    def drop_partitions(self, partitions: Set[int]) -> int:
        return 0


def _broker(take_error: BaseException | None = None) -> tuple[ExactlyOnceSink, FakeConsumer]:
    broker = ExactlyOnceSink(Settings(_env_file=None), NoState(), Metrics())
    consumer = FakeConsumer()
    broker._consumer = consumer

    async def take(assigned: set[int]) -> None:
        if take_error is not None:
            raise take_error
        broker._owned = set(assigned)
        broker._committed = {p: 100 + p for p in assigned}

    broker._take = take  # type: ignore[method-assign]
    return broker, consumer


async def test_records_fetched_across_a_rebalance_are_stale_then_fresh_again() -> None:
    broker, consumer = _broker()
    await broker._on_assigned({0})
    await broker.fetch(10, 0)
    async with broker.batch() as current:
        assert current, "no rebalance since the fetch"

    async def rebalance() -> None:
        await broker._on_revoked()
        await broker._on_assigned({0, 1})

    consumer.during = rebalance
    await broker.fetch(10, 0)
    consumer.seeks.clear()
    async with broker.batch() as current:
        assert not current, "positions were reset by the assignment: read them again"
    # the stale records may have been read after the assignment's seeks: back to the
    # committed offsets, or they would be skipped
    assert consumer.seeks == [(0, 100), (1, 101)]
    consumer.during = None
    await broker.fetch(10, 0)
    async with broker.batch() as current:
        assert current


async def test_revocation_waits_for_the_in_flight_batch() -> None:
    broker, _ = _broker()
    await broker._on_assigned({0})
    order: list[str] = []
    batch_started = asyncio.Event()

    async def batch() -> None:
        async with broker.batch():
            batch_started.set()
            await asyncio.sleep(0.05)
            order.append("batch committed")

    async def revoke() -> None:
        await batch_started.wait()
        await broker._on_revoked()
        order.append("revoked")

    await asyncio.gather(batch(), revoke())
    assert order == ["batch committed", "revoked"]


async def test_a_failed_assignment_makes_the_next_batch_rewind() -> None:
    broker, _ = _broker(KafkaConnectionError("broker away"))
    await broker._on_assigned({0})  # aiokafka would swallow an error raised here
    assert broker.needs_rewind
    assert not broker.assigned(), "not ready while its state is not restored"
    await broker.fetch(10, 0)
    async with broker.batch() as current:
        assert not current


async def test_state_of_another_model_ends_the_service_with_its_reason() -> None:
    broker, _ = _broker(ModelError("state changelog 's' partition 0 holds state ..."))
    await broker._on_assigned({0})
    with pytest.raises(ModelError, match="holds state"):
        _ = broker.needs_rewind


async def test_delivery_to_a_partition_it_does_not_own_rolls_back_and_marks_dirty() -> None:
    broker, _ = _broker()
    await broker._on_assigned({0})
    with pytest.raises(BatchRolledBackError, match="no producer"):
        await broker.deliver({}, {("ticks", 3): 10})
    assert broker.needs_rewind
